"""Spanish and German templates of the cross-lingual test split (same slots and structure as English).

Slot values come from ``lexicon.MULTI_*`` in the spoken language (with articles where a template
needs them); ``*_cap`` slots are the same value with a capital first letter. The fact's keys stay
English: they are checked against ``meta.transcript_en``, the English rendering of the same turns.
Template ids are ``<lang>/<kind>/<n>``; English turns of a cross-lingual document use the English
template with the same index, so ``transcript_en`` says the same thing.
"""

from __future__ import annotations

FACTS: dict[str, dict[str, list[tuple[str, str, bool]]]] = {
    "es": {
        "person": [("es/person/0", "Por cierto, {name} será {role}.", False),
                   ("es/person/1", "A partir de la próxima semana, {name} será {role}.", False)],
        "decision": [("es/decision/0", "Hemos decidido {verb} {obj}.", False),
                     ("es/decision/1", "Decisión final: vamos a {verb} {obj}.", False)],
        "number": [("es/number/0", "{measure_cap} es de {value} {unit}.", False),
                   ("es/number/1", "Para que todos lo sepan, {measure} será de {value} {unit}.", False)],
        "date": [("es/date/0", "{event_cap} es el {date}.", False),
                 ("es/date/1", "Hemos movido {event} al {date}.", False)],
        "place": [("es/place/0", "{event_cap} será en {city}.", False),
                  ("es/place/1", "Esta vez vamos a celebrar {event} en {city}.", False)],
        "action": [("es/action/0", "{first}, ¿puedes {action} antes del {day}?", True),
                   ("es/action/1", "Tarea para {first}: {action} antes del {day}.", False)],
    },
    "de": {
        "person": [("de/person/0", "Übrigens, {name} übernimmt {role}.", False),
                   ("de/person/1", "Ab nächster Woche übernimmt {name} {role}.", False)],
        "decision": [("de/decision/0", "Wir haben beschlossen, {obj} zu {verb}.", False),
                     ("de/decision/1", "Endgültige Entscheidung: wir werden {obj} {verb}.", False)],
        "number": [("de/number/0", "{measure_cap} beträgt {value} {unit}.", False),
                   ("de/number/1", "Damit alle Bescheid wissen, {measure} liegt bei {value} {unit}.", False)],
        "date": [("de/date/0", "{event_cap} ist am {date}.", False),
                 ("de/date/1", "Merkt euch den Termin: {event} ist am {date}.", False)],
        "place": [("de/place/0", "{event_cap} findet in {city} statt.", False),
                  ("de/place/1", "Dieses Mal ist {event} in {city}.", False)],
        "action": [("de/action/0", "{first}, kannst du bis {day} {action}?", True),
                   ("de/action/1", "Aufgabe für {first}: bis {day} {action}.", False)],
    },
}
OPENINGS = {
    "es": {
        "meeting": ["Buenos días a todos, empecemos la reunión sobre {topic}.",
                    "Hola a todos, gracias por venir. Hoy hablamos sobre {topic}."],
        "lecture": ["Bienvenidos. Hoy la clase trata sobre {topic}.",
                    "Buenas tardes. En esta sesión hablamos sobre {topic}."],
        "interview": ["Hola y bienvenidos al programa. Hoy hablamos sobre {topic}.",
                      "Bienvenidos a otro episodio. Nuestro tema de hoy es {topic}."],
        "call": ["Hola, gracias por llamar. Entiendo que se trata de {topic}.",
                 "Hola, le devuelvo la llamada sobre {topic}."],
    },
    "de": {
        "meeting": ["Guten Morgen zusammen, wir sprechen heute über {topic}.",
                    "Hallo zusammen, danke fürs Kommen. Heute geht es um {topic}."],
        "lecture": ["Willkommen. In der heutigen Vorlesung geht es um {topic}.",
                    "Guten Tag. In dieser Sitzung sprechen wir über {topic}."],
        "interview": ["Hallo und willkommen zur Sendung. Heute reden wir über {topic}.",
                      "Willkommen zu einer neuen Folge. Unser Thema heute: {topic}."],
        "call": ["Hallo, danke für Ihren Anruf. Es geht um {topic}, richtig?",
                 "Hallo, ich rufe zurück, es geht um {topic}."],
    },
}
INTROS = {
    "es": ["Hola, soy {name}.", "Hola a todos, aquí {name}."],
    "de": ["Hallo, hier ist {name}.", "Hallo zusammen, {name} hier."],
}
CHITCHAT = {
    "es": [("¿Qué tal el fin de semana?", "Muy bien, fui a {city} con mi perro {pet}."),
           ("¿Me oís bien?", "Sí, perfectamente.")],
    "de": [("Wie war euer Wochenende?", "Sehr gut, ich war mit meinem Hund {pet} in {city}."),
           ("Könnt ihr mich gut hören?", "Ja, alles klar.")],
}
ACKS = {"es": ["Perfecto.", "De acuerdo.", "Vale, entendido."], "de": ["Alles klar.", "Gut, notiert.", "Einverstanden."]}
DECIDER_ACKS = {"es": ["Buena idea, {name}.", "De acuerdo, {name}."], "de": ["Gute Idee, {name}.", "Einverstanden, {name}."]}
AGREES = {"es": ["Sí, claro.", "Vale, lo hago."], "de": ["Ja, mache ich.", "Klar, kein Problem."]}
CLOSINGS = {
    "es": ["Muy bien, eso es todo por hoy. Gracias a todos.", "Gracias, hasta pronto."],
    "de": ["Gut, das war's für heute. Danke euch allen.", "Danke, bis bald."],
}
# English lines that say what the cross-lingual lines above say (same index), for transcript_en.
CHITCHAT_EN = [("How was your weekend?", "Very good, I went to {city} with my dog {pet}."),
               ("Can you hear me well?", "Yes, perfectly.")]
INTROS_EN = ["Hi, I'm {name}.", "Hello everyone, {name} here."]
ACKS_EN = ["Perfect.", "Agreed.", "Okay, understood."]
DECIDER_ACKS_EN = ["Good idea, {name}.", "Agreed, {name}."]
AGREES_EN = ["Yes, of course.", "Sure, no problem."]
CLOSINGS_EN = ["Very good, that's all for today. Thanks everyone.", "Thanks, see you soon."]

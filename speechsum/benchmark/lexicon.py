"""Word pools the document generator draws from: names, places, topics, and the slot values of facts.

English-only pools give the in-domain variety; entries of ``MULTI_*`` carry their wording in every
cross-lingual language (``en`` without article, ``es``/``de``/``fr`` with the article a template
needs: Spanish/French definite article, German accusative), so the same fact can be spoken in any
of them while its English keys stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

FIRST_NAMES = (
    "Maria Daniel Priya Tom Aisha Lukas Chen Sofia Omar Hannah Mateo Grace Yuki Ben Fatima Leo Nadia Samuel "
    "Elena Marcus Ingrid Raj Chloe Tariq Olivia Felix Amara Jonas Laura Diego Mei Victor Rosa Kenji Anna "
    "Pablo Zara Ethan Lina Oscar Ruth Hugo Emma Kofi Julia Ivan Sara Noah Leila Adam Clara Arjun Ella Mario "
    "Nora Viktor Alice Simon Dana Karim Irene Paul Hana Luis Eva Martin Selin Gabriel Mila Theo Rania Carl "
    "Lucia Pedro Sunita Erik Beatriz"
).split()
LAST_NAMES = (
    "Lopez Kim Shah Baker Khan Weber Wang Rossi Haddad Fischer Garcia Owens Tanaka Carter Diallo Novak "
    "Petrova Brooks Moreau Silva Larsen Patel Dubois Nasser Hughes Becker Mensah Berg Martin Costa Lin "
    "Ivanov Romero Sato Keller Alvarez Price Schmidt Bauer Mendes Nguyen Murphy Jensen Torres Morgan Ali "
    "Hoffmann Reyes Walsh Okafor Lund Ortiz Klein Suzuki Russo Barnes Yilmaz Grant Vogel Cruz Stone "
    "Kowalski Hart Ramos Fox Lambert Soto Wolf Park Meyer"
).split()
CITIES = (
    "Lisbon Berlin Madrid Toronto Chicago Denver Oslo Dublin Vienna Prague Seattle Boston Austin Lyon "
    "Munich Porto Valencia Helsinki Warsaw Zurich Geneva Milan Naples Seville Hamburg Cologne Leeds "
    "Glasgow Portland Phoenix Atlanta Houston Nairobi Lagos Cairo Sydney Perth Auckland Quebec"
).split()
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
MONTHS = {
    "en": "January February March April May June July August September October November December".split(),
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre".split(),
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split(),
}
WEEKDAYS_XL = {
    "en": WEEKDAYS,
    "es": ("lunes", "martes", "miércoles", "jueves", "viernes"),
    "de": ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag"),
}

# Topics per genre: what the document is about (English only; cross-lingual docs use MULTI_TOPICS).
TOPICS = {
    "meeting": (
        "website redesign|mobile app release|office move|hiring plan|quarterly budget|customer survey|"
        "data migration|supplier review|marketing campaign|security audit|training program|product roadmap|"
        "warehouse upgrade|sales kickoff|support backlog|cloud costs|partner program|holiday schedule"
    ).split("|"),
    "lecture": (
        "renewable energy|urban planning|marine biology|machine learning|medieval history|public health|"
        "climate science|volcanoes|bridge design|soil chemistry|bird migration|the printing press|"
        "water treatment|solar panels|river ecology|ancient trade routes|battery storage|earthquake safety"
    ).split("|"),
    "interview": (
        "small business growth|a new cookbook|running a bakery|an indie game studio|a community garden|"
        "electric bikes|a jazz festival|remote work|a local bookstore|a coffee roastery|a robotics club|"
        "a travel guide|a music school|a food truck|an animal shelter|a cycling tour"
    ).split("|"),
    "call": (
        "a delayed delivery|a billing question|a hotel booking|a car repair|an internet outage|"
        "a dental appointment|a flight change|a furniture order|an insurance claim|a gym membership|"
        "a moving van|a catering order|a laptop repair|a rental apartment|a phone contract"
    ).split("|"),
}
GENRE_NOUN = {"meeting": "meeting", "lecture": "lecture", "interview": "podcast interview", "call": "phone call"}

# Decision = (verb, object): "decided to <verb> the <object>"; keys: verb, object.
DECISION_VERBS = (
    "postpone approve cancel extend review expand replace simplify outsource pause upgrade relaunch "
    "shorten restructure automate"
).split()
DECISION_OBJECTS = (
    "product launch|vendor contract|pilot project|team offsite|newsletter|pricing model|onboarding process|"
    "release schedule|spring workshop|loyalty program|support hotline|design review|research grant|"
    "summer course|field trip|guest series|delivery route|booking system|menu|store hours|mentoring scheme|"
    "exam format|lab schedule|beta test|ad campaign|conference booth|shipping policy|volunteer program"
).split("|")
# Number = (measure, unit); value drawn per fact. "the <measure> is <value> <unit>".
MEASURES = (
    ("budget", "dollars", (200, 9500)),
    ("price", "euros", (15, 900)),
    ("expected attendance", "people", (20, 600)),
    ("monthly fee", "dollars", (9, 250)),
    ("discount", "percent", (5, 40)),
    ("team size", "people", (3, 45)),
    ("delivery time", "days", (2, 30)),
    ("order quantity", "units", (50, 4000)),
    ("room capacity", "seats", (12, 300)),
    ("travel allowance", "euros", (100, 2500)),
    ("response time", "minutes", (5, 90)),
    ("print run", "copies", (100, 8000)),
    ("grant amount", "dollars", (1000, 50000)),
    ("waiting list", "names", (10, 400)),
)
EVENTS = (
    "kickoff|review meeting|launch party|final exam|board meeting|workshop|open day|training session|"
    "site visit|product demo|book signing|tasting event|charity run|career fair|town hall|field study|"
    "client visit|hackathon|team lunch|concert"
).split("|")
VENUES = ("main office", "city library", "conference center", "town hall", "old factory", "university campus")
ROLES = (
    "project lead|team coordinator|budget owner|head of design|intern|safety officer|course tutor|"
    "event manager|lead engineer|account manager|editor|community manager|quality lead|contact person|"
    "data analyst|head chef|sales director|guest speaker"
).split("|")
ACTIONS = (
    "send the report|book the venue|update the slides|call the supplier|draft the contract|order the "
    "equipment|share the recording|check the invoices|prepare the agenda|test the prototype|write the press "
    "release|collect the feedback|renew the license|clean up the data|email the client|fix the login bug|"
    "print the handouts|confirm the catering|review the budget|upload the photos|schedule the interviews|"
    "translate the brochure|set up the survey|contact the landlord"
).split("|")

# Chit-chat fillers: entities said here must never end up in a summary.
PETS = ("Biscuit", "Luna", "Pepper", "Rocky", "Mochi", "Ziggy", "Olive", "Bruno")
FOODS = ("pizza", "ramen", "tacos", "curry", "pancakes", "paella", "dumplings", "lasagna")
HOBBIES = ("hiking", "painting", "baking bread", "playing chess", "gardening", "cycling", "rock climbing")

# ---- multilingual slot values (xling split and their English equivalents) -------------------------------
MULTI_TOPICS = (
    {"en": "team planning", "es": "la planificación del equipo", "de": "die Teamplanung"},
    {"en": "the new website", "es": "la nueva página web", "de": "die neue Webseite"},
    {"en": "the summer festival", "es": "el festival de verano", "de": "das Sommerfest"},
    {"en": "the school project", "es": "el proyecto escolar", "de": "das Schulprojekt"},
    {"en": "the new office", "es": "la nueva oficina", "de": "das neue Büro"},
    {"en": "the book club", "es": "el club de lectura", "de": "den Buchclub"},
)
MULTI_DECISION_VERBS = (
    {"en": "postpone", "es": "aplazar", "de": "verschieben"},
    {"en": "approve", "es": "aprobar", "de": "genehmigen"},
    {"en": "cancel", "es": "cancelar", "de": "streichen"},
    {"en": "extend", "es": "ampliar", "de": "verlängern"},
    {"en": "review", "es": "revisar", "de": "prüfen"},
    {"en": "replace", "es": "reemplazar", "de": "ersetzen"},
)
MULTI_DECISION_OBJECTS = (
    {"en": "product launch", "es": "el lanzamiento del producto", "de": "den Produktstart"},
    {"en": "vendor contract", "es": "el contrato del proveedor", "de": "den Lieferantenvertrag"},
    {"en": "pilot project", "es": "el proyecto piloto", "de": "das Pilotprojekt"},
    {"en": "newsletter", "es": "el boletín", "de": "den Newsletter"},
    {"en": "summer course", "es": "el curso de verano", "de": "den Sommerkurs"},
    {"en": "booking system", "es": "el sistema de reservas", "de": "das Buchungssystem"},
    {"en": "menu", "es": "el menú", "de": "das Menü"},
    {"en": "delivery route", "es": "la ruta de entrega", "de": "die Lieferroute"},
)
MULTI_MEASURES = (
    {"en": ("budget", "dollars"), "es": ("el presupuesto", "dólares"), "de": ("das Budget", "Dollar")},
    {"en": ("price", "euros"), "es": ("el precio", "euros"), "de": ("der Preis", "Euro")},
    {"en": ("team size", "people"), "es": ("el tamaño del equipo", "personas"), "de": ("die Teamgröße", "Personen")},
    {"en": ("delivery time", "days"), "es": ("el plazo de entrega", "días"), "de": ("die Lieferzeit", "Tage")},
    {"en": ("room capacity", "seats"), "es": ("la capacidad de la sala", "asientos"),
     "de": ("die Raumkapazität", "Plätze")},
)
MULTI_EVENTS = (
    {"en": "workshop", "es": "el taller", "de": "der Workshop"},
    {"en": "board meeting", "es": "la reunión de la junta", "de": "die Vorstandssitzung"},
    {"en": "open day", "es": "la jornada de puertas abiertas", "de": "der Tag der offenen Tür"},
    {"en": "product demo", "es": "la demostración del producto", "de": "die Produktdemo"},
    {"en": "concert", "es": "el concierto", "de": "das Konzert"},
    {"en": "career fair", "es": "la feria de empleo", "de": "die Jobmesse"},
)
MULTI_ROLES = (  # es: "{name} será <role>", de: "{name} übernimmt <role>" (gender-neutral wording)
    {"en": "project lead", "es": "responsable del proyecto", "de": "die Projektleitung"},
    {"en": "team coordinator", "es": "responsable del equipo", "de": "die Teamkoordination"},
    {"en": "event manager", "es": "responsable del evento", "de": "die Eventleitung"},
    {"en": "budget owner", "es": "responsable del presupuesto", "de": "die Budgetverantwortung"},
)
MULTI_ACTIONS = (
    {"en": "send the report", "es": "enviar el informe", "de": "den Bericht schicken"},
    {"en": "book the venue", "es": "reservar el local", "de": "den Raum buchen"},
    {"en": "call the supplier", "es": "llamar al proveedor", "de": "den Lieferanten anrufen"},
    {"en": "update the slides", "es": "actualizar las diapositivas", "de": "die Folien aktualisieren"},
    {"en": "email the client", "es": "escribir al cliente", "de": "dem Kunden schreiben"},
    {"en": "order the equipment", "es": "pedir el equipo", "de": "die Geräte bestellen"},
)


# ---- worlds: which pools a document draws from, and how long it is ------------------------------------
@dataclass(frozen=True)
class World:
    """The pools and document shape of one benchmark world (``speechsum benchmark build --world``).

    ``full`` is the original generator (77 first and 70 last names, 39 cities, numbers drawn from each
    measure's range: hundreds of distinct entity words, each heard a few times in hours of speech).
    ``compact`` is a world where *hearing is cheap*: a few pool entries of every fact slot, numbers from
    one small set, and shorter documents (fewer speakers, facts and chit-chat), so each entity word is
    heard hundreds of times in an hour of aligned speech. ``numbers=None`` draws from the measure range.
    ``named_decider``: the reference names who decided ("Emma Novak decided to extend the product
    launch"), which only the speaker's turn label and voice say. ``compact-unnamed`` is ``compact``
    (the same documents, audio and draws) with decisions reported without a name ("it was decided to
    extend …"): the students' CTC audio tokens carry no voice, so a named decider is a fact they
    cannot hear (docs/world.md, twelfth round). ``decider_said``: another speaker answers the decision
    by the decider's full name ("Good call, Emma Novak."), so who decided is said, not only voiced;
    ``compact-heard`` is ``compact`` (the same draws) with that one turn added (sixteenth round).
    """

    name: str
    first_names: tuple[str, ...] = tuple(FIRST_NAMES)
    last_names: tuple[str, ...] = tuple(LAST_NAMES)
    cities: tuple[str, ...] = tuple(CITIES)
    numbers: tuple[int, ...] | None = None
    months: tuple[int, ...] = tuple(range(12))        # month indices a date may use
    days: tuple[int, ...] = tuple(range(1, 29))        # days of the month a date may use
    filler_numbers: tuple[int, ...] = tuple(range(12, 95))
    topics: dict[str, list[str]] = field(default_factory=lambda: TOPICS)
    decision_verbs: tuple[str, ...] = tuple(DECISION_VERBS)
    decision_objects: tuple[str, ...] = tuple(DECISION_OBJECTS)
    measures: tuple[tuple[str, str, tuple[int, int]], ...] = MEASURES
    events: tuple[str, ...] = tuple(EVENTS)
    roles: tuple[str, ...] = tuple(ROLES)
    actions: tuple[str, ...] = tuple(ACTIONS)
    speaker_counts: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(
        meeting=(3, 4), lecture=(2, 3), interview=(2, 3), call=(2, 2)))
    extra_facts: tuple[int, int] = (2, 4)              # facts besides the decision and the action(s)
    second_action: float = 0.4                          # probability of a second action item
    chitchat: tuple[int, int] = (1, 2)                  # chit-chat exchanges (distractor entities)
    named_decider: bool = True                          # "<decider> decided to …" vs "it was decided to …"
    decider_said: bool = False                          # the decision is answered by the decider's name


def _pick(pool, names: str) -> tuple:
    chosen = tuple(names.split("|"))
    missing = [n for n in chosen if n not in pool]
    assert not missing, f"not in the full pool: {missing}"
    return chosen


FULL = World("full")
COMPACT = World(
    "compact",
    first_names=_pick(FIRST_NAMES, "Maria|Daniel|Priya|Tom|Omar|Hannah|Grace|Leo|Victor|Emma"),
    last_names=_pick(LAST_NAMES, "Lopez|Kim|Shah|Baker|Weber|Rossi|Tanaka|Carter|Novak|Patel"),
    cities=_pick(CITIES, "Lisbon|Berlin|Madrid|Toronto|Chicago|Sydney"),
    numbers=(5, 8, 12, 15, 20, 30, 40, 60),
    months=(2, 4, 5, 6, 8, 10),                         # March, May, June, July, September, November
    days=(5, 8, 12, 15, 20),
    filler_numbers=(5, 8, 12, 15, 20, 30, 40, 60),
    topics={genre: topics[:4] for genre, topics in TOPICS.items()},
    decision_verbs=_pick(DECISION_VERBS, "postpone|approve|cancel|extend|review|replace"),
    decision_objects=_pick(DECISION_OBJECTS, "product launch|vendor contract|pilot project|newsletter|"
                           "pricing model|booking system|menu|delivery route"),
    measures=tuple(m for m in MEASURES if m[0] in ("budget", "price", "discount", "team size", "delivery time",
                                                    "room capacity")),
    events=_pick(EVENTS, "kickoff|workshop|board meeting|open day|product demo|team lunch|career fair|concert"),
    roles=_pick(ROLES, "project lead|team coordinator|budget owner|event manager|intern|editor"),
    actions=_pick(ACTIONS, "send the report|book the venue|call the supplier|update the slides|email the client|"
                  "order the equipment|check the invoices|prepare the agenda"),
    speaker_counts=dict(meeting=(2, 3), lecture=(2, 2), interview=(2, 2), call=(2, 2)),
    extra_facts=(1, 2),
    second_action=0.0,
    chitchat=(1, 1),
)
COMPACT_UNNAMED = replace(COMPACT, name="compact-unnamed", named_decider=False)
COMPACT_HEARD = replace(COMPACT, name="compact-heard", decider_said=True)
WORLDS = {world.name: world for world in (FULL, COMPACT, COMPACT_UNNAMED, COMPACT_HEARD)}

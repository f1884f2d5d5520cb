"""Seeded generator of spoken documents (text side): speakers, facts, and the turns that say them.

A document is a list of turns ``(speaker, text)``: an opening with self-introductions (so every
name is *spoken*), chit-chat whose entities must not reach a summary, one turn per fact (sometimes
followed by an acknowledgement or, for a task, the owner's agreement), and a closing. Each fact has
an English canonical clause (what references say) and ``keys``: lowercase strings that occur in
what is spoken (for cross-lingual documents: in the English rendering ``transcript_en``).

Everything is drawn from ``random.Random(f"{seed}/{doc_id}/{attempt}")`` (string seeds are hashed
with SHA-512 by Python, so the result does not depend on ``PYTHONHASHSEED`` or the worker).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from speechsum.benchmark import lexicon as lx
from speechsum.benchmark import templates_en as en
from speechsum.benchmark import templates_xling as xl
from speechsum.benchmark.tts import Voice

GENRES = ("meeting", "lecture", "interview", "call")
FACT_KINDS = ("person", "decision", "number", "date", "place", "action")
XLING_LANGS = ("es", "de")
VOICES = {
    "en": ("en-us", "en", "en-us+f1", "en-us+f2", "en-us+f3", "en-us+f4", "en-us+m1", "en-us+m2",
           "en-us+m3", "en-us+m4", "en-us+m7", "en+f3", "en+m3"),
    "es": ("es", "es+f2", "es+f3", "es+m3", "es+m7", "es+f4"),
    "de": ("de", "de+f2", "de+f3", "de+m3", "de+m7", "de+f4"),
}
SPEAKER_COUNTS = lx.FULL.speaker_counts  # per genre, (min, max); a world may set its own


@dataclass(frozen=True)
class Speaker:
    name: str
    voice: Voice

    @property
    def first(self) -> str:
        return self.name.split()[0]


@dataclass(frozen=True)
class Turn:
    """One turn: ``text`` is exactly what is synthesised; ``text_en`` its English rendering."""

    speaker: int
    text: str
    text_en: str


@dataclass
class Document:
    doc_id: str
    split: str
    genre: str
    lang: str
    topic: str  # English phrase, e.g. "the website redesign"
    speakers: list[Speaker]
    facts: list[dict]  # {"kind", "text", "keys", "slots", "template"}
    turns: list[Turn] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    filler_entities: list[str] = field(default_factory=list)

    def transcript(self, english: bool = False) -> str:
        """One turn per line, ``"Full Name: text"``."""
        return "\n".join(f"{self.speakers[t.speaker].name}: {t.text_en if english else t.text}" for t in self.turns)

    def spoken_text(self, english: bool = False) -> str:
        """All turns without speaker labels (what the audio says), lowercased."""
        return " ".join(t.text_en if english else t.text for t in self.turns).lower()


def _cap(value: str) -> str:
    return value[0].upper() + value[1:]


def _with_caps(slots: dict[str, str]) -> dict[str, str]:
    return {**slots, **{f"{k}_cap": _cap(v) for k, v in slots.items() if isinstance(v, str) and v}}


def _round(value: int, high: int) -> int:
    step = 50 if high > 2000 else 5 if high > 200 else 1
    return max(step, value // step * step)


class _Builder:
    """Draws one document; ``lang`` "en" (in-domain) or a cross-lingual language."""

    def __init__(self, rng: random.Random, lang: str, unseen: bool, world: lx.World = lx.FULL):
        self.rng, self.lang, self.unseen, self.world = rng, lang, unseen, world
        self.xling = lang != "en"
        self.turns: list[Turn] = []
        self.filler: set[str] = set()

    # ---- facts ---------------------------------------------------------------------------------------
    def make_facts(self, speakers: list[Speaker], used_names: set[str], topic: dict[str, str]) -> list[dict]:
        rng, world = self.rng, self.world
        extra = rng.sample(["number", "date", "place", "person"], k=rng.randint(*world.extra_facts))
        kinds = ["decision", *extra]
        rng.shuffle(kinds)
        kinds += ["action"] + (["action"] if rng.random() < world.second_action and len(speakers) > 1 else [])
        facts, owners, tasks = [], [], []
        for kind in kinds:
            slots: dict[str, str] = {}
            spoken: dict[str, str] = {}
            if kind == "decision":
                if self.xling:
                    verb, obj = rng.choice(lx.MULTI_DECISION_VERBS), rng.choice(lx.MULTI_DECISION_OBJECTS)
                    slots = {"verb": verb["en"], "obj": obj["en"]}
                    spoken = {"verb": verb[self.lang], "obj": obj[self.lang]}
                else:
                    slots = {"verb": rng.choice(world.decision_verbs), "obj": rng.choice(world.decision_objects)}
                decider = rng.randrange(len(speakers))
                slots["decider"] = speakers[decider].name
                who = slots["decider"] if world.named_decider else "it was"
                fact = {"keys": [slots["verb"], slots["obj"]],
                        "text": f"{who} decided to {slots['verb']} the {slots['obj']}", "_by": decider}
            elif kind == "number":
                if self.xling:
                    entry = rng.choice(lx.MULTI_MEASURES)
                    measure, unit = entry["en"]
                    low_high = next(m[2] for m in lx.MEASURES if m[0] == measure)
                    spoken = dict(zip(("measure", "unit"), entry[self.lang]))
                else:
                    measure, unit, low_high = rng.choice(world.measures)
                if world.numbers:
                    value = str(rng.choice(world.numbers))
                else:
                    value = str(_round(rng.randint(*low_high), low_high[1]))
                slots = {"measure": measure, "unit": unit, "value": value}
                spoken["value"] = value
                fact = {"keys": [measure, value], "text": f"the {measure} is {value} {unit}"}
            elif kind in ("date", "place"):
                if self.xling:
                    event = rng.choice(lx.MULTI_EVENTS)
                    slots, spoken = {"event": event["en"]}, {"event": event[self.lang]}
                else:
                    slots = {"event": rng.choice(world.events)}
                if kind == "date":
                    month, day = rng.choice(world.months), rng.choice(world.days)
                    slots["date"] = f"{lx.MONTHS['en'][month]} {day}"
                    if self.xling:
                        spoken["date"] = (f"{day} de {lx.MONTHS['es'][month]}" if self.lang == "es"
                                          else f"{day}. {lx.MONTHS['de'][month]}")
                    fact = {"keys": [slots["event"], slots["date"].lower()],
                            "text": f"the {slots['event']} is on {slots['date']}"}
                else:
                    slots["city"] = spoken["city"] = rng.choice(world.cities)
                    fact = {"keys": [slots["event"], slots["city"].lower()],
                            "text": f"the {slots['event']} will take place in {slots['city']}"}
            elif kind == "person":
                name = self.new_name(used_names)
                if self.xling:
                    role = rng.choice(lx.MULTI_ROLES)
                    slots, spoken = {"role": role["en"]}, {"role": role[self.lang]}
                else:
                    slots = {"role": rng.choice(world.roles)}
                slots["name"] = spoken["name"] = name
                slots["topic"] = topic["en"]
                fact = {"keys": [name.lower(), slots["role"]], "text": f"{name} is the new {slots['role']}"}
            else:  # action
                choices = [i for i in range(len(speakers)) if i not in owners] or list(range(len(speakers)))
                owner = rng.choice(choices)
                owners.append(owner)
                pool = lx.MULTI_ACTIONS if self.xling else world.actions
                task = rng.choice([a for a in pool if a not in tasks])
                tasks.append(task)
                day = rng.randrange(len(lx.WEEKDAYS))
                slots = {"first": speakers[owner].first, "action": task["en"] if self.xling else task,
                         "day": lx.WEEKDAYS[day]}
                if self.xling:
                    spoken = {"first": speakers[owner].first, "action": task[self.lang],
                              "day": lx.WEEKDAYS_XL[self.lang][day]}
                fact = {"keys": [slots["first"].lower(), slots["action"], slots["day"].lower()],
                        "text": f"{slots['first']} will {slots['action']} by {slots['day']}", "_owner": owner}
            fact.update(kind=kind, slots=slots, _spoken={**slots, **spoken})
            facts.append(fact)
        return facts

    def new_name(self, used: set[str]) -> str:
        firsts = {n.split()[0] for n in used}
        lasts = {n.split()[1] for n in used}
        while True:
            first, last = self.rng.choice(self.world.first_names), self.rng.choice(self.world.last_names)
            if first not in firsts and last not in lasts:
                used.add(f"{first} {last}")
                return f"{first} {last}"

    # ---- turns ---------------------------------------------------------------------------------------
    def say(self, speaker: int, text: str, text_en: str) -> None:
        if self.turns and self.turns[-1].speaker == speaker:  # merge consecutive turns of one speaker
            last = self.turns.pop()
            text, text_en = f"{last.text} {text}", f"{last.text_en} {text_en}"
        self.turns.append(Turn(speaker, text, text_en))

    def say_choice(self, speaker: int, pool_spoken: list[str], pool_en: list[str], slots_en: dict | None = None,
                   **slots: str) -> None:
        index = self.rng.randrange(len(pool_spoken))
        english = pool_en[index % len(pool_en)].format(**(slots if slots_en is None else slots_en))
        self.say(speaker, pool_spoken[index].format(**slots), english)

    def say_decider(self, decider: int, count: int, name: str) -> None:
        """The next speaker answers a decision by the decider's name. The wording follows from the turn
        count, not from the random stream, so the rest of the document is drawn as without it."""
        spoken, english = (xl.DECIDER_ACKS[self.lang], xl.DECIDER_ACKS_EN) if self.xling else (en.DECIDER_ACKS,) * 2
        index = len(self.turns) % len(spoken)
        self.say((decider + 1) % count, spoken[index].format(name=name), english[index].format(name=name))

    def other(self, speakers: list[Speaker], not_this: int) -> int:
        return self.rng.choice([i for i in range(len(speakers)) if i != not_this])

    def fact_template(self, kind: str) -> tuple[str, str, str, bool]:
        """(template id, spoken template, English template, asks_owner)."""
        if self.xling:
            pool = xl.FACTS[self.lang][kind]
            index = self.rng.randrange(len(pool))
            tid, text, asks = pool[index]
            return tid, text, en.FACTS[kind][index][1], asks
        pool = [t for t in en.FACTS[kind] if (t[0].split("/")[1] in en.SEEN_IDS) != self.unseen]
        tid, text, asks = self.rng.choice(pool)
        return tid, text, text, asks


def generate_document(doc_id: str, split: str, seed: int, genre: str, lang: str = "en", unseen: bool = False,
                      attempt: int = 0, world: str = "full") -> Document:
    """Draw one document (text only). ``unseen`` uses only the unseen fact templates; ``world`` names the
    pools and document shape (``lexicon.WORLDS``: ``full``, the original generator, or ``compact``)."""
    if world not in lx.WORLDS:
        raise ValueError(f"unknown world {world!r}; expected one of {', '.join(lx.WORLDS)}")
    pools = lx.WORLDS[world]
    if genre not in GENRES:
        raise ValueError(f"unknown genre {genre!r}; expected one of {', '.join(GENRES)}")
    if lang != "en" and lang not in XLING_LANGS:
        raise ValueError(f"unsupported language {lang!r}; expected 'en' or one of {', '.join(XLING_LANGS)}")
    rng = random.Random(f"{seed}/{doc_id}/{attempt}")
    b = _Builder(rng, lang, unseen, pools)
    used: set[str] = set()
    count = rng.randint(*pools.speaker_counts[genre])
    voices = rng.sample(VOICES[lang], k=count)
    speakers = [Speaker(b.new_name(used), Voice(v, rng.randint(140, 180), rng.randint(35, 70))) for v in voices]
    if lang == "en":
        raw = rng.choice(pools.topics[genre])
        topic = {"en": f"the {raw}" if genre == "meeting" else raw}
    else:
        topic = rng.choice(lx.MULTI_TOPICS)
    facts = b.make_facts(speakers, used, topic)
    fact_values = {str(f["slots"].get(k, "")).lower() for f in facts for k in ("city", "value")}

    # opening + introductions
    opening_spoken = xl.OPENINGS[lang][genre] if b.xling else en.OPENINGS[genre]
    intros_spoken = xl.INTROS[lang] if b.xling else en.INTROS
    for index, speaker in enumerate(speakers):
        b.say_choice(index, intros_spoken, xl.INTROS_EN if b.xling else en.INTROS, name=speaker.name)
        if index == 0:
            b.say_choice(0, opening_spoken, en.OPENINGS[genre], {"topic": topic["en"]}, topic=topic[lang])
    # chit-chat with distractor entities
    chat_spoken = xl.CHITCHAT[lang] if b.xling else en.CHITCHAT
    chat_en = xl.CHITCHAT_EN if b.xling else en.CHITCHAT
    for index in rng.sample(range(len(chat_spoken)), k=rng.randint(*pools.chitchat)):
        filler = {"city": rng.choice([c for c in pools.cities if c.lower() not in fact_values]),
                  "pet": rng.choice(lx.PETS), "food": rng.choice(lx.FOODS), "hobby": rng.choice(lx.HOBBIES),
                  "number": str(rng.choice([n for n in pools.filler_numbers if str(n) not in fact_values]))}
        question, answer = chat_spoken[index]
        for slot in ("city", "pet", "number"):
            if "{" + slot + "}" in answer:
                b.filler.add(filler[slot].lower())
        asker = rng.randrange(count)
        b.say(asker, question.format(**filler), chat_en[index][0].format(**filler))
        b.say(b.other(speakers, asker), answer.format(**filler), chat_en[index][1].format(**filler))
    # facts
    acks = (xl.ACKS[lang], xl.ACKS_EN) if b.xling else (en.ACKS, en.ACKS)
    agrees = (xl.AGREES[lang], xl.AGREES_EN) if b.xling else (en.AGREES, en.AGREES)
    for fact in facts:
        tid, spoken_template, en_template, asks_owner = b.fact_template(fact["kind"])
        fact["template"] = tid
        owner = fact.get("_owner")
        speaker = fact.get("_by", rng.randrange(count))
        if owner is not None and (asks_owner or rng.random() < 0.7):
            speaker = b.other(speakers, owner)
        spoken_slots = _with_caps({**fact["_spoken"], "topic": topic[lang]})
        b.say(speaker, spoken_template.format(**spoken_slots), en_template.format(**_with_caps(fact["slots"])))
        if fact["kind"] == "decision" and pools.decider_said:
            b.say_decider(speaker, count, fact["slots"]["decider"])
        if asks_owner:
            b.say_choice(owner, *agrees)
        elif rng.random() < 0.35:
            b.say_choice(b.other(speakers, speaker), *acks)
    closing = xl.CLOSINGS[lang] if b.xling else en.CLOSINGS[genre]
    b.say_choice(0, closing, xl.CLOSINGS_EN if b.xling else closing)

    entities = set(b.filler)
    for name in used:
        entities.update([name.lower(), *name.lower().split()])
    for fact in facts:
        for slot in ("value", "date", "city", "day"):
            if slot in fact["slots"]:
                entities.add(fact["slots"][slot].lower())
    clean = [{k: v for k, v in f.items() if not k.startswith("_")} for f in facts]
    fact_words = {w.strip(".,").lower() for f in facts for w in f["text"].split()}
    return Document(doc_id, split, genre, lang, topic["en"], speakers, clean, b.turns, sorted(entities),
                    sorted(b.filler - fact_words))  # a day "14" said in chit-chat and in "March 14" is no filler

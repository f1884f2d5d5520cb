"""Instructions (six styles, seen and unseen paraphrases) and reference summaries rendered from facts.

Reference formats (what the fact judge's style check can rely on):

| style          | required facts | reference                                                          |
|----------------|----------------|--------------------------------------------------------------------|
| one_sentence   | all            | one sentence, no line break: "In this <genre> about <topic>, a, b, and c." |
| bullets        | all            | one line per fact, each starting with "- "                         |
| email          | all            | "Hi <recipient>,", blank line, prose, blank line, "Best regards"    |
| action_items   | action facts   | one line per action: "- <Owner>: <task> by <day>."                 |
| title_abstract | all            | "Title: <title>", blank line, "Abstract: <prose>"                  |
| question       | one fact       | one or two sentences answering it                                   |

Paraphrase ids ``<style>/<n>``: ``n`` < ``len(SEEN)`` are seen (train/val/test), the rest unseen.
"""

from __future__ import annotations

from dataclasses import dataclass

STYLES = ("one_sentence", "bullets", "email", "action_items", "title_abstract", "question")

# style -> (seen paraphrases, unseen paraphrases); slots {genre} {recipient}
PARAPHRASES: dict[str, tuple[list[str], list[str]]] = {
    "one_sentence": (
        ["Summarize this {genre} in one sentence.", "Give me a one-sentence summary of the {genre}.",
         "In a single sentence, what was this {genre} about?", "Write a one-line summary of the recording.",
         "Sum up the {genre} in one sentence, please."],
        ["Condense the whole {genre} into just one sentence.",
         "What's the gist of this audio? Answer with one sentence."],
    ),
    "bullets": (
        ["Summarize the {genre} as bullet points.", "List the key points of the {genre} as bullets.",
         "Give me the main points in a bulleted list.",
         "Write bullet points covering the important facts from this recording.",
         "Make a bullet-point summary of the {genre}."],
        ["Break the {genre} down into a short list of bullets, one fact each.",
         "I need the highlights as a dash list."],
    ),
    "email": (
        ["Write an email to {recipient} summarizing the {genre}.",
         "Draft a short email to {recipient} with the outcome of this {genre}.",
         "Compose an email for {recipient} that recaps the {genre}.",
         "Send {recipient} an email summary of what was said."],
        ["Please turn this recording into an email update addressed to {recipient}.",
         "{Recipient} missed the {genre}; write an email recap for them."],
    ),
    "action_items": (
        ["List the action items with their owners.",
         "What are the action items from this {genre}? Include who is responsible.",
         "Extract the to-do items and who owns each.", "Give me the follow-up tasks, with owners and deadlines."],
        ["Who has to do what after this {genre}? List the tasks.",
         "Pull out every task that was assigned, plus its owner."],
    ),
    "title_abstract": (
        ["Write a title and a short abstract for this {genre}.", "Give the recording a title and a brief abstract.",
         "Provide a title plus an abstract summarizing the {genre}.",
         "Create a headline and a short abstract for this audio."],
        ["Suggest a fitting title, then add a compact abstract of the {genre}.",
         "I want a title line and a paragraph-long abstract."],
    ),
}
# question style: fact kind -> (seen, unseen); slots are the fact's slots plus {genre}
QUESTIONS: dict[str, tuple[list[str], list[str]]] = {
    "decision": (["What did {decider} decide about the {obj}?", "What was decided about the {obj}?",
                  "What decision was made regarding the {obj}?"],
                 ["How did {decider} settle the question of the {obj}?"]),
    "number": (["What is the {measure}?", "What {measure} was mentioned in the {genre}?",
                "Which figure was given for the {measure}?"],
               ["Remind me of the {measure} figure."]),
    "date": (["When is the {event}?", "On what date is the {event}?", "What date was given for the {event}?"],
             ["Remind me when the {event} happens."]),
    "place": (["Where will the {event} take place?", "Where is the {event} going to be held?",
               "In which city is the {event}?"],
              ["Tell me the location of the {event}."]),
    "action": (["What does {first} need to do?", "What task was assigned to {first}?",
                "What is {first} responsible for after the {genre}?"],
               ["Which job did {first} take on, and by when?"]),
    "person": (["Who is the new {role}?", "Who was named {role}?", "Which person takes the {role} role?"],
               ["Tell me who became the {role}."]),
}


@dataclass(frozen=True)
class Instruction:
    """One instruction for a document: its text, style, paraphrase id and the facts it asks for."""

    text: str
    style: str
    template: str
    required_facts: list[int]
    recipient: str | None = None


def sentence(clause: str) -> str:
    """``"the budget is 4 dollars"`` -> ``"The budget is 4 dollars."``"""
    return clause[0].upper() + clause[1:] + ("" if clause.endswith((".", "?", "!")) else ".")


def _join(clauses: list[str]) -> str:
    if len(clauses) == 1:
        return clauses[0]
    return ", ".join(clauses[:-1]) + ", and " + clauses[-1]


def title_of(topic: str) -> str:
    """``"the website redesign"`` -> ``"Website Redesign"``"""
    words = topic.split()
    if words and words[0].lower() in ("the", "a", "an"):
        words = words[1:]
    return " ".join(w[0].upper() + w[1:] for w in words)


def render_reference(style: str, facts: list[dict], required: list[int], *, genre_noun: str, topic: str,
                     recipient: str | None = None) -> str:
    """The reference summary of ``facts[required]`` in ``style`` (formats in the module docstring)."""
    chosen = [facts[i] for i in required]
    clauses = [f["text"] for f in chosen]
    prose = " ".join(sentence(c) for c in clauses)
    if style == "one_sentence":
        return f"In this {genre_noun} about {topic}, {_join(clauses)}."
    if style == "bullets":
        return "\n".join("- " + sentence(c) for c in clauses)
    if style == "email":
        head = f"Hi {recipient},\n\nHere is a short summary of the {genre_noun} about {topic}."
        return f"{head} {prose}\n\nBest regards"
    if style == "action_items":
        return "\n".join(f"- {f['slots']['first']}: {f['slots']['action']} by {f['slots']['day']}." for f in chosen)
    if style == "title_abstract":
        return f"Title: {title_of(topic)}\n\nAbstract: This {genre_noun} is about {topic}. {prose}"
    if style == "question":
        return prose
    raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")


def choose_instructions(rng, facts: list[dict], count: int, *, genre_noun: str, first_names: list[str],
                        unseen: bool = False) -> list[Instruction]:
    """``count`` instructions of distinct styles (question facts distinct too), seen or unseen phrasing."""
    styles = list(STYLES)
    rng.shuffle(styles)
    picked: list[Instruction] = []
    asked: set[int] = set()
    for style in styles[: min(count, len(STYLES))]:
        if style == "question":
            options = [i for i in range(len(facts)) if i not in asked]
            index = rng.choice(options)
            asked.add(index)
            kind = facts[index]["kind"]
            pool = QUESTIONS[kind][1 if unseen else 0]
            number = rng.randrange(len(pool))
            offset = len(QUESTIONS[kind][0]) if unseen else 0
            text = pool[number].format(genre=genre_noun, **facts[index]["slots"])
            picked.append(Instruction(text, style, f"question/{kind}/{offset + number}", [index]))
            continue
        pool = PARAPHRASES[style][1 if unseen else 0]
        number = rng.randrange(len(pool))
        offset = len(PARAPHRASES[style][0]) if unseen else 0
        recipient = None
        fill = {"genre": genre_noun}
        if style == "email":
            target = rng.choice(["the team", "everyone", *first_names])
            recipient = "team" if target == "the team" else target
            fill.update(recipient=target, Recipient=target[0].upper() + target[1:])
        required = list(range(len(facts)))
        if style == "action_items":
            required = [i for i, f in enumerate(facts) if f["kind"] == "action"]
        text = pool[number].format(**fill)
        picked.append(Instruction(text, style, f"{style}/{offset + number}", required, recipient))
    return picked

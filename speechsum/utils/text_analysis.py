"""Words, numbers, named entities and repetition in plain English text.

The one implementation shared by the text metrics (:mod:`speechsum.evaluation.metrics`) and the offline
fact judge (:mod:`speechsum.judges.fact`). Pure Python, deterministic, no downloads.

Numbers are canonicalised so that equal values compare equal whatever their spelling:
``"40,000" == "40000" == "forty thousand" == "40k"``, ``"3.0" == "3" == "three" == "3rd"``,
``"2.5 million" == "2500000"``, ``"15%" -> "15 percent"``; an ordinal word counts as a number only right
after a month (``"March third" -> "march 3"``). Times stay ``"10:30"``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_ORDINALS = {w: i for i, w in enumerate(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
    "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth".split(), 1)}
_ORDINALS["thirtieth"] = 30
MONTHS = frozenset("january february march april may june july august september october november december"
                   .split())
WEEKDAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday".split())

# Capitalised words that are not names: function words, sentence starters, words of summary styles
# (greetings, sign-offs, headings) and frequent meeting vocabulary. Lower-case forms.
STOPWORDS = frozenset("""
a about above after again against all also although always am among an and another any anyone anything
are around as at away back be because been before being below between both but by can could did do does
doing done down during each either else enough even ever every everyone everything few for from further
had has have having he her here hers herself him himself his how however i if in into is it its itself
just last least less let like many may me meanwhile might more most much must my myself neither never
next no nobody none nor not nothing now of off often on once one only or other others otherwise our ours
ourselves out over own per perhaps please rather same several she should since so some someone something
soon still such than that the their theirs them themselves then there therefore these they this those
though through thus to today together tomorrow too toward towards under until up upon us very via was we
were what whatever when where whether which while who whom whose why will with within without would yes
yesterday yet you your yours yourself first second third finally overall later earlier instead besides
hi hello dear hey greetings thanks thank cheers regards best kind warm sincerely yours wishes many
subject title abstract summary summaries answer question note notes key points point action actions item
items owner owners decision decisions decided agreed agree approved approve discussed discuss discussion
meeting meetings call calls lecture lectures interview interviews podcast voicemail team teams group
everyone speaker speakers participants attendees budget project projects plan plans update updates
report reports deadline deadlines launch review reviews schedule scheduled follow followup next steps
step topic topics goal goals result results outcome outcomes recap overview highlights takeaways
send book prepare confirm share check contact draft finish organise organize set call email write
ask arrange order update book buy create fix move present call visit will should must need needs
good great morning afternoon evening week weeks month months year years day days
mr mrs ms dr prof ok okay additionally moreover furthermore lastly firstly secondly meanwhile re
date time location place due agenda minutes attendee discussed reviewed confirmed scheduled planned
proposed suggested explained mentioned noted asked said announced presented sent booked prepared
shared checked contacted drafted finished organised organized arranged ordered created fixed moved
visited wants wanted plans planned expects expected
sorry well oh ah um uh hmm right sure alright anyway actually basically honestly really great nice cool
welcome hopefully unfortunately luckily sadly
""".split())

_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+", re.MULTILINE)
_TOKEN = re.compile(
    r"(?P<time>\b\d{1,2}:\d{2}\b)"
    r"|[$€£]?(?P<num>\d+(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?P<suffix>%|k\b|st\b|nd\b|rd\b|th\b|am\b|pm\b)?"
    r"|(?P<word>[^\W\d_][^\W_]*)"
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[^\W_a-z])")


@dataclass(frozen=True)
class Token:
    """One canonical token. ``kind`` is ``"word"`` or ``"number"``; ``text`` is lower-case/canonical;
    ``capitalised`` tells whether the surface form began with an upper-case letter; ``start``/``end``
    are character offsets of the surface form (a merged number phrase spans all its words)."""

    text: str
    kind: str
    capitalised: bool
    start: int
    end: int
    lone_word_one: bool = False  # the word "one" on its own (a pronoun more often than a number)


def _canonical(value: Decimal) -> str:
    return format(value.normalize(), "f")


# invisible format characters (Unicode category Cf): zero-width space/joiners, soft hyphen, word joiner, BOM,
# direction marks. Text copied from the web holds them inside words ("Par\u00adis"), which split it in two
_FORMAT = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")


def plain(text: str) -> str:
    """``text`` as its words are compared: NFKC (full-width digits, ligatures, composed accents) and without
    invisible format characters, so "Par\u200bis" or "Par\u00adis" reads as the "Paris" it shows."""
    return _FORMAT.sub("", unicodedata.normalize("NFKC", text))


def _raw_tokens(text: str) -> list[Token]:
    text = plain(text)
    out: list[Token] = []
    for m in _TOKEN.finditer(text):
        if m.group("time"):
            out.append(Token(m.group("time"), "number", False, m.start(), m.end()))
        elif m.group("num"):
            value = Decimal(m.group("num").replace(",", ""))
            suffix = (m.group("suffix") or "").lower()
            if suffix == "k":
                value *= 1000
            out.append(Token(_canonical(value), "number", False, m.start(), m.end()))
            if suffix == "%":
                out.append(Token("percent", "word", False, m.end() - 1, m.end()))
        else:
            word = m.group("word")
            out.append(Token(word.lower(), "word", word[0].isupper(), m.start(), m.end()))
    return out


def _number_word_value(words: list[str]) -> int:
    total, current = 0, 0
    for w in words:
        if w in _UNITS or w in _TENS:
            current += _UNITS.get(w, _TENS.get(w, 0))
        elif w in _ORDINALS:
            current += _ORDINALS[w]
        elif w == "hundred":
            current = (current or 1) * 100
        else:
            total += (current or 1) * _SCALES[w]
            current = 0
    return total + current


def tokens(text: str) -> list[Token]:
    """Canonical tokens of ``text``: words lower-cased, number phrases merged into one number token."""
    raw = _raw_tokens(text)
    out: list[Token] = []
    i = 0
    while i < len(raw):
        tok = raw[i]
        if tok.kind == "number" and ":" not in tok.text and i + 1 < len(raw) and raw[i + 1].text in _SCALES \
                and raw[i + 1].text != "hundred":
            value = Decimal(tok.text) * _SCALES[raw[i + 1].text]
            out.append(Token(_canonical(value), "number", False, tok.start, raw[i + 1].end))
            i += 2
            continue
        if tok.kind == "word" and (tok.text in _UNITS or tok.text in _TENS or tok.text in _SCALES
                                   or (tok.text in _ORDINALS and out and out[-1].text in MONTHS)):
            j, prev_kind = i, None
            group: list[str] = []
            while j < len(raw) and raw[j].kind == "word":
                w = raw[j].text
                if w == "and" and prev_kind == "scale" and j + 1 < len(raw) \
                        and (raw[j + 1].text in _UNITS or raw[j + 1].text in _TENS):
                    j += 1  # "one hundred and twenty"
                    continue
                kind = ("unit" if w in _UNITS else "tens" if w in _TENS else "scale" if w in _SCALES
                        else "ord" if w in _ORDINALS and (group or (out and out[-1].text in MONTHS)) else None)
                if kind is None or prev_kind == "ord" or (kind in ("unit", "ord") and prev_kind == "unit") \
                        or (kind == "tens" and prev_kind in ("unit", "tens")):
                    break
                group.append(w)
                prev_kind = kind
                j += 1
                if kind == "ord":
                    break
            if group and not (len(group) == 1 and group[0] in _SCALES):
                lone_one = group == ["one"]
                out.append(Token(str(_number_word_value(group)), "number", raw[i].capitalised,
                                 raw[i].start, raw[j - 1].end, lone_word_one=lone_one))
                i = j
                continue
        out.append(tok)
        i += 1
    return out


def strip_list_markers(text: str) -> str:
    """Remove bullet and numbered-list markers ("- ", "* ", "• ", "1. ", "2) ") at line starts."""
    return _LIST_MARKER.sub("", text)


def normalise_text(text: str) -> str:
    """Lower-case, punctuation-free, single-spaced text with canonical numbers (list markers removed).

    ``normalise_text("- Budget: €40,000 (up 5%)!") == "budget 40000 up 5 percent"``."""
    return " ".join(t.text for t in tokens(strip_list_markers(text)))


def contains_phrase(normalised_text: str, phrase: str) -> bool:
    """Whether ``phrase`` (normalised here) occurs in ``normalised_text`` on whole-token boundaries."""
    key = normalise_text(phrase)
    return bool(key) and f" {key} " in f" {normalised_text} "


def count_words(text: str) -> int:
    """Number of whitespace-separated pieces that contain a letter or digit ("40,000" is one word)."""
    return sum(1 for piece in text.split() if any(ch.isalnum() for ch in piece))


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: every non-empty line is split after ``.``, ``!`` or ``?`` followed by
    white space and an upper-case letter, digit or opening quote ("3.5" and "e.g. this" stay whole)."""
    out: list[str] = []
    for line in text.splitlines():
        out.extend(s.strip() for s in _SENTENCE_END.split(line.strip()) if s.strip())
    return out


def repetition_rate(text: str, n: int = 3) -> float:
    """Fraction of repeated word n-grams: ``1 - #distinct n-grams / #n-grams`` over the normalised word
    sequence of the whole text (n-grams may cross sentence/line boundaries); 0.0 when there are fewer
    than ``n`` words. ``repetition_rate("a b c a b c", 3) == 1 - 3/4 == 0.25``."""
    if n < 1:
        raise ValueError(f"repetition_rate: n must be >= 1, got {n}")
    words = normalise_text(text).split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def repeated_units(text: str) -> int:
    """How many sentences/bullets repeat an earlier one verbatim (after normalisation)."""
    seen: set[str] = set()
    repeats = 0
    for sentence in split_sentences(strip_list_markers(text)):
        key = normalise_text(sentence)
        if key in seen:
            repeats += 1
        elif key:
            seen.add(key)
    return repeats


@dataclass(frozen=True)
class Entity:
    """A named entity in canonical form: ``kind`` is "number", "date" (month/weekday) or "name"."""

    text: str
    kind: str


@dataclass(frozen=True)
class Vocabulary:
    """What a source says: its lower-case words and its canonical numbers."""

    words: frozenset[str]
    numbers: frozenset[str]


def vocabulary(*texts: str) -> Vocabulary:
    """The words and numbers of all ``texts`` together (entity lists, transcripts, instructions…)."""
    words: set[str] = set()
    numbers: set[str] = set()
    for text in texts:
        for tok in tokens(text):
            (numbers if tok.kind == "number" else words).add(tok.text)
    return Vocabulary(frozenset(words), frozenset(numbers))


def extract_entities(text: str) -> list[Entity]:
    """Named entities of ``text`` in order of appearance, deduplicated.

    - numbers (canonical, see module docstring; the lone word "one" and list markers are ignored);
    - dates: month and weekday names in any case (except lower-case "may");
    - names: runs of adjacent capitalised words (only white space between them) after dropping
      :data:`STOPWORDS` — this handles sentence-initial capitals ("The", "Next") and headings — and
      dropping words that the same text also writes in lower case (title-case headings)."""
    toks = tokens(strip_list_markers(text))
    written_lower = {t.text for t in toks if t.kind == "word" and not t.capitalised}
    found: list[Entity] = []
    run: list[Token] = []

    def close_run() -> None:
        if run:
            found.append(Entity(" ".join(t.text for t in run), "name"))
            run.clear()

    source = plain(strip_list_markers(text))
    for tok in toks:
        if tok.kind == "number":
            close_run()
            if not tok.lone_word_one:
                found.append(Entity(tok.text, "number"))
        elif (tok.text in MONTHS and (tok.capitalised or tok.text != "may")) or tok.text in WEEKDAYS:
            close_run()
            found.append(Entity(tok.text, "date"))
        elif tok.capitalised and tok.text not in STOPWORDS and tok.text not in written_lower:
            gap = source[run[-1].end:tok.start] if run else ""
            if gap.strip() or "\n" in gap:
                close_run()
            run.append(tok)
        else:
            close_run()
    close_run()
    return list(dict.fromkeys(found))


def unknown_entities(text: str, known: Vocabulary) -> list[str]:
    """Entities of ``text`` (see :func:`extract_entities`) that ``known`` does not contain: a number
    whose canonical value is not among ``known.numbers``; a date or name with any word not among
    ``known.words``. Canonical strings, in order of appearance."""
    out = []
    for entity in extract_entities(text):
        if entity.kind == "number":
            missing = entity.text not in known.numbers
        else:
            missing = any(word not in known.words for word in entity.text.split())
        if missing:
            out.append(entity.text)
    return out

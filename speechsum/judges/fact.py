"""The offline fact judge: scores a summary 1–7 against the facts its document is known to hold.

It stands in for the paper's GPT-4.1 rubric judge (accuracy, hallucination, repetition, style,
instruction following) on the bundled benchmark, where every document carries ``meta`` with its facts
(schema: the benchmark manifest's ``meta`` — ``facts``, ``required_facts``, ``entities``, ``speakers``,
``style``). Pure Python, deterministic, fast; no model, no network.

What it measures, for a summary ``s``:

- **recall** = recalled required facts / required facts. A fact is recalled iff the normalised summary
  (lower-case, punctuation-free, numbers canonical: see :mod:`speechsum.utils.text_analysis`)
  contains every one of the fact's ``keys`` on whole-word boundaries. No required facts → recall 1.
- **hallucinated**: named entities of ``s`` (capitalised names, places, numbers, months/weekdays) that the
  document never says: not among ``meta["entities"]``, ``meta["speakers"]``, the facts' texts and keys,
  ``meta["topic"]``, ``meta["recipient"]``, nor the instruction (``instruction=`` argument or
  ``meta["instruction"]``).
- **repetition** = repeated word-trigram rate (``1 - distinct/total``), plus whether any sentence or bullet
  repeats an earlier one verbatim.
- **style_ok**: the form ``meta["style"]`` asks for (see :func:`check_style`).
- **length**: empty, or more words than ``max_words[style]``.

Score (the formula; every weight is a field of :class:`FactJudge`)::

    score = 1 + 6 · recall · f_hallucination · f_repetition · f_form
    f_hallucination = 1 / (1 + 0.5·#hallucinated)                    hallucination_weight
    f_repetition    = max(0, 1 − 1·max(0, repetition − 0.1))         repetition_weight, repetition_tolerance
                      · (0.9 if a sentence/bullet repeats verbatim)  repeated_unit_factor
    f_form          = (0.75 if the style is not followed)            style_factor
                      · (0.85 if more words than max_words[style])   overlong_factor
    rounded to 4 decimals; an empty summary scores exactly 1.

Recall sets the scale and every defect scales it down (v1 subtracted fixed penalties, which pinned
partial answers with two defects at the floor 1 and made them indistinguishable). So: the gold
reference scores 7; a summary with no required fact scores 1 whatever else it does (another
document's reference); all facts in the wrong style 5.5; all facts plus one invented entity 5;
all facts said twice ≈ 4.3–4.8; half the facts 4; half plus one invented entity 3; and so on
(calibration on benchmark documents: ``tests/judges/test_fact_calibration.py``, docs/evaluation.md).

``compare(a, b)`` returns +1 when ``score(a) - score(b) > tie_margin`` (0.25), -1 when it is below
``-tie_margin``, else 0 (a tie: DPO pair builders skip it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from speechsum.utils.text_analysis import (
    STOPWORDS,
    contains_phrase,
    count_words,
    normalise_text,
    repeated_units,
    repetition_rate,
    split_sentences,
    strip_list_markers,
    tokens,
    unknown_entities,
    vocabulary,
)

STYLES = ("one_sentence", "bullets", "email", "action_items", "title_abstract", "question")
DEFAULT_MAX_WORDS = {"one_sentence": 60, "question": 60, "bullets": 200, "email": 250,
                     "action_items": 200, "title_abstract": 200}
_BULLET = re.compile(r"^\s*[-*•]\s+\S")
_GREETING = re.compile(r"^\s*(?:hi|hello|dear|hey)\b[^,\n]{0,60},", re.IGNORECASE)
_SIGN_OFF = re.compile(r"^\s*(?:best|kind regards|warm regards|regards|thanks|thank you|many thanks|cheers|"
                       r"sincerely|all the best|yours)\b", re.IGNORECASE)
_TITLE = re.compile(r"^\s*(?:#+\s*)?\**title\**\s*:\**\s*\S", re.IGNORECASE)
_ABSTRACT_LABEL = re.compile(r"^\s*(?:#+\s*)?\**abstract\**\s*:\**", re.IGNORECASE | re.MULTILINE)


@dataclass
class FactVerdict:
    """The judge's verdict: ``score`` in [1, 7]; ``recall`` in [0, 1]; ``hallucinated`` canonical entity
    strings; ``repetition`` repeated-trigram rate in [0, 1]; ``style_ok``; ``reasons`` in words."""

    score: float
    recall: float
    hallucinated: list[str]
    repetition: float
    style_ok: bool
    reasons: str


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _strings(value) -> list[str]:
    """The strings in an optional meta value (a string, a list, or a dict of language → string)."""
    if isinstance(value, str):
        return [value]
    values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [v for v in values if isinstance(v, str)]


def _has_owner(item: str, person_words: frozenset[str]) -> bool:
    for tok in tokens(item):
        if tok.kind == "word" and (tok.text in person_words or (tok.capitalised and tok.text not in STOPWORDS)):
            return True
    return False


def check_style(summary: str, style: str | None, person_words: frozenset[str] = frozenset()) -> tuple[bool, str]:
    """Whether ``summary`` has the form ``style`` asks for, and why not.

    - one_sentence: one non-empty line holding one sentence;
    - bullets: at least two lines starting with "- ", "* " or "• ";
    - email: first line "Hi/Hello/Dear/Hey NAME,", a sign-off (Best, Regards, Thanks, Cheers, Sincerely…)
      among the last three lines, and at least 3 words of body between them;
    - action_items: at least one item line (list markers and "Heading:" lines aside), every item naming an
      owner (a speaker/person word of the document, or a capitalised non-stopword name);
    - title_abstract: a "Title: …" line and an abstract of at least 5 words (an "Abstract:" label is optional);
    - question: a direct answer: at most 3 sentences, no bullet list, no e-mail greeting;
    - any other style (or none): not checked.
    """
    lines = _lines(summary)
    if style == "one_sentence":
        n = len(split_sentences(summary))
        return (len(lines) == 1 and n == 1), f"{len(lines)} line(s), {n} sentence(s) for one sentence"
    if style == "bullets":
        n = sum(bool(_BULLET.match(line)) for line in lines)
        return n >= 2, f"{n} bullet line(s)"
    if style == "email":
        greeting = _GREETING.match(lines[0]) if lines else None
        sign = next((i for i in range(len(lines) - 1, max(len(lines) - 4, 0), -1) if _SIGN_OFF.match(lines[i])),
                    None)
        if not greeting:
            return False, "e-mail without a 'Hi/Hello/Dear NAME,' greeting"
        if sign is None:
            return False, "e-mail without a sign-off"
        body = lines[0][greeting.end():] + "\n" + "\n".join(lines[1:sign])
        return count_words(body) >= 3, f"e-mail body of {count_words(body)} word(s)"
    if style == "action_items":
        items = [ln for ln in lines if not (ln.rstrip().endswith(":") and count_words(ln) <= 5)]
        orphans = [ln.strip() for ln in items if not _has_owner(strip_list_markers(ln), person_words)]
        if not items:
            return False, "no action items"
        return not orphans, f"{len(items)} item(s), {len(orphans)} without an owner"
    if style == "title_abstract":
        title = next((i for i, line in enumerate(lines) if _TITLE.match(line)), None)
        if title is None:
            return False, "no 'Title:' line"
        abstract = _ABSTRACT_LABEL.sub("", "\n".join(lines[:title] + lines[title + 1:]))
        return count_words(abstract) >= 5, f"abstract of {count_words(abstract)} word(s)"
    if style == "question":
        n = len(split_sentences(summary))
        bullets = sum(bool(_BULLET.match(line)) for line in lines)
        ok = n <= 3 and bullets < 2 and not (lines and _GREETING.match(lines[0]))
        return ok, f"answer of {n} sentence(s), {bullets} bullet line(s)"
    return True, f"style {style!r} not checked"


def recalls(normalised_summary: str, fact: dict) -> bool:
    """Whether a summary (already :func:`normalise_text`-ed) recalls ``fact``: it contains every key."""
    return all(contains_phrase(normalised_summary, key) for key in fact["keys"])


def fact_meta_problem(meta: object) -> str | None:
    """What of a manifest row's ``meta`` the fact judge cannot read, naming the field (``meta.facts[2].keys``);
    None when all is. A string where a list belongs was read letter by letter (keys ``"maria"`` as the keys
    m, a, r, i, a), a number where text belongs failed deep in the text analysis."""
    if not isinstance(meta, dict):
        return f"meta must be a dict, got {type(meta).__name__}"
    for name in ("facts", "required_facts", "entities"):
        if not isinstance(meta.get(name), list):
            return f"lacks list field '{name}' in its meta (benchmark manifests carry it; see speechsum/benchmark)"
    for i, fact in enumerate(meta["facts"]):
        keys = fact.get("keys") if isinstance(fact, dict) else None
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and normalise_text(k) for k in keys):
            return f"fact {i} needs non-empty string 'keys' (a list: meta.facts[{i}].keys), got {keys!r}"
        wrong = [name for name in ("text", "kind") if not isinstance(fact.get(name, ""), str)]
        if wrong:
            return f"meta.facts[{i}].{wrong[0]} must be text, got {fact[wrong[0]]!r}"
    for index in meta["required_facts"]:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(meta["facts"]):
            return f"required_facts has {index!r}, not an index into its {len(meta['facts'])} facts"
    for name in ("entities", "speakers"):
        values = meta.get(name, [])
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            return f"meta.{name} must be a list of strings, got {values!r}"
    wrong = [name for name in ("style", "instruction") if not isinstance(meta.get(name), str | None)]
    if wrong:
        return f"meta.{wrong[0]} must be text, got {meta[wrong[0]]!r}"
    return None


def judged_facts(meta: dict) -> tuple[list[dict], list[int]]:
    """``(facts, required_facts)`` of a manifest row's ``meta``; a ValueError says what is wrong
    (:func:`fact_meta_problem`)."""
    if problem := fact_meta_problem(meta):
        doc = meta.get("doc_id", "?") if isinstance(meta, dict) else "?"
        raise ValueError(f"fact judge: document {doc!r} {problem}")
    return meta["facts"], meta["required_facts"]


@dataclass
class FactJudge:
    """Offline 1–7 judge over a document's known facts; the formula is in the module docstring."""

    name: str = "fact-judge-v2"
    hallucination_weight: float = 0.5
    repetition_weight: float = 1.0
    repetition_tolerance: float = 0.1
    repeated_unit_factor: float = 0.9
    style_factor: float = 0.75
    overlong_factor: float = 0.85
    tie_margin: float = 0.25
    max_words: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_WORDS))
    default_max_words: int = 250

    def score(self, summary: str, meta: dict, instruction: str | None = None) -> FactVerdict:
        """Judge ``summary`` against ``meta``; ``instruction`` (else ``meta["instruction"]``) counts as
        known text, so a recipient it names is no hallucination."""
        facts, required = judged_facts(meta)
        style = meta.get("style")
        if count_words(summary) == 0:
            recall = 1.0 if not required else 0.0
            return FactVerdict(1.0, recall, [], 0.0, False, "empty summary")
        text = normalise_text(summary)
        missing = [i for i in required if not recalls(text, facts[i])]
        recall = 1.0 if not required else 1.0 - len(missing) / len(required)
        people = [f.get("text", "") for f in facts if f.get("kind") == "person"]
        known = vocabulary(*meta["entities"], *meta.get("speakers", []), *(f.get("text", "") for f in facts),
                           *(k for f in facts for k in f["keys"]), *_strings(meta.get("topic")),
                           *_strings(meta.get("recipient")), instruction or meta.get("instruction") or "")
        hallucinated = unknown_entities(summary, known)
        repetition = repetition_rate(summary, 3)
        repeats = repeated_units(summary)
        person_words = vocabulary(*meta.get("speakers", []), *people).words - STOPWORDS
        style_ok, style_reason = check_style(summary, style, person_words)
        words, limit = count_words(summary), self.max_words.get(style or "", self.default_max_words)

        f_hallucination = 1.0 / (1.0 + self.hallucination_weight * len(hallucinated))
        f_repetition = max(0.0, 1.0 - self.repetition_weight * max(0.0, repetition - self.repetition_tolerance))
        f_repetition *= self.repeated_unit_factor if repeats > 0 else 1.0
        f_form = (1.0 if style_ok else self.style_factor) * (self.overlong_factor if words > limit else 1.0)
        score = round(1.0 + 6.0 * recall * f_hallucination * f_repetition * f_form, 4)

        reasons = [f"recall {len(required) - len(missing)}/{len(required)}"
                   + (f" (missing: {'; '.join(facts[i].get('text') or str(facts[i]['keys']) for i in missing)})"
                      if missing else "")]
        reasons.append(f"hallucinated: {', '.join(hallucinated)}" if hallucinated else "no hallucinated entities")
        reasons.append(f"repetition {repetition:.2f}" + (f", {repeats} repeated sentence(s)" if repeats else ""))
        reasons.append(f"style {style}: {'ok' if style_ok else 'wrong'} ({style_reason})")
        reasons.append(f"{words} words" + (f" > {limit} (too long)" if words > limit else ""))
        return FactVerdict(score, recall, hallucinated, repetition, style_ok, "; ".join(reasons))

    def compare(self, a: str, b: str, meta: dict, instruction: str | None = None) -> int:
        """+1 if ``a`` scores more than ``tie_margin`` above ``b``, -1 if below by more, else 0 (tie)."""
        return self.preference(self.score(a, meta, instruction), self.score(b, meta, instruction))

    def preference(self, a: FactVerdict, b: FactVerdict) -> int:
        """``compare`` on verdicts already computed: +1 / -1 beyond ``tie_margin``, else 0."""
        diff = a.score - b.score
        return 0 if abs(diff) <= self.tie_margin else (1 if diff > 0 else -1)

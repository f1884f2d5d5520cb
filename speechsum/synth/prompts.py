"""What ``speechsum synth`` asks the LLM and how it reads the answers.

Three versioned prompts in ``speechsum/prompts/`` — ``synth_queries_v1.md`` (write K queries),
``synth_rate_v1.md`` (importance 1–10 per query), ``synth_summary_v1.md`` (answer one query). A
prompt's version is its name plus a hash of the file, part of every cache key: editing a prompt
never reuses answers written with the old text. Each parser raises ``ValueError`` on a malformed
answer (so :class:`speechsum.utils.chat_json.ChatJsonAsker` asks again), never guesses.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from speechsum.data.text_checks import blank, control_character
from speechsum.utils.answers import whole_number
from speechsum.utils.io import PROMPTS_DIR
from speechsum.utils.remote import first_json_object

# Query styles (name → what the LLM is told it means); the paper lists short summaries, bullet
# points, e-mails, action items and focused questions among others.
STYLES: dict[str, str] = {
    "short_summary": "a short summary of the whole recording (one to three sentences)",
    "bullets": "the key points as a bullet list",
    "email": "an e-mail (with a subject line) that tells people who missed it what happened",
    "action_items": "the action items: who does what, by when",
    "title_abstract": "a title and a short abstract",
    "focused_question": "a focused question about one detail (who, what, when, how much, why)",
    "decisions": "the decisions that were made and their reasons",
    "audience": "a summary for a stated audience (a manager, a newcomer, a customer) or in a stated tone",
}


@dataclass(frozen=True)
class Prompt:
    """A system prompt read from ``speechsum/prompts/<name>.md``; ``version`` = name + sha256[:8]."""

    name: str
    text: str
    version: str


def load_prompt(name: str) -> Prompt:
    text = (PROMPTS_DIR / f"{name}.md").read_text(encoding="utf-8")
    return Prompt(name, text, f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:8]}")


QUERIES_PROMPT = load_prompt("synth_queries_v1")
RATE_PROMPT = load_prompt("synth_rate_v1")
SUMMARY_PROMPT = load_prompt("synth_summary_v1")
PROMPT_VERSIONS = {p.name: p.version for p in (QUERIES_PROMPT, RATE_PROMPT, SUMMARY_PROMPT)}


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


# ---- messages -------------------------------------------------------------------------------


def queries_messages(transcript: str, num_queries: int, styles: list[str]) -> list[dict[str, str]]:
    style_lines = "\n".join(f"- {name}: {STYLES[name]}" for name in styles)
    user = f"STYLES:\n{style_lines}\n\nNUMBER OF QUERIES: {num_queries}\n\nTRANSCRIPT:\n{transcript.strip()}"
    return [{"role": "system", "content": QUERIES_PROMPT.text}, {"role": "user", "content": user}]


def rate_messages(transcript: str, queries: list[dict]) -> list[dict[str, str]]:
    numbered = "\n".join(f"{i}. {q['query']}" for i, q in enumerate(queries, start=1))
    user = f"TRANSCRIPT:\n{transcript.strip()}\n\nQUERIES:\n{numbered}"
    return [{"role": "system", "content": RATE_PROMPT.text}, {"role": "user", "content": user}]


def summary_messages(transcript: str, query: str) -> list[dict[str, str]]:
    user = f"TRANSCRIPT:\n{transcript.strip()}\n\nQUERY:\n{query.strip()}"
    return [{"role": "system", "content": SUMMARY_PROMPT.text}, {"role": "user", "content": user}]


# ---- parsers --------------------------------------------------------------------------------


def parse_queries(text: str, num_queries: int, styles: list[str]) -> list[dict]:
    """``[{"style", "query"}] * num_queries`` from ``{"queries": [...]}``: styles from ``styles``,
    non-empty distinct queries (case/punctuation-insensitive); extra queries are dropped."""
    return checked_queries(first_json_object(text).get("queries"), num_queries, styles)


def checked_queries(items: object, num_queries: int, styles: list[str]) -> list[dict]:
    """:func:`parse_queries`' checks on the ``queries`` value itself (an answer's, or a cached one)."""
    if not isinstance(items, list):
        raise ValueError("no 'queries' list in the answer")
    queries, seen = [], set()
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("query"), str) or not isinstance(item.get("style"), str):
            raise ValueError(f"query {number}: expected {{'style': str, 'query': str}}, got {str(item)[:80]!r}")
        style, query = item["style"].strip().lower(), " ".join(item["query"].split())
        if problem := control_character(query):  # the output manifest's loader would refuse the line
            raise ValueError(f"query {number} {problem}")
        if style not in styles:
            raise ValueError(f"query {number}: unknown style {style!r} (allowed: {', '.join(styles)})")
        if _normalised(query) and _normalised(query) not in seen:
            seen.add(_normalised(query))
            queries.append({"style": style, "query": query})
    if len(queries) < num_queries:
        raise ValueError(f"{len(queries)} distinct non-empty queries, {num_queries} asked for")
    return queries[:num_queries]


def parse_scores(text: str, num_queries: int) -> list[int]:
    """``{"scores": [...]}``: exactly ``num_queries`` integers in 1..10 (:func:`whole_number`)."""
    return checked_scores(first_json_object(text).get("scores"), num_queries)


def checked_scores(scores: object, num_queries: int) -> list[int]:
    """:func:`parse_scores`' checks on the ``scores`` value itself (an answer's, or a cached one)."""
    if not isinstance(scores, list) or len(scores) != num_queries:
        raise ValueError(f"expected 'scores' with {num_queries} integers, got {str(scores)[:80]!r}")
    return [whole_number(score, f"scores[{number}]", 1, 10) for number, score in enumerate(scores)]


def parse_summary(text: str) -> str:
    """``{"summary": "..."}`` with a string that shows something and holds no control character
    (:mod:`speechsum.data.text_checks`: the output manifest must load)."""
    return checked_summary(first_json_object(text).get("summary"))


def checked_summary(summary: object) -> str:
    """:func:`parse_summary`'s checks on the ``summary`` value itself (an answer's, or a cached one)."""
    if not isinstance(summary, str) or blank(summary):
        raise ValueError("no non-empty 'summary' string in the answer")
    if problem := control_character(summary):  # the output manifest's loader would refuse the line
        raise ValueError(f"the summary {problem}")
    return summary.strip()

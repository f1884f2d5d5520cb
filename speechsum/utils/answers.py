"""Reading the final answer out of an LLM's reply text, as real judge and generator models write it.

Models wrap the JSON object a prompt asks for in many ways: ```json fences, prose before or after,
an explanation holding more braces, curly quotes instead of straight ones, and — reasoning models
(Qwen3, DeepSeek-R1, …) — a ``<think>…</think>`` block before the answer that may itself hold numbers
or JSON-looking text. :func:`final_answer` drops the reasoning (and refuses an answer whose reasoning
never closed: it was cut before the answer); :func:`first_json_object` finds the answer's JSON object.
Nothing is ever guessed: every doubt raises (a ``ValueError``, so
:meth:`speechsum.utils.chat_json.ChatJsonAsker.ask` asks again and counts it).
"""

from __future__ import annotations

import json
import math
import re


class AmbiguousObject(ValueError):
    """A JSON object giving one key twice with different values (``{"score": 2, …, "score": 7}``)."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """``dict(pairs)``, refusing a key given twice with different values: a JSON parser keeps the last
    silently, so ``{"winner": "A", "winner": "B"}`` was read as B."""
    found: dict = {}
    for key, value in pairs:
        if key in found and json.dumps(found[key], sort_keys=True) != json.dumps(value, sort_keys=True):
            raise AmbiguousObject(f"ambiguous answer: the key {key!r} is given twice with different values "
                                  f"({json.dumps(found[key])}, {json.dumps(value)})")
        found[key] = value
    return found


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)
_REASONING_OPEN = re.compile(r"<(?:think|thinking|reasoning)>", re.IGNORECASE)
_REASONING_CLOSE = re.compile(r"</(?:think|thinking|reasoning)>", re.IGNORECASE)
_CURLY_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"'})


def final_answer(text: str | None, error: type[ValueError] = ValueError) -> str:
    """``text`` without its reasoning: what follows the last ``</think>`` (or ``</thinking>``,
    ``</reasoning>``; templates that open the block in the prompt send only the closing tag).
    Raises ``error`` when a reasoning block opens and never closes (no final answer)."""
    text = text or ""
    closes = list(_REASONING_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    if (opened := _REASONING_OPEN.search(text)) is not None:
        raise error(f"the reasoning block {opened.group(0)} never closes: no final answer (cut at max_tokens?)")
    return text


def _object_end(text: str, start: int) -> int:
    """Where the brace opened at ``start`` closes (strings respected), or ``len(text)``."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif in_string:
            escaped = char == "\\"
            in_string = char != '"'
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}" and (depth := depth - 1) == 0:
            return index + 1
    return len(text)


def json_objects(text: str) -> list[dict]:
    """Every top-level JSON object in ``text``, in order. A ``{`` that opens no valid object (a
    template echo ``{"score": <1-7>}``, a cut answer) is skipped with everything inside it, so no
    object nested in it is mistaken for an answer. :class:`AmbiguousObject` for an object (at any depth)
    giving a key twice with different values."""
    objects, position = [], 0
    while (start := text.find("{", position)) != -1:
        try:
            value, position = _DECODER.raw_decode(text, start)
            objects.append(value)
        except json.JSONDecodeError:
            position = _object_end(text, start)
    return objects


def first_json_object(text: str | None, error: type[ValueError] = ValueError, key: str | None = None) -> dict:
    """The JSON object an LLM answered with: the first top-level ``{...}`` of its :func:`final_answer`
    (reasoning dropped; code fences and chatter around it allowed; curly quotes read as straight ones
    when nothing parses otherwise). With ``key``: the first object holding ``key``, and objects that
    hold different values of ``key`` ("I first thought {"score": 3} … final: {"score": 5}") are an
    ambiguous answer, as is an object giving a key twice with different values. Raises ``error`` (a ``ValueError`` subclass, so :meth:`ChatJsonAsker.ask` asks
    again) when there is no such object or the answer is ambiguous."""
    answer = final_answer(text, error)
    candidates: list[dict] = []
    for variant in (answer, answer.translate(_CURLY_QUOTES)):
        try:
            objects = json_objects(variant)
        except AmbiguousObject as err:
            raise error(str(err)) from None
        candidates = [o for o in objects if key is None or key in o]
        if candidates:
            break
    if not candidates:
        what = "JSON object" if key is None else f"JSON object with {key!r}"
        raise error(f"no {what} in the answer: {answer.strip()[:80]!r}")
    if key is not None and len({json.dumps(o[key], sort_keys=True) for o in candidates}) > 1:
        values = ", ".join(json.dumps(o[key]) for o in candidates)
        raise error(f"ambiguous answer: {len(candidates)} JSON objects with different {key!r} ({values})")
    return candidates[0]


def whole_number(value: object, name: str, low: int, high: int, error: type[ValueError] = ValueError) -> int:
    """``value``, a judge's or rater's score, as an integer in ``low..high``: a JSON integer, an integral
    number (6.0) or its digits quoted ("6"). Anything else raises ``error`` naming ``name``: 6.5, "six",
    true, a list, and NaN, Infinity or 1e400, which JSON parsers read as floats no integer can hold."""
    if isinstance(value, str) and value.strip().isdecimal():  # "6": a quoted integer, not a guess ("²" is a digit
        # to isdigit but no number to int: its ValueError named no score)
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            (isinstance(value, float) and not math.isfinite(value)) or value != int(value):
        shown = repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:80]}…"
        raise error(f"{name!r} must be an integer {low}-{high}, got {shown}")
    if not low <= value <= high:
        raise error(f"{name!r} must be in {low}..{high}, got {value!r}")
    return int(value)

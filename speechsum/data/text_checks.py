"""Text fields that a backbone's tokenizer would not read as text.

A tokenizer matches its special tokens (``<|im_end|>``, ``</s>``, ``<|end|>``, the audio placeholder
``<|audio|>`` …) anywhere in the text it is given, so an instruction, transcript or summary holding
one would not stay text: ``<|im_end|>`` in a summary trains the model to stop mid-answer, in an
instruction it closes the user turn early; an audio placeholder adds a position the audio does not
fill (the native processors expand every occurrence in the prompt). Such text is refused where it
enters (manifest lines and dataset rows as they load, ``speechsum pairs``, ``speechsum serve`` and
``summarize`` requests), naming the field and the token, rather than tokenized another way: clean
text keeps exactly the tokens it had.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

TEXT_FIELDS = ("instruction", "summary", "chosen", "rejected")  # + "transcript" where a model reads it


def reserved_strings(tokenizer) -> tuple[str, ...]:
    """The tokenizer's special tokens as text (added tokens marked special, and the named ones: eos,
    pad, additional specials), longest first; not its unknown token (``<unk>`` in a transcript reads
    as the unknown token, which changes no turn or placeholder)."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    strings = {token.content for token in added.values() if getattr(token, "special", False)}
    strings.update(getattr(tokenizer, "all_special_tokens", None) or ())
    strings.discard(getattr(tokenizer, "unk_token", None))
    return tuple(sorted((s for s in strings if s), key=lambda s: (-len(s), s)))


@functools.lru_cache(maxsize=8)
def _pattern(reserved: tuple[str, ...]) -> re.Pattern:
    """One regex for all of ``reserved`` (longest first, so the longest token at a position is named):
    a manifest's every line is checked against a tokenizer's hundreds of special tokens."""
    return re.compile("|".join(re.escape(token) for token in sorted(reserved, key=len, reverse=True)))


def reserved_in(text: str, reserved: Iterable[str]) -> str | None:
    """Why ``text`` cannot be tokenized as text (the first special token in it and where), or None."""
    reserved = tuple(reserved)
    found = _pattern(reserved).search(text) if reserved else None
    if found is None:
        return None
    return (f"holds {found.group(0)!r} (at character {found.start()}), a special token of the model's tokenizer: it "
            "would be read as that token, not as text (it could end the turn or add an audio position); remove or "
            "rewrite it")


def text_fields(transcript: bool, responses: bool = True) -> tuple[str, ...]:
    """The fields a model tokenizes: instruction; summary, chosen, rejected where it trains on them
    (``responses``; generation reads the prompt only); transcript where it reads it."""
    return ("instruction",) + (TEXT_FIELDS[1:] if responses else ()) + (("transcript",) if transcript else ())


def first_reserved(values: Mapping[str, object], reserved: Iterable[str], fields: Iterable[str]) -> tuple[str, str] | None:
    """``(field, why)`` for the first of ``fields`` whose text in ``values`` holds a special token, or None."""
    reserved = tuple(reserved)
    for name in fields if reserved else ():
        value = values.get(name)
        problem = reserved_in(value, reserved) if isinstance(value, str) else None
        if problem:
            return name, problem
    return None

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

from collections.abc import Iterable, Mapping

TEXT_FIELDS = ("instruction", "summary", "chosen", "rejected")  # + "transcript" where a model reads it


def reserved_strings(tokenizer) -> tuple[str, ...]:
    """The tokenizer's special tokens as text (added tokens marked special, and the named ones: eos,
    pad, additional specials), longest first."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    strings = {token.content for token in added.values() if getattr(token, "special", False)}
    strings.update(getattr(tokenizer, "all_special_tokens", None) or ())
    return tuple(sorted((s for s in strings if s), key=lambda s: (-len(s), s)))


def reserved_in(text: str, reserved: Iterable[str]) -> str | None:
    """Why ``text`` cannot be tokenized as text (the first special token in it and where), or None."""
    found = [(text.index(token), token) for token in reserved if token in text]
    if not found:
        return None
    start, token = min(found)
    return (f"holds {token!r} (at character {start}), a special token of the model's tokenizer: it would be read "
            "as that token, not as text (ending the turn, or an audio placeholder); remove or rewrite it")


def text_fields(transcript: bool) -> tuple[str, ...]:
    """The fields a model tokenizes: instruction, summary, chosen, rejected; transcript where it reads it."""
    return TEXT_FIELDS + (("transcript",) if transcript else ())


def first_reserved(values: Mapping[str, object], reserved: Iterable[str], fields: Iterable[str]) -> tuple[str, str] | None:
    """``(field, why)`` for the first of ``fields`` whose text in ``values`` holds a special token, or None."""
    reserved = tuple(reserved)
    for name in fields if reserved else ():
        value = values.get(name)
        problem = reserved_in(value, reserved) if isinstance(value, str) else None
        if problem:
            return name, problem
    return None

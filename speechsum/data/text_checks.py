"""Text fields that a backbone's tokenizer would not read as text.

A tokenizer matches its special tokens (``<|im_end|>``, ``</s>``, ``<|end|>``, the audio placeholder
``<|audio|>`` …) anywhere in the text it is given, so an instruction, transcript or summary holding
one would not stay text: ``<|im_end|>`` in a summary trains the model to stop mid-answer, in an
instruction it closes the user turn early; an audio placeholder adds a position the audio does not
fill (the native processors expand every occurrence in the prompt). Such text is refused where it
enters (manifest lines and dataset rows as they load, ``speechsum pairs``, ``speechsum serve`` and
``summarize`` requests), naming the field and the token, rather than tokenized another way: clean
text keeps exactly the tokens it had.

Also here, for manifest lines and dataset rows alike: text that is no plain text (a control
character, a bidirectional override or isolate), text that shows nothing (only whitespace and
invisible format characters), and ids that are one id in another Unicode normalization.
"""

from __future__ import annotations

import functools
import re
import unicodedata
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


# C0 controls but TAB, LF and CR; DEL; the C1 controls but NEL (U+0085, a line end): what Windows-1252 text
# read as Latin-1 holds
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f]")
# the fields people write; not chosen / rejected, the policy's own samples (a byte-level tokenizer writes any byte)
CONTROL_CHECKED = ("id", "instruction", "summary", "transcript", "lang")


def control_character(text: str) -> str | None:
    """Why ``text`` is no plain text (the first control character in it and where, with what to do),
    or None. Tabs and line ends are text; NUL, ESC (terminal colour codes), form feeds and the C1
    range are not: a tokenizer would read them as characters the model never saw in training.
    Checked in the fields of :data:`CONTROL_CHECKED`, with :func:`bidi_control`."""
    found = _CONTROL.search(text)
    if found is None:
        return bidi_control(text)
    code = ord(found.group(0))
    cause = ("text decoded with the wrong encoding? Windows-1252 read as Latin-1 gives these" if code >= 0x80
             else "a binary file's bytes or terminal colour codes pasted in?")
    return (f"holds the control character U+{code:04X} at character {found.start()} ({cause}): remove it, or "
            "replace it with the character meant")


# the explicit bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069); not the marks
# LRM, RLM and ALM (U+200E, U+200F, U+061C), which right-to-left text uses as punctuation
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def bidi_control(text: str) -> str | None:
    """Why ``text`` is no plain text (the first bidirectional embedding, override or isolate
    character in it, e.g. U+202E RIGHT-TO-LEFT OVERRIDE, and where, with what to do), or None. They
    change the order in which text is shown, not what it says, so what a reader sees is not the
    characters a tokenizer reads ("Trojan Source" text); right-to-left text needs none of them."""
    found = _BIDI.search(text)
    if found is None:
        return None
    char = found.group(0)
    return (f"holds the bidirectional control character U+{ord(char):04X} ({unicodedata.name(char)}) at character "
            f"{found.start()}: it reorders how the text is shown, so what is seen is not what the model reads; "
            "remove it (right-to-left text needs none)")


def blank(text: str) -> bool:
    """Whether ``text`` holds nothing visible: only whitespace and invisible format characters
    (zero-width spaces and joiners, byte-order marks, direction marks), which ``str.strip`` keeps."""
    return all(char.isspace() or unicodedata.category(char) in ("Cf", "Cc") for char in text)


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` for a message, a long string cut to its first ``limit`` characters (a repeated
    transcript would otherwise put megabytes into one error line)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit + 20 else f"{text[:limit]}… ({len(text)} characters)"


def id_clash(example_id: str, seen: dict[str, tuple[str, str]]) -> str | None:
    """Why ``example_id`` cannot join the ids in ``seen`` (NFC form → (id, where it was given)), or
    None: the same id again, or one that differs only in Unicode normalization ("café" as one
    code point or as "e" + a combining accent, which look the same and name one example). Add an
    accepted id with :func:`remember_id`."""
    first = seen.get(unicodedata.normalize("NFC", example_id))
    if first is None:
        return None
    if first[0] == example_id:
        return f"duplicate id {shown(example_id)} ({first[1]} has it too): give each example its own id"
    return (f"duplicate id {shown(example_id)}: {first[1]} has {shown(first[0])}, the same text in another Unicode "
            "normalization (NFC/NFD: composed or decomposed accents); give each example its own id")


def remember_id(example_id: str, where: str, seen: dict[str, tuple[str, str]]) -> None:
    """Add ``example_id`` (given at ``where``, e.g. "line 3") to ``seen`` for :func:`id_clash`."""
    seen[unicodedata.normalize("NFC", example_id)] = (example_id, where)

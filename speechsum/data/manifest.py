"""The JSONL manifest: one example per line, validated with errors naming file, line and field.

Schema (one JSON object per line):

| field         | type  | required                          | meaning                                        |
|---------------|-------|-----------------------------------|------------------------------------------------|
| `id`          | str   | always                            | unique within the manifest                     |
| `audio`       | str   | always                            | path; relative paths resolve against the manifest's folder |
| `instruction` | str   | always (not for ``speechsum synth`` input) | what to write ("Summarise the call as bullet points") |
| `summary`     | str   | ``require_summary`` (SFT train/val/test) | the target response                     |
| `transcript`  | str   | KD teachers (``require_transcript``)| what was said; the text teacher reads it       |
| `lang`        | str   | no (default "en")                 | language of the speech                         |
| `duration`    | float | no (read from the audio header)   | seconds                                        |
| `chosen`, `rejected` | str | preference data (``require_preference``) | the judge's better and worse summary |
| `meta`        | object | no                               | carried along untouched (genre, style, facts, judge verdicts …) |
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from speechsum.data.audio import audio_seconds
from speechsum.data.audio_paths import url_problem
from speechsum.data.manifest_hints import (
    PAIR_WITHOUT_SUMMARY,
    array_hint,
    blank_optional,
    csv_header_problem,
    cut_short_hint,
    empty_field,
    layout_hint,
    misnamed,
    near_miss_hint,
    number_advice,
    type_advice,
    unread_key,
    working_folder_hint,
)
from speechsum.data.text_checks import (
    CONTROL_CHECKED,
    blank,
    control_character,
    first_reserved,
    id_clash,
    remember_id,
    shown,
    text_fields,
)
from speechsum.utils.io import decode_utf8, finite_json_number, raw_lines, text_lines_problem
from speechsum.utils.json_keys import RepeatedKeyError, object_without_repeated_keys

log = logging.getLogger(__name__)

OnBadExample = Literal["error", "skip"]


class ManifestError(ValueError):
    """A manifest line that cannot be used; the message names file, line and reason."""

    def __init__(self, path: Path | str, line: int, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{path}:{line}: {reason}")


@dataclass(frozen=True)
class SkippedLine:
    """A manifest line left out under ``on_bad_example="skip"``."""

    line: int
    reason: str


@dataclass(frozen=True)
class Origin:
    """Where an example was read: a manifest ``file`` and its ``line`` (from 1), or, with ``split``
    set, a Hugging Face dataset's name, split and row (``line``, from 0) and its ``columns``
    (``(field, column)`` pairs: which dataset column holds each speechsum field)."""

    file: str
    line: int
    split: str | None = None
    columns: tuple[tuple[str, str], ...] = ()

    def column(self, field: str) -> str:
        """The dataset column that holds ``field`` (the field's own name when not mapped)."""
        return dict(self.columns).get(field, field)


@dataclass(frozen=True)
class Example:
    """One validated manifest line. ``audio`` is an absolute path; ``duration`` in seconds;
    ``origin``: where it was read (not part of its value), for errors found when its audio is read."""

    id: str
    audio: str
    instruction: str
    duration: float
    summary: str | None = None
    transcript: str | None = None
    lang: str = "en"
    chosen: str | None = None
    rejected: str | None = None
    meta: dict | None = None
    origin: Origin | None = field(default=None, compare=False, repr=False)
    # the line's 'duration' where it disagrees with the audio's length (:func:`duration_disagrees`), else None
    stated_duration: float | None = field(default=None, compare=False, repr=False)
    # (key, field): a key not read that looks meant for an absent field ('transcipt'), :func:`unread_key`
    unread_key: tuple[str, str] | None = field(default=None, compare=False, repr=False)


_STRING_FIELDS = ("id", "audio", "instruction", "summary", "transcript", "lang", "chosen", "rejected")
FIELDS = (*_STRING_FIELDS, "duration", "meta", "offset")


def _check_unicode(text: str, where: str) -> None:
    """JSON's ``\\ud800``-style escapes can spell a lone UTF-16 surrogate: a str that no tokenizer,
    file or HTTP body can encode. Refused here, naming the field, instead of deep in training."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{where}: a lone UTF-16 surrogate {text[err.start]!r} at character {err.start} "
                         "(an unpaired \\uD800-\\uDFFF escape): not valid Unicode text") from None


def _check_types(record: dict) -> None:
    for name in _STRING_FIELDS:
        if name in record and record[name] is not None and not isinstance(record[name], str):
            raise ValueError(f"field '{name}' must be a string, got {type(record[name]).__name__}"
                             + type_advice(record[name]))
        if isinstance(record.get(name), str):
            _check_unicode(record[name], f"field '{name}'")
            if problem := (name in CONTROL_CHECKED and control_character(record[name])) or \
                    (name == "lang" and blank_optional(name, record[name])):  # a "  " lang was kept
                raise ValueError(f"field '{name}' {problem}")
    duration = record.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))):
        raise ValueError(f"field 'duration' must be a number of seconds, got {type(duration).__name__}"
                         + (number_advice(duration) if isinstance(duration, str) else ""))
    if record.get("meta") is not None and not isinstance(record["meta"], dict):
        raise ValueError(f"field 'meta' must be a JSON object, got {type(record['meta']).__name__}")
    if (where := _non_finite(record.get("meta"), "meta")) is not None:  # carried into outputs as no JSON reads it
        raise ValueError(f"field '{where[0]}' is {where[1]}, which JSON has no number for (NaN, Infinity, or one "
                         "beyond a float's range): write null, or a number")
    if record.get("offset") is not None:  # NeMo-style segments: reading the whole file would pair it with a part's text
        raise ValueError(f"field 'offset' ({shown(record['offset'])}): speechsum reads whole audio files, not segments; cut "
                         "the segment into its own file (e.g. `ffmpeg -ss OFFSET -t DURATION -i in.wav part.wav`) "
                         "and drop 'offset'")


def _non_finite(value: object, where: str) -> tuple[str, float] | None:
    """``(path, value)`` of a NaN or infinite float in a parsed JSON value, or None (walked without
    recursion: JSON nests as deep as the parser's own limit)."""
    stack = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float) and not finite_json_number(item):
            return path, item
        if isinstance(item, dict):
            stack.extend((f"{path}.{key}", inner) for key, inner in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", inner) for index, inner in reversed(list(enumerate(item))))
    return None


def same_pair(chosen: str | None, rejected: str | None) -> str | None:
    """Why a preference pair cannot train DPO, or None: ``chosen`` and ``rejected`` the same text (a constant
    loss, no gradient), or but for whitespace around it (its only gradient: that whitespace). ``speechsum
    pairs`` compares its samples stripped and writes neither."""
    if chosen is None or rejected is None or chosen.strip() != rejected.strip():
        return None
    if chosen != rejected:
        return ("'chosen' and 'rejected' are the same text but for whitespace around it: the pair would teach DPO "
                "only that whitespace, not the better summary; give the worse summary as 'rejected' or drop the "
                "example")
    return ("'chosen' and 'rejected' are the same text: the pair teaches DPO nothing (its loss is constant, its "
            "gradient 0); give the worse summary as 'rejected' or drop the example")


def duration_disagrees(stated: float, measured: float) -> bool:
    """Whether a line's ``stated`` duration is more than 1 s and 10 % off the audio's ``measured``
    one: not rounding, but another file than the line was written for, or milliseconds."""
    return abs(stated - measured) > max(1.0, 0.1 * measured)


def audio_path(value: str, root: Path | None, allow_outside: bool = False, folder: str = "manifest folder") -> Path:
    """The audio file a manifest line or a local dataset's row names: an absolute path as is (no
    ``~`` expansion: data, not shell input); a relative one joined to ``root`` and normalised. The
    check is lexical: ``..`` leaving ``root`` is refused unless ``allow_outside``, a symlink inside
    ``root`` is followed wherever it points. Without ``root`` (a hub dataset) the path is as written."""
    if "\0" in value:
        raise ValueError(f"{shown(value)} holds a NUL character (at character {value.index(chr(0))}): no file name can")
    if value.strip() == "-":  # a shell's "standard input", joined to the folder a file nobody meant
        raise ValueError("'-' (standard input, to some tools) names no file: audio is read from files; give its path")
    if problem := url_problem(value):  # joined to the folder it would be "no such file" of a path nobody wrote
        raise ValueError(f"{shown(value)} is {problem}")
    path = Path(value)
    if path.is_absolute() or root is None:
        return path
    root = Path(os.path.abspath(root))
    joined = Path(os.path.normpath(root / path))
    if not allow_outside and not joined.is_relative_to(root):
        raise ValueError(f"relative path {shown(value)} escapes the {folder} {root}; "
                         "use an absolute path or set allow_paths_outside_manifest_dir=True")
    return joined


def _probe_audio(path: Path, max_seconds: float | None, truncate_at: float | None = None) -> float:
    """The file's duration in seconds (:func:`~speechsum.data.audio.audio_seconds`: from the header;
    float files are also scanned, block by block, for NaN/Inf and out-of-range samples)."""
    try:
        return audio_seconds(str(path), max_seconds, truncate_at)
    except ValueError as err:
        raise ValueError(f"field 'audio': {err}") from err


def parse_line(
    text: str,
    root: Path,
    *,
    require_summary: bool = False,
    require_transcript: bool = False,
    require_preference: bool = False,
    allow_paths_outside_manifest_dir: bool = False,
    require_instruction: bool = True,
    max_audio_seconds: float | None = None,
    reserved_text: tuple[str, ...] = (),
    truncate_audio_seconds: float | None = None,
) -> Example:
    """Parse and validate one manifest line; raises ``ValueError`` with the reason (also for audio
    longer than ``max_audio_seconds``, when given, and for a text field the model tokenizes that
    holds one of ``reserved_text``, its tokenizer's special tokens: :mod:`speechsum.data.text_checks`)."""
    try:  # a trailing newline would shift the error column
        record = json.loads(text.rstrip("\r\n"), object_pairs_hook=object_without_repeated_keys)
    except RepeatedKeyError as err:  # JSON would keep the last silently: {"id": "a", ..., "id": "b"} was example b
        raise ValueError(f"field {err.key!r} is given twice in one object ({shown(err.first)}, then {shown(err.then)}): "
                         "JSON would keep the last silently; keep the one meant") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err.msg} (column {err.colno}){layout_hint(text.strip())}") from err
    except RecursionError:
        raise ValueError("invalid JSON (nested deeper than Python's recursion limit)") from None
    except ValueError:  # an integer literal longer than Python converts
        raise ValueError(f"invalid JSON: a number with more than {sys.get_int_max_str_digits()} digits") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}{array_hint(record)}")
    _check_types(record)
    required = ["id", "audio"] + (["instruction"] if require_instruction else [])
    required += ["summary"] if require_summary else []
    required += ["transcript"] if require_transcript else []
    required += ["chosen", "rejected"] if require_preference else []
    for name in required:
        value = record.get(name)
        if (empty := empty_field(name, record)) is not None:
            raise ValueError(empty)
        if not value or blank(value):
            what = "" if not value else " (only whitespace)" if not value.strip() else \
                " (only invisible characters, e.g. zero-width spaces)"
            hint = misnamed(name, record, FIELDS) or (PAIR_WITHOUT_SUMMARY if name == "summary" and require_preference else "")
            raise ValueError(f"missing field '{name}'{what}{hint}")
    reserved = first_reserved(record, reserved_text, text_fields(require_transcript, require_summary or require_preference))
    if reserved:
        raise ValueError(f"field '{reserved[0]}' {reserved[1]}")
    if require_preference and (pair_problem := same_pair(record["chosen"], record["rejected"])):
        raise ValueError(f"field 'rejected': {pair_problem}")
    try:
        audio = audio_path(record["audio"], root, allow_paths_outside_manifest_dir)
    except ValueError as err:
        raise ValueError(f"field 'audio': {err}") from None
    try:
        duration = _probe_audio(audio, max_audio_seconds, truncate_audio_seconds)
    except ValueError as err:
        hint = working_folder_hint(record["audio"], audio, root) or near_miss_hint(record["audio"], audio, root)
        raise ValueError(f"{err}{hint}") from err
    if record.get("duration") is not None and not finite_json_number(record["duration"]):
        raise ValueError("field 'duration' must be a finite number of seconds")
    if record.get("duration") is not None and record["duration"] < 0:
        raise ValueError(f"field 'duration' must be a finite number of seconds, not negative (got {record['duration']})")
    return Example(
        id=record["id"],
        audio=str(audio),
        instruction=record.get("instruction") or "",
        duration=duration,
        summary=record.get("summary"),
        transcript=record.get("transcript"),
        lang=record.get("lang") or "en",
        chosen=record.get("chosen"),
        rejected=record.get("rejected"),
        meta=record.get("meta"),
        stated_duration=record.get("duration") if record.get("duration") is not None
        and duration_disagrees(record["duration"], duration) else None,
        unread_key=unread_key(record, FIELDS),
    )


def load_manifest(
    path: str | Path,
    *,
    on_bad_example: OnBadExample = "error",
    require_summary: bool = False,
    require_transcript: bool = False,
    require_preference: bool = False,
    allow_paths_outside_manifest_dir: bool = False,
    require_instruction: bool = True,
    max_audio_seconds: float | None = None,
    reserved_text: tuple[str, ...] = (),
    truncate_audio_seconds: float | None = None,
) -> tuple[list[Example], list[SkippedLine]]:
    """Read and validate a JSONL manifest; returns ``(examples, skipped_lines)``.

    Every line is checked (JSON, required fields, types, audio readable, non-empty and free of
    NaN/Inf samples, relative paths inside the manifest's folder, unique ids). The file is UTF-8
    (a leading BOM is ignored); a line that does not decode is a bad line like any other.
    ``on_bad_example="error"`` raises :class:`ManifestError` at the first bad line; ``"skip"`` logs
    every bad line with its reason and a total count, and returns the good ones. The duration comes
    from the audio header; only float-sample files are read (block by block, for NaN/Inf).
    ``max_audio_seconds``: a longer clip is a bad line (``too_long_audio: error``, known at load).
    ``truncate_audio_seconds``: clips are cut to this when read (``too_long_audio: truncate``), so a
    file libsndfile reads only the first part of is no bad line if that part is as long.
    ``reserved_text``: the model tokenizer's special tokens, which no text field it reads may hold.
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise IsADirectoryError(f"manifest {path} is a directory: give the JSONL file in it")
        if path.exists():  # a FIFO, e.g. bash's <(...), read once per split and with no folder for the audio paths
            raise ManifestError(path, 0, "not a regular file (a pipe such as bash's <(...), or a device): write the "
                                "manifest to a file (its relative audio paths resolve against that file's folder)")
        raise FileNotFoundError(f"manifest not found: {path}")
    try:
        return _load_lines(path, on_bad_example, dict(
            require_summary=require_summary, require_transcript=require_transcript,
            require_preference=require_preference, allow_paths_outside_manifest_dir=allow_paths_outside_manifest_dir,
            require_instruction=require_instruction, max_audio_seconds=max_audio_seconds,
            truncate_audio_seconds=truncate_audio_seconds, reserved_text=reserved_text))
    except OSError as err:  # the manifest itself (permissions, an I/O error): the audio files' errors are bad lines
        if err.filename is not None and os.path.abspath(err.filename) != os.path.abspath(path):
            raise
        raise ManifestError(path, 0, f"cannot be read ({err.strerror or err}): check that the file is readable "
                            "(permissions, disk), or give another manifest") from err


def _load_lines(path: Path, on_bad_example: OnBadExample, checks: dict) -> tuple[list[Example], list[SkippedLine]]:
    """:func:`load_manifest`'s reading of the lines of ``path``, ``checks`` the keywords of :func:`parse_line`."""
    whole = ((1, unreadable) if (unreadable := text_lines_problem(path)) else None) or csv_header_problem(path)
    if whole:  # a problem of the whole file (a CSV/TSV one: said once, not of each line): not a bad line to skip
        raise ManifestError(path, *whole)
    root = path.parent
    examples: list[Example] = []
    seen: dict[str, tuple[str, str]] = {}  # ids in NFC form -> (as given, where)
    skipped: list[SkippedLine] = []
    disagreeing: list[tuple[int, Example]] = []  # lines whose 'duration' is not their audio's
    unread: dict[tuple[str, str], list[int]] = {}  # (key, the field it looks meant for) -> its lines
    for number, raw in raw_lines(path):  # bytes: an undecodable line is a bad line, not a crash
        try:
            text = decode_utf8(raw)
            if not text.strip():
                continue
            example = parse_line(text, root, **checks)
            if clash := id_clash(example.id, seen):
                raise ValueError(clash)
        except ValueError as err:
            reason = f"{err}{cut_short_hint(raw, str(err))}"
            if on_bad_example == "error":
                raise ManifestError(path, number, reason) from err
            skipped.append(SkippedLine(number, reason))
            log.warning("skipping %s:%d: %s", path, number, reason)
            continue
        remember_id(example.id, f"line {number}", seen)
        if example.stated_duration is not None:
            disagreeing.append((number, example))
        if example.unread_key is not None:
            unread.setdefault(example.unread_key, []).append(number)
        examples.append(replace(example, origin=Origin(str(path), number)))
    if disagreeing:
        line, first = disagreeing[0]
        log.warning("%s: %d line(s) give a 'duration' more than 1 s and 10%% off their audio's length (e.g. line %d: %g s, "
                    "its audio %s %.2f s); the audio's length is used: check that those lines name the right files "
                    "(and that 'duration' is in seconds)", path, len(disagreeing), line, first.stated_duration,
                    first.audio, first.duration)
    for (key, name), numbers in unread.items():
        log.warning("%s: %d line(s) have the key %r (e.g. line %d), which speechsum does not read (did you mean %r?): "
                    "its value is not used; rename it to %r", path, len(numbers), key, numbers[0], name, name)
    if skipped:
        log.warning("%s: skipped %d bad line(s), kept %d", path, len(skipped), len(examples))
    if not examples and not skipped:
        raise ManifestError(path, 0, "no usable examples: the file holds no JSON line (it is empty or blank); write "
                            "one JSON object per line")
    if not examples:
        raise ManifestError(path, 0, f"no usable examples ({len(skipped)} line(s) skipped, e.g. line "
                            f"{skipped[0].line}: {skipped[0].reason})")
    return examples, skipped


def loaded_records(manifest: str | Path, examples: list[Example]) -> dict[str, dict]:
    """id → the raw JSON object of the manifest line each of ``examples`` was loaded from (its
    ``origin``); the other lines are not parsed: under ``on_bad_example="skip"`` they may be no JSON."""
    lines = {example.origin.line: example.id for example in examples if example.origin is not None}
    return {lines[number]: json.loads(decode_utf8(raw)) for number, raw in raw_lines(manifest) if number in lines}

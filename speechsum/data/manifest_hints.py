"""What to do about a bad manifest line: hints added to :mod:`speechsum.data.manifest`'s errors when
the line shows what was meant (a misnamed field, a path written relative to another folder, with
'~', Windows separators or another Unicode normalization; JSON laid out as an array, not as lines;
a comment, a byte-order mark or another format; a file cut short while being written; a value of the wrong type written as what it should be)."""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import unicodedata
from pathlib import Path

from speechsum.data.text_checks import blank
from speechsum.utils.io import finite_json_number, raw_lines

# $NAME or ${NAME} (a shell's), %NAME% (Windows'): a variable nothing expands in a path read from data or a config
ENV_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?|%([A-Za-z_][A-Za-z0-9_]*)%")
# a preference line (DPO's) without a summary, which the data config's default require_summary: true asks for
PAIR_WITHOUT_SUMMARY = (" (preference data trains on 'chosen' and 'rejected', not on a reference summary: set "
                        "require_summary: false in the data config, as configs/dpo.yaml does)")
EXAMPLE_LINE = '{"id": "call-1", "audio": "call-1.wav", "instruction": "Summarise the call"}'  # what a line looks like


def working_folder_hint(value: str, resolved: Path, root: Path) -> str:
    """For a relative audio path missing from the manifest's folder but there from the working folder
    (paths written relative to where the manifest was made): the rule and what to do; else ""."""
    if Path(value).is_absolute() or os.path.lexists(resolved) or not Path(value).is_file():
        return ""
    return (f" (relative audio paths resolve against the manifest's folder {Path(os.path.abspath(root))}, not the "
            f"working folder, where {value} is: write them relative to the manifest's folder, or absolute)")


def near_miss_hint(value: str, resolved: Path, root: Path) -> str:
    """For an audio path that names no file: the file it likely meant, when one is there written
    with '/' for Windows' '\\', without the spaces around it, with '~' expanded (it is not), in
    another Unicode normalization (a name with accents copied from macOS, which writes them
    decomposed), with letters in another case, or with its environment variables expanded (they are
    not); else "" (for a path starting with '~' or naming a variable: that it is not expanded)."""
    if os.path.lexists(resolved):
        return ""
    tries = [("written with Windows' '\\' separators: write '/'", value.replace("\\", "/")),
             ("spaces around the path: remove them", value.strip()),
             ("'~' is not expanded: give the full path", os.path.expanduser(value) if value.startswith("~") else value),
             (f"{_variable(value)} is not expanded: give the full path", expand_variables(value))]
    tries += [(f"the name on disk is in Unicode {form} (accents {'composed' if form == 'NFC' else 'decomposed'}), the "
               "path is not: write it as on disk", unicodedata.normalize(form, value)) for form in ("NFC", "NFD")]
    for advice, candidate in tries:
        full = Path(os.path.normpath(Path(os.path.abspath(root)) / candidate))  # an absolute candidate stays itself
        if candidate != value and full.is_file():
            return f" ({advice}; {full} is there)"
    if resolved.parent.is_dir():
        same = [entry for entry in os.listdir(resolved.parent) if entry.casefold() == resolved.name.casefold()]
        if same:
            return f" (names are case-sensitive; {resolved.parent / same[0]} is there)"
    if value.startswith("~"):
        return " ('~' is not expanded: data paths are read as written; give the full path)"
    if _variable(value):
        return f" ({_variable(value)} is not expanded: data paths are read as written; give the full path)"
    if len(value) > 2 and value[0].isascii() and value[0].isalpha() and value[1] == ":" and value[2] in "\\/":
        return (f" ({value[:2]} is a Windows drive: on this machine write the path the file has here, e.g. "
                f"/mnt/{value[0].lower()}/... under WSL, or relative to the manifest's folder)")
    return ""


def _variable(value: str) -> str | None:
    """The first environment variable written in ``value`` ('$DATA', '${DATA}', '%DATA%'), or None."""
    found = ENV_VARIABLE.search(value)
    return found.group(0) if found else None


def expand_variables(value: str) -> str:
    """``value`` with the environment variables it names that are set replaced by their values
    ($NAME, ${NAME}, %NAME%), the rest as written: the path that was likely meant."""
    return ENV_VARIABLE.sub(lambda m: os.environ.get(m.group(1) or m.group(2), m.group(0)), value)


def unexpanded_hint(value: str) -> str:
    """For a path setting (a manifest) that names no file: that an environment variable in it is not
    expanded, and the file it likely meant when that is there; else ""."""
    if not _variable(value) or os.path.exists(value):
        return ""
    meant = expand_variables(value)
    there = f"; {meant} is there" if os.path.exists(meant) else ""
    return f" ({_variable(value)} is not expanded: give the full path{there})"


def misnamed(name: str, record: dict, fields: tuple[str, ...]) -> str:
    """For a missing field ``name``: the line's own key, not one of the known ``fields``, that looks
    meant for it ('Summary', 'transcription', NeMo's 'audio_filepath'), with what to do; else ""."""
    own = [key for key in record if isinstance(key, str) and key not in fields]
    close = [key for key in own if key.casefold() == name or key.casefold().startswith(name)]
    close = close or difflib.get_close_matches(name, own, n=1, cutoff=0.8)
    return f" (the line has {close[0]!r}: rename it to '{name}')" if close else ""


def unread_key(record: dict, fields: tuple[str, ...]) -> tuple[str, str] | None:
    """``(key, field)`` for the first key of a good line that speechsum does not read but that looks
    meant for one of ``fields`` the line lacks ('Transcript', 'transcipt', 'sumary', 'durration'):
    its value would be dropped without a word; else None."""
    absent = [name for name in fields if name not in record]
    for key in record:
        if isinstance(key, str) and key not in fields:
            close = [name for name in absent if key.casefold() == name]
            close = close or difflib.get_close_matches(key.casefold(), absent, n=1, cutoff=0.85)
            if close:
                return key, close[0]
    return None


_FILL_ADVICE = {
    "id": "give the example a unique id",
    "audio": "give the path of its audio file",
    "instruction": "write what the model is to do (e.g. \"Summarise the call\")",
    "summary": "write the reference summary (for data without references, on-policy KD or DPO, set "
               "require_summary: false in the data config)",
    "transcript": "write what was said in the audio",
    "chosen": "write the judge's better summary",
    "rejected": "write the judge's worse summary",
}


def empty_field(name: str, record: dict) -> str | None:
    """For a required field ``name`` that the line has but left empty (``""``) or ``null``: what it
    holds and what to do; None when the line has no such key (then it is missing)."""
    if name not in record or record[name] not in ("", None):
        return None
    return f"field '{name}' is {empty_value(record[name])}: {fill_advice(name)}, or delete the line"


# optional fields a row may leave out (null) but not fill with whitespace alone: what to write instead
_OPTIONAL_ADVICE = {"lang": "give the speech's language code (e.g. en), or leave it out (null) for en",
                    "id": "give the example a unique id, or leave it out (null) for one made of its split and row"}


def blank_optional(name: str, value: object) -> str | None:
    """For an optional ``id`` (a dataset row's) or ``lang`` holding only whitespace or invisible characters (kept as
    the example's id or language before): what it holds and what to write, after the field's name; None for any
    other value."""
    if name not in _OPTIONAL_ADVICE or not isinstance(value, str) or not value or not blank(value):
        return None
    return f"is only whitespace or invisible characters ({value!r}): {_OPTIONAL_ADVICE[name]}"


def empty_value(value: str | None) -> str:
    """How an empty required text is named in errors: ``null`` or ``empty ("")``."""
    return "null" if value is None else 'empty ("")'


def fill_advice(name: str) -> str:
    """What to write in a required text field ``name`` left empty."""
    return _FILL_ADVICE.get(name, "fill it in")


def layout_hint(line: str) -> str:
    """What to do when a line that is not JSON shows the file is laid out as JSON, not JSON Lines: an
    object followed by a comma (a JSON array's items), an object after the array's opening bracket or
    before its closing one, or a line holding only a bracket (an array or object spread over several
    lines), or NUL bytes (binary data, or a file a crash padded with zeros)."""
    if "\0" in line:
        return (f": it holds NUL bytes (the first at character {line.index(chr(0)) + 1}), which no JSON text has: the "
                "file holds binary data there (e.g. zeros a crash or a full disk left); rewrite the line, or delete it")
    if line.endswith(",") and _is_object(line[:-1]):
        return ": a ',' after the object; JSON Lines has one object per line and no commas between them: remove it"
    if (line.startswith("[") or line.endswith("]")) and _is_object(line.lstrip("[").rstrip(",]").strip()):
        return (": an object inside a JSON array's brackets; JSON Lines has one object per line, without brackets or "
                "commas (convert it, e.g. jq -c '.[]' FILE > FILE.jsonl)")
    if line.startswith("{") and _objects_on_one_line(line) > 1:
        return (f": {_objects_on_one_line(line)} JSON objects on one line (a line break lost between them?); JSON "
                "Lines has one object per line: put each on its own line")
    if line in ("[", "{"):
        return (f": a line holding only {line!r}, as in a JSON {'array' if line == '[' else 'object'} spread over "
                f"several lines; JSON Lines has one whole object per line (convert it, e.g. "
                f"jq -c '{'.[]' if line == '[' else '.'}' FILE > FILE.jsonl)")
    return _not_json_hint(line)


def _not_json_hint(line: str) -> str:
    """What to do with a line that is not JSON at all: a UTF-8 byte-order mark (files saved with one and
    joined by ``cat``), a comment, or another format (CSV, TSV, YAML); else ""."""
    if line.startswith("\ufeff"):
        return (": the line starts with a UTF-8 byte-order mark (U+FEFF), as where files saved with one are joined "
                "(cat a.jsonl b.jsonl): remove it (e.g. sed -i 's/^\\xEF\\xBB\\xBF//' FILE)")
    if line.startswith(("#", "//")):
        return ": a comment line; JSON Lines has no comments: delete it"
    if not line or line[0] in '{["0123456789' or line[0] == "-" and line[1:2].isdigit() \
            or line.startswith(("true", "false", "null")):  # JSON's own start (an object cut short, a number, ...)
        return ""
    return (f": the line is no JSON (it starts {line[:30]!r}); a manifest line is one JSON object, e.g. {EXAMPLE_LINE} "
            "(a CSV, TSV or YAML file: convert it to JSON Lines)")


def _objects_on_one_line(line: str) -> int:
    """How many whole JSON objects ``line`` holds one after another (spaces between them allowed),
    counted up to the first text that is no such object (0: it starts with none)."""
    decoder, count, at = json.JSONDecoder(), 0, 0
    while at < len(line):
        try:
            value, end = decoder.raw_decode(line, at)
        except (ValueError, RecursionError):
            return count
        if not isinstance(value, dict):
            return count
        count, at = count + 1, len(line) - len(line[end:].lstrip())
    return count


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def array_hint(record: object) -> str:
    """What to do when a line holds JSON that is no object: for an array of objects (a whole JSON file
    on one line), convert the file; for anything else (a number, a string, a list), write the line's
    example as an object."""
    if not (isinstance(record, list) and record and all(isinstance(item, dict) for item in record)):
        return f"; each line is one JSON object, e.g. {EXAMPLE_LINE}: write this line as one, or delete it"
    return (f": a JSON array of {len(record)} objects on one line; JSON Lines has one object per line (convert it, "
            "e.g. jq -c '.[]' FILE > FILE.jsonl)")


def cut_short_hint(raw: bytes, reason: str) -> str:
    """For a line that is no valid JSON and has no line end (the file's last line): the file looks
    cut short while it was being written; else ""."""
    if not reason.startswith("invalid JSON") or raw.endswith((b"\n", b"\r")):
        return ""
    return ("; it is the file's last line and has no line end: the file looks cut short while being written (write "
            "it again, or delete this partial line)")


def type_advice(value: object) -> str:
    """What to write instead of a JSON value of the wrong type in a text field."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f" (write it as a JSON string, in quotes: \"{value}\")"
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return " (a list: join its items into one string)"
    if isinstance(value, dict) and isinstance(value.get("path"), str):  # a Hugging Face datasets Audio value
        return f" (an object with 'path', as Hugging Face datasets store audio: give the path itself, {value['path']!r})"
    messages = value if isinstance(value, list) else [value]
    if messages and all(isinstance(item, dict) and "content" in item for item in messages):
        return (" (chat messages, as in TRL's conversational format: give the text, the assistant message's "
                "'content', as the string)")
    return ""


def number_advice(value: object) -> str:
    """For a number written as a JSON string ("1.5"): write it without the quotes; else ""."""
    try:
        return f" (write {value.strip()} without the quotes)" if finite_json_number(float(value)) else ""
    except (TypeError, ValueError):
        return ""


# a CSV/TSV header's column: a name, not data (a path has / or ., a sentence spaces between many words)
COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_ -]{0,63}")
HEADER_NAMES = {"id", "audio", "instruction", "summary", "transcript", "lang", "chosen", "rejected", "duration",
                "path", "audio_path", "audio_filepath", "file", "filename", "wav", "text", "sentence", "reference"}
DELIMITERS = {"\t": ("TSV", "\\t"), ",": ("CSV", ","), ";": ("CSV (;-separated)", ";")}


def csv_header_problem(path: Path) -> tuple[int, str] | None:
    """(line, what to do) for a manifest whose first line is no JSON but a CSV or TSV header (``id,audio,transcript``:
    each of its lines was refused, one warning each, under ``on_bad_example: skip``): manifests are JSON Lines, and
    a one-line conversion; None for anything else (a single bad line of a JSONL file stays a bad line)."""
    number, raw = next(((number, raw) for number, raw in raw_lines(path) if raw.strip()), (0, b""))
    line = raw.decode("utf-8", errors="replace").strip()
    delimiter = next((d for d in DELIMITERS if d in line), None)
    if not line or line[0] in '{["' or delimiter is None:
        return None
    names = [name.strip().strip('"').strip() for name in line.split(delimiter)]
    if len(names) < 2 or not all(COLUMN_NAME.fullmatch(name) for name in names) \
            or not {name.lower() for name in names} & HEADER_NAMES:
        return None
    kind, written = DELIMITERS[delimiter]
    target = Path(path).with_suffix(".jsonl")
    target = target if target != Path(path) else target.with_name(f"{target.stem}_converted.jsonl")  # not itself
    return number, (
        f"the file is a {kind} table (its first line is the header {', '.join(names)}), not JSON Lines: a manifest "
        f"holds one JSON object per line, e.g. {EXAMPLE_LINE}; convert it (its columns named id, audio, instruction, "
        "...), e.g. python -c \"import csv, json, sys; [print(json.dumps(row, ensure_ascii=False)) for row in "
        f"csv.DictReader(open(sys.argv[1], newline='', encoding='utf-8'), delimiter='{written}')]\" "
        f"{shlex.quote(str(path))} > {shlex.quote(str(target))}")

"""Reading JSON Lines text files as users write them: line by line as bytes (an undecodable line is
a bad line, not a crash), any line end (LF, CRLF, a lone CR), a leading UTF-8 BOM dropped, and a
file that is no UTF-8 text at all (compressed, UTF-16/32, audio, Parquet) named as such with what
to do. Every reader of a JSONL manifest goes through :func:`raw_lines`, so line numbers agree."""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_LONE_CR = re.compile(rb"\r(?!\n)")


def raw_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """``(number, bytes)`` of each line of a file, from 1, ended by ``\\n``, ``\\r\\n`` or a lone
    ``\\r`` (a classic Mac file; JSON strings hold no raw CR or LF), not by the other characters
    ``str.splitlines`` splits at (U+2028, U+2029, U+0085 … may stand inside JSON strings); a leading
    UTF-8 BOM is dropped. Every reader of a JSONL manifest goes through it, so line numbers agree."""
    number = 0
    with open(path, "rb") as handle:
        for raw in handle:
            for line in _LONE_CR.split(raw) if b"\r" in raw else (raw,):
                number += 1
                yield number, line[len(codecs.BOM_UTF8):] if number == 1 and line.startswith(codecs.BOM_UTF8) else line


COMPRESSED = {  # leading bytes of a compressed file -> (its format, how to get the text back)
    b"\x1f\x8b": ("gzip", "gunzip -k FILE"),
    b"BZh": ("bzip2", "bunzip2 -k FILE"),
    b"\xfd7zXZ\x00": ("xz", "unxz -k FILE"),
    b"\x28\xb5\x2f\xfd": ("zstd", "unzstd FILE"),
    b"PK\x03\x04": ("zip", "unzip FILE"),
}
WIDE_TEXT = {  # leading bytes of UTF-16/32 text (a byte-order mark, or ASCII "{" with its zero bytes)
    b"\xff\xfe\x00\x00": "UTF-32LE", b"\x00\x00\xfe\xff": "UTF-32BE", b"\xff\xfe": "UTF-16LE",
    b"\xfe\xff": "UTF-16BE", b"{\x00\x00\x00": "UTF-32LE", b"{\x00": "UTF-16LE", b"\x00{": "UTF-16BE",
}
NOT_TEXT = {  # leading bytes of files given where a JSONL file goes (an audio clip, a dataset's table)
    b"RIFF": "WAV audio", b"fLaC": "FLAC audio", b"OggS": "Ogg audio", b"ID3": "MP3 audio",
    b"PAR1": "Parquet table", b"ARROW1": "Arrow table",
}


def text_lines_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as UTF-8 text lines at all, with what to do, or None: a compressed
    file (``train.jsonl.gz``), UTF-16/32 text (what Windows PowerShell's ``>`` writes), or an audio
    file or data table given in the JSONL file's place. Each of its lines would otherwise be an
    undecodable bad line."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    for magic, (name, command) in COMPRESSED.items():
        if head.startswith(magic):
            return (f"a {name}-compressed file, not JSON Lines text: decompress it ({command.replace('FILE', str(path))})"
                    " and give the file that comes out")
    encoding = WIDE_TEXT.get(next((magic for magic in WIDE_TEXT if head.startswith(magic)), b""), _zero_pattern(head))
    if encoding:
        return (f"{encoding} text, not UTF-8: save it as UTF-8 (e.g. iconv -f {encoding} -t UTF-8 {path} > "
                f"{Path(path).stem}.utf8{Path(path).suffix}; Windows PowerShell's > writes UTF-16, "
                "Out-File -Encoding utf8 does not)")
    for magic, name in NOT_TEXT.items():
        if head.startswith(magic):
            return (f"a {name} file, not JSON Lines text: give the JSONL file here (one JSON object per line; an audio "
                    "file is named in a line's 'audio' field, a Parquet or Arrow dataset goes to data.hf_dataset)")
    return None


def _zero_pattern(head: bytes) -> str | None:
    """``UTF-16LE`` / ``UTF-16BE`` for leading bytes of ASCII text in UTF-16 without a byte-order mark
    (a 0 byte after or before each character; whatever the first character: a blank line, a space),
    else None. At least 4 characters are asked for: a 0 byte beside each of fewer is no pattern."""
    pairs = len(head) // 2
    if pairs < 4:
        return None
    even, odd = head[0 : 2 * pairs : 2], head[1 : 2 * pairs : 2]
    if not any(odd) and all(even):
        return "UTF-16LE"
    if not any(even) and all(odd):
        return "UTF-16BE"
    return None


def decode_utf8(raw: bytes) -> str:
    """``raw`` as UTF-8; a ``ValueError`` naming the bad bytes and their offset if it is not (and, for a
    line whose first non-ASCII byte is the bad one, what it reads as in Windows-1252 and how to convert)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = raw[err.start : err.end].hex(" ")
        raise ValueError(f"not valid UTF-8: byte(s) {bad} at byte offset {err.start} ({err.reason})"
                         f"{_legacy_hint(raw, err.start)}") from err


def _legacy_hint(raw: bytes, start: int) -> str:
    """For a line not UTF-8 from its first non-ASCII byte, at ``start``, that reads as Windows-1252 (a
    superset of Latin-1's letters: Excel's and Notepad's legacy "ANSI" files): the character the byte is
    there, and how to convert the file; else "" (valid UTF-8 before it: a mix, not a legacy file)."""
    if any(byte >= 0x80 for byte in raw[:start]):
        return ""
    try:
        text = raw.decode("cp1252")
    except UnicodeDecodeError:
        return ""
    return (f"; in Windows-1252 (Latin-1) it reads {text[start]!r}: if the file was saved so, convert it to UTF-8 "
            "(e.g. iconv -f WINDOWS-1252 -t UTF-8 FILE > FILE.utf8)")


def jsonl_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(number, text)`` of the non-blank lines of a UTF-8 JSONL file (:func:`raw_lines`), without
    their line end; a line that is not UTF-8 raises ``ValueError`` naming file and line, and a file
    that is no UTF-8 text at all (UTF-16, compressed: :func:`text_lines_problem`) one naming the file
    (its first bad byte got Windows-1252 advice, or a UTF-16 line without a BOM "invalid JSON")."""
    if os.path.isfile(path):  # not a pipe: its first bytes would be lost to the check
        problem = text_lines_problem(path)
        if problem:
            raise ValueError(f"{path}: {problem}")
    for number, raw in raw_lines(path):
        try:
            text = decode_utf8(raw)
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from err
        if text.strip():
            yield number, text.rstrip("\r\n")


def read_numbered_jsonl(path: str | Path) -> list[tuple[int, Any]]:
    """``(line number, row)`` of a JSONL file's rows (:func:`jsonl_lines`: blank lines are skipped,
    so a row's place in the list is not its line); a bad line raises naming file and line."""
    rows = []
    for number, line in jsonl_lines(path):
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: invalid JSON ({err.msg})") from err
        except RecursionError:
            raise ValueError(f"{path}:{number}: invalid JSON (nested deeper than Python's recursion limit)") from None
        except ValueError as err:  # an integer literal longer than Python converts
            raise ValueError(f"{path}:{number}: invalid JSON ({err})") from None
    return rows


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file (:func:`read_numbered_jsonl`); a bad line raises naming file and line."""
    return [row for _, row in read_numbered_jsonl(path)]

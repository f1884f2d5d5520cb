"""Whether a path names an audio file that can be read without waiting on it, and why not: what
:func:`~speechsum.data.audio.load_audio`, manifest lines and ``speechsum summarize`` check first."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

# a file of 0 bytes: what to do with it
EMPTY_FILE = "an empty file (0 bytes: a download or copy that failed?): replace it with the recording, or drop it"
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # http://, s3://, file:// … (a scheme, then //)


def url_problem(value: str) -> str | None:
    """Why ``value``, a URL (a scheme, then ``//``; or ``file:/path``), names no file to read, with
    what to do; None for a path. A ``file:`` URL names a local file: its path is given."""
    if not URL.match(value) and value[:6].lower() != "file:/":
        return None
    parts = urlsplit(value)
    if parts.scheme.lower() == "file" and parts.netloc in ("", "localhost"):
        return f"a file:// URL; speechsum reads paths, not URLs: give the path it names, {unquote(parts.path)}"
    return "a URL; speechsum reads local files: download it and give its path"


def path_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as an audio file without waiting on it, or None (a readable
    regular file): missing, a folder, a FIFO/socket/device (opening one waits for a writer forever),
    unreadable, empty, a name the file system refuses (too long, a NUL byte), a file's name with a trailing
    ``/`` (which opening refuses: "System error"), or a URL (:func:`url_problem`)."""
    text, path = os.fspath(path), Path(path)
    try:
        if path.is_file() and not os.path.isfile(text):  # pathlib drops a trailing '/' ('a.wav/'), open() does not
            return f"a path ending in '/' names a folder, but {path} is a file: write it without the '/'"
        if path.is_file():
            if not os.access(path, os.R_OK):
                return "permission denied: make it readable (chmod a+r), or drop it"
            return EMPTY_FILE if path.stat().st_size == 0 else None
        if path.is_dir():
            return "a folder, not an audio file"
        if path.exists():
            return "not a regular file (a FIFO, socket or device); save the audio to a file first"
        if path.is_symlink():
            return f"a broken symbolic link (to {os.readlink(path)}): its target is missing, or the links loop"
        if isinstance(text, str) and (problem := url_problem(text)):
            return problem
        return "no such file"
    except (OSError, ValueError) as err:
        return f"unusable path ({err})"


LIST_HEAD = 1 << 20  # bytes of a file read to tell whether it lists files


def listed_files(path: str | os.PathLike) -> int:
    """How many lines of ``path`` name existing files (from the working folder or the file's own), when it is
    a text file whose first line names one (a list made with ``ls`` or ``find``); 0 for any other file."""
    try:
        with open(path, "rb") as file:
            head = file.read(LIST_HEAD)
        lines = [line.strip() for line in head.decode("utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):  # audio: not UTF-8 text
        return 0
    if b"\0" in head or not lines:
        return 0
    folder = Path(path).parent
    named = [line for line in lines if os.path.isfile(line) or (folder / line).is_file()]
    return len(named) if named[:1] == lines[:1] else 0

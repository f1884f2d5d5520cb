"""``--manifest [SPLIT=]PATH`` of ``speechsum evaluate``: the rule and its parser (no torch or
Lightning here: the pipeline's process reads the evaluation's options without them)."""

from __future__ import annotations

import re
from pathlib import Path

SPLIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MANIFEST_RULE = ("split at the first '=' only when the text is not an existing file and the part before it is a split "
                 "name (letters, digits, _ . -; no '/'), so runs/lr=0.1/test.jsonl is one path and "
                 "test=runs/lr=0.1/test.jsonl is split test of that path")


def parse_manifest_arg(text: str) -> tuple[str, Path]:
    """``[SPLIT=]PATH`` → (split, path); the split defaults to the file's stem (test_unseen.jsonl → test_unseen).
    The text is split at its first '=' only when it is not an existing file and the part before the
    '=' is a split name (:data:`SPLIT_NAME`), so paths holding '=' (``runs/lr=0.1/test.jsonl``) work
    with and without ``SPLIT=``."""
    split, sep, path = text.partition("=")
    named = bool(sep) and SPLIT_NAME.fullmatch(split) is not None and not Path(text).is_file()
    if not named:
        split, path = Path(text).stem, text
    if not path.strip():  # Path("") is the working folder: it was "'' is a folder"
        raise FileNotFoundError(f"--manifest {text!r}: no path given; write --manifest [SPLIT=]PATH")
    if Path(path).is_dir():
        raise IsADirectoryError(f"--manifest {text}: {path} is a folder, not a manifest file (give the .jsonl inside; "
                                "a benchmark folder goes to --benchmark-dir)")
    if not Path(path).is_file():
        reading = f" (read as SPLIT=PATH: split {split!r}; no file named {text} either)" if named else ""
        raise FileNotFoundError(f"--manifest {text}: no manifest file {path}{reading}")
    return split, Path(path)

"""Errors of writing outputs (a full disk, a read-only folder) as one line naming the file and what
to do, not a traceback: every writer goes through :mod:`speechsum.utils.io`, whose temporaries are
removed on an error, so nothing half-written is left under the output's name."""

from __future__ import annotations

import errno

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, quota exceeded, file size limit
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)  # a write the file system refuses (read-only, not ours)


FOREIGN_WORDS = ("No space left on device", "Disk quota exceeded", "os error 28")  # of libraries that raise no OSError


class WriteError(OSError):
    """An output that could not be written; its message (``strerror``) names the file and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


def write_failure_text(err: BaseException, again: str) -> str | None:
    """One line for a full disk (or quota, or file size limit) anywhere in ``err``'s chain, naming
    the file when known; ``again``: how to continue after space is freed. None for other errors."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, WriteError):
            return str(current)
        full = isinstance(current, OSError) and current.errno in DISK_FULL
        if full or any(words in str(current) for words in FOREIGN_WORDS):  # Rust's / C++'s errors: safetensors, torch
            where = f"{current.filename}: " if full and current.filename else ""
            reason = current.strerror if full and current.strerror else str(current).strip().splitlines()[0][:200]
            return (f"{where}cannot write: {reason} (outputs are written whole or not at all: "
                    f"nothing half-written was left); free space on that disk ({again})")
        current = current.__cause__ or current.__context__
    return None

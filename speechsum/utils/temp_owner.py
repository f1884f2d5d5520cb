"""Temporary siblings that say which process wrote them, so a later run can remove those of a
killed writer (SIGKILL runs no cleanup) and never those of a writer still at work.

:func:`speechsum.utils.io.atomic_path` writes ``.NAME.<owner>-XXXX.tmp`` and
:func:`speechsum.utils.io.write_dir_atomically` ``.NAME.tmp-<owner>-XXXX`` (and moves a replaced
folder to ``.NAME.old-<owner>`` for a moment), where ``<owner>`` is ``PID.HOST``: the writer's process
id and a short tag of its machine (a folder on a shared file system is written from several).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
from pathlib import Path

HOST_TAG = hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:6]


def owner_tag() -> str:
    """``PID.HOST`` of this process (see the module docstring); read at each call: a forked worker has its own."""
    return f"{os.getpid()}.{HOST_TAG}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process (or a bogus pid): not ours to judge
        return True
    return True


def _dead_owner(pid: str, host: str) -> bool:
    """Whether the writer ``pid`` of this machine is gone; a writer of another machine is never judged dead."""
    return host == HOST_TAG and int(pid) != os.getpid() and not _alive(int(pid))


def remove_dead_writers_leftovers(target: str | Path) -> list[Path]:
    """Delete what atomic writes of ``target`` by processes of this machine that no longer run left
    beside it: their temporary files and folders, and a replaced version moved aside (``.old-PID.HOST``),
    which is put back instead when ``target`` itself is missing (the writer was killed between its
    two renames: the version before is whole, the new one may not be). Temporaries named without an
    owner (older speechsum) or of a live writer are left alone. Returns what was removed."""
    target = Path(target)
    if is_special_file(target):  # /dev/null, /dev/stdout: written in place, nothing beside it is ours
        return []
    return _remove_dead(target.parent, re.escape(target.name), target)


def is_special_file(path: Path) -> bool:
    """Whether ``path`` exists (after symbolic links) as neither a regular file nor a folder."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def remove_dead_writers_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders of atomic writes of any file in ``folder`` (a
    checkpoint folder: each save has a new name) whose writer, a process of this machine, no longer
    runs (:func:`remove_dead_writers_leftovers`). Returns what was removed."""
    return _remove_dead(Path(folder), r".+?", None)


def _remove_dead(folder: Path, name: str, target: Path | None) -> list[Path]:
    temporary = re.compile(rf"\.{name}\.(?:tmp-)?(\d+)\.([0-9a-f]{{6}})-[^/]+")
    replaced = re.compile(rf"\.{name}\.old-(\d+)\.([0-9a-f]{{6}})") if target is not None else None
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return []
    removed = []
    for entry in entries:
        found = temporary.fullmatch(entry.name)
        aside = replaced.fullmatch(entry.name) if replaced is not None else None
        if aside and _dead_owner(*aside.groups()) and not os.path.lexists(target):
            os.replace(entry.path, target)
            continue
        if not (found and _dead_owner(*found.groups())) and not (aside and _dead_owner(*aside.groups())):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed.append(Path(entry.path))
    return removed


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete what killed atomic writes left under ``folder``: ``.NAME.XXXX.tmp`` files,
    ``.NAME.tmp-XXXX`` folders and the ``.NAME.old-PID.HOST`` folder a replaced target is moved to for a
    moment (:func:`speechsum.utils.io.write_dir_atomically`: SIGKILL runs no cleanup; the targets themselves are whole
    or absent). Call it only while nothing writes there. Returns what was removed."""
    folder = Path(folder)
    stale = sorted({*folder.rglob(".*.tmp"), *folder.rglob(".*.tmp-*"), *folder.rglob(".*.old-*")})
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale

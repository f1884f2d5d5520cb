"""A resumable, append-only key → JSON-object cache in JSONL files, safe with several processes.

Layout of a cache at ``dir/name.jsonl``:

- ``dir/name.jsonl``: written by a single process (no rank: neither given nor in the environment);
- ``dir/name.rank<N>.jsonl``: written only by process rank N of a distributed run (torchrun,
  Lightning DDP). One writer per file, so concurrent ranks never interleave half-lines.

Opening reads the base file and every rank shard and merges them (base first, then shards by
rank; a key seen again counts in ``duplicates``, the last value wins). Only the file this process
writes is repaired (a crash's truncated last line is cut off); another writer's incomplete last
line may be a write in progress, so it is left alone and read once complete. With a rank, a
:meth:`JsonlCache.get` that misses first reads what other ranks have appended since (only the new
bytes), so a key another rank has just cached is not asked for again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

LOG = logging.getLogger(__name__)


def process_rank() -> int | None:
    """This process's global rank in a distributed run, or None in a single-process run.

    ``RANK`` (torchrun, SLURM via Lightning) first; else ``torch.distributed``'s rank when it is
    initialised (Lightning DDP after setup); else ``LOCAL_RANK`` when ``WORLD_SIZE`` > 1 on one
    node (Lightning's launcher before setup)."""
    if os.environ.get("RANK", "").isdigit():
        return int(os.environ["RANK"])
    dist = sys.modules.get("torch.distributed")  # never import torch just to ask
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    world = os.environ.get("WORLD_SIZE", "1")
    local = os.environ.get("LOCAL_RANK", "")
    if world.isdigit() and int(world) > 1 and local.isdigit() and os.environ.get("NODE_RANK", "0") == "0":
        return int(local)
    return None


def shard_path(path: Path, rank: int | None) -> Path:
    """The file a process of ``rank`` appends to: ``path`` itself (None) or ``<stem>.rank<N><suffix>``."""
    return path if rank is None else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def shard_files(path: Path) -> list[Path]:
    """``path`` (if it exists) and its rank shards, in merge order (rank 0, 1, …)."""
    pattern = re.compile(re.escape(path.stem) + r"\.rank(\d+)" + re.escape(path.suffix) + "$")
    shards = sorted((int(m.group(1)), p) for p in path.parent.glob(f"{path.stem}.rank*{path.suffix}")
                    if (m := pattern.match(p.name)))
    return ([path] if path.exists() else []) + [p for _, p in shards]


def _entry(raw: bytes) -> tuple[str, dict]:
    record = json.loads(raw.decode("utf-8"))
    if not (isinstance(record, dict) and isinstance(record.get("key"), str) and isinstance(record.get("value"), dict)):
        raise ValueError("expected an object with a string 'key' and an object 'value'")
    return record["key"], record["value"]


@dataclass
class Chunk:
    """What :func:`read_entries` read: the ``entries``, where reading stopped (``end`` byte,
    ``next_line`` number) and whether a truncated last line was cut off (``truncated``: 0 or 1)."""

    entries: list[tuple[str, dict]]
    end: int
    next_line: int
    truncated: int = 0


def read_entries(path: Path, offset: int = 0, first_line: int = 1, repair: bool = False) -> Chunk:
    """The entries of ``path`` from byte ``offset`` on (line ``first_line``). Lines end with a
    newline; the bytes after the last one are a write cut short or still in progress: with
    ``repair`` (the file this process writes) a valid entry there gets its newline and anything
    else is cut off the file; without, they are left for a later read. Any other unreadable line
    raises ``ValueError`` naming file and line."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read()
    *lines, tail = data.split(b"\n")
    entries: list[tuple[str, dict]] = []
    for number, raw in enumerate(lines, start=first_line):
        if raw.strip():
            try:
                entries.append(_entry(raw))
            except (ValueError, UnicodeDecodeError) as error:
                raise ValueError(f"{path}, line {number}: unreadable cache entry ({error}). "
                                 "Remove the line or the file to rebuild the cache.") from None
    end, next_line = offset + len(data) - len(tail), first_line + len(lines)
    if not repair or not tail.strip():
        return Chunk(entries, end + (len(tail) if repair else 0), next_line)
    try:
        entries.append(_entry(tail))
    except (ValueError, UnicodeDecodeError):
        LOG.warning("%s: cutting off the truncated last line %d (%d bytes)", path, next_line, len(tail))
        with open(path, "r+b") as handle:
            handle.truncate(end)
        return Chunk(entries, end, next_line, truncated=1)
    with open(path, "ab") as handle:  # a complete entry without its newline: finish the line
        handle.write(b"\n")
    return Chunk(entries, end + len(tail) + 1, next_line + 1)


class JsonlCache:
    """Key → JSON object, one ``{"key": k, "value": v}`` line per ``put`` (flushed and fsynced).

    Thread-safe within a process; several processes are safe when each has its own ``rank``
    (default: :func:`process_rank`), since each then appends to its own shard (module docstring).
    ``truncated_lines``: cut-short lines met on open; ``duplicates``: keys seen more than once.
    Never put secrets in values.
    """

    def __init__(self, path: str | os.PathLike, rank: int | None | str = "auto") -> None:
        self.path = Path(path)
        self.rank = process_rank() if rank == "auto" else rank
        self.write_path = shard_path(self.path, self.rank)
        self.truncated_lines = 0
        self.duplicates = 0
        self._entries: dict[str, dict] = {}
        self._read_to: dict[Path, tuple[int, int]] = {}  # file → (bytes read, next line number)
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()  # one reader of the files at a time
        self._file: TextIO | None = None
        self.created_folders = [f for f in [self.path.parent, *self.path.parent.parents] if not f.exists()]  # deepest first
        self.created = not self.write_path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.reload()
        self._file = open(self.write_path, "a", encoding="utf-8")  # noqa: SIM115  (closed in close())

    def reload(self) -> None:
        """Read every file of the cache again from the start."""
        with self._lock:
            self._entries, self._read_to, self.truncated_lines, self.duplicates = {}, {}, 0, 0
        self.refresh()

    def refresh(self) -> int:
        """Read what was appended to other writers' files since the last read (complete lines only);
        returns how many entries that added. :meth:`get` does this on a miss when ``rank`` is set."""
        added = 0
        with self._refresh_lock:
            for file in shard_files(self.path):
                own = file == self.write_path
                if own and file in self._read_to:
                    continue  # what this process wrote since, it has already
                offset, line = self._read_to.get(file, (0, 1))
                # repair only the own file, and only before this process writes to it
                chunk = read_entries(file, offset, line, repair=own and self._file is None)
                with self._lock:
                    self._read_to[file] = (chunk.end, chunk.next_line)
                    self.truncated_lines += chunk.truncated
                    for key, value in chunk.entries:
                        self.duplicates += key in self._entries
                        added += key not in self._entries
                        self._entries[key] = value
        return added

    def get(self, key: str) -> dict | None:
        with self._lock:
            value = self._entries.get(key)
        if value is None and self.rank is not None and self.refresh():  # another rank may have it by now
            with self._lock:
                value = self._entries.get(key)
        return value

    def put(self, key: str, value: dict) -> None:
        """Store ``value`` (a JSON-serialisable dict) under ``key`` durably (flush + fsync)."""
        line = json.dumps({"key": key, "value": value}, ensure_ascii=False, allow_nan=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self.duplicates += key in self._entries
            self._entries[key] = value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def close(self) -> None:
        with self._lock:
            if self._file is not None and not self._file.closed:
                self._file.close()

    def discard_if_unused(self) -> None:
        """Close, then delete the file this cache created and never wrote to, and its folder when this
        cache created that too and it holds nothing else: a run that failed before its first answer
        (an endpoint down, a wrong model) left an empty cache behind."""
        self.close()
        write = self.write_path
        if self.created and write.is_file() and not write.is_symlink() and not write.stat().st_size:
            write.unlink()
        for folder in self.created_folders:  # those mkdir made, while each is left empty
            if not _removed_if_empty(folder):
                break

    def __enter__(self) -> JsonlCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _removed_if_empty(folder: Path) -> bool:
    try:
        folder.rmdir()
    except OSError:  # not empty (or gone)
        return False
    return True


def remove_if_empty(folder: str | os.PathLike) -> bool:
    """Delete ``folder`` when it holds nothing but empty files (caches a run opened and then failed
    before it stored anything, e.g. on an unreadable checkpoint); returns whether it did."""
    folder = Path(folder)
    entries = list(folder.iterdir()) if folder.is_dir() else None
    if entries is None or any(not entry.is_file() or entry.is_symlink() or entry.stat().st_size for entry in entries):
        return False
    for entry in entries:
        entry.unlink()
    folder.rmdir()
    return True


"""The bytes of an audio file for the walks over its structure (MP3 frames, Ogg pages, FLAC stream
headers, RIFF chunks), without reading a path's file into memory."""

from __future__ import annotations

import mmap
from collections.abc import Callable
from typing import BinaryIO, TypeVar

Buffer = bytes | bytearray | memoryview | mmap.mmap  # what a walk reads
T = TypeVar("T")


def walk_file(source: str | BinaryIO, walk: Callable[[Buffer], T]) -> T:
    """``walk`` over the bytes of the file ``source`` (a path: mapped, not read into memory; a file
    object: read, its position kept)."""
    if isinstance(source, str):
        with open(source, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return walk(mapped)
    position = source.tell()
    try:
        source.seek(0)
        return walk(source.read())
    finally:
        source.seek(position)


def walk_or_none(source: str | BinaryIO, walk: Callable[[Buffer], T]) -> T | None:
    """:func:`walk_file`, or None when the file cannot be read (``OSError``) or walked (``ValueError``)."""
    try:
        return walk_file(source, walk)
    except (OSError, ValueError):
        return None

"""WAV files for the audio-limit tests: hours of silence in no time (sparse), and poisoned samples."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# subtype -> (WAVE format tag, bytes per sample, numpy dtype on disk)
_LAYOUT = {"PCM_16": (1, 2, "<i2"), "FLOAT": (3, 4, "<f4"), "DOUBLE": (3, 8, "<f8")}


def sparse_wav(path: Path, frames: int, rate: int, subtype: str = "PCM_16", channels: int = 1) -> Path:
    """A canonical 44-byte-header WAV of ``frames`` silent frames whose data is a hole in the file.

    The file system reads the hole as zero bytes (silence in every subtype), so a two-hour file
    takes no disk space and no time to write, yet reads exactly like a real one.
    """
    tag, width, _ = _LAYOUT[subtype]
    align = width * channels
    data = frames * align
    header = b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, tag, channels, rate, rate * align, align, 8 * width)
    header += b"data" + struct.pack("<I", data)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(header)
        handle.truncate(len(header) + data)
    return path


def poke(path: Path, frame: int, value: float, subtype: str = "FLOAT", channels: int = 1, channel: int = 0) -> None:
    """Overwrite one sample of a :func:`sparse_wav` file (``frame``, ``channel``) with ``value``."""
    _, width, dtype = _LAYOUT[subtype]
    with path.open("r+b") as handle:
        handle.seek(44 + (frame * channels + channel) * width)
        handle.write(np.array([value], dtype=dtype).tobytes())

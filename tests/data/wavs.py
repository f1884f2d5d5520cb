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


def flac_without_length(path: Path, waveform: np.ndarray, rate: int = 16_000) -> Path:
    """A FLAC file whose STREAMINFO says "total samples unknown" (0), as a streamed or piped encoder
    writes it: libsndfile then reports 2**63 - 1 frames."""
    import soundfile as sf

    sf.write(path, waveform, rate, format="FLAC")
    data = bytearray(path.read_bytes())
    # "fLaC", a 4-byte block header, then STREAMINFO: the 36-bit sample count starts in the low
    # nibble of its byte 13 (file offset 21) and fills bytes 14-17
    data[21] &= 0xF0
    data[22:26] = bytes(4)
    path.write_bytes(bytes(data))
    return path

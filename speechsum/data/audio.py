"""Audio loading: soundfile → mono float32 → resampled to the model's rate, with a length policy.

Files are read in blocks of :data:`BLOCK_FRAMES` and only as far as the length policy needs, so a
two-hour recording truncated to 30 s costs 30 s of memory, not two hours. Every block is checked
for NaN/Inf samples (a float WAV can hold them), which would otherwise flow into features and losses.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import soundfile as sf
import soxr

TooLong = Literal["error", "truncate"]

BLOCK_FRAMES = 1 << 16  # frames per read: ~4 s at 16 kHz; bounds what a scan holds at once
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})  # sample formats that can store NaN/Inf


class AudioTooLongError(ValueError):
    """Raised when a clip exceeds ``max_seconds`` under the ``"error"`` policy."""


class NonFiniteAudioError(ValueError):
    """Raised when a file holds a NaN or infinite sample; the message names the file and where."""

    def __init__(self, path: str, frame: int, rate: int):
        self.path, self.frame = str(path), frame
        super().__init__(
            f"{path}: non-finite sample (NaN or Inf) at frame {frame} ({frame / rate:.2f} s); "
            "the audio is corrupt: re-export it or drop it from the manifest"
        )


def _check_block(block: np.ndarray, path: str, start: int, rate: int) -> None:
    """Raise :class:`NonFiniteAudioError` if ``block`` (frames × channels, from frame ``start``) has NaN/Inf."""
    finite = np.isfinite(block)
    if not finite.all():
        frame = int(np.argmin(finite.all(axis=1)))
        raise NonFiniteAudioError(path, start + frame, rate)


def check_finite(path: str, block_frames: int = BLOCK_FRAMES) -> None:
    """Scan ``path`` block by block and raise :class:`NonFiniteAudioError` at the first NaN/Inf sample.

    Only files stored as floats (:data:`FLOAT_SUBTYPES`) are read: integer PCM cannot hold NaN/Inf,
    so for those only the header is opened. Memory stays at one block whatever the file's length.
    """
    with sf.SoundFile(path) as handle:
        if handle.subtype not in FLOAT_SUBTYPES:
            return
        buffer = np.empty((block_frames, handle.channels), dtype=np.float32)  # reused for every block
        start = 0
        for block in handle.blocks(out=buffer):
            _check_block(block, path, start, handle.samplerate)
            start += len(block)


def _read_mono(handle: sf.SoundFile, path: str, frames: int) -> np.ndarray:
    """The first ``frames`` frames of ``handle`` (or up to its end) as mono float32, block by block."""
    waveform = np.empty(frames, dtype=np.float32)
    done = 0
    while done < frames:
        block = handle.read(min(BLOCK_FRAMES, frames - done), dtype="float32", always_2d=True)
        if len(block) == 0:
            break  # the header promised more frames than the file holds
        _check_block(block, path, done, handle.samplerate)
        waveform[done : done + len(block)] = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
        done += len(block)
    return waveform[:done]


def load_audio(
    path: str,
    sample_rate: int,
    max_seconds: float | None = None,
    too_long: TooLong = "truncate",
) -> np.ndarray:
    """Read ``path`` as a mono float32 waveform at ``sample_rate`` Hz, shape ``(samples,)``.

    Multi-channel audio is averaged to mono; other rates are resampled with soxr (high quality).
    Clips longer than ``max_seconds`` are cut to the first ``max_seconds`` (``too_long="truncate"``:
    only those frames are read and resampled) or rejected from the header alone with
    :class:`AudioTooLongError` (``too_long="error"``). A NaN or infinite sample in what is read
    raises :class:`NonFiniteAudioError` (a ``ValueError`` naming the file).
    """
    with sf.SoundFile(path) as handle:
        rate, frames = handle.samplerate, handle.frames
        # round: max_seconds * rate is inexact in floating point (0.7 * 22050 = 15434.999…)
        limit = None if max_seconds is None else round(max_seconds * rate)
        if limit is not None and frames > limit:
            if too_long == "error":
                raise AudioTooLongError(
                    f"{path}: {frames / rate:.2f} s is longer than max_audio_seconds={max_seconds}; "
                    "raise the limit or set too_long_audio='truncate'"
                )
            frames = limit
        waveform = _read_mono(handle, path, frames)
    if rate != sample_rate:
        waveform = soxr.resample(waveform, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(waveform, dtype=np.float32)

"""Audio loading: soundfile → mono float32 → resampled to the model's rate, with a length policy."""

from __future__ import annotations

from typing import Literal

import numpy as np
import soundfile as sf
import soxr

TooLong = Literal["error", "truncate"]


class AudioTooLongError(ValueError):
    """Raised when a clip exceeds ``max_seconds`` under the ``"error"`` policy."""


def load_audio(
    path: str,
    sample_rate: int,
    max_seconds: float | None = None,
    too_long: TooLong = "truncate",
) -> np.ndarray:
    """Read ``path`` as a mono float32 waveform at ``sample_rate`` Hz, shape ``(samples,)``.

    Multi-channel audio is averaged to mono; other rates are resampled with soxr (high quality).
    Clips longer than ``max_seconds`` are cut to the first ``max_seconds`` (``too_long="truncate"``)
    or rejected with :class:`AudioTooLongError` (``too_long="error"``).
    """
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    waveform = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    # round: max_seconds * rate is inexact in floating point (0.7 * 22050 = 15434.999…)
    limit = None if max_seconds is None else round(max_seconds * rate)
    if limit is not None and len(waveform) > limit:
        if too_long == "error":
            raise AudioTooLongError(
                f"{path}: {len(waveform) / rate:.2f} s is longer than max_audio_seconds={max_seconds}; "
                "raise the limit or set too_long_audio='truncate'"
            )
        waveform = waveform[:limit]
    if rate != sample_rate:
        waveform = soxr.resample(waveform, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(waveform, dtype=np.float32)

"""The length policy for audio clips: a clip longer than ``max_audio_seconds`` is refused
(``too_long="error"``: :class:`AudioTooLongError`) or cut to its first ``max_audio_seconds``."""

from __future__ import annotations

from typing import BinaryIO, Literal

TooLong = Literal["error", "truncate"]


class AudioTooLongError(ValueError):
    """Raised when a clip exceeds ``max_seconds`` under the ``"error"`` policy; ``seconds``: its
    length from the header (None when the header does not say)."""

    def __init__(self, message: str, seconds: float | None = None):
        super().__init__(message)
        self.seconds = seconds


def too_long_advice(max_seconds: float) -> str:
    """What to do about a clip longer than ``max_seconds`` (the words after its length)."""
    return f"is longer than max_audio_seconds={max_seconds}; raise the limit or set too_long_audio='truncate'"


def check_length(source: str | BinaryIO, frames: int, rate: int, max_seconds: float | None) -> None:
    """Raise :class:`AudioTooLongError` when ``frames`` at ``rate`` Hz exceed ``max_seconds`` (the
    limit in frames rounded: ``max_seconds * rate`` is inexact, 0.7 * 22050 = 15434.999…). The
    message gives the samples when two decimals hide the excess (30.00 s over a limit of 30)."""
    if max_seconds is None or frames <= (limit := round(max_seconds * rate)):
        return
    length = f"{frames / rate:.2f} s"
    if float(length[:-2]) <= max_seconds:
        length += f" ({frames} samples at {rate} Hz; the limit is {limit})"
    raise AudioTooLongError(f"{source}: {length} {too_long_advice(max_seconds)}", frames / rate)

"""What a readable clip may hold that no speech is in: every sample 0 (digital silence), or channels that
cancel when averaged to mono (one in opposite phase to the other). Found when the clip is read; said once
per file, in the process that reports it (in the data pipeline: the main one, see ``loader.py``)."""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

# the mono mix this far below its channels (in energy) is channels that cancel, not a mix: two voices on
# their own channels lose 3 dB, one channel silent 3 dB, identical channels nothing
CANCEL_DB = 20.0
_SAID: set[str] = set()  # notes logged by :func:`say_once` in this process


class MixEnergy:
    """Sums of squares over a clip's multichannel blocks: of the channels (per channel) and of their mono
    average, to tell channels that cancel when averaged (:meth:`cancelled_db`)."""

    def __init__(self) -> None:
        self.channels = 0.0
        self.mono = 0.0

    def add(self, block: np.ndarray, mono: np.ndarray) -> None:
        """Count one ``(frames, channels)`` block and its mono mix."""
        self.channels += float(np.einsum("ij,ij->", block, block, dtype=np.float64)) / block.shape[1]
        self.mono += float(np.dot(mono.astype(np.float64), mono))

    def cancelled_db(self) -> float | None:
        """How many dB the mono mix is below its channels where that is more than :data:`CANCEL_DB`
        (``inf`` for a mix of exact zeros), else None (also for silent channels: nothing to cancel)."""
        if self.channels <= 0.0 or self.mono >= self.channels * 10 ** (-CANCEL_DB / 10):
            return None
        return math.inf if self.mono == 0.0 else 10 * math.log10(self.channels / self.mono)


def clip_notes(source: object, waveform: np.ndarray, rate: int, mix: MixEnergy | None) -> list[str]:
    """Warnings for a clip read as mono ``waveform`` (``rate`` Hz) from ``source``: digital silence, or
    channels that cancel in the mono mix (``mix``: their energies, None for a mono file)."""
    seconds = len(waveform) / rate
    cancelled = mix.cancelled_db() if mix is not None else None
    if cancelled is not None:
        drop = "to exact zeros" if math.isinf(cancelled) else f"{cancelled:.0f} dB below its channels"
        return [f"{source}: its channels cancel when averaged to mono (the mix is {drop}, {seconds:.2f} s): one "
                "channel is in opposite phase to another, so the model hears (almost) nothing; keep one channel "
                "(e.g. `sox in.wav out.wav remix 1`) or invert one before mixing (`sox in.wav out.wav remix 1,2i`)"]
    if len(waveform) and not waveform.any():
        return [f"{source}: every sample is 0 (digital silence, {seconds:.2f} s): there is no speech in it to "
                "summarise; check the recording (a muted or failed capture?) or drop it"]
    return []


def say_once(notes: list[str], logger: logging.Logger = log) -> None:
    """Log each of ``notes`` as a warning, each once in this process (a clip is read once per epoch)."""
    for note in notes:
        if note not in _SAID:
            _SAID.add(note)
            logger.warning("%s", note)

"""What a readable clip may hold that no speech is in: every sample 0 (digital silence) or the same (a constant
offset, :data:`STILL_STEP`), or channels that cancel when averaged to mono (one in opposite phase to the other);
and float samples louder than any recording (over ±``LOUD_SAMPLE``, read as they are). Found when the clip is
read; said once per file, in the process that reports it (in the data pipeline: the main one, see ``loader.py``)."""

from __future__ import annotations

import logging
import math

import numpy as np

from speechsum.data.sample_checks import LOUD_SAMPLE, loud_note

log = logging.getLogger(__name__)

# the mono mix this far below its channels (in energy) is channels that cancel, not a mix: two voices on
# their own channels lose 3 dB, one channel silent 3 dB, identical channels nothing. N independent channels
# (a microphone array's noise, unrelated tracks) mix 10*log10(N) dB below: beyond two channels the margin
# grows with that (100 channels: 37 dB, not 20: their 20-dB mix is no cancelling)
CANCEL_DB = 20.0
# samples that vary less than this (half a 24-bit recording's step) hold no sound, whatever their offset: a constant
# clip (0.5 everywhere, a stuck capture) or float "silence" of denormals; before 2026-12-08 read without a word
STILL_STEP = 2.0**-24
_SAID: set[str] = set()  # notes logged by :func:`say_once` in this process


SILENT, LOUD = "silent", "loud"  # the kinds of :class:`ClipNote`


class ClipNote(str):
    """A warning about a readable clip (its text); ``kind``: :data:`SILENT` (no sound in it: digital silence,
    channels that cancel) or :data:`LOUD` (float samples over ±``LOUD_SAMPLE``)."""

    kind: str

    def __new__(cls, text: str, kind: str) -> ClipNote:
        note = super().__new__(cls, text)
        note.kind = kind
        return note

    def __getnewargs__(self) -> tuple[str, str]:  # pickled with its kind (a DataLoader worker's notes)
        return str(self), self.kind


class MixEnergy:
    """Sums of squares over a clip's multichannel blocks: of the channels (per channel) and of their mono
    average, to tell channels that cancel when averaged (:meth:`cancelled_db`)."""

    def __init__(self) -> None:
        self.channels = 0.0
        self.mono = 0.0
        self.count = 2  # channels of the blocks counted

    def add(self, block: np.ndarray, mono: np.ndarray) -> None:
        """Count one ``(frames, channels)`` block and its mono mix."""
        self.count = block.shape[1]
        self.channels += float(np.einsum("ij,ij->", block, block, dtype=np.float64)) / block.shape[1]
        self.mono += float(np.dot(mono.astype(np.float64), mono))

    def cancelled_db(self) -> float | None:
        """How many dB the mono mix is below its channels where that is more than :data:`CANCEL_DB` (more
        than independent channels lose beyond two: :data:`CANCEL_DB` + 10*log10(channels / 2)); ``inf`` for
        a mix of exact zeros; else None (also for silent channels: nothing to cancel)."""
        margin_db = CANCEL_DB + 10 * math.log10(max(self.count, 2) / 2)
        if self.channels <= 0.0 or self.mono >= self.channels * 10 ** (-margin_db / 10):
            return None
        return math.inf if self.mono == 0.0 else 10 * math.log10(self.channels / self.mono)


def clip_notes(source: object, waveform: np.ndarray, rate: int, mix: MixEnergy | None,
               peak: float = 0.0) -> list[ClipNote]:
    """Warnings for a clip read as mono ``waveform`` (``rate`` Hz) from ``source``: digital silence, or
    channels that cancel in the mono mix (``mix``: their energies, None for a mono file); float samples
    over ±``LOUD_SAMPLE`` (``peak``: the largest |sample| of its channels; 0: not looked at)."""
    seconds = len(waveform) / rate
    cancelled = mix.cancelled_db() if mix is not None else None
    loud = [ClipNote(loud_note(source, peak), LOUD)] if peak > LOUD_SAMPLE else []
    if cancelled is not None:
        drop = "to exact zeros" if math.isinf(cancelled) else f"{cancelled:.0f} dB below its channels"
        return [ClipNote(f"{source}: its channels cancel when averaged to mono (the mix is {drop}, {seconds:.2f} s): "
                         "one channel is in opposite phase to another, so the model hears (almost) nothing; keep one "
                         "channel (e.g. `sox in.wav out.wav remix 1`) or invert one before mixing (`sox in.wav out.wav "
                         "remix 1,2i`)", SILENT), *loud]
    if len(waveform) and not waveform.any():
        return [ClipNote(f"{source}: every sample is 0 (digital silence, {seconds:.2f} s): there is no speech in it to "
                         "summarise; check the recording (a muted or failed capture?) or drop it", SILENT)]
    if len(waveform) and (high := float(waveform.max())) - (low := float(waveform.min())) <= STILL_STEP:
        level = f"is {low:.3g}" if low == high else f"lies within {low:.3g} and {high:.3g}"
        return [ClipNote(f"{source}: every sample {level} (a constant offset: digital silence, {seconds:.2f} s): there "
                         "is no sound, no speech in it to summarise; check the recording (a stuck or failed capture?) "
                         "or drop it", SILENT), *loud]
    return loud


def say_once(notes: list[str], logger: logging.Logger = log) -> None:
    """Log each of ``notes`` as a warning, each once in this process (a clip is read once per epoch)."""
    for note in notes:
        if note not in _SAID:
            _SAID.add(note)
            logger.warning("%s", note)

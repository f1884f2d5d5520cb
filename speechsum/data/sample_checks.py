"""Checks of the samples read from an audio file (or given as an array): a NaN/Inf, a float sample far
outside [-1, 1]. A float file may clip a little above full scale (headroom: read as it is, with a warning
at load above :data:`LOUD_SAMPLE`); one peaking beyond :data:`UNSCALED_SAMPLE` was written at a wrong scale
(a writer that kept int8/int16-like values, or multiplied twice) and is refused naming its peak."""

from __future__ import annotations

import math

import numpy as np

from speechsum.data.clip_advice import DROP_FROM_MANIFEST

MAX_SAMPLE = 1000.0  # |float sample| above this (60 dB over full scale) is refused at once, see OutOfRangeAudioError
# |float sample| above this (24 dB over full scale) anywhere in what is read: no recording's headroom, a wrong
# scale (see UnscaledAudioError); refused once the file's peak is known
UNSCALED_SAMPLE = 16.0
LOUD_SAMPLE = 2.0  # |float sample| above this (6 dB over full scale) is read with a warning at load


def loud_note(source: object, peak: float) -> str:
    """The warning for a clip (``source``) of float samples peaking at ``peak``, over :data:`LOUD_SAMPLE`."""
    return (f"{source}: float samples up to {peak:.3g}, {20 * math.log10(peak):.0f} dB over full scale (1.0): read as "
            "they are, louder than any recording; normalise it (e.g. `sox --norm in.wav out.wav`) if that was not meant")


class BadSampleError(ValueError):
    """A sample the features cannot take; the message names the file, the frame and what to do."""

    def __init__(self, path: str, frame: int, rate: int, what: str, advice: str):
        self.path, self.frame, self.what = str(path), frame, what
        super().__init__(f"{path}: {what} at frame {frame} ({frame / rate:.2f} s); {advice}")


class NonFiniteAudioError(BadSampleError):
    """A NaN or infinite sample (a float file can hold them)."""

    def __init__(self, path: str, frame: int, rate: int):
        super().__init__(path, frame, rate, "non-finite sample (NaN or Inf)",
                         f"the audio is corrupt: re-export it or {DROP_FROM_MANIFEST}")


class OutOfRangeAudioError(BadSampleError):
    """A float sample beyond ±``MAX_SAMPLE``: no recording, and its power spectrum overflows float32
    (1e30 turns every feature into NaN and a training step's weights with it)."""

    def __init__(self, path: str, frame: int, rate: int, magnitude: float):
        super().__init__(path, frame, rate, f"sample of magnitude {magnitude:.3g}",
                         f"float audio is expected within [-1, 1] (beyond ±{MAX_SAMPLE:g} it is not a recording "
                         "and its features overflow): normalise it (int16-scale floats: divide by 32768) or "
                         f"{DROP_FROM_MANIFEST}")


class UnscaledAudioError(BadSampleError):
    """Float samples peaking beyond ±``UNSCALED_SAMPLE`` (and within ±``MAX_SAMPLE``): a writer's wrong
    scale, not clipping headroom; the features of such a clip are far from any recording's."""

    def __init__(self, path: str, frame: int, rate: int, peak: float):
        self.peak = peak
        super().__init__(path, frame, rate, f"float sample of {peak:.3g} (its peak, {20 * math.log10(peak):.0f} dB "
                         "over full scale)", f"float audio is within [-1, 1], a little over it where a float file "
                         f"clips (read as it is); beyond ±{UNSCALED_SAMPLE:g} its writer used a wrong scale: "
                         "normalise it (e.g. `sox --norm in.wav out.wav`, or divide the samples by the factor "
                         f"they were scaled by) or {DROP_FROM_MANIFEST}")


def check_block(block: np.ndarray, path: str, start: int, rate: int) -> float:
    """``block``'s peak magnitude (frames × channels, from frame ``start``; 0 for none); :class:`BadSampleError`
    if it holds a NaN/Inf or a sample beyond ±``MAX_SAMPLE``."""
    peak = float(np.abs(block).max()) if block.size else 0.0
    if peak <= MAX_SAMPLE:  # one pass for the usual case (a NaN peak fails it too)
        return peak
    finite = np.isfinite(block)
    if not finite.all():
        frame = int(np.argmin(finite.all(axis=1)))
        raise NonFiniteAudioError(path, start + frame, rate)
    loud = (np.abs(block) > MAX_SAMPLE).any(axis=1)
    if loud.any():
        frame = int(np.argmax(loud))
        raise OutOfRangeAudioError(path, start + frame, rate, float(np.abs(block[frame]).max()))
    return peak  # not reached: a peak over MAX_SAMPLE is a NaN/Inf or a loud sample


class Peak:
    """The largest |sample| of the blocks seen (:meth:`add`) and its frame, to refuse a clip at a
    wrong scale (:meth:`check`) naming its peak, not the first sample over the limit."""

    def __init__(self) -> None:
        self.value, self.frame = 0.0, 0

    def add(self, block: np.ndarray, peak: float, start: int) -> None:
        """Count ``block`` (frames × channels from frame ``start``) whose peak :func:`check_block` gave."""
        if peak > self.value:
            self.value = peak
            if peak > UNSCALED_SAMPLE:  # where: only for the error (one more pass over a block, rare)
                self.frame = start + int(np.abs(block).max(axis=1).argmax())

    def check(self, path: str, rate: int) -> None:
        """Raise :class:`UnscaledAudioError` when the peak is beyond ±``UNSCALED_SAMPLE``."""
        if self.value > UNSCALED_SAMPLE:
            raise UnscaledAudioError(path, self.frame, rate, self.value)

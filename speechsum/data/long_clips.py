"""Warnings for the clips of a split that are longer than its settings allow: cut to
``max_audio_seconds`` when read, or each a batch of its own over ``max_batch_seconds``."""

from __future__ import annotations

import logging
import math

from speechsum.data.dataset import SpeechSumDataset

log = logging.getLogger(__name__)


def warn_long_clips(split: str, dataset: SpeechSumDataset, max_batch_seconds: float) -> int:
    """Log the clips of ``dataset`` that alone exceed ``max_batch_seconds`` (each becomes a batch of its own),
    and those cut to its ``max_audio_seconds`` when read, whose number it returns."""
    cut = [e for e in dataset.examples if dataset.read_audio and e.duration > (dataset.max_audio_seconds or math.inf)]
    if cut:
        longest = max(cut, key=lambda example: example.duration)
        log.warning("%s: %d clip(s) longer than max_audio_seconds=%g are cut to their first %g s when read "
                    "(too_long_audio: truncate; longest: %s, %.1f s, %s): the model sees only that part; set "
                    "too_long_audio: error to refuse them, or raise max_audio_seconds", split, len(cut),
                    dataset.max_audio_seconds, dataset.max_audio_seconds, longest.id, longest.duration, longest.audio)
    over = [(d, e) for d, e in zip(dataset.durations, dataset.examples) if d > max_batch_seconds]
    if over:
        seconds, example = max(over, key=lambda pair: pair[0])
        log.warning(
            "%s: %d clip(s) longer than max_batch_seconds=%g, each a batch of its own over the budget "
            "(longest: %s, %.1f s, %s); set max_audio_seconds to truncate them",
            split, len(over), max_batch_seconds, example.id, seconds, example.audio,
        )
    return len(cut)

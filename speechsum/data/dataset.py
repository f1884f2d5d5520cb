"""SpeechSumDataset: validated examples → ``(example, waveform)`` items, and what happens when audio
that passed at load fails when read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from speechsum.data.audio import AUDIO_ERRORS, TooLong, load_audio
from speechsum.data.audio_notes import say_once
from speechsum.data.hf_dataset import HFDatasetError
from speechsum.data.loader import AudioNote, LoaderError, PaddingMark, SkippedExample
from speechsum.data.manifest import Example, ManifestError, OnBadExample, duration_disagrees
from speechsum.data.sampler import PaddingBatch

SKIP_ADVICE = "or set on_bad_example: skip (speechsum evaluate: --on-bad-example skip) to leave such examples out"


def example_error(example: Example, field: str, reason: str) -> ValueError:
    """The error for ``example`` whose ``field`` is bad (found after it loaded): a
    :class:`ManifestError` naming the manifest file, line and field (an :class:`HFDatasetError`
    naming the dataset's split, row and column), or a ValueError naming the example's id."""
    origin = example.origin
    if origin is None:
        return ValueError(f"example {example.id!r}: field {field!r}: {reason}")
    if origin.split is None:
        return ManifestError(origin.file, origin.line, f"field {field!r}: {reason}")
    return HFDatasetError(origin.file, origin.split, reason, row=origin.line, column=origin.column(field))


def audio_error(example: Example, err: Exception, advice: str | None = SKIP_ADVICE) -> ValueError:
    """The error for an example whose audio failed when it was read (after its header passed at
    load), with what to do (:func:`example_error`, field ``audio``)."""
    reason = (f"{err} (found when its batch was read; its header passed at load): replace the file or remove "
              f"the example{', ' + advice if advice else ''}")
    return example_error(example, "audio", reason)


def check_unchanged(example: Example, seconds: float, limit: float | None) -> None:
    """A ``ValueError`` when ``seconds`` read of ``example``'s audio (cut to ``limit``) are more than 1 s and
    10 % off what its load measured (:func:`duration_disagrees`): the file was rewritten or replaced since
    (its example may describe another recording; batches were planned by the old length). It was read
    as it is now without a word: a clip of 1 s that became an hour filled a batch planned for 1 s."""
    loaded = min(example.duration, limit or float("inf"))
    if duration_disagrees(seconds, loaded):
        raise ValueError(f"{example.audio}: {seconds:.2f} s when read, but {loaded:.2f} s when it was loaded: the file "
                         "changed during the run (rewritten or replaced), so the example may no longer describe it; "
                         "restore it, or start the run again so that it is loaded anew")


def skip_or_raise(example: Example, error: Callable[[str | None], ValueError], on_bad_example: OnBadExample,
                  advice: str | None = SKIP_ADVICE, cause: Exception | None = None) -> SkippedExample:
    """``example`` is bad in a way found when its batch was read: raise ``error(advice)`` ("error"),
    or say how it is skipped ("skip"; ``reason`` without the manifest file and line, as a bad line at
    load, from ``error(None)``)."""
    if on_bad_example == "error":
        raise error(advice) from cause
    skipped = error(None)
    reason = skipped.reason if isinstance(skipped, ManifestError) else str(skipped)
    return SkippedExample(example.id, example.origin.line if example.origin is not None else -1, reason, str(skipped))


class SpeechSumDataset(Dataset):
    """Validated examples (of :func:`~speechsum.data.manifest.load_manifest` or :func:`~speechsum.data.hf_dataset.load_hf_split`:
    their audio passed the whole-file checks at load, not repeated per read); item ``i`` is
    ``(example, mono waveform at sample_rate)``.

    Audio that fails when read raises :func:`audio_error` (``advice``: its last hint, None for
    none), or under ``on_bad_example="skip"`` item ``i`` is a :class:`SkippedExample`, which the
    collator leaves out of the batch."""

    def __init__(
        self,
        examples: list[Example],
        sample_rate: int,
        max_audio_seconds: float | None = None,
        too_long_audio: TooLong = "truncate",
        read_audio: bool = True,
        open_audio: Callable[[int], Any] | None = None,
        on_bad_example: OnBadExample = "error",
        advice: str | None = SKIP_ADVICE,
    ):
        self.examples = examples
        self.sample_rate = sample_rate
        self.max_audio_seconds = max_audio_seconds
        self.too_long_audio = too_long_audio
        self.read_audio = read_audio  # False for text LMs: the waveform is an empty array
        self.open_audio = open_audio  # example index -> what soundfile reads; None: the path in `audio`
        self.on_bad_example = on_bad_example
        self.advice = advice

    def __len__(self) -> int:
        return len(self.examples)

    def _read(self, index: int) -> tuple[tuple[Example, np.ndarray] | SkippedExample, list[str]]:
        """Item ``index`` and the warnings its clip gave (silence, channels that cancel), each naming
        the example's manifest line (dataset row) and file."""
        example = self.examples[index]
        if not self.read_audio:
            return (example, np.zeros(0, dtype=np.float32)), []
        notes: list[str] = []
        try:
            source = example.audio if self.open_audio is None else self.open_audio(index)
            waveform = load_audio(source, self.sample_rate, self.max_audio_seconds, self.too_long_audio,
                                  checked_at_load=True, notes=notes)  # examples of load_manifest / load_hf_split
            check_unchanged(example, len(waveform) / self.sample_rate, self.max_audio_seconds)
        except AUDIO_ERRORS as err:
            return skip_or_raise(example, lambda advice, err=err: audio_error(example, err, advice), self.on_bad_example,
                                 self.advice, cause=err), []
        return (example, waveform), [str(example_error(example, "audio", note)) for note in notes]

    def __getitem__(self, index: int) -> tuple[Example, np.ndarray] | SkippedExample:
        item, notes = self._read(index)
        say_once(notes)  # read directly (evaluate's ASR pass); batches carry them to the main process instead
        return item

    def __getitems__(self, indices: list[int]) -> list:
        """One batch's items (what a DataLoader fetches), followed by an :class:`AudioNote` per warning
        a clip gave, which the collator carries to the main process, and a :class:`PaddingMark` for a
        :class:`PaddingBatch`; an exception is caught and handed on as a :class:`LoaderError` item,
        raised as itself in the main process (see ``loader.py``)."""
        try:
            items: list = [PaddingMark()] if isinstance(indices, PaddingBatch) else []
            for index in indices:
                item, notes = self._read(index)
                items += [item, *map(AudioNote, notes)]
            return items
        except Exception as err:
            return [LoaderError(err)]

    @property
    def durations(self) -> list[float]:
        """Seconds the model will see per example (after truncation)."""
        limit = self.max_audio_seconds or float("inf")
        return [min(e.duration, limit) for e in self.examples]

    @property
    def lengths(self) -> list[float]:
        """What batches are bucketed by: the durations, or for a dataset that reads no audio (a
        text LM's) the characters of instruction + transcript + summary, which its sequence
        lengths follow (its clips, silence for text-only documents, say nothing of them)."""
        if self.read_audio:
            return self.durations
        return [float(len(e.instruction) + len(e.transcript or "") + len(e.summary or "")) for e in self.examples]

"""The typed batch every stage consumes, and the collator that builds it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch
from torch import Tensor

from speechsum.data.loader import LoaderError, SkippedExample
from speechsum.data.manifest import Example
from speechsum.data.processor import SpeechProcessor


@dataclass
class SpeechBatch:
    """One batch. Shapes: B examples, P prompt tokens, R response tokens (see ``processor.py``)."""

    ids: list[str]
    audio: dict[str, Tensor]  # backbone-specific features and masks
    audio_seconds: Tensor  # (B,) float, seconds of audio actually fed to the model
    prompt_ids: Tensor  # (B, P) left-padded
    prompt_mask: Tensor  # (B, P)
    instructions: list[str]
    transcripts: list[str | None]  # what the KD teacher reads
    references: list[str | None]  # the manifest's `summary`
    langs: list[str] = field(default_factory=list)
    response_ids: Tensor | None = None  # (B, R) reference summary + end-of-turn, right-padded
    response_mask: Tensor | None = None  # (B, R) label mask: 1 on tokens that carry loss
    chosen_ids: Tensor | None = None  # (B, Rc) preference data
    chosen_mask: Tensor | None = None
    rejected_ids: Tensor | None = None  # (B, Rr)
    rejected_mask: Tensor | None = None
    skipped: list[SkippedExample] = field(default_factory=list)  # left out (on_bad_example: skip)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls, skipped: list[SkippedExample]) -> SpeechBatch:
        """A batch of no example, all of whose examples were left out (``SpeechLoader`` drops it)."""
        none = torch.zeros((0, 0), dtype=torch.long)
        return cls(ids=[], audio={}, audio_seconds=torch.zeros(0), prompt_ids=none, prompt_mask=none,
                   instructions=[], transcripts=[], references=[], skipped=skipped)

    def repeat_interleave(self, n: int) -> SpeechBatch:
        """Each example ``n`` times in a row (rows ``b*n … b*n+n-1`` are example b), the layout of
        ``generate(..., num_return_sequences=n)``, so its samples can be scored against this batch."""

        def repeat(value):
            if isinstance(value, Tensor):
                return value.repeat_interleave(n, dim=0)
            if isinstance(value, dict):
                return {key: repeat(item) for key, item in value.items()}
            if isinstance(value, list):
                return [item for item in value for _ in range(n)]
            return value

        return replace(self, **{f.name: repeat(getattr(self, f.name)) for f in fields(self) if f.name != "skipped"})


class SpeechCollator:
    """Turns ``[(Example, waveform)]`` into a :class:`SpeechBatch` with the backbone's processor.
    :class:`SkippedExample` items are left out and listed in ``skipped``; a :class:`LoaderError`
    item is raised."""

    def __init__(self, processor: SpeechProcessor, preference: bool = False):
        self.processor = processor
        self.preference = preference

    def __call__(self, items: Sequence[tuple[Example, np.ndarray] | SkippedExample | LoaderError]) -> SpeechBatch:
        for item in items:
            if isinstance(item, LoaderError):
                item.reraise()
        skipped = [item for item in items if isinstance(item, SkippedExample)]
        items = [item for item in items if not isinstance(item, SkippedExample)]
        if not items:
            return SpeechBatch.empty(skipped)
        examples = [example for example, _ in items]
        waveforms = [waveform for _, waveform in items]
        instructions = [e.instruction for e in examples]
        if getattr(self.processor, "reads_transcripts", False):  # text LMs (speechsum.models.text_llm)
            transcripts = [e.transcript for e in examples]
            prompts = self.processor.encode_prompts(waveforms, instructions, transcripts=transcripts)
        else:
            prompts = self.processor.encode_prompts(waveforms, instructions)
        batch = SpeechBatch(
            ids=[e.id for e in examples],
            audio=prompts.audio,
            audio_seconds=torch.tensor([len(w) / self.processor.sample_rate for w in waveforms]),
            prompt_ids=prompts.prompt_ids,
            prompt_mask=prompts.prompt_mask,
            instructions=[e.instruction for e in examples],
            transcripts=[e.transcript for e in examples],
            references=[e.summary for e in examples],
            langs=[e.lang for e in examples],
            skipped=skipped,
        )
        if all(e.summary for e in examples):
            batch.response_ids, batch.response_mask = self.processor.encode_responses(
                [e.summary for e in examples]
            )
        if self.preference:
            batch.chosen_ids, batch.chosen_mask = self.processor.encode_responses([e.chosen for e in examples])
            batch.rejected_ids, batch.rejected_mask = self.processor.encode_responses(
                [e.rejected for e in examples]
            )
        return batch

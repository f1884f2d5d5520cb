"""The typed batch every stage consumes, and the collator that builds it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch
from torch import Tensor

from speechsum.data.dataset import SKIP_ADVICE, example_error, skip_or_raise
from speechsum.data.loader import AudioNote, LoaderError, PaddingMark, SkippedExample
from speechsum.data.manifest import Example, OnBadExample
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
    notes: list[str] = field(default_factory=list)  # warnings about its clips (silence, ...), said by SpeechLoader
    padding: bool = False  # a DDP rank's repeat of another rank's batch (PaddingBatch): weighs 0 in eval metrics

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls, skipped: list[SkippedExample], notes: list[str] | None = None) -> SpeechBatch:
        """A batch of no example, all of whose examples were left out (``SpeechLoader`` drops it)."""
        none = torch.zeros((0, 0), dtype=torch.long)
        return cls(ids=[], audio={}, audio_seconds=torch.zeros(0), prompt_ids=none, prompt_mask=none,
                   instructions=[], transcripts=[], references=[], skipped=skipped, notes=notes or [])

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

        return replace(self, **{f.name: repeat(getattr(self, f.name)) for f in fields(self)
                               if f.name not in ("skipped", "notes", "padding")})


class SpeechCollator:
    """Turns ``[(Example, waveform)]`` into a :class:`SpeechBatch` with the backbone's processor.
    :class:`SkippedExample` items are left out and listed in ``skipped``; a :class:`LoaderError`
    item is raised. ``responses``: encode the reference summaries (not for generation, which reads the
    prompt only); ``on_too_long``: what an example longer than the LM's context is (:func:`too_long_rows`;
    None: not checked, for callers that bound the length themselves); ``advice``: the error's last hint
    (None where the caller has no skip option, as the dataset's ``advice``)."""

    def __init__(self, processor: SpeechProcessor, preference: bool = False, responses: bool = True,
                 on_too_long: OnBadExample | None = None, advice: str | None = SKIP_ADVICE):
        self.processor = processor
        self.advice = advice
        self.preference = preference
        self.responses = responses
        self.on_too_long = on_too_long

    def __call__(self, items: Sequence[tuple[Example, np.ndarray] | SkippedExample | LoaderError]) -> SpeechBatch:
        for item in items:
            if isinstance(item, LoaderError):
                item.reraise()
        skipped = [item for item in items if isinstance(item, SkippedExample)]
        notes = [item for item in items if isinstance(item, AudioNote)]
        marks = [item for item in items if isinstance(item, PaddingMark)]
        items = [item for item in items if not isinstance(item, SkippedExample | AudioNote | PaddingMark)]
        if not items:
            return SpeechBatch.empty(skipped, [note.message for note in notes])
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
            notes=[note.message for note in notes],
            padding=bool(marks),
        )
        if self.responses and all(e.summary for e in examples):
            batch.response_ids, batch.response_mask = self.processor.encode_responses(
                [e.summary for e in examples]
            )
        if self.preference:
            batch.chosen_ids, batch.chosen_mask = self.processor.encode_responses([e.chosen for e in examples])
            batch.rejected_ids, batch.rejected_mask = self.processor.encode_responses(
                [e.rejected for e in examples]
            )
        too_long = too_long_rows(batch, self.processor) if self.on_too_long is not None else {}
        if not too_long:
            return batch
        for row, (field_name, reason) in too_long.items():  # raises under "error"
            items[row] = skip_or_raise(
                examples[row], lambda advice, row=row, field_name=field_name, reason=reason: example_error(
                    examples[row], field_name, reason + (f", {advice}" if advice else "")),
                self.on_too_long, self.advice)
        return self(items + skipped + notes + marks)  # the rest, collated again


def too_long_rows(batch: SpeechBatch, processor: SpeechProcessor) -> dict[int, tuple[str, str]]:
    """Rows of ``batch`` whose prompt + longest response take more positions than the LM reads
    (``processor.context_length``; the audio positions a CTC-compressing model drops itself are not
    counted): row → (the field taking most of them, why). Per batch: one vectorised sum, messages only
    for the rows over the limit."""
    limit = processor.context_length
    if limit is None:
        return {}
    responses = {"summary" if name == "response" else name: mask.sum(1)
                 for name in ("response", "chosen", "rejected") if (mask := getattr(batch, f"{name}_mask")) is not None}
    prompt = processor.prompt_positions_at_least(batch.prompt_ids, batch.prompt_mask)
    longest_response = torch.stack(list(responses.values())).amax(0) if responses else torch.zeros_like(prompt)
    over = ((prompt + longest_response) > limit).nonzero().flatten().tolist()
    if not over:
        return {}
    audio_id = getattr(processor, "audio_token_id", None)
    placeholders = ((batch.prompt_ids == audio_id) * batch.prompt_mask).sum(1) if audio_id is not None else 0
    text = batch.prompt_mask.sum(1) - placeholders
    prompt_field = "transcript" if getattr(processor, "reads_transcripts", False) else "instruction"
    rows = {}
    for row in over:
        audio = int(prompt[row] - text[row])  # 0 when the model compresses it: not known here
        parts = {"audio": audio} if audio else {}
        parts[prompt_field] = int(text[row])
        if responses:
            name = max(responses, key=lambda n: int(responses[n][row]))
            parts[name] = int(responses[name][row])
        field = max(parts, key=parts.get)
        said = ", ".join(f"{name} {count}" for name, count in parts.items())
        hint = "lower data.max_audio_seconds" if field == "audio" else f"shorten the {field}"
        rows[row] = (field, f"the example takes {sum(parts.values())} positions ({said}, with the chat template) and "
                            f"the model's LM reads at most {limit} (max_position_embeddings): {hint} or use a model "
                            "with a longer context")
    return rows

"""What a KD teacher is (:class:`Teacher`), what it returns (:class:`TeacherScores`) and the checks
every kind shares: one vocabulary with the student, a transcript per example."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from speechsum.data.batch import SpeechBatch
from speechsum.losses import token_log_probs


@dataclass
class TeacherScores:
    """The teacher's view of the completion tokens ``(B, R)``; which fields are set depends on
    the teacher: full ``logits`` (B, R, V); or ``topk_log_probs`` / ``topk_ids`` (B, R, K) with
    id −1 for an empty slot; and ``token_log_probs`` (B, R) = log P_t(completion_ids). Values at
    positions outside the completion mask are meaningless."""

    logits: Tensor | None = None
    topk_log_probs: Tensor | None = None
    topk_ids: Tensor | None = None
    token_log_probs: Tensor | None = None

    def to(self, device: torch.device | str) -> TeacherScores:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v.to(device) if isinstance(v, Tensor) else v for k, v in moved.items()})

    def sampled_log_probs(self, completion_ids: Tensor) -> Tensor:
        """``(B, R)`` log P_t of the completion's own tokens, float32."""
        if self.token_log_probs is not None:
            return self.token_log_probs.float()
        if self.logits is None:
            raise ValueError("these teacher scores hold neither token log-probs nor logits")
        return token_log_probs(self.logits, completion_ids)


def check_vocab(student_tokenizer: PreTrainedTokenizerBase, teacher_tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise ``ValueError`` unless both tokenizers map the same strings to the same ids.

    Compares ``get_vocab()`` (added tokens included), not ``vocab_size``: two tokenizers of one
    size can still number their tokens differently, and token-level KD would then compare the
    teacher's opinion of one token with the student's of another, silently.
    """
    student, teacher = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student == teacher:
        return
    problems = []
    differing = sorted((i, t) for t, i in student.items() if t in teacher and teacher[t] != i)
    if differing:
        shown = ", ".join(f"{t!r} (student {i}, teacher {teacher[t]})" for i, t in differing[:5])
        problems.append(f"{len(differing)} tokens have different ids, first: {shown}")
    for name, mine, other in (("student", student, teacher), ("teacher", teacher, student)):
        only = sorted((i, t) for t, i in mine.items() if t not in other)
        if only:
            shown = ", ".join(f"{t!r} (id {i})" for i, t in only[:5])
            problems.append(f"{len(only)} tokens only in the {name}'s vocabulary, first: {shown}")
    raise ValueError(
        f"student and teacher vocabularies differ ({len(student)} vs {len(teacher)} entries): "
        + "; ".join(problems)
        + ". Token-level KD scores the student's token ids with the teacher, so both need one "
        "vocabulary: use a teacher trained with the student's tokenizer, or sequence-level KD "
        "(OpenAICompatibleTeacher with scoring: none and seq_kd: true), which compares text only."
    )


def require_transcripts(batch: SpeechBatch) -> list[str]:
    """The batch's transcripts, or a clear error naming the examples without one."""
    missing = [i for i, t in zip(batch.ids, batch.transcripts) if not t]
    if missing:
        raise ValueError(
            f"the KD teacher reads transcripts, but examples {missing[:5]} have none: add a `transcript` "
            "to those manifest lines (data.require_transcript: true checks every line when it loads)"
        )
    return list(batch.transcripts)


def check_teacher_context(batch: SpeechBatch, prompt_mask: Tensor, completion_mask: Tensor | None,
                          context: int | None) -> None:
    """A ``ValueError`` naming the first example of ``batch`` whose teacher prompt (``prompt_mask``: its
    instruction and transcript in the chat template) and completion take more positions than the
    teacher's LM reads (``context``). Before, a long transcript was scored from positions the LM never
    trained on without a word (RoPE models), or an ``IndexError`` (learned positions, GPT-2)."""
    if context is None or prompt_mask.numel() == 0:
        return
    prompt = prompt_mask.sum(1)
    completion = completion_mask.sum(1) if completion_mask is not None else torch.zeros_like(prompt)
    over = (prompt + completion > context).nonzero().flatten().tolist()
    if not over:
        return
    row = over[0]
    took, done = int(prompt[row]), int(completion[row])
    said = f" and the student's completion {done}, {took + done} in all," if done else ","
    raise ValueError(f"example {batch.ids[row]!r}: the KD teacher's prompt (the instruction and transcript, with its "
                     f"chat template) takes {took} positions{said} more than the teacher's context of {context} "
                     "(max_position_embeddings): shorten that transcript" + (", lower model.init_args.max_new_tokens"
                     if done else "") + " or use a teacher with a longer context")


class Teacher(ABC):
    """What the KD stage needs from a teacher.

    ``can_score``: whether :meth:`score` works (token-level KD); a teacher that cannot score only
    writes summaries (:meth:`write_summaries`, sequence-level KD).
    """

    can_score: bool = True

    @abstractmethod
    def attach(self, student_tokenizer: PreTrainedTokenizerBase, end_of_turn: str) -> None:
        """Called once by the KD module: verify the vocabulary against the student's (when
        scoring) and adopt the student's end-of-turn token where the teacher has none set."""

    @abstractmethod
    def score(self, batch: SpeechBatch, completion_ids: Tensor, completion_mask: Tensor) -> TeacherScores:
        """Scores of ``completion_ids`` (B, R) (right-padded, ``completion_mask`` 1 on real tokens)
        as continuations of each example's teacher prompt (transcript + instruction), on the
        device of ``completion_ids``."""

    @abstractmethod
    def write_summaries(self, batch: SpeechBatch, max_new_tokens: int) -> list[str]:
        """The teacher's own summaries (greedy) of each example: the targets of sequence-level KD."""

    def check_scores(self, scores: TeacherScores, vocab_size: int) -> None:
        """Raise ``ValueError`` unless ``scores`` fit a student with ``vocab_size`` logits per position."""
        if scores.logits is not None and scores.logits.shape[-1] != vocab_size:
            raise ValueError(
                f"student logits have {vocab_size} entries, the teacher's {scores.logits.shape[-1]}: give both "
                "models the same vocabulary size"
            )

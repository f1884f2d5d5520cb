"""TeacherScoringCallback: gets the KD teacher's scores of each batch's completion tokens."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor

from speechsum.data.batch import SpeechBatch
from speechsum.stages.kd.teacher_base import Teacher, TeacherScores


@dataclass
class KDRollout:
    """One batch's completions and what the teacher said about them.

    ``completion_ids`` / ``completion_mask`` (B, R): the student's samples (on-policy), the
    reference or the teacher-written summaries (off-policy); ``on_policy``; ``texts`` the decoded
    completions; ``hit_max`` (B,) bool: cut at ``max_new_tokens`` (generated rows only);
    seconds spent generating and scoring; ``ready_at`` when the optimisation step could begin.
    """

    completion_ids: Tensor
    completion_mask: Tensor
    on_policy: bool
    texts: list[str]
    hit_max: Tensor | None = None
    generation_seconds: float = 0.0
    teacher_seconds: float = 0.0
    teacher_wait_seconds: float = 0.0
    ready_at: float = 0.0
    _scores: TeacherScores | None = None
    _pending: Future | None = field(default=None, repr=False)

    def teacher_scores(self) -> TeacherScores:
        """The scores, waiting for the background call if one is running."""
        if self._pending is not None:
            started = time.perf_counter()
            self._scores, self.teacher_seconds = self._pending.result()
            self.teacher_wait_seconds = time.perf_counter() - started
            self._pending = None
        if self._scores is None:
            raise RuntimeError("no teacher scores for this batch (the teacher cannot score: use seq_kd)")
        return self._scores


def mixed_precision_context(trainer: L.Trainer) -> contextlib.AbstractContextManager:
    """The autocast a ``*-mixed`` precision runs the step under; nothing for other precisions.
    Callback hooks run outside the step's own context. Autocast is per thread, so this may be
    entered in a worker thread; the ``*-true`` precisions' context sets the process-wide default
    dtype instead (and their weights are already in that dtype), so it is left out."""
    plugin = trainer.precision_plugin
    return plugin.forward_context() if isinstance(plugin, MixedPrecision) else contextlib.nullcontext()


def _timed_score(
    trainer: L.Trainer, teacher: Teacher, batch: SpeechBatch, ids: Tensor, mask: Tensor
) -> tuple[TeacherScores, float]:
    started = time.perf_counter()
    with mixed_precision_context(trainer):
        scores = teacher.score(batch, ids, mask)
    return scores, time.perf_counter() - started


class TeacherScoringCallback(L.Callback):
    """Before each train/validation/test batch of an :class:`~speechsum.stages.kd.OnPolicyKDModule`:
    asks the module for the batch's completions (``module.make_rollout``: on-policy samples, the
    reference, or teacher-written summaries), gets the teacher's scores of those tokens with one
    teacher call, and hands both to the module (``module.pending_rollout``) for its step.

    Args:
        overlap: score in a background thread while the student runs its forward pass on the
            same completions; the step waits for the scores only when the loss needs them. Pays
            off when the teacher is remote (the call is network-bound) or on another device; on a
            CPU-only machine both compete for the same cores. (Prefetching the *next* batch's
            scores is not done: on-policy completions only exist once the student has sampled
            them, and with ``lmbda: 0`` the overlap already hides the teacher behind the student.)
    The KD module adds this callback itself unless the trainer's callbacks already hold one.
    """

    def __init__(self, overlap: bool = False):
        self.overlap = overlap
        self._executor: ThreadPoolExecutor | None = None

    def _start(self, trainer: L.Trainer, module: Any, batch: SpeechBatch, stage: str, batch_idx: int) -> None:
        """Sample (or pick) the completions and score them, under the step's autocast when the
        precision is ``*-mixed`` (:func:`mixed_precision_context`)."""
        with mixed_precision_context(trainer):
            rollout = module.make_rollout(batch, stage, batch_idx)
        teacher: Teacher = module.teacher
        if teacher.can_score:
            args = (trainer, teacher, batch, rollout.completion_ids, rollout.completion_mask)
            if self.overlap:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher")
                rollout._pending = self._executor.submit(_timed_score, *args)
            else:
                rollout._scores, rollout.teacher_seconds = _timed_score(*args)
        rollout.ready_at = time.perf_counter()
        module.pending_rollout = rollout

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._start(trainer, pl_module, batch, "train", batch_idx)

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._start(trainer, pl_module, batch, "val", batch_idx)

    def on_test_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._start(trainer, pl_module, batch, "test", batch_idx)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

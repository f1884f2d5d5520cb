"""speechsum's side of the benchmarks: the real stage modules (``OnPolicyKDModule`` with an
``HFTeacher`` and its ``TeacherScoringCallback``; ``DPOModule``) trained by a Lightning ``Trainer``
on a text-only student (``TextLLM``), steps timed by a callback."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from benchmarks.common import StepLog, with_vocab
from speechsum.data.batch import SpeechBatch
from speechsum.models.text_llm import TextLLM
from speechsum.stages.dpo.module import DPOModule
from speechsum.stages.dpo.reference_logprobs import (
    compute_reference_logps,
    encode_audio_once,
    pair_token_logprobs,
)
from speechsum.stages.kd.module import OnPolicyKDModule
from speechsum.stages.kd.teachers import HFTeacher


class LightningStepTimer(L.Callback):
    """Records each step's start (first callback to run, so the teacher callback's work counts)
    and its samples and completion tokens (the KD rollout's mask, or the batch's responses)."""

    def __init__(self, log: StepLog):
        self.step_log = log

    def on_train_batch_start(self, trainer, pl_module, batch: SpeechBatch, batch_idx: int) -> None:
        self.step_log.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch: SpeechBatch, batch_idx: int) -> None:
        rollout = getattr(pl_module, "_rollout_timing", None)
        if rollout is not None:
            tokens = int(rollout.completion_mask.sum())
        else:
            tokens = int(batch.chosen_mask.sum() + batch.rejected_mask.sum())
        self.step_log.samples.append(len(batch))
        self.step_log.tokens.append(tokens)


def fit_steps(module: L.LightningModule, batches: Sequence[SpeechBatch], steps: int, precision: str = "32-true") -> StepLog:
    """``steps`` optimiser steps of ``module`` on ``batches`` (cycled) with a fresh Trainer at
    ``precision``: no logger, checkpoints, progress bar or validation (the TRL side gets the same)."""
    log = StepLog.empty()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision=precision, max_steps=steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[LightningStepTimer(log)],
    )
    loader = DataLoader(list(batches), batch_size=None, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "few workers" / "log without logger": irrelevant here
        trainer.fit(module, train_dataloaders=loader)
    return log


# -- KD ----------------------------------------------------------------------------------------
def build_kd(tokenizer_dir: str, student_llm: dict, teacher_llm: dict, *, vocab: int | None, max_new_tokens: int,
             temperature: float, beta: float, learning_rate: float) -> OnPolicyKDModule:
    """Student ``TextLLM`` (seed 0) + ``HFTeacher`` (seed 1) sharing the benchmark tokenizer."""
    student = TextLLM(llm=with_vocab(student_llm, vocab), tokenizer=tokenizer_dir, init_seed=0)
    teacher = HFTeacher(with_vocab(teacher_llm, vocab), tokenizer=tokenizer_dir, init_seed=1)
    return OnPolicyKDModule(
        student, teacher, lmbda=1.0, beta=beta, temperature=temperature, max_new_tokens=max_new_tokens,
        loss="jsd", learning_rate=learning_rate, warmup_steps=0,
    )


def kd_loss_on(module: OnPolicyKDModule, batch: SpeechBatch, completion_ids, completion_mask) -> float:
    """The module's KD loss for a fixed completion: teacher scores + student logits + divergence."""
    with torch.no_grad():
        scores = module.teacher.score(batch, completion_ids, completion_mask)
        logits = module.model.response_logits(batch, completion_ids, completion_mask)
        return float(module.kd_loss(logits, completion_ids, completion_mask, scores))


# -- DPO ---------------------------------------------------------------------------------------
def build_dpo(tokenizer_dir: str, student_llm: dict, reference: str, *, vocab: int | None, beta: float,
              learning_rate: float) -> DPOModule:
    student = TextLLM(llm=with_vocab(student_llm, vocab), tokenizer=tokenizer_dir, init_seed=0)
    return DPOModule(student, beta=beta, reference=reference, learning_rate=learning_rate, warmup_steps=0)


def fill_reference_table(module: DPOModule, batches: Sequence[SpeechBatch]) -> None:
    """What ``DPOModule.setup`` does for ``reference: precomputed`` (the reference's sequence
    log-probs of every pair, once, before training), on these pre-collated batches."""

    def sequence_logps(batch: SpeechBatch):
        with module._as_reference() as reference:
            chosen, _, rejected, _ = pair_token_logprobs(reference, batch, encode_audio_once(reference, batch.audio))
        return chosen.sum(-1), rejected.sum(-1)

    module.reference_table.update(compute_reference_logps(sequence_logps, batches, len(batches), desc="ours: reference"))
    module.setup = lambda stage: None  # the table is filled: setup would look for a data module's manifests


def dpo_loss_on(module: DPOModule, batch: SpeechBatch) -> float:
    """The module's DPO loss on one batch (its own ``preference_step``, no optimiser step)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module.model.eval()
        try:
            return float(module.preference_step(batch, "check"))
        finally:
            module.model.train()

"""Stage 2, on-policy knowledge distillation from a text teacher that reads the transcript.

Each training step (GKD, Agarwal et al. 2024; the paper's stage 2):
1. with probability ``lmbda`` the student samples a summary from audio + instruction (batched,
   KV cache, stops at end-of-turn); otherwise the completion is the reference summary, or with
   ``seq_kd`` a summary the teacher wrote;
2. the :class:`~speechsum.stages.kd.scoring_callback.TeacherScoringCallback` gets the teacher's scores of
   exactly those completion tokens, the teacher reading transcript + instruction;
3. the student's logits on the same tokens (given audio + instruction) and the chosen divergence.
The frozen audio encoder runs once per batch: its output is reused by generation and the forward.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Literal

import torch
from torch import Tensor

from speechsum.data.batch import SpeechBatch
from speechsum.data.text_checks import reserved_in
from speechsum.losses import (
    IGNORE_INDEX,
    generalized_jsd_loss,
    masked_cross_entropy,
    sampled_token_kd_loss,
    token_log_probs,
    topk_tail_jsd_loss,
)
from speechsum.models.base import SpeechLLM
from speechsum.models.generation import GenerationSettings, generate_texts
from speechsum.models.sampling import check_decoding
from speechsum.stages.base import SpeechStageModule
from speechsum.stages.kd.scoring_callback import KDRollout, TeacherScoringCallback
from speechsum.stages.kd.teacher_base import Teacher, TeacherScores
from speechsum.training.setting_bounds import CLASS_NUMBERS, check_settings
from speechsum.utils.arguments import ConfigError
from speechsum.utils.text_analysis import repetition_rate

log = logging.getLogger(__name__)

KDLoss = Literal["jsd", "forward_kl", "reverse_kl", "sampled_token"]
LOSS_BETA = {"forward_kl": 0.0, "reverse_kl": 1.0}


def teacher_student_kl(student_logits: Tensor, completion_ids: Tensor, mask: Tensor, scores: TeacherScores) -> Tensor:
    """Token-mean reverse KL(P_s ‖ P_t) on the completion tokens (T = 1), no gradient: exact with
    full teacher logits; over top-k + tail with a top-k teacher (a lower bound of the full KL);
    the sampled-token estimate mean(log P_s(y) − log P_t(y)) when only those log-probs exist."""
    student_logits = student_logits.detach()
    labels = completion_ids.masked_fill(mask == 0, IGNORE_INDEX)
    if scores.logits is not None:
        return generalized_jsd_loss(student_logits, scores.logits, labels, beta=1.0)
    if scores.topk_ids is not None:
        return topk_tail_jsd_loss(student_logits, scores.topk_log_probs, scores.topk_ids, labels, beta=1.0)
    student = token_log_probs(student_logits, completion_ids)
    weights = mask.float()
    return ((student - scores.sampled_log_probs(completion_ids)) * weights).sum() / weights.sum().clamp(min=1.0)


class OnPolicyKDModule(SpeechStageModule):
    """On-policy KD of a speech student from a text teacher (GKD-style mixing).

    Args:
        model: the student speech LLM.
        teacher: the teacher (``speechsum.stages.kd.teachers.HFTeacher`` or ``OpenAICompatibleTeacher``).
        lmbda: probability that a step trains on the student's own samples (1: always on-policy,
            as in the paper; 0: always the reference / teacher-written summary).
        beta: generalized-JSD mixing weight (0: forward KL, 1: reverse KL) for ``loss: jsd``.
        temperature: sampling temperature of on-policy completions.
        top_p: nucleus sampling of on-policy completions (1: off).
        max_new_tokens: longest on-policy (and teacher-written) completion, in tokens.
        loss: "jsd" (generalized JSD with ``beta``), "forward_kl", "reverse_kl", or
            "sampled_token" (policy-gradient reverse KL through the sampled tokens; meant for
            on-policy samples at temperature 1).
        loss_temperature: temperature of both distributions inside the divergence.
        seq_kd: off-policy completions are summaries the teacher writes (not the reference);
            with a teacher that cannot score (``scoring: none``) this is sequence-level KD:
            cross-entropy on the teacher's summaries, which needs ``lmbda: 0``.
        teacher_overlap: score in a background thread while the student's forward runs.
        rollout_seed: seeds the per-step on/off-policy coin (deterministic across resume).
        **kwargs: the shared stage options (SpeechStageModule): learning rate, init_from,
            ``generation`` (decoding of validation completions, greedy by default, and of predict), …
    Validation logs ``val/kl``: token-mean reverse KL(student ‖ teacher) on the student's own
    completions of held-out inputs (see :func:`teacher_student_kl`).
    """

    object_arguments = ("model", "teacher")  # never pickle a teacher (or its weights) into checkpoints

    def __init__(
        self,
        model: SpeechLLM,
        teacher: Teacher,
        lmbda: float = 1.0,
        beta: float = 0.5,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 128,
        loss: KDLoss = "jsd",
        loss_temperature: float = 1.0,
        seq_kd: bool = False,
        teacher_overlap: bool = False,
        rollout_seed: int = 0,
        **kwargs,
    ):
        super().__init__(model, **kwargs)
        check_settings({"lmbda": lmbda, "beta": beta, "loss_temperature": loss_temperature},
                       CLASS_NUMBERS["OnPolicyKDModule"])
        check_decoding("model.init_args.", max_new_tokens, temperature, top_p, model.context_length())
        if loss not in ("jsd", "forward_kl", "reverse_kl", "sampled_token"):
            raise ConfigError(f"model.init_args.loss: unknown loss {loss!r}")
        if not teacher.can_score and not (seq_kd and lmbda == 0.0):
            raise ConfigError(
                "this teacher cannot score tokens (scoring: none): only sequence-level KD works — set "
                "seq_kd: true and lmbda: 0 (the student learns the teacher's summaries by cross-entropy)"
            )
        self.teacher = teacher
        self.lmbda, self.beta, self.temperature, self.top_p = lmbda, beta, temperature, top_p
        self.max_new_tokens, self.loss_name, self.loss_temperature = max_new_tokens, loss, loss_temperature
        self.seq_kd, self.teacher_overlap, self.rollout_seed = seq_kd, teacher_overlap, rollout_seed
        self.pending_rollout: KDRollout | None = None
        teacher.attach(self.processor.tokenizer, self.processor.end_of_turn)

    def required_fields(self, split: str) -> tuple[str, ...]:
        """The teacher reads every transcript; an off-policy step (lmbda < 1, no seq_kd) trains on the summary."""
        off_policy_reference = split == "train" and self.lmbda < 1 and not self.seq_kd
        return ("transcript",) + (("summary",) if off_policy_reference else ())

    def configure_callbacks(self) -> list:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and any(isinstance(c, TeacherScoringCallback) for c in trainer.callbacks):
            return []
        return [TeacherScoringCallback(overlap=self.teacher_overlap)]

    # -- completions (called by the callback) ---------------------------------------------------
    def make_rollout(self, batch: SpeechBatch, stage: str, batch_idx: int = 0) -> KDRollout:
        """The completions this step trains or evaluates on (see :class:`KDRollout`). The
        on/off-policy coin is seeded by (rollout_seed, epoch, step, batch): the same on every rank
        and after a resume."""
        with torch.no_grad():
            batch.audio = self.model.precompute_audio(batch.audio)  # frozen encoder: once per batch
        if stage == "train":
            coin = random.Random(f"{self.rollout_seed}-{self.current_epoch}-{self.global_step}-{batch_idx}")
            on_policy = coin.random() < self.lmbda
            settings = GenerationSettings(
                max_new_tokens=self.max_new_tokens, do_sample=True, temperature=self.temperature, top_p=self.top_p
            )
        else:
            on_policy, settings = True, self.generation
        started = time.perf_counter()
        if on_policy:
            generated = generate_texts(self.model, batch, settings)
            return KDRollout(
                completion_ids=generated.ids, completion_mask=generated.mask, on_policy=True, texts=generated.texts,
                hit_max=generated.truncated, generation_seconds=time.perf_counter() - started,
            )
        if self.seq_kd:
            texts = self.teacher.write_summaries(batch, self.max_new_tokens)
            special = self._with_special_tokens(batch, texts)
            targets = ["" if row in special else text for row, text in enumerate(texts)]
            ids, mask = self._within_context(batch, *self.processor.encode_responses(targets))
            mask[special] = 0
            empty = [row for row, text in enumerate(texts) if not text.strip()]
            if empty:  # as a target, an empty summary would teach the student to end its answer at once
                mask[empty] = 0
                log.warning("the teacher wrote no summary for %d of %d examples (%s): they carry no loss in this step; "
                            "check the teacher's replies (a content filter, or max_tokens spent on reasoning?)",
                            len(empty), len(texts), ", ".join(batch.ids[row] for row in empty[:3]))
            device = batch.prompt_ids.device
            return KDRollout(
                completion_ids=ids.to(device), completion_mask=mask.to(device), on_policy=False, texts=texts,
                generation_seconds=time.perf_counter() - started,
            )
        if batch.response_ids is None:
            raise ValueError(
                "an off-policy step (lmbda < 1) trains on the reference summary, but this batch has none: "
                "set lmbda: 1, seq_kd: true, or give every manifest line a `summary`"
            )
        texts = [r or "" for r in batch.references]
        return KDRollout(
            completion_ids=batch.response_ids, completion_mask=batch.response_mask, on_policy=False, texts=texts
        )

    def _with_special_tokens(self, batch: SpeechBatch, texts: list[str]) -> list[int]:
        """Rows of ``texts`` (the teacher's summaries) holding a special token of the student's tokenizer, warned
        about: as targets they carry no loss. Before, ``<|im_end|>`` taught the student to end its answer there and
        ``<|audio|>`` stopped the run ('N audio placeholders but M audio frames')."""
        reserved = self.processor.reserved_text
        found = {row: problem for row, text in enumerate(texts) if (problem := reserved_in(text, reserved))}
        if found:
            row = next(iter(found))
            log.warning("the teacher's summary of %d of %d examples (%s) holds a special token of the student's "
                        "tokenizer (%s %s): they carry no loss in this step; check the teacher's replies (a server that "
                        "keeps special tokens in its text?)", len(found), len(texts),
                        ", ".join(batch.ids[r] for r in list(found)[:3]), batch.ids[row],
                        found[row].split(", a special token")[0])
        return list(found)

    def _within_context(self, batch: SpeechBatch, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The teacher's summaries as targets (``ids``, ``mask``: the student's tokens), those that would take the
        student's prompt past its LM's context carrying no loss (warned, with the counts): the teacher's max_tokens
        count its own tokens, and another tokenizer's summary can take the student more. Before, they were trained
        on from positions the LM never saw (RoPE), or an IndexError (learned positions)."""
        context = self.model.context_length()
        if context is None or not len(ids):
            return ids, mask
        prompt = self.processor.prompt_positions_at_least(batch.prompt_ids, batch.prompt_mask).cpu()
        over = ((prompt + mask.sum(1)) > context).nonzero().flatten().tolist()
        if not over:
            return ids, mask
        row = over[0]
        log.warning("the teacher's summary of %d of %d examples (%s) takes the student past its LM's context of %d "
                    "positions (%s: %d of prompt and %d of summary): they carry no loss in this step; lower "
                    "model.init_args.max_new_tokens (the teacher's max_tokens) or shorten the clips", len(over),
                    len(ids), ", ".join(batch.ids[r] for r in over[:3]), context, batch.ids[row], int(prompt[row]),
                    int(mask[row].sum()))
        mask[over] = 0
        width = max(int(mask.sum(1).max()), 1)  # the other rows' longest: no position past the context is read
        return ids[:, :width].contiguous(), mask[:, :width].contiguous()

    def _take_rollout(self) -> KDRollout:
        rollout, self.pending_rollout = self.pending_rollout, None
        if rollout is None:
            raise RuntimeError("no completions for this batch: the TeacherScoringCallback did not run")
        return rollout

    # -- loss -------------------------------------------------------------------------------------
    def kd_loss(self, student_logits: Tensor, ids: Tensor, mask: Tensor, scores: TeacherScores) -> Tensor:
        """The configured divergence between student and teacher on the completion tokens."""
        if self.loss_name == "sampled_token":
            return sampled_token_kd_loss(token_log_probs(student_logits, ids), scores.sampled_log_probs(ids), mask)
        beta = LOSS_BETA.get(self.loss_name, self.beta)
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        self.teacher.check_scores(scores, student_logits.shape[-1])
        if scores.logits is not None:
            return generalized_jsd_loss(student_logits, scores.logits, labels, beta, self.loss_temperature)
        return topk_tail_jsd_loss(
            student_logits, scores.topk_log_probs, scores.topk_ids, labels, beta, self.loss_temperature
        )

    def _kd_step(self, batch: SpeechBatch, stage: str) -> Tensor:
        rollout = self._take_rollout()
        ids, mask = rollout.completion_ids, rollout.completion_mask
        logits = self.model.response_logits(batch, ids, mask)
        size = len(batch)
        tokens = int(mask.sum())
        sync = stage != "train"
        if not self.teacher.can_score:  # sequence-level KD: learn the teacher's text
            loss = masked_cross_entropy(logits, ids, mask)
        else:
            scores = rollout.teacher_scores()
            loss = self.kd_loss(logits, ids, mask, scores)
            if stage != "train" or self._train_step_is_logged():  # a full-vocabulary pass: only when logged
                kl = teacher_student_kl(logits, ids, mask, scores)
                self.log(f"{stage}/kl", kl, batch_size=max(tokens, 1), sync_dist=sync, prog_bar=stage == "val")
        self.log(f"{stage}/loss", loss, batch_size=size, sync_dist=sync, prog_bar=stage == "train")
        metrics = {f"{stage}/completion_length": mask.sum(-1).float().mean(), f"{stage}/on_policy": float(rollout.on_policy)}
        if rollout.hit_max is not None:
            metrics[f"{stage}/hit_max_new_tokens"] = rollout.hit_max.float().mean()
        if rollout.on_policy:
            metrics[f"{stage}/repetition_rate"] = sum(map(repetition_rate, rollout.texts)) / max(size, 1)
        self.log_dict(metrics, batch_size=size, sync_dist=sync)
        if stage == "train":
            self._rollout_timing = rollout
        if stage == "val":
            self.collect_val_samples(batch, rollout.texts)
        return loss

    def _train_step_is_logged(self) -> bool:
        """Whether this training step's metrics reach a logger: every ``log_every_n_steps``
        optimiser steps and the last one, as Lightning decides (``global_step`` counts optimiser
        steps; it is incremented after this step's, hence the +1; one optimiser)."""
        trainer = self._trainer
        if trainer is None:
            return True
        if not trainer.loggers or not trainer.log_every_n_steps:
            return False
        return (trainer.global_step + 1) % trainer.log_every_n_steps == 0 or trainer.should_stop

    # -- steps --------------------------------------------------------------------------------------
    def training_step(self, batch: SpeechBatch, batch_idx: int) -> Tensor:
        return self._kd_step(batch, "train")

    def on_train_batch_end(self, outputs: Any, batch: SpeechBatch, batch_idx: int) -> None:
        """Per-step times (s): generation, teacher (its own wall time; ``teacher_wait`` = how long
        the step blocked on it when overlapped), optimisation (forward + backward + optimiser step,
        from the end of the callback to here), and generated tokens/s on on-policy steps."""
        super().on_train_batch_end(outputs, batch, batch_idx)
        rollout = getattr(self, "_rollout_timing", None)
        if rollout is None:
            return
        self._rollout_timing = None
        metrics = {
            "train/time_generation": rollout.generation_seconds,
            "train/time_teacher": rollout.teacher_seconds,
            "train/time_optimization": time.perf_counter() - rollout.ready_at - rollout.teacher_wait_seconds,
        }
        if self.teacher_overlap:
            metrics["train/time_teacher_wait"] = rollout.teacher_wait_seconds
        retries = getattr(self.teacher, "retries", None)  # remote teachers count transient endpoint errors
        if retries is not None:
            metrics["train/teacher_retries"] = float(retries.retries)
        if rollout.on_policy and rollout.generation_seconds > 0:
            metrics["train/generated_tokens_per_s"] = float(rollout.completion_mask.sum()) / rollout.generation_seconds
        self.log_dict(metrics, batch_size=len(batch))

    def validation_step(self, batch: SpeechBatch, batch_idx: int) -> None:
        self._kd_step(batch, "val")

    def test_step(self, batch: SpeechBatch, batch_idx: int) -> None:
        self._kd_step(batch, "test")

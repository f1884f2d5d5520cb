"""TRL's side of the benchmarks (needs ``pip install -e '.[bench]'``): ``GKDTrainer`` and
``DPOTrainer`` on plain HF copies of the same student / teacher weights, the same pre-tokenized
examples and batch size, logging, saving and progress bars off, steps timed by a callback."""

from __future__ import annotations

import copy
import logging
import tempfile
import time
import warnings
from collections.abc import Sequence

import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer
from trl.experimental.gkd import GKDConfig, GKDTrainer

from benchmarks.common import StepLog, TextExample, prompt_completion_inputs
from speechsum.data.processor import pad_sequences

for _name in ("trl", "transformers", "accelerate"):
    logging.getLogger(_name).setLevel(logging.ERROR)
# TRL 1.x defaults to gradient checkpointing (which also turns the KV cache off in GKD's sampling)
# and bf16 autocast; ours uses neither, so both are switched off here: same work, fp32 on both sides
# (`run_vs_trl.py --precision bf16-mixed` turns bf16 on for both: TRL's `bf16`, our trainer's bf16-mixed).
QUIET = {"gradient_checkpointing": False, "bf16": False, "report_to": "none", "logging_steps": 10**6, "save_strategy": "no", "disable_tqdm": True,
         "use_cpu": True, "dataloader_num_workers": 0, "seed": 0}


class HFStepTimer(TrainerCallback):
    """Step starts (``on_step_begin``: after the batch is fetched, before generation)."""

    def __init__(self, log: StepLog, batch_size: int):
        self.step_log, self.batch_size = log, batch_size

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_log.starts.append(time.perf_counter())
        self.step_log.samples.append(self.batch_size)


def gkd_collator(examples: Sequence[TextExample], pad_id: int):
    """Rows ``{"idx": i}`` → TRL GKD inputs: left-padded prompts, reference completion (replaced
    by the student's samples on every step, lmbda = 1)."""

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        chosen = [examples[r["idx"]] for r in rows]
        prompt_ids, prompt_mask = pad_sequences([e.prompt for e in chosen], pad_id, side="left")
        response_ids, response_mask = pad_sequences([e.response for e in chosen], pad_id, side="right")
        return prompt_completion_inputs(prompt_ids, prompt_mask, response_ids, response_mask)

    return collate


class CountingGKDTrainer(GKDTrainer):
    """GKDTrainer that records the completion tokens of each on-policy sample (nothing else changes)."""

    token_log: list[int]

    def generate_on_policy_outputs(self, model, inputs, generation_config):
        ids, mask, labels = GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)
        self.token_log.append(int((labels != -100).sum()))
        return ids, mask, labels


class TRLGKD:
    """One GKDTrainer per timed run, reusing the student / teacher modules (weights carry over)."""

    def __init__(self, student, teacher, tokenizer, examples: Sequence[TextExample], *, batch_size: int,
                 max_new_tokens: int, temperature: float, beta: float, learning_rate: float, stop_ids: list[int],
                 bf16: bool = False):
        self.student, self.teacher, self.tokenizer, self.examples = student, teacher, tokenizer, examples
        self.student.generation_config.eos_token_id = stop_ids  # stop where our student stops
        self.settings = {"per_device_train_batch_size": batch_size, "max_new_tokens": max_new_tokens,
                         "temperature": temperature, "beta": beta, "lmbda": 1.0, "learning_rate": learning_rate,
                         "max_length": None, "lr_scheduler_type": "constant", **QUIET, "bf16": bf16}
        self.dataset = Dataset.from_list([{"idx": i} for i in range(len(examples))])
        self.out = tempfile.mkdtemp(prefix="bench-gkd-")

    def trainer(self, steps: int, callbacks=()) -> CountingGKDTrainer:
        args = GKDConfig(output_dir=self.out, max_steps=steps, **self.settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = CountingGKDTrainer(
                model=self.student, teacher_model=self.teacher, args=args, train_dataset=self.dataset,
                processing_class=self.tokenizer, data_collator=gkd_collator(self.examples, self.tokenizer.pad_token_id),
                callbacks=list(callbacks),
            )
        trainer.token_log = []
        return trainer

    def run(self, steps: int) -> StepLog:
        log = StepLog.empty()
        trainer = self.trainer(steps, [HFStepTimer(log, self.settings["per_device_train_batch_size"])])
        trainer.train()
        log.tokens = trainer.token_log
        return log

    def loss(self, prompt_ids, prompt_mask, completion_ids, completion_mask) -> float:
        """``GKDTrainer.compute_loss`` for a fixed completion (what a training step would use)."""
        trainer = self.trainer(1)
        inputs = prompt_completion_inputs(prompt_ids, prompt_mask, completion_ids, completion_mask)
        with torch.no_grad():
            return float(trainer.compute_loss(trainer.model, inputs))


class TRLDPO:
    """DPOTrainer with reference log-probs precomputed (``precompute_ref_log_probs``) or a frozen
    reference copy; the trainer (and its precomputed table) is built once and ``train`` re-run."""

    def __init__(self, student, tokenizer, examples: Sequence[TextExample], *, reference: str, batch_size: int,
                 beta: float, learning_rate: float, bf16: bool = False):
        rows = [{"prompt": tokenizer.decode(e.prompt), "chosen": e.summary, "rejected": e.rejected_text}
                for e in examples]
        args = DPOConfig(output_dir=tempfile.mkdtemp(prefix="bench-dpo-"), per_device_train_batch_size=batch_size,
                         max_steps=1, beta=beta, learning_rate=learning_rate, max_length=None,
                         precompute_ref_log_probs=reference == "precomputed", lr_scheduler_type="constant",
                         **{**QUIET, "bf16": bf16})
        ref_model = copy.deepcopy(student).eval() if reference == "frozen_copy" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.trainer = DPOTrainer(model=student, ref_model=ref_model, args=args,
                                      train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        self.batch_size = batch_size

    def token_ids(self) -> list[tuple[list[int], list[int], list[int]]]:
        """(prompt, chosen, rejected) ids as TRL tokenized them, to compare with ours."""
        data = self.trainer.train_dataset
        return list(zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"]))

    def run(self, steps: int) -> StepLog:
        log = StepLog.empty()
        timer = HFStepTimer(log, self.batch_size)
        self.trainer.args.max_steps = steps
        self.trainer.add_callback(timer)
        try:
            self.trainer.train()
        finally:
            self.trainer.remove_callback(timer)
        log.tokens = [0] * len(log.starts)
        return log

    def loss(self, indices: Sequence[int]) -> float:
        """``DPOTrainer.compute_loss`` on the collated rows ``indices``."""
        rows = [self.trainer.train_dataset[i] for i in indices]
        inputs = self.trainer.data_collator(rows)
        self.trainer.model.eval()
        with torch.no_grad():
            return float(self.trainer.compute_loss(self.trainer.model, inputs))

"""Two-process CPU DDP (gloo) fits of the KD and DPO stages through the real CLI.

Checked per rank: it trains on (and, in KD, samples and has the teacher score) its own shard of
the data; the KD teacher and DPO's frozen reference take no gradients and are not among the
parameters DDP synchronises; losses are finite; the trainable weights move and end equal on both ranks.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import lightning as L
import torch
import yaml

from speechsum.data.manifest import load_manifest
from tests.conftest import tiny_backbone_args
from tests.stages.test_ctc_align import align_config
from tests.stages.test_ddp import WORLD, fit_in_subprocess
from tests.stages.test_dpo import dpo_config, pairs  # noqa: F401  (pairs: the preference-data fixture)
from tests.stages.test_kd import TEACHER_LLM, kd_config


class RecordStageState(L.Callback):
    """Saves ``<folder>/rank<N>.pt``: what DDP synchronises, the frozen model (KD teacher / DPO
    reference copy) before and after, the trainable weights before and after, and per step the
    batch ids, the loss and (KD) the rollout that was scored."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.state: dict = {}

    @staticmethod
    def frozen_parameters(module) -> dict[str, torch.Tensor]:
        if hasattr(module, "teacher"):
            return dict(module.teacher.lm.named_parameters())
        reference = getattr(module, "_reference_model", None)
        if reference is None:
            return {}
        shared = {id(p) for p in module.model.parameters()}  # frozen weights the copy shares
        return {n: p for n, p in reference.named_parameters() if id(p) not in shared}

    @staticmethod
    def trainable(module) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in module.model.trainable_parameters()}

    def on_train_start(self, trainer, pl_module):
        ddp = trainer.strategy.model
        synced = {id(p) for n, p in ddp.module.named_parameters() if p.requires_grad and n not in ddp.parameters_to_ignore}
        frozen = self.frozen_parameters(pl_module)
        self.state = {
            "wrapper": type(ddp).__name__,
            "synced_is_trainable": synced == {id(p) for _, p in pl_module.model.trainable_parameters()},
            "num_synced": len(synced),
            "num_frozen": len(frozen),
            "frozen_in_synced": sum(id(p) in synced for p in frozen.values()),
            "frozen_requiring_grad": sum(p.requires_grad for p in frozen.values()),
            "frozen_before": {n: p.detach().clone() for n, p in frozen.items()},
            "trainable_before": self.trainable(pl_module),
            "steps": [],
        }

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.state["steps"].append({"ids": list(batch.ids)})

    def on_before_backward(self, trainer, pl_module, loss):
        step = self.state["steps"][-1]
        step["loss"] = float(loss)
        rollout = getattr(pl_module, "_rollout_timing", None)  # KD: this step's completions
        if rollout is not None:
            step.update(on_policy=rollout.on_policy, scored=rollout._scores is not None,
                        rows=rollout.completion_ids.shape[0], texts=rollout.texts)

    def on_train_end(self, trainer, pl_module):
        frozen = self.frozen_parameters(pl_module)
        self.state["frozen_after"] = {n: p.detach().clone() for n, p in frozen.items()}
        self.state["frozen_grads"] = sum(p.grad is not None for p in frozen.values())
        self.state["trainable_after"] = self.trainable(pl_module)
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.state, self.folder / f"rank{trainer.global_rank}.pt")


def ddp_fit(config_path: Path, tmp_path: Path) -> list[dict]:
    """Fit ``config_path`` on 2 CPU processes (gloo), 1 epoch, no validation; the ranks' states."""
    config = yaml.safe_load(config_path.read_text())
    config["trainer"].update({"devices": WORLD, "strategy": "ddp", "max_epochs": 1, "limit_val_batches": 0})
    seen = tmp_path / "seen"
    config["trainer"]["callbacks"].append({"class_path": f"{__name__}.RecordStageState",
                                           "init_args": {"folder": str(seen)}})
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    fit_in_subprocess(config_path, tmp_path)
    return [torch.load(seen / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]


def check_ranks(states: list[dict], train_manifest: Path, frozen_kind: str | None) -> None:
    """The checks of the module docstring; ``frozen_kind`` None: the stage holds no frozen model."""
    # each rank trained on its own shard; together they cover the training set (padding repeats aside)
    ids = [[i for step in state["steps"] for i in step["ids"]] for state in states]
    assert all(len(r) == len(set(r)) for r in ids), "a rank saw an example twice in one epoch"
    counts = Counter(i for rank_ids in ids for i in rank_ids)
    examples, _ = load_manifest(train_manifest, require_instruction=False)
    assert set(counts) == {e.id for e in examples}
    assert max(counts.values()) <= 2 and sum(n > 1 for n in counts.values()) <= 4  # at most one padded batch
    assert len(states[0]["steps"]) == len(states[1]["steps"]) > 0
    for state in states:
        assert state["wrapper"] == "DistributedDataParallel"
        assert state["synced_is_trainable"] and state["num_synced"] > 0
        assert (state["num_frozen"] > 0) == (frozen_kind is not None), f"no {frozen_kind} found"
        assert state["frozen_in_synced"] == 0, f"the {frozen_kind} is in DDP's gradient buckets"
        assert state["frozen_requiring_grad"] == 0 and state["frozen_grads"] == 0
        for name, before in state["frozen_before"].items():
            assert torch.equal(before, state["frozen_after"][name]), f"the {frozen_kind} changed: {name}"
        assert all(math.isfinite(step["loss"]) for step in state["steps"])
        moved = [not torch.equal(b, state["trainable_after"][n]) for n, b in state["trainable_before"].items()]
        assert any(moved), "training did not change the weights"
    for name, weight in states[0]["trainable_after"].items():
        assert torch.equal(weight, states[1]["trainable_after"][name]), f"ranks differ after the fit: {name}"
    for name, weight in states[0]["frozen_before"].items():
        assert torch.equal(weight, states[1]["frozen_before"][name]), f"the ranks' {frozen_kind}s differ: {name}"


def test_kd_under_ddp(tmp_path, toy_data):
    teacher = {"class_path": "speechsum.stages.kd.teachers.HFTeacher", "init_args": {"model": TEACHER_LLM, "init_seed": 7}}
    config = kd_config(tmp_path, toy_data, teacher, learning_rate=0.005, warmup_steps=1, lmbda=1.0)
    states = ddp_fit(config, tmp_path)
    check_ranks(states, toy_data["train"], "teacher")
    for state in states:  # every step: the rank's own batch, sampled on-policy, scored by the teacher
        for step in state["steps"]:
            assert step["on_policy"] and step["scored"] and step["rows"] == len(step["ids"]) == len(step["texts"])


def test_dpo_under_ddp(tmp_path, pairs):  # noqa: F811
    # frozen_copy: a frozen reference model lives beside the policy. (The default, precomputed,
    # has no reference model during training; its table is computed in setup on every rank.)
    states = ddp_fit(dpo_config(tmp_path, pairs, "frozen_copy"), tmp_path)
    check_ranks(states, pairs["train"], "reference copy")


def test_align_under_ddp(tmp_path, toy_data):
    # The CTC projector's blank_embedding is trainable (SFT uses it) but the CTC loss never reaches
    # it: DDP stopped the first step ("parameters that were not used in producing the loss").
    config = align_config(tmp_path, toy_data)
    before = torch.zeros(tiny_backbone_args()["llm"]["hidden_size"])
    states = ddp_fit(config, tmp_path)
    check_ranks(states, toy_data["train"], None)
    for state in states:
        assert torch.equal(state["trainable_after"]["projector.blank_embedding"], before)  # no update, as before


def test_align_validation_ends_when_a_rank_holds_only_clips_too_short_for_their_transcript(tmp_path, toy_data):
    """Two validation examples, one per rank; rank 1's transcript is too long for its clip (CTC-infeasible).
    That rank never logged val/ctc_loss, so its end-of-validation sync paired with rank 0's other metric and
    rank 0 waited for ever (until the process group's 30-minute timeout). Now it is logged with weight 0."""
    import csv
    import json

    lines = [json.loads(line) for line in toy_data["val"].read_text().splitlines()][:2]
    for line in lines:
        line["audio"] = str(toy_data["val"].parent / line["audio"])
    lines[1]["transcript"] = "word " * 400
    val = tmp_path / "val2.jsonl"
    val.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = align_config(tmp_path, {**toy_data, "val": val}, devices=WORLD, strategy="ddp")
    settings = yaml.safe_load(config.read_text())
    settings["data"]["max_batch_size"] = 1
    settings["model"]["init_args"]["num_val_samples"] = 0
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    fit_in_subprocess(config, tmp_path, "validate")
    (metrics,) = (tmp_path / "run" / "logs").glob("version_*/metrics.csv")
    (row,) = csv.DictReader(metrics.open())
    assert math.isfinite(float(row["val/ctc_loss"])) and math.isfinite(float(row["val/token_error_rate"]))

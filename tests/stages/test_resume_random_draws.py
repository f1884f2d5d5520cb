"""`speechsum fit --ckpt_path last` after a crash ends with the weights of an uninterrupted run also
where training draws random numbers: LoRA dropout (SFT's default 0.05) and KD's sampled
completions. The checkpoint carries the global generators' states (before: the resumed run drew
from ``seed_everything``'s fresh state and ended with other weights, ~1e-3 apart)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from speechsum.cli import lightning_cli
from tests.helpers import run_config
from tests.stages.test_kd import TEACHER_LLM, kd_config

STEPS = 10  # 7 training batches an epoch: the run crosses an epoch boundary


class SimulatedCrash(RuntimeError):
    pass


class CrashAtStep(L.Callback):
    """Dies when the training batch of optimiser step ``step`` starts."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise SimulatedCrash(f"crash at step {self.step}")


@pytest.fixture(scope="module")
def random_teacher(tmp_path_factory) -> Path:
    from speechsum.models.text_llm import TextLLM

    folder = tmp_path_factory.mktemp("teacher") / "teacher"
    TextLLM(llm=TEACHER_LLM, end_of_turn="<|im_end|>", init_seed=7).save_pretrained(folder)
    return folder


def stage_config(folder: Path, toy_data, stage: str, teacher: Path) -> Path:
    """Checkpoints every step, validation every 2 batches, LoRA dropout 0.05 (the default)."""
    if stage == "kd":
        teacher_config = {"class_path": "speechsum.stages.kd.teachers.HFTeacher", "init_args": {"model": str(teacher)}}
        path = kd_config(folder, toy_data, teacher_config, max_new_tokens=6, lmbda=1.0)
    else:
        path = run_config(folder, toy_data)
    config = yaml.safe_load(path.read_text())
    config["trainer"].update({"max_steps": STEPS, "max_epochs": 3, "val_check_interval": 2, "limit_val_batches": 1,
                              "num_sanity_val_steps": 0, "log_every_n_steps": 1})
    config["trainer"]["callbacks"][0]["init_args"]["every_n_train_steps"] = 1
    config["model"]["init_args"]["model"]["init_args"]["policy"]["lora_dropout"] = 0.05
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def last_checkpoint(folder: Path) -> dict:
    return torch.load(folder / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize(("stage", "crash_step"), [
    ("sft", 3),  # mid-epoch
    ("sft", 2),  # right after a validation (Lightning skips it on resume; its loader drew a seed)
    ("sft", 7),  # at an epoch boundary (the new epoch's loader drew a seed)
    ("kd", 3),   # on-policy samples after the resume
], ids=["sft-mid-epoch", "sft-after-validation", "sft-new-epoch", "kd-mid-epoch"])
def test_resumed_training_draws_what_the_uninterrupted_run_drew(tmp_path, toy_data, random_teacher, stage,
                                                                crash_step):
    straight = stage_config(tmp_path / "straight", toy_data, stage, random_teacher)
    lightning_cli(["fit", "--config", str(straight)])

    resumed = stage_config(tmp_path / "resumed", toy_data, stage, random_teacher)
    crashing = yaml.safe_load(resumed.read_text())
    crashing["trainer"]["callbacks"].append({"class_path": f"{__name__}.CrashAtStep", "init_args": {"step": crash_step}})
    (tmp_path / "crashing.yaml").write_text(yaml.safe_dump(crashing))
    with pytest.raises(SimulatedCrash):
        lightning_cli(["fit", "--config", str(tmp_path / "crashing.yaml")])
    lightning_cli(["fit", "--config", str(resumed), "--ckpt_path", "last"])

    expected, got = last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "resumed")
    assert got["global_step"] == expected["global_step"] == STEPS
    assert got["state_dict"].keys() == expected["state_dict"].keys()
    different = [key for key, value in expected["state_dict"].items() if not torch.equal(got["state_dict"][key], value)]
    assert different == []
    for saved, restored in zip(expected["optimizer_states"][0]["state"].values(),
                               got["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(saved[name], restored[name]) for name in saved)
    assert got["lr_schedulers"] == expected["lr_schedulers"]

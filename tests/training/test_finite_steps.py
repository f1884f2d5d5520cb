"""A NaN or infinite loss or gradient stops fit before the optimizer step, naming the step; the
checkpoints stay finite. Before, AdamW made every weight NaN and last.ckpt saved them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from speechsum.stages.sft import SFTModule
from speechsum.training.finite_steps import FiniteStepGuard, NonFiniteTrainingError, largest_entry
from tests.helpers import failed_command, run_config


class NaNFromStep(L.Callback):
    """From training batch ``batch_idx`` on, the LM's token embeddings are multiplied by NaN (the
    weights themselves stay finite): the loss is NaN from that step."""

    def __init__(self, batch_idx: int = 3):
        self.batch_idx = batch_idx

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.batch_idx:
            pl_module.model.llm.get_input_embeddings().register_forward_hook(lambda module, args, out: out * float("nan"))


class InfWeightsAfterStep(L.Callback):
    """After training batch ``batch_idx`` (its optimizer step done, before the checkpoint callback,
    which Lightning runs last) one trainable weight is infinite: what an overflowing learning rate does."""

    def __init__(self, batch_idx: int = 2):
        self.batch_idx = batch_idx

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.batch_idx:
            name, weight = pl_module.model.trainable_parameters()[0]
            with torch.no_grad():
                weight.view(-1)[0] = float("inf")


class NaNOnRank1(NaNFromStep):
    """:class:`NaNFromStep` on DDP rank 1 only."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == 1:
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)


def finite(path) -> bool:
    state = torch.load(path, weights_only=True, map_location="cpu")["state_dict"]
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def config_with(tmp_path, toy_data, callback: str, **trainer) -> Path:
    """A 6-step fit's config with a checkpoint every step and ``callback`` (a class of this file) added."""
    config = run_config(tmp_path, toy_data, max_steps=6, limit_val_batches=0, **trainer)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["callbacks"][0]["init_args"]["every_n_train_steps"] = 1
    settings["trainer"]["callbacks"].append({"class_path": f"tests.training.test_finite_steps.{callback}"})
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    return config


def failed_fit(tmp_path, toy_data, capsys, callback: str) -> tuple[int, str, Path]:
    """(exit code, stderr, checkpoint folder) of fit with :func:`config_with`."""
    code, err = failed_command(["fit", "--config", str(config_with(tmp_path, toy_data, callback))], capsys)
    return code, err, tmp_path / "run" / "checkpoints"


def test_a_nan_loss_stops_fit_at_its_step_and_the_checkpoints_stay_finite(tmp_path, toy_data, capsys):
    code, err, folder = failed_fit(tmp_path, toy_data, capsys, "NaNFromStep")
    assert code == 1, err
    assert "speechsum fit: error: training step 4 (global_step 3, epoch 0): the loss is nan on the batch of " in err
    assert (f"stopped before the optimizer step, so the weights were not updated with it and the last checkpoint "
            f"is {folder / 'last.ckpt'}. Lower model.init_args.learning_rate") in err
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["epoch=0-step=3.ckpt", "last.ckpt"]
    assert finite(folder / "last.ckpt")
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 3


def test_weights_that_became_infinite_are_never_saved_and_the_checkpoint_before_stays(tmp_path, toy_data, capsys):
    code, err, folder = failed_fit(tmp_path, toy_data, capsys, "InfWeightsAfterStep")
    assert code == 1, err
    assert ("speechsum fit: error: training step 3 (global_step 2, epoch 0): a weight holds NaN or infinity after "
            "its optimizer step (first in model.llm.model.layers.0.self_attn.q_proj.lora_A.default.weight); ") in err
    assert f"the checkpoint of it was not written, so the last checkpoint is {folder / 'last.ckpt'}. Lower" in err
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    assert finite(folder / "last.ckpt")
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 2


def test_under_ddp_a_nan_loss_on_one_rank_stops_every_rank_at_that_step(tmp_path, toy_data):
    """Rank 1's NaN reaches rank 0 through the all-reduced gradients: both stop before the same
    optimizer step (no rank left waiting in a collective), and no checkpoint holds NaN."""
    from tests.stages.test_ddp import fit_in_subprocess

    config = config_with(tmp_path, toy_data, "NaNOnRank1", devices=2, strategy="ddp")
    err = fit_in_subprocess(config, tmp_path, returncode=1)
    folder = tmp_path / "run" / "checkpoints"
    assert err.count("speechsum fit: error: training step 4 (global_step 3, epoch 0): ") == 2, err[-3000:]
    assert "the loss is nan on the batch of " in err  # rank 1's line; rank 0's names the gradients
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["epoch=0-step=3.ckpt", "last.ckpt"]
    assert finite(folder / "last.ckpt")


def test_a_nan_gradient_with_a_finite_loss_is_refused_and_a_finite_step_passes(tiny_composed):
    module = SFTModule(tiny_composed)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    guard = FiniteStepGuard()
    weight = torch.nn.Parameter(torch.ones(2))
    weight.grad = torch.tensor([1.0, 2.0])
    guard.add_loss(torch.tensor(0.5), ["a"])
    guard.check(trainer, [("w", weight)])  # finite: nothing raised
    weight.grad = torch.tensor([1.0, float("inf")])
    guard.add_loss(torch.tensor(0.5), ["a"])
    with pytest.raises(NonFiniteTrainingError) as info:
        guard.check(trainer, [("w", weight)])
    assert str(info.value).startswith("training step 1 (global_step 0, epoch 0): the gradients of 1 weight(s) hold "
                                      "NaN or infinity, e.g. w; stopped before the optimizer step")
    guard.check(trainer, [("w", weight)], check_gradients=False)  # fp16's scaler skips such steps itself
    assert module._finite_steps is not None


def test_largest_entry_is_the_largest_magnitude_and_propagates_nan_and_inf():
    assert float(largest_entry([torch.tensor([-5.0, 2.0]), torch.tensor([3.0]).bfloat16()])) == 5.0
    assert float(largest_entry([torch.tensor([1.0]), torch.tensor([-float("inf"), 0.0])])) == float("inf")
    assert torch.isnan(largest_entry([torch.tensor([float("inf")]), torch.tensor([1.0, float("nan")])]))
    assert float(largest_entry([torch.zeros(0), torch.tensor([-2.0])])) == 2.0  # an empty tensor is left out
    assert float(largest_entry([torch.zeros(0, 4)])) == 0.0

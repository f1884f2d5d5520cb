"""`--ckpt_path` after a run that ``max_steps`` ended mid-epoch, and after a change of what trains."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

from speechsum.cli import lightning_cli
from tests.helpers import failed_command, run_config


def constant_lr_config(folder, toy_data, **trainer):
    """A run config whose learning rate does not depend on max_steps (no warm-up, no decay)."""
    config = run_config(folder, toy_data, limit_val_batches=0, **trainer)
    settings = yaml.safe_load(config.read_text())
    settings["model"]["init_args"].update({"warmup_steps": 0, "min_lr_ratio": 1.0})
    config.write_text(yaml.safe_dump(settings))
    return config


def saved(config) -> dict:
    return torch.load(config.parent / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("max_epochs", [1, 2])
def test_k_steps_then_a_raised_max_steps_equals_n_steps_straight(tmp_path, toy_data, max_epochs, caplog):
    """A run stopped by max_steps: 2 and resumed with max_steps: 5 skipped the rest of its epoch (7
    batches): with max_epochs: 1 it trained nothing more ("max_epochs=1 reached"), with 2 it went on
    at the next epoch. Now N steps straight = k steps + resume + N-k steps, weights equal (with a
    learning rate that max_steps does not shape: the schedule's length is max_steps). A resume with
    max_steps already reached trained nothing and said only Lightning's "max_steps=2 reached"."""
    straight = constant_lr_config(tmp_path / "straight", toy_data, max_steps=5, max_epochs=max_epochs)
    lightning_cli(["fit", "--config", str(straight)])
    resumed = constant_lr_config(tmp_path / "resumed", toy_data, max_steps=2, max_epochs=max_epochs)
    lightning_cli(["fit", "--config", str(resumed)])
    assert saved(resumed)["global_step"] == 2
    with caplog.at_level(logging.WARNING, logger="speechsum.training.resume_state"):  # max_steps already reached
        lightning_cli(["fit", "--config", str(resumed), "--ckpt_path", "last"])
    assert (f"ckpt_path {resumed.parent / 'run' / 'checkpoints' / 'last.ckpt'}: saved at step 2 and "
            "trainer.max_steps is 2: nothing is left to train; raise --trainer.max_steps to train on from it") in caplog.text
    lightning_cli(["fit", "--config", str(resumed), "--trainer.max_steps", "5", "--ckpt_path", "last"])

    expected, got = saved(straight), saved(resumed)
    assert got["global_step"] == expected["global_step"] == 5
    assert got["state_dict"].keys() == expected["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][key], value, msg=key)


def test_a_changed_training_policy_is_refused_naming_it_and_a_changed_learning_rate_is_said(tmp_path, toy_data,
                                                                                             capsys, caplog):
    """A projector trainable when saved and frozen in the resumed config: torch's traceback ("loaded state
    dict contains a parameter group that doesn't match the size of optimizer's group"). A changed learning
    rate was silently not used (the optimizer's saved one is restored)."""
    config = run_config(tmp_path, toy_data, max_steps=2, limit_val_batches=0)
    lightning_cli(["fit", "--config", str(config)])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    code, err = failed_command(["fit", "--config", str(config), "--trainer.max_steps", "3", "--ckpt_path", "last",
                                "--model.init_args.model.init_args.policy.train_projector", "false"], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert f"error: ckpt_path {last}: its optimizer state holds " in err
    assert ("the training policy (policy.train_encoder, train_projector, llm, LoRA targets) changed since it was "
            f"saved; resume with the policy it was trained with, or start a new run from its weights with "
            f"--model.init_args.init_from {last} (no --ckpt_path)") in err
    with caplog.at_level(logging.WARNING, logger="speechsum.training.resume_state"):
        lightning_cli(["fit", "--config", str(config), "--trainer.max_steps", "3", "--ckpt_path", "last",
                       "--model.init_args.learning_rate", "0.5"])
    assert "model.init_args.learning_rate is 0.5 in this config, but the resumed run keeps the 0.001" in caplog.text
    assert saved(config)["optimizer_states"][0]["param_groups"][0]["initial_lr"] == 0.001


def test_a_changed_accumulate_grad_batches_on_resume_is_said_naming_both_values(tmp_path, toy_data, caplog):
    """A resume with another trainer.accumulate_grad_batches than the checkpoint's was accepted without a
    word (each optimizer step then summed another number of batches), as a changed learning rate was."""
    config = run_config(tmp_path, toy_data, max_steps=1, limit_val_batches=0, accumulate_grad_batches=2)
    lightning_cli(["fit", "--config", str(config)])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with caplog.at_level(logging.WARNING, logger="speechsum.training.resume_state"):
        lightning_cli(["fit", "--config", str(config), "--trainer.max_steps", "2", "--ckpt_path", "last"])
    assert "accumulate_grad_batches" not in caplog.text  # the same value: nothing said
    with caplog.at_level(logging.WARNING, logger="speechsum.training.resume_state"):
        lightning_cli(["fit", "--config", str(config), "--trainer.max_steps", "3", "--ckpt_path", "last",
                       "--trainer.accumulate_grad_batches", "1"])
    assert (f"ckpt_path {last}: trainer.accumulate_grad_batches is 1 in this config, but the checkpoint was trained "
            "with 2: from here on each optimizer step sums the gradients of 1 batch(es), not 2") in caplog.text
    assert saved(config)["global_step"] == 3

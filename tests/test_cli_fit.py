"""`speechsum fit/validate/test/predict` through the real Lightning CLI on the tiny config."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
import yaml

from speechsum.cli import lightning_cli, main
from tests.helpers import run_config


def trainable_state(ckpt_path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]


class SimulatedCrash(RuntimeError):
    pass


class CrashAtEpoch(L.Callback):
    """Dies when epoch ``epoch`` starts, after the previous epoch's last.ckpt was written."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise SimulatedCrash(f"crash at epoch {self.epoch}")


def test_fit_then_resume_matches_uninterrupted_training(tmp_path, toy_data):
    straight = run_config(tmp_path / "straight", toy_data, max_epochs=2)
    lightning_cli(["fit", "--config", str(straight)])

    interrupted = run_config(tmp_path / "resumed", toy_data, max_epochs=2)
    crashing = yaml.safe_load(interrupted.read_text())
    crashing["trainer"]["callbacks"].append({"class_path": f"{__name__}.CrashAtEpoch", "init_args": {"epoch": 1}})
    crashing_path = tmp_path / "crashing.yaml"
    crashing_path.write_text(yaml.safe_dump(crashing))
    with pytest.raises(SimulatedCrash):
        lightning_cli(["fit", "--config", str(crashing_path)])
    first_half = trainable_state(tmp_path / "resumed" / "run" / "checkpoints" / "last.ckpt")
    lightning_cli(["fit", "--config", str(interrupted), "--ckpt_path", "last"])

    expected = torch.load(tmp_path / "straight" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == expected["global_step"] > 0
    assert resumed["state_dict"].keys() == expected["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, msg=key)
    changed = [k for k, v in first_half.items() if not torch.equal(v, expected["state_dict"][k])]
    assert changed, "the second epoch changed no weight"


def test_checkpoint_holds_only_trainable_weights(tmp_path, toy_data):
    config = run_config(tmp_path, toy_data, max_steps=2, limit_val_batches=0)
    cli = lightning_cli(["fit", "--config", str(config)])
    state = trainable_state(tmp_path / "run" / "checkpoints" / "last.ckpt")
    trainable = {f"model.{name}" for name, _ in cli.model.model.trainable_parameters()}
    params = {k for k in state if k in dict(cli.model.named_parameters())}
    assert params == trainable
    assert any("lora_A" in k for k in params) and any("projector" in k for k in params)
    assert not any(k.startswith("model.encoder.") for k in params)  # frozen encoder not saved


def test_validation_writes_samples_and_predict_writes_jsonl(tmp_path, toy_data):
    config = run_config(tmp_path, toy_data, max_epochs=1)
    lightning_cli(["fit", "--config", str(config)])
    samples = list((tmp_path / "run").glob("logs/version_*/samples/*.jsonl"))
    assert samples
    rows = [json.loads(line) for line in samples[0].read_text().splitlines()]
    assert len(rows) == 2 and set(rows[0]) == {"id", "instruction", "reference", "prediction"}

    lightning_cli(["predict", "--config", str(config), "--ckpt_path", "last"])
    predictions = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in predictions) == sorted(
        json.loads(line)["id"] for line in toy_data["test"].read_text().splitlines()
    )
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_validate_and_test_report_losses(tmp_path, toy_data):
    config = run_config(tmp_path, toy_data)
    cli = lightning_cli(["--config", str(config)], run=False)
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule)[0]
    assert metrics["val/loss"] > 0
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule)[0]
    assert metrics["test/loss"] > 0


def test_cli_help_lists_commands_and_options(capsys):
    main([])
    overview = capsys.readouterr().out
    assert "fit" in overview and "toydata" in overview
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--ckpt_path" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "SFTModule"])
    assert "--model.learning_rate" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fit", "--model.model.help", "ComposedSpeechLLM"])
    assert "--model.policy" in capsys.readouterr().out


def test_wandb_offline_logs_samples_and_no_secret(tmp_path, toy_data, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "sk-secret-must-not-leak-0123456789")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    config = run_config(tmp_path, toy_data, max_epochs=1, limit_train_batches=2)
    data = yaml.safe_load(config.read_text())
    data["trainer"]["logger"].append(
        {"class_path": "speechsum.loggers.WandbLogger", "init_args": {"save_dir": str(tmp_path / "run")}}
    )
    config.write_text(yaml.safe_dump(data))
    lightning_cli(["fit", "--config", str(config)])
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1  # offline by default, no network needed
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"sk-secret-must-not-leak" not in path.read_bytes(), path


def test_bf16_mixed_precision_on_cpu(tmp_path, toy_data):
    config = run_config(tmp_path, toy_data, max_steps=2, limit_val_batches=0, precision="bf16-mixed")
    cli = lightning_cli(["fit", "--config", str(config)])
    assert cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


def test_print_config_shows_the_merged_config(tmp_path, toy_data, capsys):
    config = run_config(tmp_path, toy_data)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--trainer.max_steps", "7", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["max_steps"] == 7
    assert printed["model"]["class_path"] == "speechsum.stages.sft.SFTModule"
    assert printed["model"]["init_args"]["model"]["init_args"]["policy"]["lora_r"] == 16

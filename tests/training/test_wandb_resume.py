"""The W&B logger: offline by default, one W&B run per run folder across `--ckpt_path last` resumes."""

from __future__ import annotations

import re

import pytest
import wandb
import yaml

from speechsum.cli import lightning_cli
from speechsum.training.loggers import RUN_ID_FILE, WandbLogger, read_run_id
from tests.helpers import run_config

SECRET = "sk-secret-must-not-leak-0123456789"


def with_wandb(config_path, save_dir, **init_args) -> None:
    config = yaml.safe_load(config_path.read_text())
    config["trainer"]["logger"].append({
        "class_path": "speechsum.training.loggers.WandbLogger",
        "init_args": {"save_dir": str(save_dir), **init_args},
    })
    config_path.write_text(yaml.safe_dump(config))


def offline_runs(save_dir) -> list:
    return sorted((save_dir / "wandb").glob("offline-run-*"))


def test_resumed_fit_continues_the_same_offline_wandb_run(tmp_path, toy_data, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = tmp_path / "run"  # run_config puts checkpoints and logs here
    config = run_config(tmp_path, toy_data, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    with_wandb(config, run)
    lightning_cli(["fit", "--config", str(config)])
    wandb.finish()  # the process ends here (a crash, a pre-emption)
    run_id = read_run_id(run)
    assert run_id and [p.name.endswith(f"-{run_id}") for p in offline_runs(run)] == [True]

    longer = yaml.safe_load(config.read_text())
    longer["trainer"]["max_epochs"] = 2
    config.write_text(yaml.safe_dump(longer))
    cli = lightning_cli(["fit", "--config", str(config), "--ckpt_path", "last"])
    wandb.finish()
    assert cli.trainer.current_epoch == 2 and cli.trainer.global_step == 4  # resumed, not restarted
    runs = offline_runs(run)
    # both fits, one W&B run (W&B adds "-1" to the second folder when both started in the same second)
    assert len(runs) == 2 and all(re.search(rf"-{run_id}(-\d+)?$", p.name) for p in runs)
    assert read_run_id(run) == run_id
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_log_model_records_checkpoints_as_artifacts_offline(tmp_path, toy_data, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    logged = []
    log_artifact = wandb.Run.log_artifact

    def recording(run, artifact, *args, **kwargs):
        logged.append((run.offline, artifact.name, artifact.type, sorted(artifact.manifest.entries)))
        return log_artifact(run, artifact, *args, **kwargs)

    monkeypatch.setattr(wandb.Run, "log_artifact", recording)
    config = run_config(tmp_path, toy_data, max_steps=2, limit_val_batches=0)
    with_wandb(config, tmp_path / "run", log_model="all")
    lightning_cli(["fit", "--config", str(config)])
    wandb.finish()
    run_id = read_run_id(tmp_path / "run")
    assert logged and all(entry == (True, f"model-{run_id}", "model", ["model.ckpt"]) for entry in logged)
    assert len(offline_runs(tmp_path / "run")) == 1


def test_an_explicit_id_wins_and_a_broken_id_file_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    (tmp_path / RUN_ID_FILE).write_text("abc123\n")
    assert WandbLogger(save_dir=str(tmp_path))._id == "abc123"
    assert WandbLogger(save_dir=str(tmp_path), id="chosen")._id == "chosen"
    assert WandbLogger(save_dir=str(tmp_path / "fresh"))._id is None
    (tmp_path / RUN_ID_FILE).write_text("two words")
    with pytest.raises(ValueError, match=RUN_ID_FILE):
        WandbLogger(save_dir=str(tmp_path))


def test_an_empty_id_file_left_by_a_cut_write_starts_a_new_run_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    (tmp_path / RUN_ID_FILE).write_text("")
    with caplog.at_level("WARNING", logger="speechsum.training.loggers"):
        assert WandbLogger(save_dir=str(tmp_path))._id is None
    assert f"{tmp_path / RUN_ID_FILE} is empty" in caplog.text and "new W&B run" in caplog.text

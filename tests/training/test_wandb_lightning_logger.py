"""Lightning's own ``WandbLogger`` named in a config (in place of speechsum's) keeps speechsum's W&B rules: the
command line it records masked, offline unless WANDB_MODE=online. No network: offline runs only."""

from __future__ import annotations

import logging
import sys

import pytest
import wandb
import yaml

from speechsum.cli import main
from tests.servers import ScriptedChatBackend, serve_in_thread
from tests.stages.test_kd import kd_config
from tests.training.test_wandb_resume import offline_runs

PASSWORD = "leak-pass-5813"


@pytest.mark.parametrize("wandb_mode", [None, "offline"])
def test_lightnings_own_wandb_logger_is_offline_and_masks_the_command_line(tmp_path, toy_data, monkeypatch, caplog,
                                                                          wandb_mode):
    """Before: with WANDB_MODE unset it went online (Lightning's ``offline: false`` default; without a login, an
    error at the first step, with one an upload), and (offline) the run recorded the command line whole, a teacher
    URL's password in it."""
    for variable in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    if wandb_mode:
        monkeypatch.setenv("WANDB_MODE", wandb_mode)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # were it to go online: refused here, not the internet
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    with serve_in_thread(ScriptedChatBackend(lambda messages: "a short summary")) as url:
        teacher = {"class_path": "speechsum.stages.kd.teachers.OpenAICompatibleTeacher",
                   "init_args": {"model": "scripted", "base_url": url, "scoring": "none",
                                 "api_key_env": "S10_UNSET_TEACHER_KEY"}}
        config = kd_config(tmp_path, toy_data, teacher=teacher, seq_kd=True, lmbda=0.0)
        settings = yaml.safe_load(config.read_text())
        settings["trainer"]["logger"].append({"class_path": "lightning.pytorch.loggers.WandbLogger",
                                              "init_args": {"save_dir": str(tmp_path / "run"), "project": "s10"}})
        config.write_text(yaml.safe_dump(settings))
        secret_url = url.replace("http://", f"http://teacher-user:{PASSWORD}@")
        monkeypatch.setattr(sys, "argv", ["speechsum", "fit", "--config", str(config), "--trainer.max_steps", "1",
                                          "--trainer.limit_val_batches", "0",
                                          "--model.init_args.teacher.init_args.base_url", secret_url])
        with caplog.at_level(logging.WARNING, logger="speechsum.training.loggers"):
            main()
        wandb.finish()
    [run] = offline_runs(tmp_path / "run")
    assert b"--model.init_args.teacher.init_args.base_url" in next(run.glob("*.wandb")).read_bytes()
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or PASSWORD.encode() not in path.read_bytes(), path
    assert ("trainer.logger lightning.pytorch.loggers.WandbLogger is run as speechsum.training.loggers.WandbLogger "
            "(the command line it records masked; offline: WANDB_MODE is not online): name that class in the config "
            "instead (its offline: false, or WANDB_MODE=online, syncs)") in caplog.messages

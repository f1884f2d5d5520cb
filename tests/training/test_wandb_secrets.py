"""Secrets never reach a W&B run (what it records of the command line, ``args``, included); W&B keeps to WANDB_MODE."""

from __future__ import annotations

import sys

import wandb

from speechsum.cli import main
from tests.servers import ScriptedChatBackend, serve_in_thread
from tests.stages.test_kd import kd_config
from tests.training.test_wandb_resume import offline_runs, with_wandb

KEY = "sk-LEAKCHECK-teacher-0123456789"
PASSWORD = "leak-pass-4711"


def test_a_teacher_urls_credentials_on_the_command_line_never_reach_the_wandb_run(tmp_path, toy_data, monkeypatch):
    """Before: W&B's run metadata recorded ``sys.argv`` whole, so a ``--model.init_args.teacher.init_args.base_url
    http://user:password@host/v1`` (how the pipeline used to give it, and how a user may) went into the offline
    run's ``.wandb`` file, synced with it; config.yaml, hparams.yaml and the checkpoints masked it already."""
    monkeypatch.delenv("S9_TEACHER_KEY", raising=False)  # the URL's user:password@ is the credential (with a key: refused)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    with serve_in_thread(ScriptedChatBackend(lambda messages: "a short summary")) as url:
        teacher = {"class_path": "speechsum.stages.kd.teachers.OpenAICompatibleTeacher",
                   "init_args": {"model": "scripted", "base_url": url, "scoring": "none", "api_key_env": "S9_TEACHER_KEY"}}
        config = kd_config(tmp_path, toy_data, teacher=teacher, seq_kd=True, lmbda=0.0)
        with_wandb(config, tmp_path / "run")
        secret_url = url.replace("http://", f"http://teacher-user:{PASSWORD}@")
        monkeypatch.setattr(sys, "argv", ["speechsum", "fit", "--config", str(config), "--trainer.max_steps", "1",
                                          "--trainer.limit_val_batches", "0",
                                          "--model.init_args.teacher.init_args.base_url", secret_url])
        main()
        wandb.finish()
    assert sys.argv[-1] == secret_url  # the process's own command line is left as it was
    [run] = offline_runs(tmp_path / "run")
    recorded = next(run.glob("*.wandb")).read_bytes()
    assert b"--model.init_args.teacher.init_args.base_url" in recorded  # the command line it recorded
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert {path.name for path in written} >= {"config.yaml", "hparams.yaml", "metrics.csv", "last.ckpt"}
    for path in written:
        assert PASSWORD.encode() not in path.read_bytes() and KEY.encode() not in path.read_bytes(), path


def test_a_judge_urls_credentials_on_the_evaluate_command_line_never_reach_its_wandb_run(tmp_path, monkeypatch):
    """``speechsum evaluate --wandb --judge-base-url http://user:password@host/v1``: W&B recorded the command line
    whole in the run (its config's judge_base_url was masked already)."""
    from tests.eval_fixtures import save_tiny_text_lm, scripted_judge_reply, write_eval_set

    monkeypatch.delenv("S9_JUDGE_KEY", raising=False)  # the URL's user:password@ is the credential (with a key: refused)
    monkeypatch.setenv("WANDB_MODE", "offline")
    manifests = write_eval_set(tmp_path / "data")
    model = save_tiny_text_lm(tmp_path / "lm", seed=1)
    out = tmp_path / "out"
    with serve_in_thread(ScriptedChatBackend(scripted_judge_reply)) as url:
        monkeypatch.setattr(sys, "argv", [
            "speechsum", "evaluate", "--system", f"text:lm:{model}", "--manifest", str(manifests["test"]), "--out",
            str(out), "--max-new-tokens", "4", "--accelerator", "cpu", "--metrics", "llm_judge", "--judge-model",
            "scripted", "--api-key-env", "S9_JUDGE_KEY", "--bootstrap-resamples", "10", "--wandb",
            "--judge-base-url", url.replace("http://", f"http://judge-user:{PASSWORD}@")])
        main()
    [run] = (out / "wandb").glob("offline-run-*")
    assert b"--judge-base-url" in next(run.glob("*.wandb")).read_bytes()  # the command line it recorded
    for path in out.rglob("*"):
        assert not path.is_file() or (PASSWORD.encode() not in path.read_bytes()
                                      and KEY.encode() not in path.read_bytes()), path


def test_evaluate_wandb_keeps_wandb_mode_disabled(tmp_path, monkeypatch):
    """``WANDB_MODE=disabled`` (W&B off for the whole environment): the fit loggers log nothing, but
    ``evaluate --wandb`` wrote an offline run anyway."""
    from tests.eval_fixtures import save_tiny_text_lm, write_eval_set

    monkeypatch.setenv("WANDB_MODE", "disabled")
    manifests = write_eval_set(tmp_path / "data")
    model = save_tiny_text_lm(tmp_path / "lm", seed=1)
    out = tmp_path / "out"
    main(["evaluate", "--system", f"text:lm:{model}", "--manifest", str(manifests["test"]), "--out", str(out),
          "--max-new-tokens", "4", "--accelerator", "cpu", "--metrics", "rouge", "--bootstrap-resamples", "10",
          "--wandb"])
    assert (out / "lm" / "metrics.json").is_file() and not (out / "wandb").exists()

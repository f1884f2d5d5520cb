"""A killed `speechsum fit` stage resumes from its newest whole checkpoint: the resume checkpoint
callback, which checkpoint is picked (never one cut short, never a dangling link), and a real tiny
text-LM stage SIGKILLed mid-training whose rerun continues and ends with the weights of an
uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from speechsum.pipeline.config import resolve_stage_config
from speechsum.pipeline.resume import (
    TEACHER_SERVER_URL,
    checkpoint_step,
    newest_checkpoint,
    readable,
    resume_checkpoint_callback,
    resume_point,
)
from tests.conftest import CONFIGS, REPO


def test_resume_callback_saves_the_newest_every_interval():
    assert resume_checkpoint_callback("/run/sft", 120) == {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {
            "dirpath": "/run/sft/resume", "filename": "resume-{step}", "save_top_k": 1, "save_last": False,
            "train_time_interval": "0:02:00"}}
    assert resume_checkpoint_callback("/r", 0)["init_args"]["train_time_interval"] == "0:00:00"
    assert resume_checkpoint_callback("/r", 3725.5)["init_args"]["train_time_interval"] == "1:02:5.5"


def save_checkpoint(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "w": torch.zeros(64)}, path)
    return path


def test_the_newest_whole_checkpoint_is_picked(tmp_path):
    stage = tmp_path / "sft"
    target = save_checkpoint(stage / "checkpoints" / "epoch=0-step=4.ckpt", 4)
    (stage / "checkpoints" / "last.ckpt").symlink_to(target.name)
    resume = save_checkpoint(stage / "resume" / "resume-step=6.ckpt", 6)
    assert checkpoint_step(stage / "checkpoints" / "last.ckpt") == 4  # from the link's target
    assert newest_checkpoint(stage) == resume
    resume.write_bytes(resume.read_bytes()[:-40])  # cut short by a kill while copied into place
    assert not readable(resume) and readable(target)
    assert newest_checkpoint(stage) == stage / "checkpoints" / "last.ckpt"
    target.unlink()  # the link dangles (Lightning removes the old file before it relinks)
    assert newest_checkpoint(stage) is None


def test_a_dangling_last_link_falls_back_to_the_newest_checkpoint_beside_it(tmp_path):
    """A kill between Lightning's save of step 8, its removal of step 4 and its relink: the stage
    started over although a whole step-8 checkpoint was there."""
    stage = tmp_path / "sft"
    (stage / "checkpoints").mkdir(parents=True)
    (stage / "checkpoints" / "last.ckpt").symlink_to("epoch=0-step=4.ckpt")
    newest = save_checkpoint(stage / "checkpoints" / "epoch=0-step=8.ckpt", 8)
    save_checkpoint(stage / "resume" / "resume-step=6.ckpt", 6)
    assert newest_checkpoint(stage) == newest


def interrupted_at_step_1(stage: Path, config_text: str) -> tuple[Path, Path]:
    """(``stage``, its resume checkpoint): a stage folder as a run of ``config_text`` killed after step 1."""
    stage.mkdir()
    (stage / "config.yaml").write_text(config_text)
    return stage, save_checkpoint(stage / "resume" / "resume-step=1.ckpt", 1)


def test_kd_under_teacher_serve_resumes_although_the_servers_port_changed(tmp_path):
    """`--teacher serve` starts the teacher server on a free port each run: the resolved KD config
    differs only in that URL, which the resume check ignores (and only that)."""
    config = {"benchmark": {"size": "tiny"}, "text_lms": {"backbone": {}}}

    def served(port: int, max_steps: int = 2) -> str:
        teacher = {"mode": "serve", "base_url": f"http://127.0.0.1:{port}/v1", "model": "teacher", "api_key_env": "K"}
        resolved = resolve_stage_config({**config, "stages": {"kd": {"overrides": {"trainer": {"max_steps": max_steps}}}}},
                                        "kd", tmp_path, teacher=teacher)
        return yaml.safe_dump(resolved, sort_keys=False)

    stage, checkpoint = interrupted_at_step_1(tmp_path / "kd", served(41001))
    assert "http://127.0.0.1:41001/v1" in served(41001) and served(41001) != served(41002)
    assert resume_point(stage, served(41002)) == (None, "its resolved config changed")
    assert resume_point(stage, served(41002), ignore=TEACHER_SERVER_URL) == (checkpoint, "step 1")
    assert resume_point(stage, served(41002, max_steps=3), ignore=TEACHER_SERVER_URL) == (
        None, "its resolved config changed")  # anything else still counts


def test_a_rerun_with_another_checkpoint_interval_resumes(tmp_path):
    """``--checkpoint-every 30`` on the rerun of a stage killed under the default 120 s: it started over
    ("its resolved config changed"), losing the training the shorter interval was meant to keep."""
    def resolved(every_s: float, max_steps: int = 2) -> str:
        config = {"benchmark": {"size": "tiny"}, "stages": {"sft": {"overrides": {"trainer": {"max_steps": max_steps}}}}}
        return yaml.safe_dump(resolve_stage_config(config, "sft", tmp_path, checkpoint_every_s=every_s), sort_keys=False)

    stage, checkpoint = interrupted_at_step_1(tmp_path / "sft", resolved(120))
    assert "train_time_interval: 0:00:30" in resolved(30) and resolved(30) != resolved(120)
    assert resume_point(stage, resolved(30)) == (checkpoint, "step 1")
    assert resume_point(stage, resolved(30, max_steps=3)) == (None, "its resolved config changed")


def test_a_rerun_with_or_without_wandb_resumes(tmp_path):
    """``--wandb`` keeps the W&B logger in the resolved config, and without it it is dropped: a stage killed
    without it and rerun with it (or the other way round) started over, losing its training."""
    def resolved(wandb: bool, max_steps: int = 2) -> str:
        config = {"benchmark": {"size": "tiny"}, "stages": {"sft": {"overrides": {"trainer": {"max_steps": max_steps}}}}}
        return yaml.safe_dump(resolve_stage_config(config, "sft", tmp_path, wandb=wandb), sort_keys=False)

    assert "WandbLogger" in resolved(True) and "WandbLogger" not in resolved(False)
    stage, checkpoint = interrupted_at_step_1(tmp_path / "sft", resolved(False))
    assert resume_point(stage, resolved(True)) == (checkpoint, "step 1")
    assert resume_point(stage, resolved(True, max_steps=3)) == (None, "its resolved config changed")
    (stage / "config.yaml").write_text(resolved(True))
    assert resume_point(stage, resolved(False)) == (checkpoint, "step 1")
    assert resume_point(stage, "not: [a mapping\n") == (None, "its resolved config changed")


def test_resume_point_needs_the_same_config_and_a_checkpoint(tmp_path):
    stage = tmp_path / "sft"
    assert resume_point(stage, "a: 1\n") == (None, "no earlier run")
    stage.mkdir()
    (stage / "config.yaml").write_text("a: 1\n")
    assert resume_point(stage, "a: 2\n") == (None, "its resolved config changed")
    assert resume_point(stage, "a: 1\n") == (None, "the interrupted run left no whole checkpoint")
    checkpoint = save_checkpoint(stage / "resume" / "resume-step=3.ckpt", 3)
    assert resume_point(stage, "a: 1\n") == (checkpoint, "step 3")
    later = (stage / "config.yaml").stat().st_mtime + 1  # e.g. `--from align --until align` since
    assert resume_point(stage, "a: 1\n", not_before=later) == (None, "what it is built from ran again since")


# -- a real stage, killed and resumed ---------------------------------------------------------------
STEPS = 6


def pipeline(config: Path, run: Path, until: str = "text_lm", **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "speechsum.cli", "pipeline", "--config", str(config),
                             "--run-dir", str(run), "--until", until, "--checkpoint-every", "0"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out[-3000:]
    return out


def weights(run: Path) -> dict:
    checkpoint = torch.load(run / "text_lm" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {"global_step": checkpoint["global_step"], **checkpoint["state_dict"]}


def test_a_killed_fit_stage_resumes_and_ends_as_an_uninterrupted_run(tmp_path):
    """The tiny preset's text LM trained for 6 steps, checkpointing every step: SIGKILL of the whole
    pipeline (process group) once a resume checkpoint of step >= 2 exists; the rerun says it
    resumes, skips the benchmark, and ends with the exact weights and exported model of a run that
    was never interrupted. ~1.5 min on one core."""
    preset = yaml.safe_load((CONFIGS / "pipeline" / "tiny.yaml").read_text())
    preset["text_lms"]["backbone"]["overrides"] = {
        **preset["text_lms"]["backbone"]["overrides"],
        "trainer": {"max_steps": STEPS, "max_epochs": 2, "limit_val_batches": 1, "log_every_n_steps": 1}}
    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(preset))
    built, whole, killed = tmp_path / "built", tmp_path / "whole", tmp_path / "killed"
    finish(pipeline(config, built, until="benchmark"))
    for run in (whole, killed):
        shutil.copytree(built, run, symlinks=True)  # copy2: the benchmark's marker keeps its time
    started = time.monotonic()
    finish(pipeline(config, whole))
    whole_s = time.monotonic() - started

    started = time.monotonic()
    process = pipeline(config, killed, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any((checkpoint_step(p) or 0) >= 2 for p in (killed / "text_lm" / "resume").glob("*.ckpt")):
            assert process.poll() is None and time.monotonic() < deadline, "no resume checkpoint was saved"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the pipeline and its `speechsum fit`
        process.communicate()
    first_s = time.monotonic() - started
    assert not (killed / ".state" / "text_lm.json").exists()

    started = time.monotonic()
    out = finish(pipeline(config, killed))
    rerun_s = time.monotonic() - started
    assert "[1/14] benchmark … complete, skipped" in out
    assert f"[text_lm] resuming from {killed}/text_lm/" in out
    assert "Restoring states from the checkpoint path" in (killed / "logs" / "text_lm.log").read_text()
    assert not (killed / "text_lm" / "resume").exists()  # complete: the resume checkpoints are gone
    expected, resumed = weights(whole), weights(killed)
    assert resumed["global_step"] == expected["global_step"] == STEPS
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[key], expected[key]) for key in expected if key != "global_step")
    exported = sorted(p.name for p in (whole / "text_lm" / "model").iterdir())
    for name in exported:
        assert (killed / "text_lm" / "model" / name).read_bytes() == (whole / "text_lm" / "model" / name).read_bytes()
    print(f"\ntext_lm uninterrupted {whole_s:.1f} s; killed after {first_s:.1f} s + resumed {rerun_s:.1f} s: "
          f"{first_s + rerun_s - whole_s:.1f} s lost to the kill")


def test_a_fit_stage_killed_after_its_last_resume_checkpoint_ends_with_it(tmp_path):
    """Killed after the final step's resume checkpoint but before ``last.ckpt`` (the window the chaos
    test met): resumed there, fit has no step left and saves nothing; that checkpoint becomes
    ``last.ckpt`` (the stage failed with "last.ckpt is missing")."""
    run, config = tmp_path / "run", CONFIGS / "pipeline" / "tiny.yaml"
    finish(pipeline(config, run, until="align"))
    trained = torch.load(run / "align" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    resume = run / "align" / "resume"
    resume.mkdir()
    shutil.copyfile(run / "align" / "checkpoints" / "last.ckpt", resume / f"resume-step={trained['global_step']}.ckpt")
    shutil.rmtree(run / "align" / "checkpoints")
    (run / ".state" / "align.json").unlink()

    out = finish(pipeline(config, run, until="align"))
    assert "was the last step: copied to" in out
    last = torch.load(run / "align" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == trained["global_step"]
    assert all(torch.equal(last["state_dict"][k], v) for k, v in trained["state_dict"].items())
    assert not resume.exists()

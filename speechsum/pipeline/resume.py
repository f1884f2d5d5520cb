"""Resuming an interrupted ``speechsum fit`` stage: the pipeline adds a ModelCheckpoint that saves a
resume checkpoint every :data:`CHECKPOINT_EVERY_S` seconds of training into ``RUN/<stage>/resume/``
(the newest only; the stage's own checkpoints are untouched), and a rerun of a stage whose saved
``config.yaml`` equals the new one continues from the newest readable checkpoint with
``--ckpt_path`` (Lightning restores the loops, so training goes on mid-epoch exactly)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import yaml

CHECKPOINT_EVERY_S = 120.0  # default seconds of training between resume checkpoints
RESUME_FOLDER = "resume"  # RUN/<stage>/resume/: removed once the stage is complete
_STEP = re.compile(r"step=(\d+)")
# the loopback server the kd stage starts for `--teacher serve`: a free port, so a new URL, each run
TEACHER_SERVER_URL = re.compile(r"http://127\.0\.0\.1:\d+/v1\b")
# how often the resume checkpoint is saved (--checkpoint-every): not a setting of the training, so a
# rerun with another interval resumes too (it started over, losing the training it meant to keep)
CHECKPOINT_INTERVAL = re.compile(r"(?<=\btrain_time_interval: )\S+")


def resume_checkpoint_callback(stage_dir: str, every_s: float) -> dict:
    """The ModelCheckpoint (Lightning config) that keeps the newest resume checkpoint of a stage."""
    minutes, seconds = divmod(float(every_s), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {
        "dirpath": f"{stage_dir}/{RESUME_FOLDER}", "filename": "resume-{step}", "save_top_k": 1,
        "save_last": False, "train_time_interval": f"{hours}:{minutes:02d}:{seconds:02g}"}}


def checkpoint_step(path: Path) -> int | None:
    """The global step in a checkpoint's file name (``…step=12.ckpt``; a link's target name)."""
    match = _STEP.search(path.resolve().name)
    return int(match.group(1)) if match else None


def readable(path: Path) -> bool:
    """Whether ``path`` is a whole checkpoint: torch saves a zip, whose directory is written last,
    so a file cut short by a kill (Lightning copies it into place, which is not atomic when the
    temporary file is on another file system) or a dangling ``last.ckpt`` link fails this."""
    try:
        with zipfile.ZipFile(path):
            return True
    except (OSError, zipfile.BadZipFile):
        return False


def lost_outputs(marker: dict, run_dir: Path) -> list[tuple[str, str]]:
    """(path, what is wrong) for each output a complete stage's marker lists under ``run_dir`` that is
    no longer there (deleted by hand, or lost), or a checkpoint that is no longer whole (cut short by
    a full disk or a copy): the stage runs again rather than hand it to the stages built on it, which
    failed loading it. Paths outside ``run_dir`` (a run folder moved since, or a stage's outputs
    elsewhere) are not checked."""
    lost = []
    for path in (Path(output) for output in marker.get("outputs") or []):
        if not path.is_relative_to(run_dir):
            continue
        if not path.exists():
            lost.append((str(path), "is gone"))
        elif path.suffix == ".ckpt" and not readable(path):
            lost.append((str(path), "is not a whole checkpoint (cut short)"))
    return lost


def newest_checkpoint(stage_dir: Path) -> Path | None:
    """The readable checkpoint of ``stage_dir`` with the highest step: ``checkpoints/last.ckpt``, the
    resume checkpoint or another of ``checkpoints/`` (the newest one when a kill left ``last.ckpt``
    dangling: Lightning saves a new checkpoint, removes the old one, then relinks); None when there
    is none."""
    candidates = [stage_dir / "checkpoints" / "last.ckpt",
                  *sorted(path for path in (stage_dir / "checkpoints").glob("*.ckpt") if path.name != "last.ckpt"),
                  *sorted((stage_dir / RESUME_FOLDER).glob("*.ckpt"))]
    steps = {path: checkpoint_step(path) for path in candidates if readable(path)}
    known = [path for path, step in steps.items() if step is not None]
    return max(known, key=lambda path: steps[path]) if known else None


def _without(text: str, ignore: re.Pattern | None) -> str:
    text = CHECKPOINT_INTERVAL.sub("<ignored>", text)
    return _without_wandb(ignore.sub("<ignored>", text) if ignore is not None else text)


def _without_wandb(text: str) -> str:
    """A resolved config's text without its W&B logger, which ``--wandb`` keeps and its absence drops: where a
    run logs is no setting of its training, so a rerun with or without ``--wandb`` resumes (it started over)."""
    from speechsum.pipeline.config import drop_wandb  # which imports this module

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return yaml.safe_dump(drop_wandb(config), sort_keys=False) if isinstance(config, dict) else text


def resume_point(stage_dir: Path, config_text: str, not_before: float = 0.0,
                 ignore: re.Pattern | None = None) -> tuple[Path | None, str]:
    """(the checkpoint an interrupted run of the same config left, or None; why not). A run that
    started (wrote its ``config.yaml``) before ``not_before`` — when what it is built from was
    completed again since — is not continued. ``ignore``: text that may differ between the saved
    and the new config (:data:`TEACHER_SERVER_URL` under ``--teacher serve``); the resume
    checkpoints' interval (``--checkpoint-every``, :data:`CHECKPOINT_INTERVAL`) and the W&B logger
    (``--wandb``) always may."""
    saved = stage_dir / "config.yaml"
    if not saved.is_file():
        return None, "no earlier run"
    if saved.stat().st_mtime < not_before:
        return None, "what it is built from ran again since"
    if _without(saved.read_text(encoding="utf-8"), ignore) != _without(config_text, ignore):
        return None, "its resolved config changed"
    checkpoint = newest_checkpoint(stage_dir)
    if checkpoint is None:
        return None, "the interrupted run left no whole checkpoint"
    return checkpoint, f"step {checkpoint_step(checkpoint)}"

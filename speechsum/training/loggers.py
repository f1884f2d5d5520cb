"""Loggers: W&B that is offline unless the user switches it on, and that resumes with the run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_only

from speechsum.utils.arguments import argv_without_credentials
from speechsum.utils.io import write_atomic

RUN_ID_FILE = "wandb_run_id"  # in save_dir: the W&B run this run folder logs into
log = logging.getLogger(__name__)


def read_run_id(save_dir: str | Path) -> str | None:
    """The W&B run id recorded in ``save_dir`` (None when the folder has not logged to W&B yet, or
    when the file is empty: its write was cut short before it was written atomically; warned)."""
    path = Path(save_dir) / RUN_ID_FILE
    if not path.is_file():
        return None
    run_id = path.read_text(encoding="utf-8").strip()
    if not run_id:
        log.warning("%s is empty (a write cut short): this fit starts a new W&B run; put the old run's id "
                    "in the file (or give the logger's `id`) to continue that one instead", path)
        return None
    if any(c.isspace() for c in run_id):
        raise ValueError(f"{path}: not a W&B run id ({run_id!r}); delete the file to start a new W&B run")
    return run_id


class WandbLogger(LightningWandbLogger):
    """Lightning's W&B logger, offline by default so that no run ever needs a network.

    Set ``WANDB_MODE=online`` (and ``WANDB_API_KEY`` in the environment, never in a config) or
    ``offline: false`` to sync. Offline runs can be uploaded later with ``wandb sync``.

    One run folder is one W&B run: the run id is written to ``<save_dir>/wandb_run_id`` when the
    run starts, and a later fit with the same ``save_dir`` (``--ckpt_path last`` after a crash or a
    pre-emption) continues that run (``resume="allow"``). Pass ``id`` to choose the run yourself,
    or delete the file (or use a new ``save_dir``) to start a new one.

    ``log_model`` (opt-in, Lightning's meaning: True logs the checkpoints at the end of training,
    "all" every checkpoint as it is saved) records checkpoints as W&B ``model`` artifacts. Offline,
    they are kept in the offline run and uploaded with it by ``wandb sync``.
    """

    def __init__(
        self,
        project: str = "speechsum",
        save_dir: str = "runs",
        offline: bool | None = None,
        id: str | None = None,
        log_model: Literal["all"] | bool = False,
        **kwargs: Any,
    ):
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "offline") != "online"
        run_id = id or kwargs.pop("version", None) or read_run_id(save_dir)
        if offline and os.environ.get("WANDB_MODE") != "disabled":
            # wandb's own offline mode rather than Lightning's `offline=True`, which refuses
            # log_model and switches WANDB_MODE for the whole process.
            kwargs["mode"] = "offline"
        super().__init__(project=project, save_dir=save_dir, id=run_id, log_model=log_model, **kwargs)

    @property
    def experiment(self) -> Any:
        """The W&B run, started on first use (the command line it records with URL credentials masked:
        :func:`argv_without_credentials`); its id is then recorded in ``save_dir``."""
        started = self._experiment is not None
        with argv_without_credentials():
            experiment = super().experiment
        if not started and self._experiment is not None:
            self._record_run_id()
        return experiment

    @rank_zero_only
    def _record_run_id(self) -> None:
        run_id = getattr(self._experiment, "id", None)
        if not run_id or self.save_dir is None:
            return
        path = Path(self.save_dir) / RUN_ID_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8").strip() != run_id:
            write_atomic(path, run_id + "\n")  # a kill mid-write leaves the old file or none, never an empty one


def adopt_lightning_wandb_loggers(loggers: list[Any]) -> None:
    """Run Lightning's own ``WandbLogger`` (named in a config in place of speechsum's) as speechsum's: the command
    line it records has its URL credentials masked (:func:`argv_without_credentials`; recorded whole before
    2026-12-07), and it stays offline unless ``WANDB_MODE=online`` (online whenever WANDB_MODE was unset, as
    Lightning's ``offline: false`` default asks, before). Warned, naming the class to write instead."""
    mode = os.environ.get("WANDB_MODE")
    for logger in loggers:
        if not isinstance(logger, LightningWandbLogger) or isinstance(logger, WandbLogger):
            continue
        init = getattr(logger, "_wandb_init", None)
        if getattr(logger, "_experiment", True) is not None or not isinstance(init, dict):
            log.warning("trainer.logger %s: not speechsum.training.loggers.WandbLogger, and this Lightning version's "
                        "could not be adopted: the command line it records is not masked; use speechsum's",
                        type(logger).__name__)
            continue
        if mode not in ("online", "disabled") and not getattr(logger, "_offline", False) and init.get("mode") is None:
            init["mode"] = "offline"  # a config fills wandb.init's arguments in, mode: null among them
        logger.__class__ = WandbLogger  # speechsum's adds methods only: its experiment masks the recorded argv
        log.warning("trainer.logger lightning.pytorch.loggers.WandbLogger is run as speechsum.training.loggers."
                    "WandbLogger (the command line it records masked; %s): name that class in the config instead "
                    "(its offline: false, or WANDB_MODE=online, syncs)",
                    {"online": "online, as WANDB_MODE=online asks", "disabled": "disabled, as WANDB_MODE=disabled asks"}
                    .get(mode or "", "offline: WANDB_MODE is not online"))

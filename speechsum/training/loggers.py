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

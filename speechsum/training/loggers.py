"""Loggers: W&B that is offline unless the user switches it on."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    """Lightning's W&B logger, offline by default so that no run ever needs a network.

    Set ``WANDB_MODE=online`` (and ``WANDB_API_KEY`` in the environment, never in a config) or
    ``offline: false`` to sync. Offline runs can be uploaded later with ``wandb sync``.
    """

    def __init__(
        self, project: str = "speechsum", save_dir: str = "runs", offline: bool | None = None, **kwargs: Any
    ):
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "offline") != "online"
        super().__init__(project=project, save_dir=save_dir, offline=offline, **kwargs)

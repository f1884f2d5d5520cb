"""The Lightning callback the pipeline adds to its fit stages: every few seconds of training, and
after each validation, one plain stdout line ``[progress] step=3 total=8 train/loss=4.541``
(the progress-bar metrics) that :mod:`speechsum.pipeline.progress` turns into the stage's live
line. Rich's progress bar draws nothing into a pipe, so without it a stage would be silent."""

from __future__ import annotations

import math
import time

import lightning.pytorch as pl

from speechsum.pipeline.progress import PREFIX


def progress_line(step: int, total: int | float, metrics: dict[str, float]) -> str:
    """``[progress] step=3 total=8 train/loss=4.541`` (total 0 when unknown)."""
    total = int(total) if isinstance(total, int) or math.isfinite(total) else 0
    shown = "".join(f" {name}={value:.4g}" for name, value in sorted(metrics.items()))
    return f"{PREFIX} step={step} total={total}{shown}"


class ProgressLines(pl.Callback):
    """Prints :func:`progress_line` at most every ``every_s`` seconds of training and after each
    validation (global rank 0 only)."""

    def __init__(self, every_s: float = 5.0):
        self.every_s = every_s
        self._printed = -math.inf

    def _print(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = {name: float(value) for name, value in trainer.progress_bar_metrics.items()
                   if name != "v_num" and isinstance(value, (int, float))}
        print(progress_line(trainer.global_step, trainer.estimated_stepping_batches, metrics), flush=True)
        self._printed = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if time.monotonic() - self._printed >= self.every_s:
            self._print(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print(trainer)

"""Callbacks shared by the stages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` outputs as JSONL (one line per example) when the epoch ends.

    The file appears whole or not at all (written to ``.tmp`` then renamed). Under DDP each rank
    writes ``<stem>.rank<N>.jsonl``.
    """

    def __init__(self, output_path: str = "predictions.jsonl"):
        super().__init__(write_interval="epoch")
        self.output_path = Path(output_path)

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any] | None,
    ) -> None:
        path = self.output_path
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for batch_rows in predictions:
                for row in batch_rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)

"""Callbacks shared by the stages."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

log = logging.getLogger(__name__)


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


def write_dir_atomically(target: str | Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_dir)`` on a fresh temporary sibling of ``target``, then rename it to
    ``target`` (an old ``target`` is moved aside and deleted), so ``target`` is never seen
    half-written. On an error the temporary directory is removed and ``target`` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class ExportHFModel(L.Callback):
    """At the end of ``fit``, writes the trained backbone as a Hugging Face model directory.

    Calls ``pl_module.model.save_pretrained(dir)`` (e.g. :meth:`speechsum.models.text_llm.TextLLM.
    save_pretrained`: model + tokenizer, LoRA merged) into a temporary sibling of ``out_dir`` and
    renames it into place, so ``out_dir`` is never half-written; an existing ``out_dir`` is
    replaced. Only global rank 0 writes.
    """

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.model
        if not hasattr(model, "save_pretrained"):
            raise TypeError(f"ExportHFModel: {type(model).__name__} has no save_pretrained(out_dir) to export with")
        if trainer.is_global_zero:
            write_dir_atomically(self.out_dir, model.save_pretrained)
            log.info("exported %s to %s", type(model).__name__, self.out_dir)

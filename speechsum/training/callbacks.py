"""Callbacks shared by the stages."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from speechsum.utils.arguments import ConfigError
from speechsum.utils.io import check_output_path, check_replaceable_folder, write_dir_atomically, write_jsonl

log = logging.getLogger(__name__)


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` outputs as JSONL (one line per example) when the epoch ends.

    The file appears whole or not at all (:func:`speechsum.utils.io.write_jsonl`). Under DDP each rank
    writes ``<stem>.rank<N>.jsonl``; together they hold each example once (a rank's padding batch,
    a repeat that evens out the ranks' steps, writes no row). Examples the data module skipped are
    not in it (a warning names their lines). A row's ``truncated`` says its answer was cut at
    ``max_new_tokens`` (a warning counts them, naming the setting that raises it).
    """

    def __init__(self, output_path: str = "predictions.jsonl"):
        super().__init__(write_interval="epoch")
        check_output_path(output_path, "trainer.callbacks PredictionWriter.output_path")  # not after predicting
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
        rows = [row for batch_rows in predictions for row in batch_rows]
        write_jsonl(path, rows)
        cut = [row["id"] for row in rows if isinstance(row, dict) and row.get("truncated")]
        if cut:  # before, an answer cut at max_new_tokens was written as if whole, without a word
            generation = getattr(pl_module, "generation", None)
            limit = f"={generation.max_new_tokens}" if generation is not None else ""
            log.warning("%s: %d of %d prediction(s) cut at max_new_tokens%s before their end (truncated: true; the "
                        "first: %r): raise model.init_args.generation.max_new_tokens for whole answers", path, len(cut),
                        len(rows), limit, cut[0])
        skipped = getattr(trainer.datamodule, "skipped", {}).get("predict", [])
        if skipped:  # each logged when it was skipped; said once more where the output is
            log.warning("%s: %d example(s) skipped (on_bad_example: skip), not in it: lines %s", path, len(skipped),
                        ", ".join(str(s.line) for s in skipped))


class ExportHFModel(L.Callback):
    """At the end of ``fit``, writes the trained backbone as a Hugging Face model directory.

    Calls ``pl_module.model.save_pretrained(dir)`` (e.g. :meth:`speechsum.models.text_llm.TextLLM.
    save_pretrained`: model + tokenizer, LoRA merged) into a temporary sibling of ``out_dir`` and
    renames it into place, so ``out_dir`` is never half-written; an earlier export there (a
    ``config.json``) is replaced, a folder holding anything else is refused, and so is one the run
    writes its checkpoints or logs into (checked at setup). Only global rank 0 writes.
    """

    def __init__(self, out_dir: str):
        try:  # not after training; a folder it did not write (the run's own, with its checkpoints) is never replaced
            check_replaceable_folder(out_dir, "trainer.callbacks ExportHFModel.out_dir", "config.json", "exported model")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.out_dir = Path(out_dir)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._refuse_the_runs_own_folders(trainer)
        model = getattr(pl_module, "model", None)
        if stage == "fit" and not hasattr(model, "save_pretrained"):  # known before training, not after it
            raise ConfigError(f"trainer.callbacks ExportHFModel: {type(model).__name__} has no save_pretrained(out_dir) "
                              "to export with (it exports text LMs, e.g. configs/benchmark/text_lm.yaml); use "
                              "`speechsum export CKPT` for a speech student")

    def _refuse_the_runs_own_folders(self, trainer: L.Trainer) -> None:
        """``out_dir`` is replaced whole at the end of fit: one that is (or holds) a folder the run
        writes its checkpoints or logs to, not there yet when the run starts, lost them all then."""
        places = [(f"{type(c).__name__}.dirpath", c.dirpath) for c in trainer.checkpoint_callbacks
                  if getattr(c, "dirpath", None)]
        places += [("trainer.default_root_dir", trainer.default_root_dir)]
        places += [(f"{type(lg).__name__}.save_dir", lg.save_dir) for lg in trainer.loggers if lg.save_dir]
        out = self.out_dir.resolve()
        for name, place in places:
            if Path(place).resolve().is_relative_to(out):
                raise ConfigError(
                    f"trainer.callbacks ExportHFModel.out_dir {self.out_dir}: the run writes to it ({name} {place}), "
                    "and the export replaces that folder whole at the end of fit, which would delete what the run "
                    f"wrote there; give a folder of its own, e.g. {self.out_dir / 'model'}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.model
        if trainer.is_global_zero:
            write_dir_atomically(self.out_dir, model.save_pretrained)
            log.info("exported %s to %s", type(model).__name__, self.out_dir)

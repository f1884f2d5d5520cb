"""A DDP rank's padding batch (a repeat that evens out the ranks' steps) is marked on its way to the
stage, and weighs 0 in validation and test metrics: each example counts once, as in one process.

Before, ``val/loss`` and ``test/loss`` under DDP averaged the repeated examples in a second time
(5 validation examples in batches of 2, 2, 1 on two ranks: 5.6037 against 5.6060 in one process)."""

from __future__ import annotations

from dataclasses import replace

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.data import _replace_dunder_methods
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.models.generation import GenerationSettings
from speechsum.stages.sft import SFTModule


def val_loader(processor, toy_data, **settings):
    data = SpeechSumDataModule(val_manifest=str(toy_data["val"]), max_batch_seconds=60.0, max_batch_size=3,
                               num_buckets=1, **settings)
    data.processor = processor
    data.setup("validate")
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):  # as Lightning does
        return data.val_dataloader()


@pytest.mark.parametrize("workers", [0, 1])
def test_the_padding_batch_of_a_rank_reaches_the_stage_marked(tiny_composed, toy_data, workers):
    loader = val_loader(tiny_composed.processor, toy_data, num_workers=workers)  # 8 examples: batches of 3, 3, 2
    common = [batch.ids for batch in loader]
    assert [len(ids) for ids in common] == [3, 3, 2] and not any(batch.padding for batch in loader)
    ranks = []
    for rank in range(2):  # what Lightning does under DDP: the same batch sampler over a DistributedSampler
        injected = _update_dataloader(loader, DistributedSampler(loader.dataset, num_replicas=2, rank=rank,
                                                                 shuffle=False))
        ranks.append([(batch.ids, batch.padding) for batch in injected])
    assert ranks == [[(common[0], False), (common[2], False)], [(common[1], False), (common[0], True)]]


class Batches:
    """An evaluation loader of ready batches."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@pytest.mark.parametrize("loop", ["validate", "test"])
def test_a_padding_batch_weighs_nothing_in_the_metrics(tiny_composed, toy_data, loop):
    torch.manual_seed(0)
    module = SFTModule(tiny_composed, num_val_samples=0)
    first, second, _ = val_loader(module.processor, toy_data)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)

    def metric(*batches) -> float:
        (result,) = getattr(trainer, loop)(module, dataloaders=Batches(list(batches)), verbose=False)
        return result[f"{'val' if loop == 'validate' else 'test'}/loss"]

    alone = metric(first)
    assert metric(second) != pytest.approx(alone)
    assert metric(first, replace(second, padding=True)) == pytest.approx(alone, rel=1e-6)
    assert metric(first, replace(first, padding=True)) == pytest.approx(alone, rel=1e-6)


def test_a_padding_batch_writes_no_prediction_rows(tiny_composed, toy_data):
    """Before: under DDP the rank files of ``PredictionWriter`` held the padding's examples twice."""
    module = SFTModule(tiny_composed, num_val_samples=0, generation=GenerationSettings(max_new_tokens=2))
    first, second, _ = val_loader(module.processor, toy_data)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    batches = trainer.predict(module, dataloaders=Batches([first, replace(second, padding=True)]))
    assert [[row["id"] for row in rows] for rows in batches] == [first.ids, []]

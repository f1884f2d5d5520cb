"""What every stage shares: the validation-sample collector and hyperparameters that never hold objects."""

from __future__ import annotations

import lightning as L

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.stages.sft import SFTModule


def val_batches(module, toy_data, size: int):
    data = SpeechSumDataModule(val_manifest=str(toy_data["val"]), max_batch_seconds=60.0, max_batch_size=size,
                               num_buckets=1)
    data.processor = module.processor
    data.setup("validate")
    return list(data.val_dataloader())


def test_val_samples_keep_the_first_n_examples_and_skip_the_sanity_check(tiny_composed, toy_data):
    module = SFTModule(tiny_composed, num_val_samples=3)
    module.trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    first, second, third = val_batches(module, toy_data, size=2)[:3]
    module.trainer.sanity_checking = True
    module.collect_val_samples(first, ["ignored"] * 2)
    assert module._val_samples == []
    module.trainer.sanity_checking = False
    module.collect_val_samples(first, ["p0", "p1"], ["r0", "r1"])
    module.collect_val_samples(second)  # generated with `generation`; only one more is wanted
    module.collect_val_samples(third, ["never", "kept"])
    rows = module._val_samples
    assert [r["id"] for r in rows] == [*first.ids, second.ids[0]]
    assert [(r["prediction"], r["reference"]) for r in rows[:2]] == [("p0", "r0"), ("p1", "r1")]
    assert rows[2]["reference"] == (second.references[0] or "") and isinstance(rows[2]["prediction"], str)
    assert [r["instruction"] for r in rows] == [*first.instructions, second.instructions[0]]


def test_hyperparameters_outside_the_cli_never_hold_the_model(tiny_composed):
    module = SFTModule(tiny_composed, learning_rate=0.5)
    assert "model" not in module.hparams and module.hparams["learning_rate"] == 0.5
    assert "model" not in module.hparams_initial

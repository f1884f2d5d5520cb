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


def without(manifest, field: str, line: int, out):
    """``manifest`` with absolute audio paths and ``field`` removed from its line ``line`` (from 1)."""
    import json

    rows = [json.loads(text) for text in manifest.read_text().splitlines()]
    for row in rows:
        row["audio"] = str(manifest.parent / row["audio"])
    rows[line - 1].pop(field, None)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return out


def test_a_field_the_stage_reads_is_required_at_load_whatever_the_data_config_says(tmp_path, toy_data, capsys):
    """SFT with data.require_summary: false and a line without a summary crashed at that line's batch
    ('SFT needs a reference `summary` on every manifest line', a traceback after the steps before it)."""
    import pytest

    from speechsum.cli import main
    from tests.helpers import run_config

    config = run_config(tmp_path, toy_data, max_steps=20)
    manifest = without(toy_data["train"], "summary", 6, tmp_path / "train.jsonl")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--data.train_manifest", str(manifest), "--data.require_summary", "false"])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert f"speechsum fit: error: {manifest}:6: missing field 'summary'\n" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_dpo_reads_its_pairs_with_data_preference_left_false(tmp_path, toy_data):
    """Before: 'DPO needs `chosen` and `rejected` on every manifest line (data: preference: true)', a
    traceback at the first step though every line had its pair."""
    import json

    import yaml

    from speechsum.cli import lightning_cli
    from tests.helpers import run_config

    pairs = {}
    for split in ("train", "val"):
        rows = [json.loads(text) for text in toy_data[split].read_text().splitlines()]
        for row in rows:
            row["audio"] = str(toy_data[split].parent / row["audio"])
            row["chosen"], row["rejected"] = row["summary"], row["summary"] + " Also golf golf."
        pairs[split] = tmp_path / f"{split}_pairs.jsonl"
        pairs[split].write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = run_config(tmp_path, toy_data, max_steps=2)
    settings = yaml.safe_load(config.read_text())
    settings["model"]["class_path"] = "speechsum.stages.dpo.DPOModule"
    settings["model"]["init_args"].update({"reference": "frozen_copy", "num_val_samples": 0})
    settings["data"].update({"train_manifest": str(pairs["train"]), "val_manifest": str(pairs["val"])})
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    cli = lightning_cli(["fit", "--config", str(config)])
    assert cli.trainer.global_step == 2 and cli.datamodule.preference is False
    assert "train/rewards/margin" in cli.trainer.logged_metrics


def test_predictions_cut_at_max_new_tokens_say_so_in_their_rows_and_a_warning(tiny_composed, toy_data, tmp_path,
                                                                               caplog):
    """Before: ``speechsum predict`` wrote an answer cut at max_new_tokens as if it were whole, without a word
    (evaluate's and summarize's rows said ``truncated``)."""
    from types import SimpleNamespace

    from speechsum.models.generation import GenerationSettings
    from speechsum.training.callbacks import PredictionWriter

    module = SFTModule(tiny_composed, generation=GenerationSettings(max_new_tokens=1))
    batch = val_batches(module, toy_data, size=2)[0]
    rows = module.predict_step(batch, 0)
    assert [row["truncated"] for row in rows] == [True, True]  # an untrained model: no stop token in 1
    assert set(rows[0]) == {"id", "instruction", "reference", "prediction", "truncated"}
    out = tmp_path / "predictions.jsonl"
    trainer = SimpleNamespace(world_size=1, global_rank=0, datamodule=None)
    with caplog.at_level("WARNING", logger="speechsum.training.callbacks"):
        PredictionWriter(str(out)).write_on_epoch_end(trainer, module, [rows], None)
    assert caplog.messages == [f"{out}: 2 of 2 prediction(s) cut at max_new_tokens=1 before their end (truncated: true; "
                               f"the first: {batch.ids[0]!r}): raise model.init_args.generation.max_new_tokens for "
                               "whole answers"]

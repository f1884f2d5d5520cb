"""What the data module does with manifests it cannot use as given: splits without summaries (predict,
``require_summary``), bad lines under the skip and error modes, a missing manifest or processor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.data.manifest import ManifestError, SkippedLine
from speechsum.utils.arguments import ConfigError
from tests.data.test_datamodule import (
    batches_of,
    copy_manifest,
    datamodule,
    drop_summary,
    read_lines,
    write_lines,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_predict_without_summary(tmp_path: Path, toy_data, processor):
    manifest = copy_manifest(toy_data["test"], tmp_path / "predict.jsonl", drop_summary)
    dm = datamodule(processor, predict_manifest=str(manifest), preference=True)
    dm.setup("predict")
    assert set(dm.datasets) == {"predict"}
    batches = batches_of(dm.predict_dataloader())
    assert sorted(i for b in batches for i in b.ids) == sorted(line["id"] for line in read_lines(manifest))
    for batch in batches:
        assert batch.response_ids is None and batch.response_mask is None
        assert batch.chosen_ids is None and batch.rejected_ids is None
        assert batch.references == [None] * len(batch)
        assert batch.prompt_mask[:, -1].all()


@pytest.mark.parametrize("split", ["train", "val"])
def test_fit_splits_require_summary_by_default(tmp_path: Path, toy_data, processor, split):
    manifests = {"train": str(toy_data["train"]), "val": str(toy_data["val"])}
    manifest = copy_manifest(toy_data[split], tmp_path / f"{split}.jsonl", drop_summary)
    manifests[split] = str(manifest)
    dm = datamodule(processor, train_manifest=manifests["train"], val_manifest=manifests["val"])
    assert dm.require_summary is True
    with pytest.raises(ManifestError) as info:
        dm.setup("fit")
    assert (info.value.path, info.value.line, info.value.reason) == (
        str(manifest),
        1,
        "missing field 'summary'",
    )
    assert str(info.value) == f"{manifest}:1: missing field 'summary'"


def test_require_summary_false_loads_data_without_summaries(tmp_path: Path, toy_data, processor):
    """On-policy KD data: instruction and transcript, no reference summary."""
    train = copy_manifest(toy_data["train"], tmp_path / "train.jsonl", drop_summary)
    val = copy_manifest(toy_data["val"], tmp_path / "val.jsonl", drop_summary)
    by_id = {line["id"]: line for line in read_lines(train) + read_lines(val)}
    assert not any("summary" in line for line in by_id.values())
    dm = datamodule(
        processor,
        train_manifest=str(train),
        val_manifest=str(val),
        require_summary=False,
        require_transcript=True,
    )
    dm.setup("fit")
    assert dm.skipped == {"train": [], "val": []}
    assert [len(dm.datasets[s]) for s in ("train", "val")] == [24, 8]
    for loader, count in ((dm.train_dataloader(), 24), (dm.val_dataloader(), 8)):
        batches = batches_of(loader)
        assert sum(len(b) for b in batches) == count
        for batch in batches:
            assert batch.response_ids is None and batch.response_mask is None
            assert batch.references == [None] * len(batch)
            assert batch.transcripts == [by_id[i]["transcript"] for i in batch.ids]
            assert all(batch.transcripts)
            assert batch.instructions == [by_id[i]["instruction"] for i in batch.ids]
            assert batch.prompt_mask[:, -1].all()


def test_require_summary_false_with_preference_data(tmp_path: Path, toy_data, processor):
    """DPO data: chosen/rejected only."""

    def to_preference(line):
        line["chosen"] = line.pop("summary")
        line["rejected"] = "worse"
        return line

    manifest = copy_manifest(toy_data["train"], tmp_path / "dpo.jsonl", to_preference)
    with pytest.raises(ManifestError) as info:  # it said only "missing field 'summary'"
        datamodule(processor, train_manifest=str(manifest), preference=True).setup("fit")
    assert info.value.reason == ("missing field 'summary' (preference data trains on 'chosen' and 'rejected', not on a "
                                 "reference summary: set require_summary: false in the data config, as configs/dpo.yaml "
                                 "does)")
    by_id = {line["id"]: line for line in read_lines(manifest)}
    dm = datamodule(processor, train_manifest=str(manifest), preference=True, require_summary=False)
    dm.setup("fit")
    batches = batches_of(dm.train_dataloader())
    assert sum(len(b) for b in batches) == 24
    for batch in batches:
        assert batch.response_ids is None and batch.references == [None] * len(batch)
        assert processor.decode_responses(batch.chosen_ids, batch.chosen_mask) == [
            by_id[i]["chosen"] for i in batch.ids
        ]
        assert processor.decode_responses(batch.rejected_ids, batch.rejected_mask) == ["worse"] * len(batch)


def test_skip_mode_records_skipped_lines(tmp_path: Path, toy_data, processor):
    lines = [json.dumps(line) for line in read_lines(copy_manifest(toy_data["train"], tmp_path / "c.jsonl"))]
    lines.insert(2, '{"id": "broken"')  # line 3
    lines.append(
        json.dumps({"id": "gone", "audio": str(tmp_path / "gone.wav"), "instruction": "x", "summary": "y"})
    )
    manifest = write_lines(tmp_path / "train.jsonl", lines)
    dm = datamodule(processor, train_manifest=str(manifest), on_bad_example="skip")
    dm.setup("fit")
    assert dm.skipped["train"] == [
        SkippedLine(3, "invalid JSON: Expecting ',' delimiter (column 16)"),
        SkippedLine(26, f"field 'audio': {tmp_path / 'gone.wav'}: no such file"),
    ]
    assert len(dm.datasets["train"]) == 24
    assert sum(len(b) for b in dm.train_dataloader()) == 24


def test_error_mode_stops_on_a_bad_line(tmp_path: Path, toy_data, processor):
    lines = [json.dumps(line) for line in read_lines(copy_manifest(toy_data["train"], tmp_path / "c.jsonl"))]
    lines.insert(2, '{"id": "broken"')
    dm = datamodule(processor, train_manifest=str(write_lines(tmp_path / "train.jsonl", lines)))
    with pytest.raises(ManifestError, match=r"train\.jsonl:3: invalid JSON"):
        dm.setup("fit")


def test_a_missing_manifest_names_its_setting_and_the_folder_it_is_relative_to(tmp_path: Path, toy_data, processor,
                                                                                monkeypatch):
    """It said 'manifest not found: val.jsonl', not which of the four manifest settings, nor from where."""
    monkeypatch.chdir(tmp_path)
    dm = datamodule(processor, train_manifest=str(toy_data["train"]), val_manifest="data/val.jsonl")
    with pytest.raises(FileNotFoundError) as info:
        dm.setup("fit")
    assert str(info.value) == (f"data.val_manifest: manifest not found: data/val.jsonl (relative to the working folder "
                               f"{tmp_path})")
    (tmp_path / "data" / "val.jsonl").mkdir(parents=True)
    with pytest.raises(IsADirectoryError) as info:
        dm.setup("fit")
    assert str(info.value) == "data.val_manifest: manifest data/val.jsonl is a directory: give the JSONL file in it"


def test_missing_processor_is_a_helpful_error(toy_data):
    dm = SpeechSumDataModule(train_manifest=str(toy_data["train"]))
    with pytest.raises(RuntimeError, match=r"no processor: attach one with `datamodule\.processor = "):
        dm.setup("fit")


def test_loader_without_data_is_a_helpful_error(toy_data, processor):
    dm = datamodule(processor, train_manifest=str(toy_data["train"]))
    with pytest.raises(ConfigError, match=r"^data\.test_manifest: no test data: set it to a manifest"):  # speechsum: one line, exit 2
        dm.test_dataloader()
    dm.setup("fit")
    assert dm.val_dataloader() == []  # no val manifest: Lightning skips validation

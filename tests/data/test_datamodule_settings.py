"""The data module's settings from the Python API (the CLI's parser checks their types; Python does not):
a choice outside its literals or a number that is no number is a ConfigError naming the setting."""

from __future__ import annotations

import numpy as np
import pytest

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.utils.arguments import ConfigError


@pytest.mark.parametrize(("setting", "value", "message"), [
    # compared with "error" only, these were silently the other choice: skipping bad lines, truncating
    ("on_bad_example", "Error", "data.on_bad_example must be one of 'error', 'skip', got 'Error'"),
    ("too_long_audio", "drop", "data.too_long_audio must be one of 'error', 'truncate', got 'drop'"),
    # a TypeError from inside the bounds check, and True taken for 1 s
    ("max_audio_seconds", "30", "data.max_audio_seconds must be a number above 0 (or null: the backbone's limit), got '30'"),
    ("max_audio_seconds", True, "data.max_audio_seconds must be a number above 0 (or null: the backbone's limit), got True"),
    ("max_batch_seconds", "120", "data.max_batch_seconds must be a number above 0, got '120'"),
])
def test_a_bad_setting_is_a_config_error_naming_it(setting: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SpeechSumDataModule(train_manifest="train.jsonl", **{setting: value})
    assert str(info.value) == message


def test_numpy_numbers_and_the_literals_are_accepted() -> None:
    data = SpeechSumDataModule(train_manifest="train.jsonl", max_audio_seconds=np.float32(2.5),
                               max_batch_seconds=np.int64(60), on_bad_example="skip", too_long_audio="error")
    assert (data.max_audio_seconds, data.on_bad_example, data.too_long_audio) == (2.5, "skip", "error")


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_manifest_setting_is_a_config_error_naming_it(value: str) -> None:
    """Before: read as the working folder, "data.val_manifest: manifest . is a directory", when the split loaded."""
    with pytest.raises(ConfigError) as info:
        SpeechSumDataModule(train_manifest="train.jsonl", val_manifest=value)
    assert str(info.value) == (f"data.val_manifest is empty ({value!r}): give the path of the val split's JSONL manifest, "
                               "or null (leave it out) for no such split")


def test_a_manifest_setting_under_the_home_folder_is_read_there(tmp_path, monkeypatch, processor) -> None:
    """'~/data/train.jsonl' in a YAML (no shell expands it) was "manifest not found: ~/data/train.jsonl (relative to
    the working folder ...)"; hf_dataset and the command line's path options expand '~'. A variable is named."""
    from speechsum.data.split_files import warn_shared_manifests
    from tests.data.test_manifest import record, write_manifest, write_wav

    write_wav(tmp_path / "audio" / "a.wav", 16_000)
    write_manifest(tmp_path / "train.jsonl", [record("a", "audio/a.wav", summary="s")])
    monkeypatch.setenv("HOME", str(tmp_path))
    data = SpeechSumDataModule(train_manifest="~/train.jsonl")
    data.processor = processor
    data.setup("fit")
    assert [e.id for e in data.datasets["train"].examples] == ["a"]
    assert warn_shared_manifests({"train_manifest": "~/train.jsonl", "val_manifest": str(tmp_path / "train.jsonl")})
    monkeypatch.setenv("SPEECH_DATA", str(tmp_path))
    data = SpeechSumDataModule(train_manifest="$SPEECH_DATA/train.jsonl")
    data.processor = processor
    with pytest.raises(FileNotFoundError) as info:
        data.setup("fit")
    assert str(info.value) == ("data.train_manifest: manifest not found: $SPEECH_DATA/train.jsonl ($SPEECH_DATA is not "
                               f"expanded: give the full path; {tmp_path / 'train.jsonl'} is there)")


def test_a_held_out_manifest_that_is_the_train_file_is_warned_about(tmp_path, caplog, monkeypatch) -> None:
    """val_manifest = train_manifest (by another path, a link) validated on the training examples, without a word."""
    import logging

    from speechsum.data.split_files import warn_shared_manifests

    (tmp_path / "train.jsonl").write_text("{}\n")
    (tmp_path / "val.jsonl").write_text("{}\n")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "train.jsonl")
    monkeypatch.chdir(tmp_path)
    data = {"train_manifest": str(tmp_path / "train.jsonl"), "val_manifest": "link.jsonl",
            "test_manifest": "./train.jsonl", "predict_manifest": "train.jsonl"}
    with caplog.at_level(logging.WARNING, logger="speechsum.data.split_files"):
        notes = warn_shared_manifests(data)
    assert notes == [
        "data.val_manifest is the train manifest's file (link.jsonl): the val scores are measured on the examples the "
        "model trains on; give a held-out manifest",
        "data.test_manifest is the train manifest's file (./train.jsonl): the test scores are measured on the examples "
        "the model trains on; give a held-out manifest"]
    assert [r.getMessage() for r in caplog.records] == notes
    assert warn_shared_manifests({**data, "val_manifest": "val.jsonl", "test_manifest": None}) == []
    assert warn_shared_manifests({"train_manifest": "missing.jsonl", "val_manifest": "missing.jsonl"}) == []


def test_a_held_out_split_that_hf_splits_maps_to_the_train_split_is_warned_about(caplog) -> None:
    """hf_splits: {train: train, val: train} validated on the training rows without a word."""
    import logging

    from speechsum.data.split_files import warn_shared_manifests

    data = {"hf_dataset": "org/meetings", "hf_splits": {"train": "train", "val": "train", "test": "test"}}
    with caplog.at_level(logging.WARNING, logger="speechsum.data.split_files"):
        notes = warn_shared_manifests(data)
    assert notes == ["data.hf_splits maps val to the dataset's split 'train', which train reads too: the val scores "
                     "are measured on the examples the model trains on; map val to a held-out split"]
    assert [r.getMessage() for r in caplog.records] == notes
    assert warn_shared_manifests({**data, "val_manifest": "val.jsonl"}) == []  # val from a manifest
    assert warn_shared_manifests({"hf_dataset": "org/meetings", "hf_splits": None}) == []  # train / validation


def test_speechsum_fit_warns_when_the_val_manifest_is_the_train_manifest(tmp_path, toy_data, caplog) -> None:
    import logging

    from speechsum.cli import main
    from tests.helpers import run_config

    config = run_config(tmp_path, toy_data, max_steps=1, limit_val_batches=0)
    with caplog.at_level(logging.WARNING, logger="speechsum.data.split_files"):
        main(["fit", "--config", str(config), "--data.val_manifest", str(toy_data["train"])])
    assert [r.getMessage() for r in caplog.records if r.name == "speechsum.data.split_files"] == [
        f"data.val_manifest is the train manifest's file ({toy_data['train']}): the val scores are measured on the "
        "examples the model trains on; give a held-out manifest"]


def test_a_held_out_split_naming_train_audio_is_warned_about_once(tmp_path, caplog, processor) -> None:
    """val lines that name a training recording (the same call with another instruction, or by a link) scored the
    model on audio it trains on, without a word: only a val manifest that is the train file was warned about."""
    import logging

    from tests.data.test_manifest import record, write_manifest, write_wav

    for name in ("a", "b", "c"):
        write_wav(tmp_path / "audio" / f"{name}.wav", 16_000)
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "link.wav").symlink_to(tmp_path / "audio" / "a.wav")
    write_manifest(tmp_path / "train.jsonl", [record(n, f"audio/{n}.wav", summary="s") for n in ("a", "b")])
    write_manifest(tmp_path / "val.jsonl", [record("v1", "audio/c.wav", summary="s"),
                                           record("v2", "held/link.wav", summary="s"),
                                           record("v3", "audio/b.wav", instruction="Other.", summary="s")])
    data = SpeechSumDataModule(train_manifest=str(tmp_path / "train.jsonl"), val_manifest=str(tmp_path / "val.jsonl"))
    data.processor = processor
    with caplog.at_level(logging.WARNING, logger="speechsum.data.split_files"):
        data.setup("fit")
        data.setup("validate")  # loaded already: not said again
    assert [r.getMessage() for r in caplog.records] == [
        f"data.val_manifest: 2 of its 3 examples name an audio file that data.train_manifest names too (2 file(s); "
        f"e.g. line 2: {tmp_path / 'held' / 'link.wav'}, also train line 1): the val scores are measured on recordings "
        "the model trains on; hold out whole recordings"]
    caplog.clear()
    write_manifest(tmp_path / "val.jsonl", [record("v1", "audio/c.wav", summary="s")])
    held_out = SpeechSumDataModule(train_manifest=str(tmp_path / "train.jsonl"), val_manifest=str(tmp_path / "val.jsonl"))
    held_out.processor = processor
    with caplog.at_level(logging.WARNING, logger="speechsum.data.split_files"):
        held_out.setup("fit")
    assert not caplog.records

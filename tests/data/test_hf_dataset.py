"""SpeechSumDataModule on a Hugging Face dataset saved with `save_to_disk`: the same examples,
batches and validation as the manifests it was built from (offline: no hub, no FFmpeg)."""

from __future__ import annotations

import io
import json
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.data.hf_dataset import HFDatasetError

datasets = pytest.importorskip("datasets")

SMALL = {"max_batch_seconds": 6.0, "max_batch_size": 4, "num_buckets": 3}
RENAMED = {"audio": "speech", "instruction": "prompt", "summary": "target", "transcript": "text", "id": "key"}


def manifest_rows(manifest: Path, count: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()][:count]
    return [{**row, "audio": str(manifest.parent / row["audio"])} for row in rows]


def save_dataset(folder: Path, splits: dict[str, list[dict]], rename: dict[str, str] | None = None) -> Path:
    """A DatasetDict of manifest-like rows (audio: a path or wav bytes), saved with ``save_to_disk``."""
    rename = rename or {}
    tables = {}
    for split, rows in splits.items():
        columns = {rename.get(k, k): [row.get(k) for row in rows] for k in rows[0]}
        table = datasets.Dataset.from_dict(columns)
        tables[split] = table.cast_column(rename.get("audio", "audio"), datasets.Audio())
    datasets.DatasetDict(tables).save_to_disk(str(folder))  # embeds the audio bytes
    return folder


def wav_bytes(samples: np.ndarray, subtype: str = "PCM_16") -> dict:
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16_000, format="WAV", subtype=subtype)
    return {"bytes": buffer.getvalue(), "path": None}


def datamodule(processor, **kwargs) -> SpeechSumDataModule:
    dm = SpeechSumDataModule(**{**SMALL, **kwargs})
    dm.processor = processor
    return dm


@pytest.fixture
def processor(tiny_composed):
    return tiny_composed.processor


@pytest.fixture(scope="module")
def renamed_dataset(toy_data, tmp_path_factory) -> Path:
    rows = {"train": manifest_rows(toy_data["train"], 10), "validation": manifest_rows(toy_data["val"], 4)}
    renamed = {split: [{("key" if k == "id" else k): v for k, v in row.items()} for row in r] for split, r in rows.items()}
    return save_dataset(tmp_path_factory.mktemp("hf") / "toy", renamed, {k: v for k, v in RENAMED.items() if k != "id"})


def test_a_saved_dataset_gives_the_manifests_examples_and_batches(renamed_dataset, toy_data, processor, tmp_path):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in manifest_rows(toy_data["train"], 10)))
    from_manifest = datamodule(processor, train_manifest=str(manifest), seed=3)
    from_hf = datamodule(processor, hf_dataset=str(renamed_dataset), hf_columns=RENAMED, seed=3)
    from_manifest.setup("fit")
    from_hf.setup("fit")
    assert "val" not in from_manifest.datasets and len(from_hf.datasets["val"]) == 4  # `validation` → val
    ours, theirs = from_hf.datasets["train"], from_manifest.datasets["train"]
    fields = ("id", "instruction", "summary", "transcript", "lang", "duration")
    assert [[getattr(e, f) for f in fields] for e in ours.examples] == [[getattr(e, f) for f in fields] for e in theirs.examples]
    assert ours.examples[3].audio == f"{renamed_dataset}[train] row 3"
    assert ours.examples[3].meta == {"dataset": str(renamed_dataset), "split": "train", "row": 3}
    for index in range(len(ours)):
        np.testing.assert_array_equal(ours[index][1], theirs[index][1])
    batch, expected = next(iter(from_hf.train_dataloader())), next(iter(from_manifest.train_dataloader()))
    assert batch.ids == expected.ids
    assert batch.audio["content_keys"] == expected.audio["content_keys"]  # the same samples
    tensors = {k: v for k, v in expected.audio.items() if isinstance(v, torch.Tensor)}
    torch.testing.assert_close({k: batch.audio[k] for k in tensors}, tensors, rtol=0, atol=0)
    assert torch.equal(batch.response_ids, expected.response_ids)
    assert len(pickle.loads(pickle.dumps(ours))[0][1]) == len(ours[0][1])  # DataLoader workers get a copy


def test_a_missing_mapped_column_lists_the_datasets_columns(renamed_dataset, processor):
    dm = datamodule(processor, hf_dataset=str(renamed_dataset), hf_columns={**RENAMED, "summary": "abstract"})
    with pytest.raises(HFDatasetError, match=r"split 'train', column 'abstract'\): no column 'abstract' for field "
                       r"'summary'; the dataset's columns are \[.*'target'.*\]: set `data.hf_columns.summary`"):
        dm.setup("fit")
    dm = datamodule(processor, hf_dataset=str(renamed_dataset))  # default names: `audio` is not there
    with pytest.raises(HFDatasetError, match=r"no column 'audio' for field 'audio'; the dataset's columns are"):
        dm.setup("fit")
    with pytest.raises(HFDatasetError, match=r"unknown field\(s\) \['speech'\]"):
        datamodule(processor, hf_dataset=str(renamed_dataset), hf_columns={"speech": "speech"}).setup("fit")


def test_splits_named_by_hf_splits(renamed_dataset, processor):
    dm = datamodule(processor, hf_dataset=str(renamed_dataset), hf_columns=RENAMED, hf_splits={"test": "validation"})
    dm.setup("test")
    assert len(dm.datasets["test"]) == 4 and dm.val_dataloader() == []
    dm = datamodule(processor, hf_dataset=str(renamed_dataset), hf_columns=RENAMED, hf_splits={"test": "eval"})
    with pytest.raises(ValueError, match=r"has no split 'eval' \(data.hf_splits.test\); its splits are \['train', 'validation'\]"):
        dm.setup("test")
    with pytest.raises(ValueError, match="unknown split"):
        SpeechSumDataModule(hf_dataset=str(renamed_dataset), hf_splits={"dev": "validation"})


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory) -> Path:
    tone = (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    poisoned = tone.copy()
    poisoned[4000] = np.nan
    good = {"instruction": "Say it.", "summary": "A tone.", "audio": wav_bytes(tone)}
    rows = [
        good,
        {**good, "summary": ""},                                           # row 1: empty summary
        {**good, "audio": {"bytes": b"not audio at all", "path": None}},   # row 2: unreadable
        {**good, "audio": wav_bytes(poisoned, subtype="FLOAT")},           # row 3: NaN sample
        {**good, "audio": wav_bytes(np.zeros(0, dtype=np.float32))},       # row 4: no samples
        good,
    ]
    return save_dataset(tmp_path_factory.mktemp("hf") / "bad", {"train": rows})


@pytest.mark.parametrize("row, column, reason", [
    (1, "summary", 'summary is empty (""): write the reference summary (for data without references, on-policy KD or '
                   "DPO, set require_summary: false in the data config), or drop the row"),
    (2, "audio", "unreadable audio"),
    (3, "audio", "non-finite sample"),
    (4, "audio", "empty audio"),
])
def test_a_bad_row_names_dataset_split_row_and_column(bad_dataset, processor, row, column, reason):
    keep = [r for r in range(6) if r not in (1, 2, 3, 4) or r == row]
    table = datasets.load_from_disk(str(bad_dataset))["train"].select(keep)
    folder = bad_dataset.parent / f"only-{row}"
    if not folder.exists():
        datasets.DatasetDict({"train": table}).save_to_disk(str(folder))
    with pytest.raises(HFDatasetError) as error:
        datamodule(processor, hf_dataset=str(folder)).setup("fit")
    assert str(error.value).startswith(f"dataset {folder} (split 'train', row 1, column '{column}'): ")
    assert reason in str(error.value)


def test_bad_rows_are_skipped_and_counted(bad_dataset, processor):
    dm = datamodule(processor, hf_dataset=str(bad_dataset), on_bad_example="skip")
    dm.setup("fit")
    assert [e.id for e in dm.datasets["train"].examples] == ["train-0", "train-5"]
    assert [s.line for s in dm.skipped["train"]] == [1, 2, 3, 4]
    assert "column 'summary'" in dm.skipped["train"][0].reason
    assert sorted(i for batch in dm.train_dataloader() for i in batch.ids) == ["train-0", "train-5"]


def test_without_the_datasets_package_the_error_says_what_to_install(renamed_dataset, processor, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'speechsum\[hf\]'"):
        datamodule(processor, hf_dataset=str(renamed_dataset)).setup("fit")


def test_a_hub_name_goes_to_load_dataset_as_is_and_a_missing_folder_is_named(tmp_path, monkeypatch):
    from speechsum.data.hf_dataset import load_splits

    calls = []
    table = datasets.Dataset.from_dict({"audio": ["x.wav"]})
    monkeypatch.setattr(datasets, "load_dataset", lambda *args: calls.append(args) or datasets.DatasetDict({"test": table}))
    assert list(load_splits("some-org/meetings", "en")) == ["test"]  # the network / HF cache: stubbed here
    assert calls == [("some-org/meetings", "en")]
    with pytest.raises(FileNotFoundError, match=f"no dataset folder {tmp_path / 'gone'}"):
        load_splits(str(tmp_path / "gone"))
    assert len(calls) == 1


def test_a_name_that_is_no_folder_and_no_reachable_hub_dataset_says_both(tmp_path, monkeypatch, processor):
    """A relative folder that is not there ('data/meetings', no './') is read as a hub name: offline, datasets'
    bare ConnectionError "Couldn't reach 'data/meetings' on the Hub", which named neither the setting nor the folder."""
    from speechsum.utils.arguments import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as HF_DATASETS_OFFLINE=1: no request is made
    with pytest.raises(ConfigError) as info:
        datamodule(processor, hf_dataset="data/meetings").setup("fit")
    assert str(info.value).startswith(f"data.hf_dataset: data/meetings is no folder here (working folder {tmp_path}), "
                                      "so it was read as a hub name, which failed (ConnectionError: ")
    assert str(info.value).endswith("); give a folder written by save_to_disk or of the dataset's files, or a hub name "
                                    "(the network, or the Hugging Face cache)")


def test_fit_from_the_cli_on_a_saved_dataset(renamed_dataset, toy_data, tmp_path):
    import yaml

    from speechsum.cli import lightning_cli
    from tests.helpers import run_config

    config_path = run_config(tmp_path, toy_data, max_epochs=1, limit_val_batches=1)
    config = yaml.safe_load(config_path.read_text())
    for split in ("train", "val", "test", "predict"):
        del config["data"][f"{split}_manifest"]
    config["data"].update({"hf_dataset": str(renamed_dataset), "hf_columns": RENAMED})
    config_path.write_text(yaml.safe_dump(config))
    cli = lightning_cli(["fit", "--config", str(config_path)])
    assert cli.trainer.global_step > 0 and torch.isfinite(cli.trainer.callback_metrics["val/loss"])


def test_relative_audio_paths_stay_in_the_dataset_folder_as_in_manifests(tmp_path):
    """One rule (manifest.audio_path): ``..`` out of a local dataset's folder is refused, ``~`` is
    not expanded (neither is it in manifests), a symlinked folder inside is followed."""
    from speechsum.data.hf_dataset import load_hf_split

    tone = (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    folder, outside = tmp_path / "ds", tmp_path / "elsewhere"
    for wav in (outside / "x.wav", folder / "~" / "y.wav"):
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, tone, 16_000)
    (folder / "linked").symlink_to(outside, target_is_directory=True)

    def load(path: str, **kwargs):
        table = datasets.Dataset.from_dict({"audio": [path], "instruction": ["Say it."]})
        return load_hf_split(str(folder), "train", table, **kwargs)

    assert load("linked/x.wav")[0][0].duration == 0.5
    assert load("~/y.wav")[0][0].duration == 0.5  # the folder named "~" inside the dataset folder
    with pytest.raises(HFDatasetError, match=re.escape(f"row 0, column 'audio'): relative path '../elsewhere/x.wav' "
                                                       f"escapes the dataset folder {folder}")):
        load("../elsewhere/x.wav")
    assert load("../elsewhere/x.wav", allow_paths_outside_dataset_dir=True)[0][0].duration == 0.5


def test_a_whitespace_only_instruction_is_refused_as_in_manifests(tmp_path):
    from speechsum.data.hf_dataset import load_hf_split

    sf.write(tmp_path / "a.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16_000)
    table = datasets.Dataset.from_dict({"audio": ["a.wav", "a.wav"], "instruction": ["Say it.", " \n\t"]})
    with pytest.raises(HFDatasetError, match=re.escape("row 1, column 'instruction'): missing or empty instruction "
                                                       "(only whitespace)")):
        load_hf_split(str(tmp_path), "train", table)
    examples, skipped, _ = load_hf_split(str(tmp_path), "train", table, on_bad_example="skip")
    assert [e.id for e in examples] == ["train-0"] and [s.line for s in skipped] == [1]


@pytest.mark.parametrize(("column", "advice"), [
    ("id", "give the example a unique id, or leave it out (null) for one made of its split and row"),
    ("lang", "give the speech's language code (e.g. en), or leave it out (null) for en"),
])
def test_a_whitespace_only_id_or_lang_is_a_bad_row_naming_split_row_and_column(tmp_path, column, advice):
    """Before: kept, as the example's id ("  ") or language (a group of its own in the per-language scores)."""
    from speechsum.data.hf_dataset import load_hf_split

    sf.write(tmp_path / "a.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16_000)
    table = datasets.Dataset.from_dict({"audio": ["a.wav"] * 3, "instruction": ["Say it."] * 3,
                                        column: ["x", " \t", None]})
    with pytest.raises(HFDatasetError, match=re.escape(f"(split 'train', row 1, column '{column}'): {column} is only whitespace "
                                                       f"or invisible characters (' \\t'): {advice}, or drop the row")):
        load_hf_split(str(tmp_path), "train", table)
    examples, skipped, _ = load_hf_split(str(tmp_path), "train", table, on_bad_example="skip")
    assert [s.line for s in skipped] == [1] and len(examples) == 2


def test_a_null_instruction_is_named_null_not_missing(tmp_path):
    from speechsum.data.hf_dataset import load_hf_split

    sf.write(tmp_path / "a.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16_000)
    table = datasets.Dataset.from_dict({"audio": ["a.wav", "a.wav"], "instruction": ["Say it.", None]})
    with pytest.raises(HFDatasetError, match=re.escape("row 1, column 'instruction'): instruction is null: write what the "
                                                       'model is to do (e.g. "Summarise the call"), or drop the row')):
        load_hf_split(str(tmp_path), "train", table)


def test_a_pair_whose_chosen_is_its_rejected_is_a_bad_row_as_in_manifests(tmp_path):
    """DPO trained on such a pair at a constant loss ln 2 with no gradient, silently."""
    from speechsum.data.hf_dataset import load_hf_split

    sf.write(tmp_path / "a.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16_000)
    table = datasets.Dataset.from_dict({"audio": ["a.wav", "a.wav"], "instruction": ["Say it.", "Say it."],
                                        "chosen": ["A tone.", "A tone."], "rejected": ["Silence.", "A tone."]})
    with pytest.raises(HFDatasetError) as error:
        load_hf_split(str(tmp_path), "train", table, require_preference=True)
    assert str(error.value) == (f"dataset {tmp_path} (split 'train', row 1, column 'rejected'): 'chosen' and 'rejected' "
                                "are the same text: the pair teaches DPO nothing (its loss is constant, its gradient "
                                "0); give the worse summary as 'rejected' or drop the example")
    examples, skipped, _ = load_hf_split(str(tmp_path), "train", table, require_preference=True, on_bad_example="skip")
    assert [e.id for e in examples] == ["train-0"] and [s.line for s in skipped] == [1]


def test_a_split_whose_every_row_is_skipped_names_the_first_reason(tmp_path):
    from speechsum.data.hf_dataset import load_hf_split

    table = datasets.Dataset.from_dict({"audio": ["a.wav"], "instruction": ["Say it."]})
    with pytest.raises(HFDatasetError) as error:
        load_hf_split(str(tmp_path), "train", table, on_bad_example="skip")
    row = f"dataset {tmp_path} (split 'train', row 0, column 'audio'): {tmp_path / 'a.wav'}: no such file"
    assert str(error.value) == f"dataset {tmp_path} (split 'train'): no usable examples (1 row(s) skipped, e.g. {row})"


def test_preference_rows_without_a_summary_column_say_to_set_require_summary_false(tmp_path):
    from speechsum.data.hf_dataset import load_hf_split

    table = datasets.Dataset.from_dict({"audio": ["a.wav"], "instruction": ["Say it."], "chosen": ["A."],
                                        "rejected": ["B."]})
    with pytest.raises(HFDatasetError) as error:
        load_hf_split(str(tmp_path), "train", table, require_summary=True, require_preference=True)
    assert str(error.value) == (f"dataset {tmp_path} (split 'train', column 'summary'): no column 'summary' for field "
                                "'summary'; the dataset's columns are ['audio', 'instruction', 'chosen', 'rejected']: set "
                                "`data.hf_columns.summary` to one of them (preference data trains on 'chosen' and "
                                "'rejected', not on a reference summary: set require_summary: false in the data config, "
                                "as configs/dpo.yaml does)")


def test_a_split_without_rows_says_so(tmp_path):
    """Before: "no usable examples (0 row(s) skipped)", as if rows had been skipped."""
    from speechsum.data.hf_dataset import load_hf_split

    table = datasets.Dataset.from_dict({"audio": [], "instruction": []})
    with pytest.raises(HFDatasetError) as error:
        load_hf_split(str(tmp_path), "validation", table)
    assert str(error.value) == (f"dataset {tmp_path} (split 'validation'): no usable examples: the split has no rows; "
                                "map this split (data.hf_splits) to one that has, or leave it out")


def test_a_clip_over_max_audio_seconds_is_a_bad_row_when_asked(tmp_path):
    from speechsum.data.hf_dataset import load_hf_split

    sf.write(tmp_path / "a.wav", np.zeros(8000, np.float32), 16_000)
    sf.write(tmp_path / "long.wav", np.zeros(48_000, np.float32), 16_000)
    table = datasets.Dataset.from_dict({"audio": ["a.wav", "long.wav"], "instruction": ["Say it."] * 2})
    with pytest.raises(HFDatasetError, match=re.escape("row 1, column 'audio'): ") + ".*long.wav: 3.00 s is longer "
                       "than max_audio_seconds=2.0"):
        load_hf_split(str(tmp_path), "train", table, max_audio_seconds=2.0)
    examples, skipped, _ = load_hf_split(str(tmp_path), "train", table, max_audio_seconds=2.0, on_bad_example="skip")
    assert [e.id for e in examples] == ["train-0"] and [s.line for s in skipped] == [1]
    assert len(load_hf_split(str(tmp_path), "train", table)[0]) == 2


@pytest.mark.parametrize(("column", "values", "reason"), [
    ("instruction", ["Say it.", "\u200b\u2060"], "missing or empty instruction (only invisible characters, e.g. "
                                                 "zero-width spaces)"),
    ("summary", ["A tone.", "A \x00tone."], "summary holds the control character U+0000 at character 2 (a binary "
                                           "file's bytes or terminal colour codes pasted in?): remove it, or replace "
                                           "it with the character meant"),
    ("transcript", ["t", "a \u2067b"], "transcript holds the bidirectional control character U+2067 (RIGHT-TO-LEFT "
                                       "ISOLATE) at character 2: it reorders how the text is shown, so what is seen "
                                       "is not what the model reads; remove it (right-to-left text needs none)"),
    ("id", ["caf\u00e9", "cafe\u0301"], "duplicate id 'cafe\u0301': row 0 has 'caf\u00e9', the same text in another "
                                        "Unicode normalization (NFC/NFD: composed or decomposed accents); give each "
                                        "example its own id"),
])
def test_invisible_control_and_renormalized_text_are_bad_rows_as_in_manifests(tmp_path, column, values, reason):
    """Before: a zero-width instruction and a NUL in a summary were kept as text, an NFD id beside its NFC twin kept
    as a second example."""
    from speechsum.data.hf_dataset import load_hf_split

    sf.write(tmp_path / "a.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16_000)
    columns = {"id": ["a", "b"], "audio": ["a.wav", "a.wav"], "instruction": ["Say it.", "Say it."],
               "summary": ["A tone.", "A tone."], column: values}
    table = datasets.Dataset.from_dict(columns)
    with pytest.raises(HFDatasetError) as error:
        load_hf_split(str(tmp_path), "train", table, require_summary=True)
    assert str(error.value) == f"dataset {tmp_path} (split 'train', row 1, column {column!r}): {reason}"
    examples, skipped, _ = load_hf_split(str(tmp_path), "train", table, require_summary=True, on_bad_example="skip")
    assert [e.id for e in examples] == [values[0] if column == "id" else "a"] and [s.line for s in skipped] == [1]


def test_a_column_that_looks_meant_for_a_field_is_warned_about_as_in_manifests(tmp_path, caplog):
    """Before: 'ID' and 'transcription' were dropped without a word: ids made up as train-0, no transcript
    (a manifest's misnamed key is warned about at load)."""
    import logging

    from speechsum.data.hf_dataset import load_hf_split

    sf.write(tmp_path / "a.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16_000)
    table = datasets.Dataset.from_dict({"ID": ["call-7"], "audio": ["a.wav"], "instruction": ["Say it."],
                                        "transcription": ["hello"], "speaker": ["ana"]})
    with caplog.at_level(logging.WARNING, logger="speechsum.data.hf_dataset"):
        examples, _, _ = load_hf_split(str(tmp_path), "train", table)
    assert [(e.id, e.transcript) for e in examples] == [("train-0", None)]
    assert [r.getMessage() for r in caplog.records] == [
        f"dataset {tmp_path} (split 'train'): column {column!r} is not read (did you mean {field!r}?): its values are "
        f"not used; set data.hf_columns.{field}: {column} to read it"
        for column, field in (("ID", "id"), ("transcription", "transcript"))]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="speechsum.data.hf_dataset"):
        examples, _, _ = load_hf_split(str(tmp_path), "train", table, columns={"id": "ID", "transcript": "transcription"})
    assert [(e.id, e.transcript) for e in examples] == [("call-7", "hello")] and not caplog.records


def test_a_folder_of_data_files_is_read_and_a_file_is_refused_saying_where_it_goes(tmp_path, monkeypatch, processor):
    """A hub dataset's download (parquet files) was refused as "Directory … is neither a `Dataset` directory nor a
    `DatasetDict` directory", and a JSONL manifest given as hf_dataset got the same words."""
    from speechsum.data.hf_dataset import load_splits
    from speechsum.utils.arguments import ConfigError

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "meetings"
    (folder / "data").mkdir(parents=True)
    sf.write(folder / "a.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16_000)
    rows = {"id": ["m-1"], "audio": ["a.wav"], "instruction": ["Say it."], "summary": ["A tone."]}
    datasets.Dataset.from_dict(rows).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    dm = datamodule(processor, hf_dataset=str(folder))
    dm.setup("fit")
    [example] = dm.datasets["train"].examples
    assert (example.id, example.duration) == ("m-1", 0.5)  # its relative path read in the dataset's folder
    (tmp_path / "train.jsonl").write_text(json.dumps(rows) + "\n")
    with pytest.raises(ConfigError) as info:
        load_splits(str(tmp_path / "train.jsonl"))
    assert str(info.value) == (f"data.hf_dataset: {tmp_path / 'train.jsonl'} is a file, not a dataset folder: a "
                               "speechsum JSONL manifest goes to data.train_manifest (val_manifest, test_manifest, "
                               "predict_manifest)")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ConfigError, match=re.escape(f"data.hf_dataset: {tmp_path / 'nothing'} is neither a folder "
                                                    "written by save_to_disk nor one of data files datasets reads")):
        load_splits(str(tmp_path / "nothing"))



def test_a_dataset_without_the_default_validation_split_is_said_at_fit(toy_data, processor, tmp_path, caplog):
    """Before: a dataset whose validation split is named otherwise (``dev``) fit with no validation, without a word."""
    import logging

    folder = save_dataset(tmp_path / "dev", {"train": manifest_rows(toy_data["train"], 4),
                                             "dev": manifest_rows(toy_data["val"], 2)})
    with caplog.at_level(logging.WARNING, logger="speechsum.data.hf_dataset"):
        dm = datamodule(processor, hf_dataset=str(folder))
        dm.setup("fit")
    assert dm.val_dataloader() == []
    assert (f"data.hf_dataset {folder} has no split 'validation' (data.hf_splits.val by default; its splits are "
            "['dev', 'train']): no validation is run; map one with --data.hf_splits '{val: NAME}'") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="speechsum.data.hf_dataset"):
        dm = datamodule(processor, hf_dataset=str(folder), hf_splits={"train": "train", "val": "dev"})
        dm.setup("fit")
    assert len(dm.datasets["val"]) == 2 and "has no split" not in caplog.text

"""Audio whose header passes at load but whose body is corrupt (a FLAC overwritten in the middle or
cut short): refused naming the manifest line, or under ``on_bad_example: skip`` left out of its
batch, logged and counted; with DataLoader workers too, whose errors reach the user as themselves."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf

from speechsum.cli import input_error_in_chain
from speechsum.data.audio import CorruptAudioError, NonFiniteAudioError, audio_seconds, load_audio
from speechsum.data.hf_dataset import HFDatasetError
from speechsum.data.loader import LoaderError, SpeechLoader, refuse_empty_batch
from speechsum.data.manifest import ManifestError, SkippedLine
from tests.data.test_datamodule import _RecordIds, copy_manifest, datamodule, read_lines, write_lines

FOUND = "(found when its batch was read; its header passed at load): replace the file or remove the example"
ADVICE = f"{FOUND}, or set on_bad_example: skip (speechsum evaluate: --on-bad-example skip) to leave such examples out"


@pytest.fixture
def processor(tiny_composed):
    return tiny_composed.processor


def corrupt_flac(path: Path, how: str = "overwritten") -> Path:
    """3 s of a real FLAC tone whose STREAMINFO header is intact but whose frames are not: 400
    bytes in the middle overwritten with 0xFF, or the file cut in half."""
    t = np.arange(48_000) / 16_000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000, format="FLAC")
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes(data[: middle - 200] + b"\xff" * 400 + data[middle + 200 :] if how == "overwritten"
                     else data[:middle])
    return path


def read_error(path: Path) -> str:
    with pytest.raises(CorruptAudioError) as info:
        load_audio(str(path), 16_000)
    return str(info.value)


def with_corrupt_line(tmp_path: Path, toy: Path, how: str = "overwritten", **extra) -> tuple[Path, Path]:
    """The toy train manifest (24 lines) plus line 25, whose FLAC is corrupt past its header."""
    bad = corrupt_flac(tmp_path / "bad.flac", how)
    lines = read_lines(copy_manifest(toy, tmp_path / "c.jsonl"))
    lines.append({"id": "bad", "audio": str(bad), "instruction": "x", "summary": "y", **extra})
    return write_lines(tmp_path / "train.jsonl", lines), bad


def test_a_corrupt_flac_passes_the_header_check_and_fails_when_read(tmp_path: Path):
    """The gap itself: loading reads integer/compressed files' headers only (and a FLAC's end)."""
    bad = corrupt_flac(tmp_path / "bad.flac")
    assert audio_seconds(str(bad)) == 3.0
    assert read_error(bad).startswith(f"{bad}: unreadable in the block after frame 0 (0.00 s; ")


def test_a_flac_cut_short_is_refused_at_load_by_its_end_and_skip_mode_counts_it_there(tmp_path: Path, toy_data,
                                                                                       processor):
    """It passed its header check for 3 s and failed when its batch was read, deep in training."""
    bad = corrupt_flac(tmp_path / "bad.flac", "truncated")
    expected = (f"{bad}: its header gives 3.00 s, but libsndfile cannot decode its last 4096 samples (Internal "
                "psf_fseek() failed): cut short (a download or copy that stopped?) or damaged at its end; re-fetch it "
                "or drop it")
    with pytest.raises(CorruptAudioError) as info:
        audio_seconds(str(bad))
    assert str(info.value) == expected
    assert audio_seconds(str(bad), truncate_at=1.0) == 3.0  # its first second is read, and is there
    manifest, _ = with_corrupt_line(tmp_path, toy_data["train"], "truncated")
    dm = datamodule(processor, train_manifest=str(manifest), on_bad_example="skip")
    dm.setup("fit")
    assert dm.skipped["train"] == [SkippedLine(25, f"field 'audio': {expected}")]
    assert len(dm.datasets["train"]) == 24


@pytest.mark.parametrize("workers", [0, 2])
def test_error_mode_names_the_manifest_line_field_and_remedy(tmp_path: Path, toy_data, processor, workers: int):
    manifest, bad = with_corrupt_line(tmp_path, toy_data["train"])
    dm = datamodule(processor, train_manifest=str(manifest), num_workers=workers)
    dm.setup("fit")  # the header passes
    with pytest.raises(ManifestError) as info:
        list(dm.train_dataloader())
    assert (info.value.path, info.value.line) == (str(manifest), 25)
    assert str(info.value) == f"{manifest}:25: field 'audio': {read_error(bad)} {ADVICE}"
    assert input_error_in_chain(info.value) is info.value  # the CLI prints it without a traceback


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_mode_leaves_the_example_out_logs_and_counts_it_once(tmp_path: Path, toy_data, processor, caplog,
                                                                   workers: int):
    manifest, bad = with_corrupt_line(tmp_path, toy_data["train"])  # a FLAC cut short is refused at load (above)
    dm = datamodule(processor, train_manifest=str(manifest), on_bad_example="skip", num_workers=workers)
    dm.setup("fit")
    assert dm.skipped["train"] == [] and len(dm.datasets["train"]) == 25
    loader = dm.train_dataloader()
    with caplog.at_level(logging.WARNING, logger="speechsum.data.datamodule"):
        epochs = [list(loader), list(loader)]  # the second epoch finds it again: counted once
    reason = f"field 'audio': {read_error(bad)} {FOUND}"
    assert dm.skipped["train"] == [SkippedLine(25, reason)]
    assert [r.getMessage() for r in caplog.records] == [f"skipping {manifest}:25: {reason}"]
    expected = sorted(e.id for e in dm.datasets["train"].examples if e.id != "bad")
    for batches in epochs:
        assert sorted(i for b in batches for i in b.ids) == expected
        shortened = [b for b in batches if b.skipped]
        assert len(shortened) == 1 and [s.id for s in shortened[0].skipped] == ["bad"]
        batch = shortened[0]  # its tensors hold the others only
        assert batch.prompt_ids.shape[0] == batch.response_ids.shape[0] == len(batch.audio_seconds) == len(batch)
        assert len(batch.audio["input_features"]) == len(batch)


def test_a_batch_left_empty_is_not_yielded(tmp_path: Path, toy_data, processor):
    manifest, _ = with_corrupt_line(tmp_path, toy_data["train"])
    dm = datamodule(processor, train_manifest=str(manifest), on_bad_example="skip", max_batch_size=1)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(loader) == 25 and len(batches) == 24 and all(len(b) == 1 for b in batches)
    assert "bad" not in {b.ids[0] for b in batches} and [s.line for s in dm.skipped["train"]] == [25]


def test_a_batch_left_empty_stops_a_multi_process_run_naming_its_examples(tmp_path: Path, toy_data, processor):
    """Under DDP / FSDP a rank that drops a step leaves the others waiting in a collective: a batch
    whose every example was skipped ends the run there, naming them; a single process drops it."""
    manifest, _ = with_corrupt_line(tmp_path, toy_data["train"])
    dm = datamodule(processor, train_manifest=str(manifest), on_bad_example="skip", max_batch_size=1)
    dm.setup("fit")
    loader = dm.train_dataloader()
    empty = next(loader.collate_fn([loader.dataset[i]]) for i, e in enumerate(loader.dataset.examples) if e.id == "bad")
    assert len(empty) == 0 and [s.id for s in empty.skipped] == ["bad"]
    refuse_empty_batch(empty, 1)  # one process: dropped
    with pytest.raises(RuntimeError) as caught:
        refuse_empty_batch(empty, 2)
    message = str(caught.value)
    assert message.startswith("every example of a batch was skipped (on_bad_example: skip) in a run of 2 processes")
    assert f"{manifest}:25: field 'audio'" in message


class Crash(RuntimeError):
    pass


class _CrashAt(L.Callback):
    def __init__(self, at: int | None):
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.at:
            raise Crash(f"crash at batch {batch_idx}")


def _fit(tmp_path: Path, manifest: Path, processor, crash: int | None, ckpt: str | None = None) -> _RecordIds:
    dm = datamodule(processor, train_manifest=str(manifest), on_bad_example="skip", max_batch_size=1, seed=4)
    module = _RecordIds()
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[checkpoints, _CrashAt(crash)])
    if crash is None:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    else:
        with pytest.raises(Crash):
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return module


def test_resuming_after_a_batch_left_empty_continues_exactly(tmp_path: Path, toy_data, processor):
    """The empty batch is never run, so the fit loop does not count it; the data module does (in
    the checkpoint), else a resumed epoch would start one planned batch too early."""
    manifest, _ = with_corrupt_line(tmp_path, toy_data["train"])
    dm = datamodule(processor, train_manifest=str(manifest), max_batch_size=1, seed=4)
    dm.setup("fit")
    planned = [dm.datasets["train"].examples[b[0]].id for b in dm.train_dataloader().batch_sampler]
    emptied = planned.index("bad")
    assert 0 < emptied < 20  # the crash below comes after it
    straight = _fit(tmp_path / "a", manifest, processor, crash=None).seen
    assert [b[0] for b in straight] == [i for i in planned if i != "bad"]
    first = _fit(tmp_path / "b", manifest, processor, crash=emptied + 2).seen
    rest = _fit(tmp_path / "b", manifest, processor, crash=None, ckpt=str(tmp_path / "b" / "ckpt" / "last.ckpt")).seen
    assert first + rest == straight


def test_a_worker_error_is_raised_as_itself(tmp_path: Path, toy_data, processor):
    """Any bad input found in a worker (here NaN samples written after setup) ends with the error
    num_workers=0 gives, not torch's "Caught … in DataLoader worker process 0" wrapper."""
    lines = read_lines(copy_manifest(toy_data["train"], tmp_path / "c.jsonl"))
    late = tmp_path / "late.wav"
    sf.write(late, np.full(1_600, 0.1, dtype=np.float32), 16_000, subtype="FLOAT")
    lines.append({"id": "late", "audio": str(late), "instruction": "x", "summary": "y"})
    manifest = write_lines(tmp_path / "train.jsonl", lines)
    messages = []
    for workers in (0, 1):
        dm = datamodule(processor, train_manifest=str(manifest), num_workers=workers)
        dm.setup("fit")
        data = np.full(1_600, 0.1, dtype=np.float32)
        data[7] = np.nan
        sf.write(late, data, 16_000, subtype="FLOAT")
        with pytest.raises(ManifestError) as info:
            list(dm.train_dataloader())
        assert isinstance(info.value.__cause__, NonFiniteAudioError) or workers  # a worker's cause stays there
        messages.append(str(info.value))
        sf.write(late, np.full(1_600, 0.1, dtype=np.float32), 16_000, subtype="FLOAT")
    assert messages[0] == messages[1]
    assert messages[0].startswith(f"{manifest}:25: field 'audio': {late}: non-finite sample (NaN or Inf) at frame 7 ")
    assert "DataLoader worker" not in messages[1]


class Boom(Exception):
    """An error whose constructor takes other arguments than its message (torch rebuilds a worker's
    error as ``type(message)``, which fails for it: it became a RuntimeError)."""

    def __init__(self, where: str, code: int):
        super().__init__(f"{where}: code {code}")
        self.where, self.code = where, code


def explode(items):
    raise Boom(f"batch of {len(items)}", 7)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_collate_error_is_raised_as_itself(workers: int):
    loader = SpeechLoader(list(range(4)), batch_size=2, collate_fn=explode, num_workers=workers)
    with pytest.raises(Boom) as info:
        list(loader)
    assert (str(info.value), info.value.where, info.value.code) == ("batch of 2: code 7", "batch of 2", 7)
    notes = getattr(info.value, "__notes__", [])
    assert bool(notes) == bool(workers) and all("raised in DataLoader worker process 0" in n for n in notes)


def test_errors_survive_the_trip_from_a_worker():
    """What a worker pickles: the project's errors come back whole, attributes included."""
    for error in (ManifestError("m.jsonl", 3, "field 'audio': x"), HFDatasetError("d", "train", "r", row=2, column="a"),
                  NonFiniteAudioError("a.wav", 5, 16_000), Boom("w", 1), FileNotFoundError(2, "No such file", "a.wav")):
        back = pickle.loads(pickle.dumps(LoaderError(error))).error
        assert type(back) is type(error) and str(back) == str(error) and vars(back) == vars(error)
    unpicklable = ValueError("bad")
    unpicklable.handle = lambda: None
    back = pickle.loads(pickle.dumps(LoaderError(unpicklable))).error
    assert (type(back), str(back)) == (RuntimeError, "ValueError: bad")


def test_hf_dataset_rows_are_named_by_split_and_row(tmp_path: Path, processor):
    datasets = pytest.importorskip("datasets")
    from tests.data.test_hf_dataset import datamodule as hf_datamodule

    good, bad = tmp_path / "good.flac", corrupt_flac(tmp_path / "bad.flac")
    sf.write(good, np.full(16_000, 0.1, dtype=np.float32), 16_000, format="FLAC")
    rows = {"audio": [str(good), str(bad)], "instruction": ["x", "x"], "summary": ["y", "y"], "id": ["g", "b"]}
    folder = tmp_path / "ds"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(folder))
    where = f"dataset {folder} (split 'train', row 1, column 'audio'): {read_error(bad)}"
    dm = hf_datamodule(processor, hf_dataset=str(folder), on_bad_example="skip")
    dm.setup("fit")
    assert [b.ids for b in dm.train_dataloader()] == [["g"]]
    assert dm.skipped["train"] == [SkippedLine(1, f"{where} {FOUND}")]
    dm = hf_datamodule(processor, hf_dataset=str(folder), num_workers=1)
    dm.setup("fit")
    with pytest.raises(HFDatasetError) as info:
        list(dm.train_dataloader())
    assert str(info.value) == f"{where} {ADVICE}"



def test_fit_skips_corrupt_train_and_val_examples_and_errors_cleanly(tmp_path: Path, toy_data, capsys, caplog):
    """`speechsum fit` (SFT, validation included) and `predict` with DataLoader workers: under skip
    they run on the others; under error fit stops with the manifest line, as with no workers."""
    import yaml

    from speechsum.cli import lightning_cli, main
    from tests.helpers import run_config

    config = run_config(tmp_path, toy_data, max_epochs=1)
    settings = yaml.safe_load(config.read_text())
    manifests = {}
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        manifests[split], _ = with_corrupt_line(tmp_path / split, toy_data[split])
        settings["data"][f"{split}_manifest"] = str(manifests[split])
    settings["data"].update({"num_workers": 1, "on_bad_example": "skip"})
    config.write_text(yaml.safe_dump(settings))
    cli = lightning_cli(["fit", "--config", str(config)])
    assert cli.trainer.state.finished and cli.trainer.global_step > 0
    assert {split: [s.line for s in lines] for split, lines in cli.datamodule.skipped.items()} == {"train": [25], "val": [9]}
    with caplog.at_level(logging.WARNING, logger="speechsum.training.callbacks"):
        lightning_cli(["predict", "--config", str(config), "--data.predict_manifest", str(manifests["val"]),
                       "--ckpt_path", "last"])
    predictions = read_lines(tmp_path / "run" / "predictions.jsonl")
    assert sorted(p["id"] for p in predictions) == sorted(line["id"] for line in read_lines(manifests["val"])[:-1])
    assert [r.getMessage() for r in caplog.records if r.name == "speechsum.training.callbacks" and "skipped" in r.getMessage()] == [
        f"{tmp_path / 'run' / 'predictions.jsonl'}: 1 example(s) skipped (on_bad_example: skip), not in it: lines 9"]

    settings["data"]["on_bad_example"] = "error"
    config.write_text(yaml.safe_dump(settings))
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config)])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert f"speechsum fit: error: {manifests['train']}:25: field 'audio': " in error
    assert "DataLoader worker" not in error and "Traceback" not in error


def test_a_fit_whose_every_train_example_is_skipped_when_read_stops_naming_the_manifest(tmp_path: Path, toy_data,
                                                                                         capsys):
    """Before, its epochs ran no step, and fit exited 0 saving the untrained model as last.ckpt."""
    from speechsum.cli import main
    from tests.helpers import run_config

    config = run_config(tmp_path, toy_data, max_epochs=2)
    lines = [{"id": f"b{i}", "audio": str(corrupt_flac(tmp_path / f"bad{i}.flac")), "instruction": "x", "summary": "y"}
             for i in range(3)]
    manifest = write_lines(tmp_path / "train.jsonl", lines)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--data.train_manifest", str(manifest), "--data.on_bad_example", "skip"])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert (f"speechsum fit: error: {manifest}:0: no usable examples: all 3 were skipped (on_bad_example: skip) when "
            f"their batches were read, e.g. {manifest}:") in error and "Traceback" not in error
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_dataset_split_whose_every_row_is_skipped_when_read_is_named(tmp_path: Path, processor):
    datasets = pytest.importorskip("datasets")
    from tests.data.test_hf_dataset import datamodule as hf_datamodule

    bad = corrupt_flac(tmp_path / "bad.flac")
    folder = tmp_path / "ds"
    rows = {"audio": [str(bad)], "instruction": ["x"], "summary": ["y"], "id": ["b"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(folder))
    dm = hf_datamodule(processor, hf_dataset=str(folder), on_bad_example="skip")
    dm.setup("fit")
    with pytest.raises(HFDatasetError) as info:
        list(dm.train_dataloader())
    where = f"dataset {folder} (split 'train', row 0, column 'audio'): {read_error(bad)}"
    assert str(info.value) == (f"dataset {folder} (split 'train'): no usable examples: all 1 were skipped "
                               f"(on_bad_example: skip) when their batches were read, e.g. {where} {FOUND}")


def test_the_loader_draws_from_the_global_generator_as_a_dataloader_does(tmp_path: Path, toy_data, processor):
    """``iter()`` draws the DataLoader's base seed at once, as ``DataLoader.__iter__`` does (a lazy
    generator drew it at the first batch instead, which moved every later random draw: the pairs
    stage sampled other summaries than before the loader existed)."""
    import torch
    from torch.utils.data import DataLoader

    from speechsum.data.batch import SpeechCollator
    from speechsum.data.dataset import SpeechSumDataset
    from speechsum.data.manifest import load_manifest

    examples, _ = load_manifest(toy_data["train"])
    dataset = SpeechSumDataset(examples, processor.sample_rate)

    def states(loader_class) -> list[torch.Tensor]:
        loader = loader_class(dataset, batch_size=4, collate_fn=SpeechCollator(processor))
        torch.manual_seed(0)
        seen = []
        for _ in loader:  # a random draw in the loop body, as sampling does
            seen.append(torch.random.get_rng_state())
            torch.rand(1)
        iterator = iter(loader)
        seen.append(torch.random.get_rng_state())
        next(iterator)
        return seen + [torch.random.get_rng_state()]

    assert all(torch.equal(a, b) for a, b in zip(states(SpeechLoader), states(DataLoader), strict=True))

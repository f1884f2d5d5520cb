"""SpeechSumDataModule and bad or long audio: NaN/Inf lines refused or skipped and counted, the
read-time check, and the warning for clips over the batch budget."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import NonFiniteAudioError
from speechsum.data.dataset import SpeechSumDataset
from speechsum.data.loader import SkippedExample
from speechsum.data.manifest import ManifestError, SkippedLine
from tests.data.test_datamodule import copy_manifest, datamodule, read_lines, write_lines


@pytest.fixture
def processor(tiny_composed):
    return tiny_composed.processor


def nan_wav(path: Path, frame: int = 5) -> Path:
    """0.1 s of 16 kHz float audio with a NaN at ``frame``."""
    data = np.full(1_600, 0.1, dtype=np.float32)
    data[frame] = np.nan
    sf.write(path, data, 16_000, subtype="FLOAT")
    return path


def set_up_with_late_clip(tmp_path: Path, toy: Path, processor, samples: int):
    """(manifest, data module set up for fit, clip): the toy train manifest (24 lines) plus line 25, whose audio
    ``late.wav`` is ``samples`` float samples of 0.1 at 16 kHz when loaded."""
    clip = tmp_path / "late.wav"
    sf.write(clip, np.full(samples, 0.1, dtype=np.float32), 16_000, subtype="FLOAT")
    lines = read_lines(copy_manifest(toy, tmp_path / "c.jsonl"))
    lines.append({"id": "late", "audio": str(clip), "instruction": "x", "summary": "y"})
    manifest = write_lines(tmp_path / "train.jsonl", lines)
    dm = datamodule(processor, train_manifest=str(manifest))
    dm.setup("fit")
    return manifest, dm, clip


def with_nan_line(tmp_path: Path, toy: Path) -> tuple[Path, Path]:
    """The toy train manifest (24 lines) plus line 25, whose audio holds a NaN."""
    bad = nan_wav(tmp_path / "nan.wav")
    lines = read_lines(copy_manifest(toy, tmp_path / "c.jsonl"))
    lines.append({"id": "nan", "audio": str(bad), "instruction": "x", "summary": "y"})
    return write_lines(tmp_path / "train.jsonl", lines), bad


NAN_REASON = (
    "field 'audio': {}: non-finite sample (NaN or Inf) at frame 5 (0.00 s); "
    "the audio is corrupt: re-export it or drop it from the manifest"
)


def test_skip_mode_counts_and_drops_non_finite_audio(tmp_path: Path, toy_data, processor):
    manifest, bad = with_nan_line(tmp_path, toy_data["train"])
    dm = datamodule(processor, train_manifest=str(manifest), on_bad_example="skip")
    dm.setup("fit")
    assert dm.skipped["train"] == [SkippedLine(25, NAN_REASON.format(bad))]
    assert len(dm.datasets["train"]) == 24
    assert "nan" not in {e.id for e in dm.datasets["train"].examples}


def test_error_mode_refuses_non_finite_audio(tmp_path: Path, toy_data, processor):
    manifest, bad = with_nan_line(tmp_path, toy_data["train"])
    dm = datamodule(processor, train_manifest=str(manifest))
    with pytest.raises(ManifestError) as info:
        dm.setup("fit")
    assert str(info.value) == f"{manifest}:25: {NAN_REASON.format(bad)}"


def test_audio_spoiled_after_validation_fails_when_read(tmp_path: Path, toy_data, processor):
    """The read-time check: a file that turns bad after setup is refused, naming the manifest line
    and the file (tests/data/test_corrupt_audio.py: skipped under on_bad_example: skip)."""
    manifest, dm, good = set_up_with_late_clip(tmp_path, toy_data["train"], processor, 1_600)
    nan_wav(good, frame=7)
    with pytest.raises(ManifestError) as info:
        dm.datasets["train"][24]
    assert isinstance(info.value.__cause__, NonFiniteAudioError)
    assert str(info.value) == (
        f"{manifest}:25: field 'audio': {good}: non-finite sample (NaN or Inf) at frame 7 (0.00 s); the audio is "
        "corrupt: re-export it or drop it from the manifest (found when its batch was read; its header passed at "
        "load): replace the file or remove the example, or set on_bad_example: skip (speechsum evaluate: --on-bad-example skip) to leave such examples out"
    )


def test_clips_over_the_batch_budget_are_logged(toy_data, processor, caplog):
    dm = datamodule(processor, train_manifest=str(toy_data["train"]), max_batch_seconds=1.0)
    with caplog.at_level(logging.WARNING, logger="speechsum.data.datamodule"):
        dm.setup("fit")
    durations = dm.datasets["train"].durations
    over = [d for d in durations if d > 1.0]
    longest = dm.datasets["train"].examples[durations.index(max(durations))]
    assert over  # the toy set has clips over 1 s
    assert [r.getMessage() for r in caplog.records] == [
        f"train: {len(over)} clip(s) longer than max_batch_seconds=1, each a batch of its own over the budget "
        f"(longest: {longest.id}, {max(durations):.1f} s, {longest.audio}); set max_audio_seconds to truncate them"
    ]


def test_no_warning_when_clips_fit_the_budget(toy_data, processor, caplog):
    dm = datamodule(processor, train_manifest=str(toy_data["train"]))
    with caplog.at_level(logging.WARNING, logger="speechsum.data.datamodule"):
        dm.setup("fit")
    assert caplog.records == []


def test_clips_cut_to_max_audio_seconds_are_counted_and_logged(toy_data, processor, caplog):
    """Before: too_long_audio: truncate (the default) cut them without a word."""
    dm = datamodule(processor, train_manifest=str(toy_data["train"]), val_manifest=str(toy_data["val"]),
                    max_audio_seconds=1.0)
    with caplog.at_level(logging.WARNING, logger="speechsum.data.datamodule"):
        dm.setup("fit")
    messages = []
    for split in ("train", "val"):
        examples = dm.datasets[split].examples
        longest = max(examples, key=lambda example: example.duration)
        cut = sum(example.duration > 1.0 for example in examples)
        assert cut and dm.truncated[split] == cut
        messages.append(f"{split}: {cut} clip(s) longer than max_audio_seconds=1 are cut to their first 1 s when read "
                        f"(too_long_audio: truncate; longest: {longest.id}, {longest.duration:.1f} s, {longest.audio}): "
                        "the model sees only that part; set too_long_audio: error to refuse them, or raise "
                        "max_audio_seconds")
    assert [r.getMessage() for r in caplog.records] == messages
    dm = datamodule(processor, train_manifest=str(toy_data["train"]))  # no limit (the composed backbone's): none cut
    dm.setup("fit")
    assert dm.truncated == {"train": 0}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_silent_clip_is_said_once_in_the_main_process_naming_its_manifest_line(tmp_path: Path, toy_data, processor,
                                                                                  caplog, workers):
    """Before: with num_workers > 0 the warning was logged in the workers, once per epoch (the validation loader's
    workers are made anew each epoch), without the manifest line, and not where the main process logs."""
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8_000, dtype=np.int16), 16_000, subtype="PCM_16")
    lines = read_lines(copy_manifest(toy_data["val"], tmp_path / "c.jsonl"))
    lines.append({"id": "silent", "audio": str(silent), "instruction": "x", "summary": "y"})
    manifest = write_lines(tmp_path / f"val{workers}.jsonl", lines)
    dm = datamodule(processor, train_manifest=str(manifest), val_manifest=str(manifest), num_workers=workers)
    dm.setup("fit")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # epochs
            assert sum(len(batch) for batch in dm.val_dataloader()) == len(lines)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{manifest}:{len(lines)}: field 'audio': {silent}: every sample is 0 (digital silence, 0.50 s): there is no "
        "speech in it to summarise; check the recording (a muted or failed capture?) or drop it"]


@pytest.mark.parametrize("seconds", [60.0, 0.2])
def test_a_clip_rewritten_with_another_length_after_load_is_a_bad_example_when_read(tmp_path: Path, toy_data,
                                                                                      processor, seconds: float):
    """A clip of 2 s at load that is 60 s (or 0.2 s) when its batch is read was read as it was then, without a
    word: its example may describe another recording, and its batch was planned for 2 s. Under skip it is left out."""
    manifest, dm, clip = set_up_with_late_clip(tmp_path, toy_data["train"], processor, 32_000)
    assert len(dm.datasets["train"][24][1]) == 32_000  # unchanged: read as loaded
    sf.write(clip, np.full(round(16_000 * seconds), 0.1, dtype=np.float32), 16_000, subtype="FLOAT")
    with pytest.raises(ManifestError) as info:
        dm.datasets["train"][24]
    assert str(info.value).startswith(
        f"{manifest}:25: field 'audio': {clip}: {seconds:.2f} s when read, but 2.00 s when it was loaded: the file "
        "changed during the run (rewritten or replaced), so the example may no longer describe it; restore it, or "
        "start the run again so that it is loaded anew (found when its batch was read")
    skipped = SpeechSumDataset(dm.datasets["train"].examples, 16_000, on_bad_example="skip")[24]
    assert isinstance(skipped, SkippedExample) and skipped.line == 25 and "changed during the run" in skipped.reason

"""NaN/Inf samples: load_audio and audio_seconds refuse them naming the file and frame; the manifest
refuses or skips the line (naming manifest, line and audio path)."""

from __future__ import annotations

import json
import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import NonFiniteAudioError, audio_seconds, load_audio
from speechsum.data.manifest import ManifestError, SkippedLine, load_manifest
from tests.data.wavs import poke, sparse_wav

TAIL = "the audio is corrupt: re-export it or drop it from the manifest"


def float_wav(path: Path, data: np.ndarray, rate: int = 16_000, subtype: str = "FLOAT") -> str:
    sf.write(path, data, rate, subtype=subtype)
    return str(path)


def with_bad_sample(frames: int, frame: int, value: float, channels: int = 1, channel: int = 0) -> np.ndarray:
    data = np.full((frames, channels), 0.1, dtype=np.float64)
    data[frame, channel] = value
    return data if channels > 1 else data[:, 0]


@pytest.mark.parametrize(
    ("value", "channels", "channel", "subtype"),
    [
        (np.nan, 1, 0, "FLOAT"),
        (np.inf, 1, 0, "FLOAT"),
        (-np.inf, 1, 0, "FLOAT"),
        (np.nan, 2, 1, "FLOAT"),  # only the second channel is bad
        (np.nan, 1, 0, "DOUBLE"),
        (1e300, 1, 0, "DOUBLE"),  # finite as a double, Inf once read as float32
    ],
)
def test_load_audio_refuses_non_finite_naming_path_and_frame(
    tmp_path: Path, value: float, channels: int, channel: int, subtype: str
):
    path = float_wav(tmp_path / "bad.wav", with_bad_sample(16_000, 8_000, value, channels, channel), subtype=subtype)
    with pytest.raises(NonFiniteAudioError) as info:
        load_audio(path, 16_000)
    assert str(info.value) == f"{path}: non-finite sample (NaN or Inf) at frame 8000 (0.50 s); {TAIL}"
    assert isinstance(info.value, ValueError)
    assert (info.value.path, info.value.frame) == (path, 8_000)


def test_frame_is_counted_across_blocks(tmp_path: Path):
    """The bad sample sits in the third read block; the reported frame is from the file's start."""
    path = float_wav(tmp_path / "bad.wav", with_bad_sample(200_000, 150_001, np.nan), rate=8_000)
    message = f"{path}: non-finite sample (NaN or Inf) at frame 150001 (18.75 s); {TAIL}"
    with pytest.raises(NonFiniteAudioError) as info:
        load_audio(path, 16_000)
    assert str(info.value) == message
    with pytest.raises(NonFiniteAudioError) as info:
        audio_seconds(path)
    assert str(info.value) == message


def test_non_finite_past_the_truncation_point_is_never_read(tmp_path: Path):
    path = float_wav(tmp_path / "bad.wav", with_bad_sample(32_000, 20_000, np.nan))
    waveform = load_audio(path, 16_000, max_seconds=1.0)
    np.testing.assert_array_equal(waveform, np.full(16_000, 0.1, dtype=np.float32))


def test_finite_float_file_passes(tmp_path: Path):
    path = float_wav(tmp_path / "ok.wav", np.full(1_000, 0.25))
    audio_seconds(path)  # no error
    np.testing.assert_array_equal(load_audio(path, 16_000), np.full(1_000, 0.25, dtype=np.float32))


def test_audio_seconds_scans_two_hours_in_one_block_of_memory(tmp_path: Path):
    """2 h of 8 kHz float silence (230 MB of samples) with a NaN in the very last frame."""
    frames = 2 * 3600 * 8_000
    path = sparse_wav(tmp_path / "long.wav", frames, 8_000, "FLOAT")
    poke(path, frames - 1, np.nan)
    tracemalloc.start()
    try:
        with pytest.raises(NonFiniteAudioError) as info:
            audio_seconds(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value) == f"{path}: non-finite sample (NaN or Inf) at frame 57599999 (7200.00 s); {TAIL}"
    assert peak < 2_000_000  # one 64 Ki-frame block (256 KB) plus its mask, not 230 MB


@pytest.fixture
def no_sample_reads(monkeypatch):
    """Any read of samples (not the header) fails the test: integer PCM cannot hold NaN/Inf."""

    def refuse(*args, **kwargs):
        raise AssertionError("the samples of integer PCM must not be read")

    monkeypatch.setattr(sf.SoundFile, "read", refuse)
    monkeypatch.setattr(sf.SoundFile, "blocks", refuse)


def test_audio_seconds_does_not_read_integer_pcm(tmp_path: Path, no_sample_reads):
    audio_seconds(str(sparse_wav(tmp_path / "pcm.wav", 16_000, 16_000, "PCM_16")))


# --- manifest validation ---------------------------------------------------------------------


@pytest.fixture
def manifest_with_bad_audio(tmp_path: Path) -> tuple[Path, Path]:
    """``train.jsonl``: line 1 good, line 2 a float WAV with a NaN at frame 3, line 3 good."""
    audio = tmp_path / "audio"
    audio.mkdir()
    float_wav(audio / "good.wav", np.full(1_600, 0.1))
    bad = Path(float_wav(audio / "bad.wav", with_bad_sample(1_600, 3, np.nan)))
    lines = [
        {"id": "a", "audio": "audio/good.wav", "instruction": "Summarise."},
        {"id": "b", "audio": "audio/bad.wav", "instruction": "Summarise."},
        {"id": "c", "audio": "audio/good.wav", "instruction": "Summarise."},
    ]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest, bad


def test_manifest_refuses_non_finite_audio_naming_file_line_and_audio(manifest_with_bad_audio):
    manifest, bad = manifest_with_bad_audio
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    reason = f"field 'audio': {bad}: non-finite sample (NaN or Inf) at frame 3 (0.00 s); {TAIL}"
    assert (info.value.path, info.value.line, info.value.reason) == (str(manifest), 2, reason)
    assert str(info.value) == f"{manifest}:2: {reason}"


def test_manifest_skip_mode_logs_counts_and_drops_non_finite_audio(manifest_with_bad_audio, caplog):
    manifest, bad = manifest_with_bad_audio
    with caplog.at_level(logging.WARNING, logger="speechsum.data.manifest"):
        examples, skipped = load_manifest(manifest, on_bad_example="skip")
    reason = f"field 'audio': {bad}: non-finite sample (NaN or Inf) at frame 3 (0.00 s); {TAIL}"
    assert [e.id for e in examples] == ["a", "c"]
    assert skipped == [SkippedLine(2, reason)]
    assert [r.getMessage() for r in caplog.records] == [
        f"skipping {manifest}:2: {reason}",
        f"{manifest}: skipped 1 bad line(s), kept 2",
    ]


def test_manifest_reads_only_the_header_of_long_pcm(tmp_path: Path, no_sample_reads):
    """A 2-hour 16-bit file: the duration comes from the header; no sample is read."""
    sparse_wav(tmp_path / "long.wav", 2 * 3600 * 8_000, 8_000, "PCM_16")
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "audio": "long.wav", "instruction": "x"}) + "\n")
    examples, _ = load_manifest(tmp_path / "m.jsonl")
    assert examples[0].duration == 7200.0


def test_manifest_scans_long_float_audio_in_bounded_memory(tmp_path: Path):
    frames = 2 * 3600 * 8_000
    path = sparse_wav(tmp_path / "long.wav", frames, 8_000, "FLOAT")
    poke(path, frames - 8_000, np.inf)
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "audio": "long.wav", "instruction": "x"}) + "\n")
    tracemalloc.start()
    try:
        with pytest.raises(ManifestError) as info:
            load_manifest(tmp_path / "m.jsonl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.reason == (
        f"field 'audio': {path}: non-finite sample (NaN or Inf) at frame 57592000 (7199.00 s); {TAIL}"
    )
    assert peak < 2_000_000

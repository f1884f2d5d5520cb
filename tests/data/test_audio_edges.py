"""Audio that libsndfile reads but whose numbers cannot be trusted: a FLAC header without a length,
float samples far outside [-1, 1], file names that are not UTF-8."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import (
    MAX_SAMPLE,
    AudioTooLongError,
    CorruptAudioError,
    OutOfRangeAudioError,
    UnreadableAudioError,
    UnscaledAudioError,
    audio_seconds,
    check_waveform,
    load_audio,
    open_audio,
)
from speechsum.data.manifest import ManifestError, load_manifest
from speechsum.utils.io import read_jsonl, write_jsonl
from tests.data.wavs import flac_without_length

TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(5 * 16_000) / 16_000)).astype(np.float32)  # 5 s


def test_a_flac_without_a_length_is_read_to_its_end(tmp_path: Path, caplog):
    """libsndfile reports 2**63 - 1 frames and fails in the file's last FLAC block: everything up to
    the failing read is kept (the header's count was an array of exabytes before), and the loss is logged."""
    path = flac_without_length(tmp_path / "streamed.flac", TONE)
    assert sf.info(str(path)).frames == 2**63 - 1  # what the header gives
    with caplog.at_level("WARNING", logger="speechsum.data.audio"):
        seconds = audio_seconds(str(path))
        waveform = load_audio(str(path), 16_000)
    assert 5.0 - 1024 / 16_000 <= seconds < 5.0 and waveform.shape == (round(seconds * 16_000),)
    np.testing.assert_allclose(waveform, TONE[: len(waveform)], atol=1e-4)  # 16-bit FLAC
    assert sum("the header gives no length" in r.getMessage() and str(path) in r.getMessage()
               for r in caplog.records) == 2
    assert load_audio(str(path), 16_000, max_seconds=2.0).shape == (32_000,)  # truncated
    with pytest.raises(AudioTooLongError, match=r"streamed\.flac: more than 2 s is longer than max_audio_seconds=2"):
        load_audio(str(path), 16_000, max_seconds=2.0, too_long="error")
    assert load_audio(str(path), 16_000, max_seconds=5.0, too_long="error").shape == waveform.shape


def test_a_manifest_line_with_a_flac_without_a_length_gets_its_real_duration(tmp_path: Path):
    flac_without_length(tmp_path / "streamed.flac", TONE)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "streamed.flac", "instruction": "Sum up."}) + "\n")
    examples, _ = load_manifest(manifest)
    assert 4.9 < examples[0].duration < 5.0


@pytest.mark.parametrize("magnitude", [1e30, 32768.0, -2e3])
def test_float_samples_far_outside_the_unit_range_are_refused_naming_file_and_frame(tmp_path: Path, magnitude: float):
    """1e30 overflows the power spectrum into NaN features (and a training step's weights with them);
    int16-scale floats are a wrong export; both are refused with what to do."""
    data = np.full(16_000, 0.1, dtype=np.float32)
    data[4_000] = magnitude
    path = tmp_path / "loud.wav"
    sf.write(path, data, 16_000, subtype="FLOAT")
    expected = (f"{path}: sample of magnitude {abs(magnitude):.3g} at frame 4000 (0.25 s); float audio is expected "
                f"within [-1, 1] (beyond ±{MAX_SAMPLE:g} it is not a recording and its features overflow): normalise "
                "it (int16-scale floats: divide by 32768) or drop it from the manifest")
    for read in (lambda: load_audio(str(path), 16_000), lambda: audio_seconds(str(path))):
        with pytest.raises(OutOfRangeAudioError) as info:
            read()
        assert str(info.value) == expected and info.value.frame == 4_000
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "loud.wav", "instruction": "Sum up."}) + "\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == f"field 'audio': {expected}"


def test_loud_but_plausible_float_audio_is_read(tmp_path: Path):
    data = np.full(1_600, 0.1, dtype=np.float32)
    data[10] = 1.8  # a float file can clip above full scale
    sf.write(tmp_path / "hot.wav", data, 16_000, subtype="FLOAT")
    assert load_audio(str(tmp_path / "hot.wav"), 16_000)[10] == pytest.approx(1.8)


def test_float_audio_far_over_full_scale_is_read_with_a_warning_at_load(tmp_path: Path, caplog):
    """Before: a float file peaking at 10 (20 dB over full scale, e.g. samples scaled by a wrong factor) loaded
    without a word, features far from any recording's; 1.8 (a float file clipping above full scale) still says nothing."""
    data = np.full(1_600, 0.1, dtype=np.float32)
    data[10], data[20] = 1.8, -10.0
    sf.write(tmp_path / "loud.wav", data, 16_000, subtype="FLOAT")
    sf.write(tmp_path / "hot.wav", np.minimum(data, 1.8) * (data > -5), 16_000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="speechsum.data.audio"):
        assert audio_seconds(str(tmp_path / "hot.wav")) == 0.1
        assert caplog.records == []
        assert audio_seconds(str(tmp_path / "loud.wav")) == 0.1
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'loud.wav'}: float samples up to 10, 20 dB over full scale (1.0): read as they are, louder than "
        "any recording; normalise it (e.g. `sox --norm in.wav out.wav`) if that was not meant"]
    assert load_audio(str(tmp_path / "loud.wav"), 16_000)[20] == -10.0  # read as it is


def test_float_audio_at_a_wrong_scale_is_refused_naming_its_peak(tmp_path: Path):
    """Before: a float WAV of samples around ±30 (a writer's wrong scale, 30 dB over full scale) loaded with a
    warning at load and was read as it is by `speechsum summarize` and `serve` without a word. Clipping headroom
    (1.8, or 10 with its warning, above) is read; beyond ±16 (24 dB over full scale) the file is refused, naming
    its peak and where it is, wherever the peak lies (here in the second block read, not the first sample over 16)."""
    data = np.full(80_000, 0.1, dtype=np.float32)
    data[5], data[70_000], data[70_100] = 20.0, -31.5, 25.0
    path = tmp_path / "scaled.wav"
    sf.write(path, np.stack([data, data / 2], axis=1), 16_000, subtype="FLOAT")
    expected = (f"{path}: float sample of 31.5 (its peak, 30 dB over full scale) at frame 70000 (4.38 s); float "
                "audio is within [-1, 1], a little over it where a float file clips (read as it is); beyond ±16 "
                "its writer used a wrong scale: normalise it (e.g. `sox --norm in.wav out.wav`, or divide the "
                "samples by the factor they were scaled by) or drop it from the manifest")
    for read in (lambda: load_audio(str(path), 16_000), lambda: audio_seconds(str(path))):
        with pytest.raises(UnscaledAudioError) as info:
            read()
        assert (str(info.value), info.value.frame, info.value.peak) == (expected, 70_000, 31.5)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "scaled.wav", "instruction": "Sum up."}) + "\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == f"field 'audio': {expected}"
    # the part read when truncated: its own peak
    with pytest.raises(UnscaledAudioError, match=r"scaled\.wav: float sample of 20 \(its peak, 26 dB over full scale\) at frame 5 "):
        load_audio(str(path), 16_000, max_seconds=1.0)
    with pytest.raises(UnscaledAudioError, match=r"^waveform 1: float sample of 31\.5 \(its peak, 30 dB .* at frame 70000 "):
        check_waveform("waveform 1", data, 16_000)
    data[[5, 70_000, 70_100]] = [16.0, -1.5, 1.0]  # 16 itself: read (with the warning at load)
    sf.write(path, data, 16_000, subtype="FLOAT")
    assert load_audio(str(path), 16_000)[5] == 16.0 and audio_seconds(str(path)) == 5.0


def test_the_sample_check_gives_the_peak_the_loud_audio_warning_reports():
    """The check of each block computes |samples| once: its peak is reused for the warning, not computed again."""
    from speechsum.data.sample_checks import check_block as _check_block

    block = np.array([[0.1, -0.2], [-10.0, 1.8]], dtype=np.float32)
    assert _check_block(block, "a.wav", 0, 16_000) == 10.0
    assert _check_block(np.zeros((0, 2), np.float32), "a.wav", 0, 16_000) == 0.0
    with pytest.raises(OutOfRangeAudioError, match=r"^a\.wav: sample of magnitude 2e\+03 at frame 6 "):
        _check_block(np.array([[0.5], [2_000.0]], np.float32), "a.wav", 5, 16_000)


def test_a_file_name_that_is_not_utf8_is_read_and_written_back(tmp_path: Path):
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xffname.wav")  # Python's str for such a name
    sf.write(os.fsencode(name), TONE[:1_600], 16_000)
    assert load_audio(name, 16_000).shape == (1_600,)
    assert audio_seconds(name) == 0.1
    write_jsonl(tmp_path / "rows.jsonl", [{"audio": name}, {"audio": "fine ü"}])
    assert b"\\udcff" in (tmp_path / "rows.jsonl").read_bytes()  # valid UTF-8 JSON, the surrogate escaped
    assert read_jsonl(tmp_path / "rows.jsonl") == [{"audio": name}, {"audio": "fine ü"}]


def test_libsndfile_names_a_utf8_path_as_written(tmp_path: Path):
    path = tmp_path / "notes ü.wav"
    path.write_text("not audio")
    with pytest.raises(UnreadableAudioError) as error:
        open_audio(str(path))
    assert str(error.value).startswith(f"unreadable audio file {path}: a text file, not audio ")  # the str, not b'…'
    assert error.value.reason == "a text file, not audio (it starts 'not audio')"


def test_a_flac_cut_short_is_an_error_naming_file_and_frame(tmp_path: Path):
    """libsndfile trusts the header's length and fails mid-file: a named error, not its bare
    "Internal psf_fseek() failed" from inside a training step."""
    path = tmp_path / "cut.flac"
    sf.write(path, TONE, 16_000)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptAudioError, match=rf"^{path}: unreadable in the block after frame \d+ \(.* s; .*\): the file is cut short or corrupt"):
        load_audio(str(path), 16_000, checked_at_load=True)  # as a dataset reads it (its load checked its end)


def test_a_clip_of_only_zeros_is_read_with_one_warning_per_file(tmp_path: Path, caplog):
    """Before: digital silence (a muted or failed capture) was read and summarised without a word."""
    path = str(tmp_path / "muted.wav")
    sf.write(path, np.zeros(8_000, dtype=np.int16), 16_000, subtype="PCM_16")
    sf.write(tmp_path / "quiet.wav", np.r_[np.zeros(7_999), 1e-4], 16_000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="speechsum.data.audio"):
        for _ in range(3):  # e.g. once per epoch
            assert not load_audio(path, 16_000).any()
        load_audio(str(tmp_path / "quiet.wav"), 16_000)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: every sample is 0 (digital silence, 0.50 s): there is no speech in it to summarise; check the "
        "recording (a muted or failed capture?) or drop it"]


@pytest.mark.parametrize(("samples", "level"), [(np.full(8_000, 0.5), "is 0.5"), (np.full(8_000, -1.0), "is -1"),
                                               (np.r_[np.full(4_000, 1e-9), np.zeros(4_000)], "lies within 0 and 1e-09")])
def test_a_clip_whose_samples_never_change_is_digital_silence_too(tmp_path: Path, samples: np.ndarray, level: str):
    """A constant offset (a stuck capture) or float samples far below any recording's step hold no sound either;
    they were read and summarised without a word (only exact zeros were said). A tone at -120 dBFS is sound: no
    note. (Not denormals here: a command flushes them to 0, utils/denormals.py, and so may an earlier test.)"""
    path = str(tmp_path / "still.wav")
    sf.write(path, samples.astype(np.float32), 16_000, subtype="FLOAT")
    notes: list[str] = []
    load_audio(path, 16_000, notes=notes)
    assert notes == [f"{path}: every sample {level} (a constant offset: digital silence, 0.50 s): there is no sound, no "
                     "speech in it to summarise; check the recording (a stuck or failed capture?) or drop it"]
    assert [note.kind for note in notes] == ["silent"]
    sf.write(path, 1e-6 * TONE[:8_000], 16_000, subtype="FLOAT")
    notes.clear()
    load_audio(path, 16_000, notes=notes)
    assert notes == []


def test_stereo_whose_channels_cancel_is_read_with_one_warning_naming_it(tmp_path: Path, caplog):
    """Before: a stereo file with one channel in opposite phase averaged to silence (or to 1 % of it) without a word."""
    tone = TONE[:8_000]
    exact, near = str(tmp_path / "exact.wav"), str(tmp_path / "near.wav")
    sf.write(exact, np.stack([tone, -tone], axis=1), 16_000, subtype="FLOAT")
    sf.write(near, np.stack([tone, -0.98 * tone], axis=1), 16_000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="speechsum.data.audio"):
        for _ in range(2):  # e.g. once per epoch
            assert not load_audio(exact, 16_000).any()
        assert np.abs(load_audio(near, 16_000)).max() == pytest.approx(0.003, abs=1e-4)
    advice = ("one channel is in opposite phase to another, so the model hears (almost) nothing; keep one channel (e.g. "
              "`sox in.wav out.wav remix 1`) or invert one before mixing (`sox in.wav out.wav remix 1,2i`)")
    assert [r.getMessage() for r in caplog.records] == [
        f"{exact}: its channels cancel when averaged to mono (the mix is to exact zeros, 0.50 s): {advice}",
        f"{near}: its channels cancel when averaged to mono (the mix is 40 dB below its channels, 0.50 s): {advice}"]


@pytest.mark.parametrize("right", ["same", "silent", "other_voice"])
def test_stereo_whose_channels_add_is_read_as_their_mean_without_a_warning(tmp_path: Path, caplog, right):
    tone = TONE[:8_000]
    other = (0.3 * np.sin(2 * np.pi * 123 * np.arange(8_000) / 16_000)).astype(np.float32)
    channels = np.stack([tone, {"same": tone, "silent": 0 * tone, "other_voice": other}[right]], axis=1)
    path = str(tmp_path / "stereo.wav")
    sf.write(path, channels, 16_000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING):
        waveform = load_audio(path, 16_000)
    assert np.array_equal(waveform, channels.mean(axis=1))
    assert caplog.records == []


def test_a_hundred_independent_channels_are_no_cancelling_but_opposite_ones_are(tmp_path: Path):
    """Independent channels mix 10*log10(N) dB below them (128: 21 dB), which passed the 20-dB mark: a
    microphone array's recording was said to cancel. Channels in opposite phase among 128 still are
    (44 dB: the margin for 128 is 38 dB)."""
    noise = np.random.default_rng(0).standard_normal((16_000, 128)).astype(np.float32) * 0.05
    independent, opposite = str(tmp_path / "array.wav"), str(tmp_path / "opposite.wav")
    sf.write(independent, noise, 16_000, subtype="FLOAT")
    sf.write(opposite, np.concatenate([noise[:, :64], -0.9 * noise[:, :64]], axis=1), 16_000, subtype="FLOAT")
    notes: list[str] = []
    load_audio(independent, 16_000, notes=notes)
    assert notes == []
    load_audio(opposite, 16_000, notes=notes)
    assert [note.kind for note in notes] == ["silent"]
    assert notes[0].startswith(f"{opposite}: its channels cancel when averaged to mono (the mix is 44 dB below")

"""load_audio: mono downmix, resampling to 16 kHz, the too-long policy, output dtype and layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import AudioTooLongError, load_audio


def sine(frequency: float, samples: int, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(samples) / rate)).astype(np.float32)


def write(path: Path, data: np.ndarray, rate: int) -> str:
    sf.write(path, data, rate, subtype="FLOAT")
    return str(path)


def peak_frequency(waveform: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return float(np.fft.rfftfreq(len(waveform), 1 / rate)[int(np.argmax(spectrum))])


def test_opposite_stereo_channels_cancel(tmp_path: Path):
    x = sine(440, 8_000, 16_000)
    waveform = load_audio(write(tmp_path / "s.wav", np.stack([x, -x], axis=1), 16_000), 16_000)
    assert waveform.shape == (8_000,)
    np.testing.assert_array_equal(waveform, np.zeros(8_000, dtype=np.float32))


def test_stereo_is_channel_mean(tmp_path: Path):
    left = sine(440, 4_000, 16_000, amplitude=0.6)
    right = np.full(4_000, 0.2, dtype=np.float32)
    waveform = load_audio(write(tmp_path / "s.wav", np.stack([left, right], axis=1), 16_000), 16_000)
    np.testing.assert_allclose(waveform, (left + right) / 2, atol=1e-7)


def test_multichannel_is_mean_of_all_channels(tmp_path: Path):
    channels = np.stack([np.full(1_000, v, dtype=np.float32) for v in (0.1, 0.2, 0.6)], axis=1)
    waveform = load_audio(write(tmp_path / "c.wav", channels, 16_000), 16_000)
    np.testing.assert_allclose(waveform, np.full(1_000, 0.3), atol=1e-7)


def test_16k_mono_passes_through_unchanged(tmp_path: Path):
    x = sine(1_000, 12_345, 16_000)
    waveform = load_audio(write(tmp_path / "m.wav", x, 16_000), 16_000)
    np.testing.assert_array_equal(waveform, x)


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100])
@pytest.mark.parametrize("frequency", [440.0, 1_000.0, 3_000.0])
def test_resampled_to_16k_keeps_length_and_pitch(tmp_path: Path, rate: int, frequency: float):
    samples = int(1.25 * rate)
    waveform = load_audio(write(tmp_path / "r.wav", sine(frequency, samples, rate), rate), 16_000)
    assert abs(len(waveform) - samples * 16_000 / rate) <= 1
    assert abs(len(waveform) - 20_000) <= 1
    assert abs(peak_frequency(waveform, 16_000) - frequency) <= 16_000 / len(waveform)
    assert 0.45 < np.abs(waveform[1_000:-1_000]).max() < 0.55  # amplitude survives resampling


def test_resampled_stereo(tmp_path: Path):
    x = sine(700, 44_100, 44_100)
    waveform = load_audio(write(tmp_path / "s.wav", np.stack([x, x], axis=1), 44_100), 16_000)
    assert len(waveform) == 16_000
    assert peak_frequency(waveform, 16_000) == 700.0


@pytest.mark.parametrize(
    ("path_data", "kwargs"),
    [
        ("mono16", {}),
        ("stereo16", {}),
        ("mono22", {}),
        ("stereo44", {"max_seconds": 0.5}),
        ("mono16", {"max_seconds": 0.25}),
    ],
)
def test_output_is_contiguous_float32_1d(tmp_path: Path, path_data: str, kwargs: dict):
    rate = {"mono16": 16_000, "stereo16": 16_000, "mono22": 22_050, "stereo44": 44_100}[path_data]
    x = sine(440, rate, rate)
    data = np.stack([x, 0.5 * x], axis=1) if path_data.startswith("stereo") else x
    path = tmp_path / "a.wav"
    sf.write(path, data, rate, subtype="PCM_16")  # integer samples on disk
    waveform = load_audio(str(path), 16_000, **kwargs)
    assert waveform.dtype == np.float32
    assert waveform.ndim == 1
    assert waveform.flags["C_CONTIGUOUS"]
    assert np.abs(waveform).max() <= 1.0


@pytest.mark.parametrize(
    ("max_seconds", "expected"), [(1.25, 20_000), (0.5, 8_000), (1.001, 16_016), (0.35, 5_600)]
)
def test_truncate_cuts_to_exactly_max_seconds(tmp_path: Path, max_seconds: float, expected: int):
    x = sine(440, 32_000, 16_000)
    waveform = load_audio(write(tmp_path / "t.wav", x, 16_000), 16_000, max_seconds=max_seconds)
    assert len(waveform) == expected
    np.testing.assert_array_equal(waveform, x[:expected])  # the start is kept


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100])
def test_truncate_at_other_rates(tmp_path: Path, rate: int):
    path = write(tmp_path / "t.wav", sine(440, 3 * rate, rate), rate)
    waveform = load_audio(path, 16_000, max_seconds=0.7, too_long="truncate")
    assert abs(len(waveform) - 11_200) <= 1


def test_truncate_is_the_default_policy(tmp_path: Path):
    waveform = load_audio(
        write(tmp_path / "t.wav", sine(440, 32_000, 16_000), 16_000), 16_000, max_seconds=1.0
    )
    assert len(waveform) == 16_000


def test_short_clip_is_not_touched_by_the_limit(tmp_path: Path):
    x = sine(440, 10_000, 16_000)
    for policy in ("truncate", "error"):
        waveform = load_audio(write(tmp_path / "s.wav", x, 16_000), 16_000, max_seconds=1.0, too_long=policy)
        np.testing.assert_array_equal(waveform, x)


@pytest.mark.parametrize(
    ("samples", "rate", "max_seconds"),
    [(16_000, 16_000, 1.0), (16_016, 16_000, 1.001), (15_435, 22_050, 0.7)],
)
def test_clip_exactly_at_the_limit_is_accepted(tmp_path: Path, samples: int, rate: int, max_seconds: float):
    path = write(tmp_path / "e.wav", sine(440, samples, rate), rate)
    waveform = load_audio(path, 16_000, max_seconds=max_seconds, too_long="error")
    assert abs(len(waveform) - samples * 16_000 / rate) <= 1


def test_error_policy_raises_naming_the_file(tmp_path: Path):
    path = write(tmp_path / "long_clip.wav", sine(440, 16_001, 16_000), 16_000)
    with pytest.raises(AudioTooLongError) as info:
        load_audio(path, 16_000, max_seconds=1.0, too_long="error")
    message = str(info.value)
    assert message.startswith(f"{path}: 1.00 s (16001 samples at 16000 Hz; the limit is 16000) is longer than "
                              "max_audio_seconds=1.0")
    assert isinstance(info.value, ValueError)


def test_error_policy_measures_length_at_the_file_rate(tmp_path: Path):
    path = write(tmp_path / "long.wav", sine(440, 2 * 44_100, 44_100), 44_100)
    with pytest.raises(AudioTooLongError, match=r"long\.wav: 2\.00 s is longer than max_audio_seconds=1\.5"):
        load_audio(path, 16_000, max_seconds=1.5, too_long="error")

"""Very long audio: load_audio reads (and resamples) only the frames the length policy keeps."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import (
    TRUSTED_SECONDS,
    AudioTooLongError,
    CorruptAudioError,
    audio_seconds,
    load_audio,
)
from tests.data.wavs import poke, sparse_wav

TWO_HOURS = 2 * 3600


def traced(call):
    """``(result, peak bytes numpy and Python allocated, seconds)`` of ``call()``."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak, time.perf_counter() - start


@pytest.mark.parametrize(
    ("rate", "channels", "subtype"),
    [(16_000, 1, "PCM_16"), (8_000, 1, "PCM_16"), (44_100, 2, "PCM_16"), (48_000, 1, "FLOAT")],
)
def test_two_hour_file_truncated_to_30_s_reads_30_s(tmp_path: Path, rate: int, channels: int, subtype: str):
    """Reading the whole file would allocate 0.9–5 GB; a 30 s slice is at most 30 s × 48 kHz × 4 B = 5.8 MB."""
    path = sparse_wav(tmp_path / "long.wav", TWO_HOURS * rate, rate, subtype, channels)
    waveform, peak, seconds = traced(lambda: load_audio(str(path), 16_000, max_seconds=30.0))
    assert waveform.shape == (480_000,)
    assert waveform.dtype == np.float32
    np.testing.assert_array_equal(waveform, np.zeros(480_000, dtype=np.float32))
    slice_bytes = 30 * rate * 4  # the mono float32 slice at the file's rate
    output_bytes = 480_000 * 4
    block_bytes = 65_536 * channels * 4
    assert peak < slice_bytes + output_bytes + 2 * block_bytes + 500_000
    assert seconds < 5


def test_resampling_sees_only_the_kept_slice(tmp_path: Path):
    """A tone in the first 30 s of a 2 h 22.05 kHz file, a click after it: the output is the tone only."""
    rate = 22_050
    path = sparse_wav(tmp_path / "long.wav", TWO_HOURS * rate, rate, "FLOAT")
    tone = (0.5 * np.sin(2 * np.pi * 1_000 * np.arange(30 * rate) / rate)).astype(np.float32)
    with path.open("r+b") as handle:
        handle.seek(44)
        handle.write(tone.tobytes())
    poke(path, 31 * rate, np.nan)  # past the limit: never read, so never an error
    waveform, peak, _ = traced(lambda: load_audio(str(path), 16_000, max_seconds=30.0))
    assert waveform.shape == (480_000,)
    assert 0.45 < np.abs(waveform[16_000:-16_000]).max() < 0.55
    assert peak < 30 * rate * 4 + 480_000 * 4 + 1_000_000


def test_error_policy_refuses_a_long_file_from_its_header(tmp_path: Path):
    path = sparse_wav(tmp_path / "long.wav", TWO_HOURS * 16_000, 16_000)
    with pytest.raises(AudioTooLongError) as info:
        traced(lambda: load_audio(str(path), 16_000, max_seconds=30.0, too_long="error"))
    assert str(info.value) == (
        f"{path}: 7200.00 s is longer than max_audio_seconds=30.0; raise the limit or set too_long_audio='truncate'"
    )


def test_error_policy_reads_nothing_before_refusing(tmp_path: Path):
    path = sparse_wav(tmp_path / "long.wav", TWO_HOURS * 16_000, 16_000)

    def refuse():
        try:
            load_audio(str(path), 16_000, max_seconds=30.0, too_long="error")
        except AudioTooLongError:
            return "refused"

    result, peak, _ = traced(refuse)
    assert result == "refused"
    assert peak < 100_000  # not even one block


def test_ten_minutes_truncated_to_30_s_allocates_30_s_worth(tmp_path: Path):
    """The brief's bound: 10 min at 16 kHz, keep 30 s → ~1.9 MB of samples, not 38 MB."""
    path = sparse_wav(tmp_path / "ten.wav", 600 * 16_000, 16_000, "FLOAT")
    waveform, peak, _ = traced(lambda: load_audio(str(path), 16_000, max_seconds=30.0))
    assert waveform.shape == (480_000,)
    assert 480_000 * 4 <= peak < 480_000 * 4 + 1_000_000


def test_header_longer_than_the_data_reads_what_is_there(tmp_path: Path):
    """A file cut short after its header was written: the 70 000 frames present are returned."""
    path = sparse_wav(tmp_path / "cut.wav", 100_000, 16_000, "PCM_16")
    with path.open("r+b") as handle:
        handle.truncate(44 + 2 * 70_000)
    np.testing.assert_array_equal(load_audio(str(path), 16_000), np.zeros(70_000, dtype=np.float32))


def test_a_flac_header_promising_weeks_allocates_an_hour_at_most(tmp_path: Path):
    """A corrupt STREAMINFO (here: the largest sample count, 2**36 - 1: 50 days at 16 kHz) in a 1-s
    file: the read buffer was allocated from the header, a MemoryError (275 GB) instead of the file's error."""
    path = tmp_path / "liar.flac"
    sf.write(path, np.full(16_000, 0.25, dtype=np.float32), 16_000, format="FLAC")
    data = bytearray(path.read_bytes())
    data[21] |= 0x0F  # the 36-bit sample count: low nibble of byte 21, bytes 22-25
    data[22:26] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames == 2**36 - 1

    def read() -> None:
        with pytest.raises(CorruptAudioError, match=f"^{path}: unreadable in the block after frame 0 "):
            load_audio(str(path), 16_000, checked_at_load=True)  # read as a dataset does: not its end first

    _, peak, _ = traced(read)
    assert peak < TRUSTED_SECONDS * 16_000 * 4 + 1_000_000


def test_a_clip_longer_than_the_trusted_hour_is_read_whole(tmp_path: Path):
    """Past TRUSTED_SECONDS the buffer grows as frames arrive: every frame is kept, in order."""
    frames = 2 * TRUSTED_SECONDS * 1_000 + 123  # two hours and a bit at 1 kHz
    path = sparse_wav(tmp_path / "long.wav", frames, 1_000, "FLOAT")
    poke(path, 5, 0.5)
    poke(path, frames - 1, -0.25)
    waveform = load_audio(str(path), 1_000)
    assert waveform.shape == (frames,)
    assert (waveform[5], waveform[-1], float(np.abs(waveform).sum())) == (0.5, -0.25, 0.75)


@pytest.mark.parametrize(("size", "promise"), [
    (0xC000_0000, True), (0x8000_1000, True), (0xFFFF_E000, True),  # 2-4 GiB: hours of a meeting rig's 48 kHz stereo
    (0xFFFF_FFFF, False), (0x7FFF_F000, False),  # a pipe's and arecord's "unknown"
    (0x7FFF_EFFF, False), (0x7FFF_FFFF, False),  # sox's, rounded down to whole 24-bit frames; 2**31 - 1
])
def test_a_wav_header_promising_gigabytes_its_file_lacks_is_warned_about_as_cut_short(tmp_path: Path, size: int,
                                                                                       promise: bool, caplog):
    """A header giving 2-4 GiB of samples (a multi-hour recording) on a file that holds a second (a download that
    stopped) was read as that second without a word: every data size from 0x7FFFF000 up was taken for a streaming
    writer's "unknown". Only those placeholders are now; the header is all that is written here, not gigabytes."""
    path = sparse_wav(tmp_path / "meeting.wav", 16_000, 16_000)
    data = bytearray(path.read_bytes())
    data[40:44] = size.to_bytes(4, "little")  # the data chunk's size; the file holds 1 s
    data[4:8] = ((size + 36) & 0xFFFF_FFFF).to_bytes(4, "little")  # a RIFF size that counts it
    path.write_bytes(bytes(data))
    assert audio_seconds(str(path)) == 1.0
    assert len(load_audio(str(path), 16_000)) == 16_000
    warned = [r.getMessage() for r in caplog.records if "cut short" in r.getMessage()]
    if promise:
        assert warned == [f"{path}: its header's data chunk is larger than the file (libsndfile: 'data : {size} (should "
                          "be 32000)'): cut short (a download or copy that stopped?); its 1.00 s are read: re-fetch it or "
                          "drop it"]
    else:
        assert not warned

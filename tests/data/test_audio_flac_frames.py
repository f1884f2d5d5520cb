"""FLAC files told by their frames' headers: a STREAMINFO counting fewer samples than the frames hold is
read whole (libsndfile stopped at the count without a word), and bare frames without the 'fLaC' marker are
named so (they were called an AAC stream, whose sync code is much alike)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import UnreadableAudioError, audio_seconds, load_audio
from speechsum.data.flac_frames import counted_samples
from speechsum.data.flac_streams import flac_frames_offset
from speechsum.data.not_audio import not_audio

RATE = 16_000
TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * RATE) / RATE)).astype(np.float32)  # 3 s


ID3V2 = b"ID3\x04\x00\x00\x00\x00\x01\x00" + bytes(128)  # an ID3v2.4 tag of 128 bytes (syncsafe size) before it


def undercounted(path: Path, waveform: np.ndarray, samples: int, rate: int = RATE, tag: bytes = b"") -> Path:
    """A FLAC file of ``waveform`` (after ``tag``) whose STREAMINFO counts ``samples`` (its 36 bits at bytes 21-25)."""
    sf.write(path, waveform, rate, format="FLAC")
    data = bytearray(path.read_bytes())
    data[21:26] = (int.from_bytes(data[21:26], "big") & ~((1 << 36) - 1) | samples).to_bytes(5, "big")
    path.write_bytes(tag + bytes(data))
    return path


@pytest.mark.parametrize("channels, tag", [(1, b""), (2, b""), (1, ID3V2)], ids=["mono", "stereo", "id3v2"])
def test_a_flac_whose_streaminfo_undercounts_its_samples_is_read_whole(tmp_path: Path, channels: int, tag: bytes):
    """Before: libsndfile read the 1 s STREAMINFO counted of the 3 s, and the rest was lost without a word."""
    waveform = np.stack([TONE] * channels, axis=1) if channels > 1 else TONE
    path = undercounted(tmp_path / "clip.flac", waveform, RATE, tag=tag)
    assert sf.info(str(path)).frames == RATE  # what libsndfile takes from the header
    assert counted_samples(path.read_bytes()) == 3 * RATE
    assert audio_seconds(str(path)) == 3.0
    read = load_audio(str(path), RATE)
    assert len(read) == 3 * RATE
    assert np.array_equal(read, load_audio(str(undercounted(tmp_path / "right.flac", waveform, 3 * RATE)), RATE))


def test_a_flac_counted_right_or_without_a_count_is_not_walked_into_another_length(tmp_path: Path):
    right = undercounted(tmp_path / "right.flac", TONE, 3 * RATE).read_bytes()
    assert counted_samples(right) is None  # its count is the frames'
    assert counted_samples(undercounted(tmp_path / "unknown.flac", TONE, 0).read_bytes()) is None  # read to its end
    assert counted_samples(undercounted(tmp_path / "over.flac", TONE, 4 * RATE).read_bytes()) is None  # cut short


def test_bare_flac_frames_are_named_so_not_aac(tmp_path: Path):
    data = undercounted(tmp_path / "clip.flac", TONE, 3 * RATE).read_bytes()
    bare = tmp_path / "bare.flac"
    bare.write_bytes(data[flac_frames_offset(data) :])
    with pytest.raises(UnreadableAudioError) as info:
        load_audio(str(bare), RATE)
    assert str(info.value) == (
        f"unreadable audio file {bare}: bare FLAC audio frames (from frame 0 on) without the 'fLaC' marker and "
        "STREAMINFO header a FLAC file starts with (its start lost, or a tool that wrote only the frames), which "
        "libsndfile cannot read; re-export or re-fetch it whole, or drop it")
    # ADTS streams with FLAC's sync bytes (MPEG-2, 0xFFF8/0xFFF9) stay AAC: their frame lengths lead on
    adts = bytes.fromhex("fff95080") + bytes([0x20, 0x1F, 0xFC]) + bytes(249)  # a 256-byte frame
    assert not_audio(adts * 2).reason == "an AAC stream (ADTS), which libsndfile does not read"

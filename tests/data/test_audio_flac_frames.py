"""FLAC files told by their frames' headers: a STREAMINFO counting fewer samples than the frames hold is
read whole (libsndfile stopped at the count without a word), and bare frames without the 'fLaC' marker are
named so (they were called an AAC stream, whose sync code is much alike)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import CorruptAudioError, UnreadableAudioError, audio_seconds, load_audio
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


def test_a_flac_cut_short_before_the_truncation_point_is_refused_at_load_not_when_read(tmp_path: Path):
    """Under too_long_audio: truncate the check of a FLAC's end was skipped (its first part is what is read): one cut
    before max_audio_seconds passed its load at its header's length and failed when its batch was read ("unreadable
    in the block after frame 0"), deep in training. The samples before the cut point are decoded at load instead."""
    path = tmp_path / "cut.flac"
    sf.write(path, TONE, RATE, format="FLAC")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # 3 s by its header, about 1.5 s there
    with pytest.raises(CorruptAudioError, match="^" + re.escape(
            f"{path}: its header gives 3.00 s, but libsndfile cannot decode the 4096 samples before 2.00 s, where "
            "max_audio_seconds cuts it (")):
        audio_seconds(str(path), truncate_at=2.0)
    with pytest.raises(CorruptAudioError):  # what its batch would have met
        load_audio(str(path), RATE, max_seconds=2.0)
    assert audio_seconds(str(path), truncate_at=1.0) == 3.0  # its first second is there: read, cut to 1 s
    assert len(load_audio(str(path), RATE, max_seconds=1.0)) == RATE


@pytest.mark.parametrize("cut", ["at its last frame", "inside its last frame"])
def test_a_flac_one_frame_short_of_its_streaminfo_says_cut_short_when_read_without_a_manifest(tmp_path: Path, cut: str):
    """A FLAC missing its last frame, read by `speechsum summarize` or the server (no manifest load checked its end):
    the error was "unreadable in the block after frame 0 (0.00 s; Internal psf_fseek() failed.)", of a file that
    decodes up to its last frame; it says what its load says: its header's length, and that it was cut short."""
    whole = tmp_path / "whole.flac"
    sf.write(whole, TONE, RATE, format="FLAC")
    data = whole.read_bytes()
    last = data.rindex(b"\xff\xf8")  # the last frame's sync code (fixed block size)
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: last if cut == "at its last frame" else last + 10])
    expected = (f"{path}: its header gives 3.00 s, but libsndfile cannot decode its last 4096 samples (")
    with pytest.raises(CorruptAudioError) as info:
        load_audio(str(path), RATE)
    assert str(info.value).startswith(expected)
    assert str(info.value).endswith("): cut short (a download or copy that stopped?) or damaged at its end; re-fetch "
                                    "it or drop it")
    with pytest.raises(CorruptAudioError, match=re.escape(expected)):
        audio_seconds(str(path))  # as its load says it

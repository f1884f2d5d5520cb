"""Headers that say something libsndfile cannot take: an AU data size of 2 GiB or more, more channels than it reads,
a CAF data chunk larger than the file, a WAV sample size it does not read. Each is read where its samples are there, with a warning saying what is
wrong, or refused saying that, not "empty" nor "damaged or cut short"."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import CorruptAudioError, UnreadableAudioError, load_audio
from speechsum.data.manifest import ManifestError, load_manifest

TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)).astype(np.float32)  # 1 s at 16 kHz
CUT = "cut short (a download or copy that stopped?)"


def manifest_of(folder: Path, audio: str) -> Path:
    path = folder / "train.jsonl"
    path.write_text(json.dumps({"id": "a", "audio": audio, "instruction": "Sum up.", "summary": "ok"}) + "\n")
    return path


@pytest.mark.parametrize("size", [0x7FFFFFFF, 0xC0000000, 0xFFFFFFFE])
def test_an_au_whose_header_gives_gigabytes_is_read_with_a_cut_short_warning_not_called_empty(tmp_path: Path, size: int,
                                                                                              caplog):
    """libsndfile reads none of an AU's samples when its data size is 2 GiB or more (not 0xFFFFFFFF, "unknown"), and
    the file was "empty audio file (0 samples)"; below 2 GiB it reads what is there with a cut-short warning."""
    whole, path = tmp_path / "whole.au", tmp_path / "call.au"
    sf.write(whole, TONE, 16_000, format="AU", subtype="PCM_16")
    data = bytearray(whole.read_bytes())
    data[8:12] = struct.pack(">I", size)
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames == 0  # libsndfile alone
    examples, _ = load_manifest(manifest_of(tmp_path, path.name))
    assert examples[0].duration == 1.0
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: its header's data size is {size} bytes, but the file holds 32000 of them: {CUT}; its 1.00 s are read: "
        "re-fetch it or drop it"]
    np.testing.assert_array_equal(load_audio(str(path), 16_000), sf.read(whole, dtype="float32")[0])  # its samples
    path.write_bytes(bytes(data[:24]))  # its header alone
    with pytest.raises(CorruptAudioError, match=re.escape(
            f"{path}: its header's data size is {size} bytes, but the file holds 0 of them: {CUT}, and libsndfile reads "
            "no sample of it: re-fetch it or drop it")):
        load_audio(str(path), 16_000)


def test_a_wav_of_more_channels_than_libsndfile_reads_says_so_not_damaged_or_cut_short(tmp_path: Path):
    """libsndfile reads at most 1024 channels; a WAV of 1025 (a microphone array's, or a damaged header) was "damaged
    or cut short; re-fetch or re-export it"."""
    channels = 1025
    fmt = struct.pack("<HHIIHH", 1, channels, 16_000, 16_000 * 2 * channels, 2 * channels, 16)
    samples = bytes(2 * channels * 100)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(samples)) + samples
    path = tmp_path / "array.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    expected = ("its WAV header gives 1025 channels; libsndfile reads at most 1024; if the recording has that many "
                "channels (a microphone array), export the ones you need (at most 1024) from its source; else its "
                "header is damaged: re-export it; or drop it")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest_of(tmp_path, path.name))
    assert info.value.line == 1 and info.value.reason == f"field 'audio': unreadable audio file {path}: {expected}"
    with pytest.raises(UnreadableAudioError, match=re.escape(expected)):
        load_audio(str(path), 16_000)


def test_a_caf_cut_short_is_read_with_a_cut_short_warning_not_called_damaged(tmp_path: Path, caplog):
    """libsndfile calls a CAF whose data chunk is much larger than the file "malformed", and it was refused as
    "damaged or cut short"; one missing less was read with a cut-short warning. Both are read so now."""
    whole, path = tmp_path / "whole.caf", tmp_path / "memo.caf"
    sf.write(whole, TONE, 16_000, format="CAF", subtype="PCM_16")
    data = whole.read_bytes()
    start = data.index(b"data") + 16  # the data chunk's header (12 bytes) and edit count (4)
    path.write_bytes(data[: start + 14_000])  # 7000 of its 16000 frames
    examples, _ = load_manifest(manifest_of(tmp_path, path.name))
    assert examples[0].duration == 7_000 / 16_000
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: its header's data size is 32004 bytes, but the file holds 14004 of them: {CUT}; its 0.44 s are read: "
        "re-fetch it or drop it"]
    np.testing.assert_array_equal(load_audio(str(path), 16_000), sf.read(whole, 7_000, dtype="float32")[0])


@pytest.mark.parametrize(("tag", "bits", "kind", "sizes"), [(1, 0, "integer", "1 to 32"), (1, 64, "integer", "1 to 32"),
                                                            (3, 16, "float", "32 or 64")])
def test_a_wav_of_a_sample_size_libsndfile_does_not_read_says_so_not_damaged_or_cut_short(tmp_path: Path, tag: int,
                                                                                          bits: int, kind: str,
                                                                                          sizes: str):
    """libsndfile's "unimplemented format" / "Unspecified internal error" for a header's sample size was said as
    "damaged or cut short; re-fetch or re-export it", of a whole file."""
    samples = (TONE * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", tag, 1, 16_000, 32_000, 2, bits)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(samples)) + samples
    path = tmp_path / "odd.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    expected = (f"its header gives {bits}-bit {kind} samples, which libsndfile does not read ({kind} samples of {sizes} "
                "bits): the header is damaged, or its writer used a sample format libsndfile lacks; re-export it from "
                "its source as 16-bit PCM, or drop it")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest_of(tmp_path, path.name))
    assert info.value.reason == f"field 'audio': unreadable audio file {path}: {expected}"

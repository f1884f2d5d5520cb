"""MP3 and Ogg files damaged mid-stream (bytes overwritten, not cut short): their decoder skips what
it cannot read, and libsndfile read a part of the file as the whole recording, with a "cut short?"
warning at most. Now refused, at load where the last Ogg page's granule position tells (one look at
the file's end), else when the file is read, naming the manifest line; skip mode counts it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import CorruptAudioError, UnreadableAudioError, audio_seconds, load_audio
from speechsum.data.dataset import SpeechSumDataset
from speechsum.data.loader import SkippedExample
from speechsum.data.manifest import ManifestError, load_manifest
from speechsum.data.ogg_pages import ogg_end_frames

SUBTYPES = {"mp3": ("MP3", "MPEG_LAYER_III"), "ogg": ("OGG", "VORBIS"), "opus": ("OGG", "OPUS")}
REDO = "re-export or re-fetch it, or drop it"


def encoded(path: Path, seconds: float, rate: int = 16_000, channels: int = 1) -> Path:
    """A 300-Hz tone of ``seconds`` encoded as ``path``'s extension says."""
    t = np.arange(round(rate * seconds)) / rate
    tone = np.repeat((0.3 * np.sin(2 * np.pi * 300 * t))[:, None], channels, axis=1).astype(np.float32)
    container, subtype = SUBTYPES[path.suffix[1:]]
    sf.write(path, tone, rate, format=container, subtype=subtype)
    return path


def damaged(path: Path, seconds: float, where: float) -> Path:
    """``path`` encoded, then 400 bytes from ``where`` (a fraction of its size) overwritten with 0xFF."""
    data = encoded(path, seconds).read_bytes()
    at = int(len(data) * where)
    path.write_bytes(data[:at] + b"\xff" * 400 + data[at + 400 :])
    return path


def mid_stream(path: Path, header: str, decoded: str) -> str:
    return (f"{path}: its header gives {header} s, but libsndfile decodes only {decoded} s of it and the file is not "
            f"cut short: damaged mid-stream (bytes overwritten or lost); {REDO}")


@pytest.mark.parametrize(("name", "decoded"), [("bad.mp3", "2.27"), ("bad.opus", "4.00"), ("bad.ogg", "17.70")])
def test_a_file_damaged_mid_stream_is_an_error_when_read_not_a_part_read_as_the_whole(tmp_path: Path, name: str,
                                                                                       decoded: str, caplog):
    """Before: the MP3 read 2.27 s of its 5, the Opus 4 of its 5, with "cut short? Using what is there." logged."""
    seconds = 20 if name.endswith(".ogg") else 5
    bad = damaged(tmp_path / name, seconds, 0.5)
    assert audio_seconds(str(bad)) == seconds  # its header, page and frame walks pass: found when read
    with caplog.at_level(logging.WARNING), pytest.raises(CorruptAudioError) as info:
        load_audio(str(bad), 16_000)
    assert str(info.value) == mid_stream(bad, f"{seconds}.00", decoded)
    assert caplog.records == []


def test_read_through_a_manifest_it_names_the_line_and_skip_mode_counts_it(tmp_path: Path):
    bad, _ = damaged(tmp_path / "bad.mp3", 5, 0.5), encoded(tmp_path / "good.mp3", 5)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": name, "audio": f"{name}.mp3", "instruction": "Sum up."}) + "\n"
                                for name in ("good", "bad")))
    examples, skipped = load_manifest(manifest)
    assert ([e.duration for e in examples], skipped) == ([5.0, 5.0], [])
    with pytest.raises(ManifestError) as info:
        _ = SpeechSumDataset(examples, 16_000)[1]
    assert (info.value.line, info.value.reason) == (2, (
        f"field 'audio': {mid_stream(bad, '5.00', '2.27')} (found when its batch was read; its header passed at "
        "load): replace the file or remove the example, or set on_bad_example: skip (speechsum evaluate: "
        "--on-bad-example skip) to leave such examples out"))
    dataset = SpeechSumDataset(examples, 16_000, on_bad_example="skip")
    assert len(dataset[0][1]) == 80_000
    item = dataset[1]
    assert isinstance(item, SkippedExample) and (item.id, item.line) == ("bad", 2)
    assert item.reason.startswith(f"field 'audio': {mid_stream(bad, '5.00', '2.27')} (found when its batch was read")


def test_an_ogg_file_whose_last_page_is_damaged_is_refused_at_load(tmp_path: Path):
    """libsndfile takes an Ogg file's length from the last page it can read: 15.70 s of a 20 s recording, without
    a word, at load and when read. Its last page's header still says 20 s."""
    bad = damaged(tmp_path / "bad.ogg", 20, 0.97)
    expected = (f"unreadable audio file {bad}: its last Ogg page ends at 20.00 s but libsndfile reads only 15.70 s "
                f"(it cannot read a page of it: damaged); {REDO}")
    with pytest.raises(UnreadableAudioError) as info:
        audio_seconds(str(bad))
    assert str(info.value) == expected
    with pytest.raises(UnreadableAudioError) as info:
        load_audio(str(bad), 16_000)
    assert str(info.value) == expected


def test_an_ogg_file_of_which_no_sample_decodes_is_said_damaged_not_cut_short(tmp_path: Path):
    """It ends with its end-of-stream page; it was called "cut short (a download or copy that stopped?)"."""
    bad = damaged(tmp_path / "bad.ogg", 5, 0.5)
    with pytest.raises(CorruptAudioError) as info:
        load_audio(str(bad), 16_000, checked_at_load=True)  # a dataset's read: the end was looked at when it loaded
    assert str(info.value) == (
        f"{bad}: it ends with its end-of-stream page, so it is not cut short, but libsndfile cannot read a page of it "
        "(libsndfile: 'Ogg : File ended unexpectedly without an End-Of-Stream flag set.'): damaged mid-stream, and "
        f"libsndfile reads no sample of it: {REDO}")


@pytest.mark.parametrize("name", ["a.ogg", "a.opus"])
@pytest.mark.parametrize("rate", [8_000, 16_000, 48_000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("seconds", [0.01, 3.3, 31.0])
def test_whole_ogg_files_end_where_libsndfile_reads_them_to(tmp_path: Path, name: str, rate: int, channels: int,
                                                          seconds: float):
    path = encoded(tmp_path / name, seconds, rate, channels)
    with sf.SoundFile(path) as handle:
        end, frames = ogg_end_frames(path.read_bytes(), handle.samplerate), handle.frames
    assert end.frames == frames
    if name.endswith(".opus"):  # its packets' TOC bytes give the first page's samples exactly: no start allowed
        assert end.start == 0
    else:  # Vorbis: the first page's packets decode to at least their short blocks, so a start up to the rest
        assert 0 <= end.start <= end.frames
    assert audio_seconds(str(path)) == pytest.approx(seconds, abs=0.02)
    assert len(load_audio(str(path), rate)) == frames


def test_the_server_refuses_an_upload_damaged_mid_stream(tmp_path: Path):
    """It summarised the 2.27 s libsndfile decoded as the whole recording."""
    from speechsum.serving.protocol import APIError, AudioInput
    from speechsum.serving.speech_backend import decode_audio

    data = damaged(tmp_path / "bad.mp3", 5, 0.5).read_bytes()
    with pytest.raises(APIError) as error:
        decode_audio(AudioInput(data, "mp3", 0, "input_audio"), 16_000, None)
    assert (error.value.status, str(error.value)) == (400, (
        "input_audio: not a readable mp3 file (its header gives 5.00 s, but libsndfile decodes only 2.27 s of it and "
        f"the file is not cut short: damaged mid-stream (bytes overwritten or lost); {REDO})."))


def ogg_crc(page: bytes) -> int:
    """Ogg's page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, initial 0)."""
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def shifted_granules(data: bytes, shift: int) -> bytes:
    """``data``'s Ogg pages with ``shift`` added to every positive granule position (a part cut from a live stream
    keeps its place in it), checksums rewritten."""
    out, offset = bytearray(data), 0
    while offset < len(out):
        size = 27 + out[offset + 26] + sum(out[offset + 27 : offset + 27 + out[offset + 26]])
        if (granule := int.from_bytes(out[offset + 6 : offset + 14], "little", signed=True)) > 0:
            out[offset + 6 : offset + 14] = (granule + shift).to_bytes(8, "little", signed=True)
        out[offset + 22 : offset + 26] = bytes(4)
        out[offset + 22 : offset + 26] = ogg_crc(bytes(out[offset : offset + size])).to_bytes(4, "little")
        offset += size
    return bytes(out)


@pytest.mark.parametrize("name", ["a.ogg", "a.opus"])
def test_a_stream_whose_granule_positions_start_late_is_read_whole_not_called_damaged(tmp_path: Path, name: str):
    """Its last page's granule is far past what libsndfile reads (it subtracts the start): no damage."""
    path = encoded(tmp_path / name, 5)
    path.write_bytes(shifted_granules(path.read_bytes(), 4_800_000))
    end = ogg_end_frames(path.read_bytes(), 16_000)
    assert end.frames - end.start <= 80_256  # what libsndfile reads of it (Opus: 80 000)
    assert audio_seconds(str(path)) == pytest.approx(5.0, abs=0.02)
    assert len(load_audio(str(path), 16_000)) == pytest.approx(80_000, abs=300)


@pytest.mark.parametrize(("name", "frames"), [("a.ogg", 80_256), ("a.opus", 80_000)])
@pytest.mark.parametrize("shift", [4_800, 48_000])
def test_a_stream_starting_a_little_late_is_read_whole_not_called_damaged(tmp_path: Path, name: str, frames: int,
                                                                         shift: int):
    """A start offset within what the first page's packets could decode to (an Opus page of 49 packets of 20 ms hides
    up to 0.9 s; a Vorbis one more) was not seen as late: libsndfile subtracts it, and the whole file was refused at
    load as "damaged" (its last Ogg page ends at 6.00 s but libsndfile reads only 5.00 s)."""
    path = encoded(tmp_path / name, 5)
    path.write_bytes(shifted_granules(path.read_bytes(), shift))
    assert audio_seconds(str(path)) == frames / 16_000
    assert len(load_audio(str(path), 16_000)) == frames
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": name, "instruction": "Sum up."}) + "\n")
    examples, skipped = load_manifest(manifest)
    assert ([e.duration for e in examples], skipped) == ([frames / 16_000], [])


@pytest.mark.parametrize("shift", [4_800, 48_000])
def test_an_opus_stream_starting_late_is_still_refused_when_its_last_page_is_damaged(tmp_path: Path, shift: int):
    """Its first page's packets give its start exactly, so a late start hides no damage at the end."""
    bad = encoded(tmp_path / "bad.opus", 20)
    bad.write_bytes(shifted_granules(bad.read_bytes(), shift))
    data = bad.read_bytes()
    at = int(len(data) * 0.97)
    bad.write_bytes(data[:at] + b"\xff" * 400 + data[at + 400 :])
    with sf.SoundFile(bad) as handle:
        read = handle.frames / 16_000
    assert read < 19.5
    with pytest.raises(UnreadableAudioError) as info:
        audio_seconds(str(bad))
    assert str(info.value) == (f"unreadable audio file {bad}: its last Ogg page ends at {20 + shift / 48_000:.2f} s but "
                               f"libsndfile reads only {read:.2f} s (it cannot read a page of it: damaged); {REDO}")


def test_an_mp3_ending_in_a_tag_libsndfile_does_not_skip_reads_its_frames(tmp_path: Path, caplog):
    """A constant-bitrate MP3 without a frame counter whose last bytes are an APEv2 tag with cover art: its header's
    length (the file's size over the bitrate) counts the tag, mpg123 gives up on it, and the read failed: "cut short
    or corrupt", deep in training, for a whole recording. Bytes that are no frames with frames after them (damage in
    the middle) stay an error."""
    from tests.data.test_audio_odd_files import cbr_mp3

    data, info = cbr_mp3(10.0)
    whole, tagged, damaged_inside = tmp_path / "whole.mp3", tmp_path / "tagged.mp3", tmp_path / "inside.mp3"
    tag = b"APETAGEX" + bytes(24) + b"\x89PNG" + b"\x11" * 50_000 + b"APETAGEX" + bytes(24)
    whole.write_bytes(data[info:])
    tagged.write_bytes(data[info:] + tag)
    damaged_inside.write_bytes(data[info : info + 360 * 100] + tag + data[info + 360 * 100 :])
    expected = load_audio(str(whole), 16_000)
    with caplog.at_level(logging.WARNING, logger="speechsum.data.cut_short"):
        np.testing.assert_allclose(load_audio(str(tagged), 16_000, checked_at_load=True), expected, atol=1e-6)
    assert [r.getMessage() for r in caplog.records] == [
        f"{tagged}: its last {len(tag)} bytes are no MP3 frames (a tag libsndfile does not skip, e.g. APEv2 or "
        "Lyrics3?) and its header's length counts them: its frames are read, 10.08 s"]
    np.testing.assert_allclose(load_audio(str(tagged), 16_000, max_seconds=9.0), expected[:144_000], atol=1e-6)
    with pytest.raises(CorruptAudioError, match="unreadable in the block after frame 0 "):
        load_audio(str(damaged_inside), 16_000)

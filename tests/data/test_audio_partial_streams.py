"""Files libsndfile reads only the first part of, without an error: MP3s whose first frame gives a
length shorter than their frames hold (files joined together; a variable-bitrate file without a
Xing header) and chained Ogg files (streams one after another). They are refused naming the file
and what to do, where they were read in part without a word; tagged MP3s and multiplexed Ogg
streams, which libsndfile reads whole, still read."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import AudioTooLongError, UnreadableAudioError, audio_seconds, load_audio
from speechsum.data.cut_short import damage
from speechsum.data.hf_dataset import NamedAudio
from speechsum.data.manifest import ManifestError, load_manifest
from speechsum.data.mp3_frames import first_frame, mp3_samples, mp3_walk
from speechsum.data.ogg_pages import ogg_links
from tests.data.test_datamodule import copy_manifest, datamodule, read_lines, write_lines

RATE = 16_000


def mp3_bytes(path: Path, seconds: float) -> bytes:
    """A tone (loudness varying, so the bitrate does) written as a VBR MP3 with a Xing header."""
    time = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * time) * (1 + np.sin(3 * time)) / 2, RATE, format="MP3")
    return path.read_bytes()


def test_mp3s_joined_together_are_refused_naming_the_file_and_both_lengths(tmp_path: Path):
    part = mp3_bytes(tmp_path / "part.mp3", 2.0)
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(part + part)
    assert sf.info(str(joined)).frames == 2 * RATE  # libsndfile reads the first part only
    assert mp3_samples(part) is None  # its Xing header counts the bytes of the whole file: no walk needed
    assert mp3_samples(part + part) > 4 * RATE  # the first part's header counts half: walked
    for read in (lambda: load_audio(str(joined), RATE), lambda: audio_seconds(str(joined)),
                 lambda: audio_seconds(NamedAudio(joined.read_bytes(), "train[3].audio"))):
        with pytest.raises(UnreadableAudioError) as info:
            read()
        message = str(info.value)
        assert "reads only the first 2.00 s" in message and "ffmpeg -i in.mp3 out.flac" in message
        assert str(joined) in message or "train[3].audio" in message
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "joined.mp3", "instruction": "Sum up.", "summary": "ok"}) + "\n")
    with pytest.raises(ManifestError, match=r"train\.jsonl:1: field 'audio': .*joined\.mp3.*MP3 frames hold 4\.\d\d s"):
        load_manifest(manifest)


def test_an_mp3_with_id3_tags_at_both_ends_reads_whole(tmp_path: Path):
    size = 50_000  # an ID3v2 tag (cover art, say) before the frames, an ID3v1 tag after them
    id3v2 = b"ID3\x03\x00\x00" + bytes([(size >> 21) & 127, (size >> 14) & 127, (size >> 7) & 127, size & 127])
    path = tmp_path / "tagged.mp3"
    path.write_bytes(id3v2 + bytes(size) + mp3_bytes(tmp_path / "plain.mp3", 2.0) + b"TAG" + bytes(125))
    assert audio_seconds(str(path)) == 2.0
    assert len(load_audio(str(path), RATE)) == 2 * RATE


@pytest.mark.parametrize(("name", "subtype"), [("joined.ogg", "VORBIS"), ("joined.opus", "OPUS")])
def test_chained_ogg_files_are_refused_naming_the_file_and_what_is_read(tmp_path: Path, name: str, subtype: str):
    part = tmp_path / f"part-{name}"
    sf.write(part, 0.3 * np.sin(np.arange(2 * RATE) / 5), RATE, format="OGG", subtype=subtype)
    joined = tmp_path / name
    joined.write_bytes(part.read_bytes() * 3)
    assert len(sf.read(joined)[0]) == 2 * RATE  # libsndfile reads the first stream only
    with pytest.raises(UnreadableAudioError) as info:
        audio_seconds(str(joined))
    assert str(info.value) == (
        f"unreadable audio file {joined}: it holds 3 Ogg streams one after another (chained: files joined together, "
        "or a web-radio capture), and libsndfile reads only the first (2.00 s); decode it with a tool that reads every "
        "stream of a chained file, e.g. `sox in.ogg out.flac`, and use that")
    with pytest.raises(UnreadableAudioError, match="it holds 3 Ogg streams"):
        load_audio(str(joined), RATE)
    assert audio_seconds(str(part)) == 2.0  # one stream: read whole


def ogg_page(kind: int, serial: int, payload: bytes = b"x") -> bytes:
    """One Ogg page (its CRC left 0: the walk reads headers only) of header type ``kind``."""
    return b"OggS" + bytes([0, kind]) + bytes(8) + serial.to_bytes(4, "little") + bytes(8) + bytes([1, len(payload)]) + payload


def test_streams_multiplexed_side_by_side_are_one_link():
    """An audio stream with a Skeleton track beside it begins two streams at once: one link, not chained."""
    multiplexed = ogg_page(2, 1) + ogg_page(2, 2) + ogg_page(0, 1) + ogg_page(4, 2) + ogg_page(4, 1)
    assert ogg_links(multiplexed) == 1
    assert ogg_links(multiplexed + ogg_page(2, 3) + ogg_page(4, 3)) == 2
    assert ogg_links(multiplexed + b"junk after the last page") == 1


def test_a_prefix_libsndfile_holds_is_read_from_a_joined_mp3_under_truncation(tmp_path: Path):
    """Truncated to its first second, a joined MP3 loses nothing (and its frames are not walked)."""
    part = mp3_bytes(tmp_path / "part.mp3", 2.0)
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(part + part)
    assert len(load_audio(str(joined), RATE, max_seconds=1.0)) == RATE
    with pytest.raises(UnreadableAudioError, match="reads only the first 2.00 s"):
        load_audio(str(joined), RATE, max_seconds=3.0)  # more than libsndfile reads: refused


@pytest.mark.parametrize(("too_long", "seconds", "loads"), [("truncate", 1.0, True), ("truncate", 3.0, False),
                                                              ("error", 5.0, False)])
def test_a_datamodule_takes_a_joined_mp3_only_when_it_reads_a_part_libsndfile_holds(
        tmp_path: Path, toy_data, tiny_composed, too_long: str, seconds: float, loads: bool):
    """Cut to its first second, a joined MP3 (2 s that libsndfile reads, 4 s in all) was read right
    before the check, so it is no bad line; read to more than the 2 s, it is one."""
    part = mp3_bytes(tmp_path / "part.mp3", 2.0)
    (tmp_path / "joined.mp3").write_bytes(part + part)
    lines = read_lines(copy_manifest(toy_data["train"], tmp_path / "c.jsonl"))
    lines.append({"id": "joined", "audio": str(tmp_path / "joined.mp3"), "instruction": "x", "summary": "y"})
    manifest = write_lines(tmp_path / "train.jsonl", lines)
    dm = datamodule(tiny_composed.processor, train_manifest=str(manifest), max_audio_seconds=seconds,
                    too_long_audio=too_long)
    if not loads:
        with pytest.raises(ManifestError, match=rf"^{manifest}:25: field 'audio': unreadable audio file .*joined\.mp3: "
                           "its MP3 frames hold 4"):
            dm.setup("fit")
        return
    dm.setup("fit")
    example, waveform = dm.datasets["train"][24]
    assert example.id == "joined" and len(waveform) == RATE


def test_the_whole_file_walk_runs_at_load_not_on_every_read_of_a_dataset(tmp_path: Path, monkeypatch):
    """An MP3's frame walk (and a FLAC's stream search) runs when the manifest loads; the dataset reads
    the clip every epoch without walking it again. ``load_audio`` alone (serve, summarize) still walks."""
    from speechsum.data import audio
    from speechsum.data.dataset import SpeechSumDataset

    mp3_bytes(tmp_path / "a.mp3", 1.0)
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "a.mp3", "instruction": "Sum up.", "summary": "ok"}) + "\n")
    walks = []
    monkeypatch.setattr(audio, "walk_file", lambda source, walk: walks.append(source) or walk(Path(source).read_bytes()))
    examples, _ = load_manifest(manifest)
    assert walks == [str(tmp_path / "a.mp3")]
    dataset = SpeechSumDataset(examples, RATE)
    epochs = [dataset[0][1] for _ in range(3)]
    assert len(epochs[0]) > 0.9 * RATE and all(np.array_equal(epochs[0], waveform) for waveform in epochs)
    assert len(walks) == 1
    load_audio(str(tmp_path / "a.mp3"), RATE)
    assert len(walks) == 2


@pytest.mark.parametrize("channels", [1, 2])
def test_a_nist_sphere_file_cut_short_is_read_with_a_warning_naming_both_lengths(tmp_path: Path, channels: int, caplog):
    """A NIST SPHERE file (TIMIT, Switchboard, WSJ) cut short: libsndfile reads what is there and logs nothing,
    so half a recording was read as the whole without a word; its header's sample_count says how long it is."""
    path = tmp_path / "si1027.sph"
    tone = 0.3 * np.sin(np.arange(2 * RATE) * 0.1)
    sf.write(path, np.repeat(tone[:, None], channels, axis=1), RATE, format="NIST", subtype="PCM_16")
    assert audio_seconds(str(path)) == 2.0 and not caplog.records  # whole: no word
    path.write_bytes(path.read_bytes()[: 1024 + RATE * 2 * channels])  # the header, then 1 s of its 2
    seconds = audio_seconds(str(path))
    assert seconds == 1.0
    [record] = caplog.records
    assert record.getMessage() == (f"{path}: its header's sample_count is {2 * RATE} (2.00 s), but the file holds {RATE} "
                                   "(1.00 s): cut short (a download or copy that stopped?); its 1.00 s are read: "
                                   "re-fetch it or drop it")
    with sf.SoundFile(str(path)) as handle:  # what `speechsum serve` refuses an upload by
        assert damage(handle, NamedAudio(path.read_bytes(), "upload")).cut


VBR_RATE = 44_100


def vbr_frames(tmp_path: Path) -> bytes:
    """The frames of a 6-s variable-bitrate MP3 without its first, the Xing header (a stream capture has none)."""
    time = np.arange(6 * VBR_RATE) / VBR_RATE
    noise = 0.2 * np.random.default_rng(0).standard_normal(len(time)) * (time > 3)  # louder: more bits per frame
    sf.write(tmp_path / "vbr.mp3", 0.3 * np.sin(2 * np.pi * 440 * time) * (1 + np.sin(3 * time)) / 2 + noise, VBR_RATE,
             format="MP3", bitrate_mode="VARIABLE")
    data = (tmp_path / "vbr.mp3").read_bytes()
    assert b"Xing" in data[:417] and data[417:419] == b"\xff\xfb"  # its first frame, 417 bytes, is the Xing header
    return data[417:]


@pytest.mark.parametrize("lead", [b"\x00" * 500, b"\xff\x00" * 40])
def test_a_vbr_mp3_behind_bytes_that_are_no_frame_is_refused_not_read_in_part(tmp_path: Path, lead: bytes):
    """Padding after a tag, or a stream captured from mid-frame: the frame walk stopped at the first byte and
    counted nothing, so a variable-bitrate file without a Xing header, of which libsndfile reads the length its
    first frame gives, passed and was read in part (1.7 s of 6) without a word. The walk resyncs as a decoder does."""
    path = tmp_path / "capture.mp3"
    path.write_bytes(lead + vbr_frames(tmp_path))
    assert sf.info(str(path)).duration < 3  # what libsndfile reads of it
    assert mp3_samples(path.read_bytes()) > 5.9 * VBR_RATE
    for read in (lambda: load_audio(str(path), RATE), lambda: audio_seconds(str(path))):
        with pytest.raises(UnreadableAudioError, match=r"its MP3 frames hold 6\.0\d s but libsndfile reads only the first"):
            read()


def test_a_vbr_mp3_captured_from_mid_frame_is_read_whole_at_its_frames_length(tmp_path: Path):
    """libsndfile's length for it (its size over the first whole frame's bitrate) is more than its frames hold: it
    passed at load with that length and failed when its batch was read as "damaged mid-stream", a whole stream."""
    path = tmp_path / "capture.mp3"
    path.write_bytes(vbr_frames(tmp_path)[100:])  # the capture starts inside a frame
    assert sf.info(str(path)).duration > 6.5
    seconds = audio_seconds(str(path))
    assert 5.95 < seconds < 6.05
    assert len(load_audio(str(path), RATE)) == round(seconds * RATE)


def test_an_mp3_in_a_wav_cut_short_gets_the_length_it_holds_at_load(tmp_path: Path, caplog):
    """A WAV of MP3 frames (WAVE format tag 0x55, as call recorders write) cut short: libsndfile's length is its
    'fact' chunk's, so its load said 2.00 s (and "its 2.00 s are read") of a file that holds 0.87 s."""
    rate = 32_000
    sf.write(tmp_path / "frames.mp3", 0.3 * np.sin(np.arange(2 * rate) * 0.1), rate, format="MP3",
             bitrate_mode="CONSTANT")
    frames = (tmp_path / "frames.mp3").read_bytes()
    fmt = struct.pack("<HHIIHHHHIHHH", 0x55, 1, rate, 16_000, 1, 0, 12, 1, 2, 576, 1, 1393)  # MPEGLAYER3WAVEFORMAT
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, 2 * rate)
    body += b"data" + struct.pack("<I", len(frames)) + frames
    path = tmp_path / "call.wav"
    path.write_bytes((b"RIFF" + struct.pack("<I", len(body)) + body)[: 60 + len(frames) // 2])
    assert sf.info(str(path)).frames == 2 * rate  # the fact chunk's count
    seconds = audio_seconds(str(path))
    assert len(load_audio(str(path), rate)) == round(seconds * rate) and 0.8 < seconds < 1.0
    # under too_long_audio: error its read measures it as its load did (it was refused by the 'fact' count's 2 s)
    assert len(load_audio(str(path), rate, 1.0, "error", checked_at_load=True)) == round(seconds * rate)
    [warning] = [r.getMessage() for r in caplog.records if "data chunk is larger than the file" in r.getMessage()]
    assert warning.endswith(f"cut short (a download or copy that stopped?); its {seconds:.2f} s are read: re-fetch it "
                            "or drop it")


def test_an_mp3_whose_xing_header_counts_millions_of_frames_is_read_at_its_frames_length(tmp_path: Path):
    """A damaged Xing frame count (10 million frames in 50 kB: 72 hours) that the header's byte count, which reaches
    the end of the file, let stand: its load said 261224 s (cut to max_audio_seconds for batching, refused under
    too_long_audio: error as too long) and its read failed as "damaged mid-stream". Its frames are counted now."""
    path = tmp_path / "podcast.mp3"
    data = bytearray(mp3_bytes(tmp_path / "plain.mp3", 3.0))
    at = data.find(b"Xing")
    assert int.from_bytes(data[at + 4 : at + 8], "big") & 3 == 3  # frame and byte counts
    data[at + 8 : at + 12] = (10_000_000).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).duration > 200_000
    seconds = audio_seconds(str(path))
    assert 2.95 < seconds < 3.1
    assert abs(len(load_audio(str(path), RATE)) - 3 * RATE) <= 1152


def test_an_mp3_cut_short_within_the_limit_is_read_under_the_error_policy_as_its_load_measured_it(tmp_path: Path):
    """Its load measures it by its frames (1.5 s of a Xing header's 3 s) and passes it under too_long_audio: error
    with max_audio_seconds=2; its read checked the header's 3 s and refused it as too long, deep in training."""
    path = tmp_path / "half.mp3"
    data = mp3_bytes(tmp_path / "whole.mp3", 3.0)
    path.write_bytes(data[: len(data) // 2])
    seconds = audio_seconds(str(path), max_seconds=2.0)
    assert 1.2 < seconds < 1.7
    assert abs(len(load_audio(str(path), RATE, 2.0, "error", checked_at_load=True)) - seconds * RATE) <= 1152
    with pytest.raises(AudioTooLongError, match=r"half\.mp3: 1\.\d\d s is longer than max_audio_seconds=1"):
        load_audio(str(path), RATE, 1.0, "error")  # by its frames, not its header's 3 s


def misread_mp3(tmp_path: Path, kind: str) -> Path:
    """An MP3 whose frames all there are, but whose length libsndfile misreads: a VBR stream captured from mid-frame
    (its estimate from the first frame's bitrate) or a podcast whose Xing frame count is damaged."""
    if kind == "capture":
        path = tmp_path / "capture.mp3"
        path.write_bytes(vbr_frames(tmp_path)[100:])
        return path
    data = bytearray(mp3_bytes(tmp_path / "plain.mp3", 3.0))
    at = data.find(b"Xing")
    data[at + 8 : at + 12] = (10_000_000).to_bytes(4, "big")
    path = tmp_path / "podcast.mp3"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kind", ["capture", "damaged-count"])
def test_an_mp3_whose_length_libsndfile_misreads_is_read_whole_without_a_cut_short_warning(tmp_path: Path, kind: str,
                                                                                             caplog):
    """Nothing of it is missing, yet its load warned "cut short (a download or copy that stopped?) ... re-fetch it",
    every read of it (each epoch) "the header promises ... frames but the file ends after ...: cut short?", and the
    server refused it as cut short (400 "send the whole file")."""
    from speechsum.serving.protocol import AudioInput
    from speechsum.serving.speech_backend import decode_audio

    path = misread_mp3(tmp_path, kind)
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": path.name, "instruction": "Sum up.", "summary": "ok"}) + "\n")
    examples, _ = load_manifest(manifest)
    read = load_audio(str(path), RATE, checked_at_load=True)
    assert abs(len(read) - examples[0].duration * RATE) <= 1152  # the length its load measured
    assert len(load_audio(str(path), RATE, warn_cut_short=True)) == len(read)
    assert len(decode_audio(AudioInput(path.read_bytes(), "mp3", 0, "input_audio"), RATE, None)) == len(read)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []


def test_an_mp3_cut_short_is_warned_about_once_at_load_not_again_at_every_read(tmp_path: Path, caplog):
    """A VBR MP3 cut in half (its Xing header counts 3 s): its load says so; each read of it said it again."""
    path = tmp_path / "half.mp3"
    data = mp3_bytes(tmp_path / "whole.mp3", 3.0)
    path.write_bytes(data[: len(data) // 2])
    seconds = audio_seconds(str(path))
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: its first frame's header counts 3.00 s but its frames hold {seconds:.2f} s: cut short (a download or "
        f"copy that stopped?); its {seconds:.2f} s are read: re-fetch it or drop it"]
    caplog.clear()
    for _ in range(2):  # two epochs
        assert abs(len(load_audio(str(path), RATE, checked_at_load=True)) - seconds * RATE) <= 1152
    assert caplog.records == []


@pytest.mark.parametrize("rate", [11_025, 22_050, 44_100])
def test_a_constant_bitrate_mp3_without_an_info_frame_reads_its_loads_length_without_a_warning(tmp_path: Path,
                                                                                               rate: int, caplog):
    """At these rates its frames' sizes vary by a padding byte, and libsndfile's length (its size over the bitrate)
    is a few frames' worth more than they hold: every read of a whole file warned "the header promises ... frames
    but the file ends after ...: cut short?", and its load's duration (for batching) was that estimate. Its length
    is what its frames hold (with the encoder's delay and padding, which only an Info frame records: ~0.03-0.17 s
    more than was encoded, at any rate; decoders agree)."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, 1, format="MP3", bitrate_mode="CONSTANT", compression_level=0.5) as handle:
        handle.write(0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * rate) / rate))
    data = buffer.getvalue()
    path = tmp_path / "plain.mp3"
    path.write_bytes(data[first_frame(data, data.index(b"Info")) :])  # its frames after the Info frame
    assert b"Info" not in path.read_bytes()[:64] and mp3_walk(path.read_bytes()).rest == 0  # frames to its end
    assert sf.info(str(path)).frames > mp3_samples(path.read_bytes())  # libsndfile's estimate
    seconds = audio_seconds(str(path))
    assert seconds == mp3_samples(path.read_bytes()) / rate
    assert len(load_audio(str(path), rate, checked_at_load=True)) == round(seconds * rate)
    assert len(load_audio(str(path), rate, warn_cut_short=True)) == round(seconds * rate)
    assert caplog.records == []

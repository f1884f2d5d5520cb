"""Files libsndfile cannot open, or that hold no sample at the model's rate: the error names the file,
says why in words that fit (not libsndfile's "File does not exist" for a file that exists) and what
to do, at load (manifest line, Hugging Face row) and when a batch is read."""

from __future__ import annotations

import io
import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import (
    FORMATS_ADVICE,
    RAW_REASON,
    CorruptAudioError,
    EmptyAudioError,
    UnreadableAudioError,
    load_audio,
)
from speechsum.data.cut_short import damage
from speechsum.data.dataset import SpeechSumDataset
from speechsum.data.loader import SkippedExample
from speechsum.data.manifest import ManifestError, load_manifest

TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)).astype(np.float32)  # 1 s at 16 kHz


def manifest_of(folder: Path, audio: str) -> Path:
    path = folder / "train.jsonl"
    path.write_text(json.dumps({"id": "a", "audio": audio, "instruction": "Sum up.", "summary": "ok"}) + "\n")
    return path


def load_error(folder: Path, audio: str) -> str:
    manifest = manifest_of(folder, audio)
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.line == 1
    return info.value.reason


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("call.m4a", b"\x00\x00\x00\x20ftypM4A " + bytes(600), "an MP4/M4A file (AAC or ALAC audio), which libsndfile does not read"),
    ("call.wma", bytes.fromhex("3026b2758e66cf11") + bytes(600), "an ASF (WMA/WMV) file, which libsndfile does not read"),
    ("call.aac", bytes.fromhex("fff15080") + bytes(600), "an AAC stream (ADTS), which libsndfile does not read"),
    ("call.webm", bytes.fromhex("1a45dfa3") + bytes(600), "a Matroska/WebM file, which libsndfile does not read"),
    # a phone's voice memo: its magic is text, and it was 'Format not recognised'
    ("memo.amr", b"#!AMR\n" + bytes(600), "an AMR file (a phone's voice recording), which libsndfile does not read"),
    # no MP3 frame anywhere: libsndfile says "File does not exist or is not a regular file", of a file that does
    ("noise.mp3", np.random.default_rng(0).integers(0, 255, 4_000, dtype=np.uint8).tobytes(),
     "no audio libsndfile can decode (it reports: File does not exist or is not a regular file (possibly a pipe?))"),
])
def test_a_file_libsndfile_cannot_open_says_which_formats_work(tmp_path: Path, name: str, data: bytes, reason: str):
    """The example command converts the file's own extension (it said `ffmpeg -i in.m4a out.wav` of a .webm)."""
    (tmp_path / name).write_bytes(data)
    suffix = name.rsplit(".", 1)[1]
    assert load_error(tmp_path, name) == (f"field 'audio': unreadable audio file {tmp_path / name}: {reason}; "
                                          + FORMATS_ADVICE.replace("`ffmpeg -i in.m4a out.wav`", f"`ffmpeg -i in.{suffix} out.wav`"))
    unnamed = {"m4a": "m4a", "wma": "wma", "aac": "aac", "webm": "webm", "amr": "amr", "mp3": "m4a"}[suffix]
    (tmp_path / "call").write_bytes(data)  # no extension: the one its bytes show
    assert load_error(tmp_path, "call").endswith(f"convert it, e.g. `ffmpeg -i in.{unnamed} out.wav`, or drop it")


_RNG_BYTES = np.random.default_rng(2).bytes
AVI = b"RIFF" + struct.pack("<I", 4 + 2400) + b"AVI LIST" + struct.pack("<I", 200) + b"hdrlavih" + _RNG_BYTES(2400)


@pytest.mark.parametrize(("name", "data", "reason", "advice"), [
    # a camera's video: it starts "RIFF" as a WAV does, and was called a WAV damaged or cut short (re-fetch it)
    ("meeting.avi", AVI, "an AVI video file (RIFF form type 'AVI ', not a WAV's 'WAVE'), which libsndfile does not read",
     FORMATS_ADVICE.replace("in.m4a", "in.avi")),
    ("cover.wav", b"RIFF" + struct.pack("<I", 1004) + b"WEBPVP8 " + _RNG_BYTES(1000),
     "a WebP image, not audio (RIFF form type 'WEBP', not a WAV's 'WAVE'), which libsndfile does not read",
     "replace it with the recording, or drop it"),
    # an old QuickTime movie (no 'ftyp' atom), a camcorder's transport stream, a Flash video, an MPEG-2 program stream
    ("talk.mov", struct.pack(">I", 8) + b"wide" + struct.pack(">I", 1008) + b"mdat" + _RNG_BYTES(1000),
     "a QuickTime/MP4 file (.mov, .mp4: video or AAC audio), which libsndfile does not read",
     FORMATS_ADVICE.replace("in.m4a", "in.mov")),
    ("clip.mts", b"".join(b"\x47\x40\x00\x10" + _RNG_BYTES(184) for _ in range(8)),
     "an MPEG transport stream (video: .ts, .mts, .m2ts), which libsndfile does not read",
     FORMATS_ADVICE.replace("in.m4a", "in.mts")),
    ("stream.flv", b"FLV\x01\x05\x00\x00\x00\x09" + _RNG_BYTES(1000), "a Flash video (FLV) file, which libsndfile does not read",
     FORMATS_ADVICE.replace("in.m4a", "in.flv")),
    ("dvd.vob", b"\x00\x00\x01\xba\x44" + _RNG_BYTES(1000),
     "an MPEG program stream (MPEG-1/2 video: .mpg, .vob), which libsndfile does not read",
     FORMATS_ADVICE.replace("in.m4a", "in.vob")),
])
def test_a_video_or_image_is_named_as_such_not_called_a_damaged_wav(tmp_path: Path, name: str, data: bytes,
                                                                   reason: str, advice: str):
    """An AVI or WebP file was "WAV audio ... damaged or cut short; re-fetch or re-export it" (re-fetching gives
    the same video); a QuickTime, MPEG-TS/PS or FLV video was only "Format not recognised"."""
    (tmp_path / name).write_bytes(data)
    assert load_error(tmp_path, name) == f"field 'audio': unreadable audio file {tmp_path / name}: {reason}; {advice}"
    with pytest.raises(UnreadableAudioError, match=re.escape(reason)):
        load_audio(str(tmp_path / name), 16_000)


@pytest.mark.parametrize("name", ["pcm.raw", "PCM.RAW"])
def test_a_headerless_raw_file_says_how_to_convert_it(tmp_path: Path, name: str):
    """soundfile asked for a sample rate (a TypeError, which `speechsum summarize` did not catch)."""
    sf.write(tmp_path / name, TONE, 16_000, format="RAW", subtype="PCM_16")
    assert load_error(tmp_path, name) == f"field 'audio': unreadable audio file {tmp_path / name}: {RAW_REASON}"
    with pytest.raises(UnreadableAudioError):
        load_audio(str(tmp_path / name), 16_000)


@pytest.mark.parametrize("name, container", [("clip.raw", "WAV"), ("CLIP.RAW", "FLAC")])
def test_a_wav_or_flac_named_raw_is_read_as_what_its_bytes_are(tmp_path: Path, name: str, container: str):
    """soundfile takes a .raw name for headerless samples (it asks for their rate): a WAV or FLAC whose name lies
    was refused as 'a headerless .raw file'; libsndfile reads it by its bytes, as under any other name."""
    sf.write(tmp_path / name, TONE, 16_000, format=container, subtype="PCM_16")
    written = sf.read(io.BytesIO((tmp_path / name).read_bytes()), dtype="float32")[0]  # unnamed: soundfile goes by bytes
    np.testing.assert_array_equal(load_audio(str(tmp_path / name), 16_000), written)
    examples, _ = load_manifest(manifest_of(tmp_path, name))
    assert examples[0].duration == 1.0


def test_broken_and_looping_symbolic_links_are_named_as_such(tmp_path: Path):
    os.symlink(tmp_path / "gone.wav", tmp_path / "dangling.wav")
    os.symlink(tmp_path / "b.wav", tmp_path / "a.wav")
    os.symlink(tmp_path / "a.wav", tmp_path / "b.wav")
    assert load_error(tmp_path, "dangling.wav") == (
        f"field 'audio': {tmp_path / 'dangling.wav'}: a broken symbolic link (to {tmp_path / 'gone.wav'}): "
        "its target is missing, or the links loop")
    assert load_error(tmp_path, "a.wav") == (
        f"field 'audio': {tmp_path / 'a.wav'}: a broken symbolic link (to {tmp_path / 'b.wav'}): "
        "its target is missing, or the links loop")


def test_a_file_gone_since_the_manifest_was_loaded_is_named_when_its_batch_is_read(tmp_path: Path):
    """libsndfile said only "System error"."""
    sf.write(tmp_path / "clip.wav", TONE, 16_000)
    examples, _ = load_manifest(manifest_of(tmp_path, "clip.wav"))
    (tmp_path / "clip.wav").unlink()
    with pytest.raises(ManifestError, match=re.escape(f"field 'audio': {tmp_path / 'clip.wav'}: no such file (found when")):
        SpeechSumDataset(examples, 16_000)[0]


def test_a_clip_with_no_sample_at_the_models_rate_is_a_bad_example(tmp_path: Path):
    """One frame at 44.1 kHz is none at 16 kHz: it passed at load and was read as an empty waveform,
    which the composed backbone turned into a mel frame of padding and Phi-4-MM crashed on."""
    sf.write(tmp_path / "blip.wav", TONE[:1], 44_100)
    examples, _ = load_manifest(manifest_of(tmp_path, "blip.wav"))
    reason = f"{tmp_path / 'blip.wav'}: no samples at 16000 Hz (it holds 1 frame(s) at 44100 Hz); replace the file or drop it"
    with pytest.raises(EmptyAudioError, match=f"^{re.escape(reason)}$"):
        load_audio(str(tmp_path / "blip.wav"), 16_000)
    with pytest.raises(ManifestError, match=re.escape(f"train.jsonl:1: field 'audio': {reason} (found when its batch")):
        SpeechSumDataset(examples, 16_000)[0]
    skipped = SpeechSumDataset(examples, 16_000, on_bad_example="skip")[0]
    assert isinstance(skipped, SkippedExample) and skipped.line == 1 and reason in skipped.reason
    assert load_audio(str(tmp_path / "blip.wav"), 44_100).shape == (1,)  # at its own rate it has its sample


def test_unreadable_audio_is_a_value_error_the_loops_catch(tmp_path: Path):
    (tmp_path / "notes.wav").write_text("not audio")
    with pytest.raises(ValueError, match=re.escape(f"unreadable audio file {tmp_path / 'notes.wav'}: a text file, not audio ")):
        load_audio(str(tmp_path / "notes.wav"), 16_000)


@pytest.mark.parametrize("container", ["WAV", "WAVEX", "AIFF", "W64", "RF64", "AU"])
def test_a_file_cut_short_after_its_header_is_read_as_is_with_a_warning(tmp_path: Path, container: str, caplog):
    """libsndfile reports the frames that are there, so the warning for a header that promises more
    than the data holds never fired for these: a half-downloaded clip trained without a word (an AU
    file, whose size line libsndfile names 'Data Size', until 2026-12-07)."""
    path = tmp_path / f"half.{container.lower()}"
    sf.write(path, TONE, 16_000, format=container, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    examples, _ = load_manifest(manifest_of(tmp_path, path.name))
    assert 0.45 < examples[0].duration < 0.5
    [record] = [r for r in caplog.records if "cut short" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith(f"{path}: its header's data chunk is larger than the file (libsndfile: ")
    assert record.getMessage().endswith(f"its {examples[0].duration:.2f} s are read: re-fetch it or drop it")
    caplog.clear()
    sf.write(path, TONE, 16_000, format=container, subtype="PCM_16")
    load_manifest(manifest_of(tmp_path, path.name))
    assert not [r for r in caplog.records if "cut short" in r.getMessage()]  # a whole file: no word


@pytest.mark.parametrize("placeholder", [0xFFFFFFFF, 0x7FFFF000])
def test_a_streamed_wavs_placeholder_size_is_no_cut(tmp_path: Path, placeholder: int, caplog):
    """ffmpeg writing to a pipe leaves 0xFFFFFFFF, arecord 0x7FFFF000: the whole file is there."""
    path = tmp_path / "streamed.wav"
    sf.write(path, TONE, 16_000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[40:44] = placeholder.to_bytes(4, "little")  # the data chunk's size, after the canonical 36-byte header
    path.write_bytes(bytes(data))
    examples, _ = load_manifest(manifest_of(tmp_path, path.name))
    assert examples[0].duration == 1.0
    assert not [r for r in caplog.records if "cut short" in r.getMessage()]


def chunk(name: bytes, body: bytes) -> bytes:
    """A RIFF chunk: name, size, body, and its pad byte when the size is odd."""
    return name + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)


@pytest.mark.parametrize("placeholder", [0xFFFFFFFF, 0x7FFFF000])
@pytest.mark.parametrize("subtype, frames", [("PCM_16", 16_000), ("PCM_U8", 15_999)])
def test_a_streamed_wav_ending_in_a_tag_chunk_reads_its_samples_alone(tmp_path: Path, placeholder: int, subtype: str,
                                                                     frames: int):
    """Its data size says "to the end", and libsndfile read the LIST (and id3) chunk after the samples
    as samples: 17 frames of a click (PCM_U8: 56, its pad byte and tags). An odd-sized data chunk's pad byte
    (libsndfile writes it) is no sample either."""
    path = tmp_path / "streamed.wav"
    sf.write(path, TONE[:frames], 16_000, subtype=subtype)
    data = bytearray(path.read_bytes())
    data[40:44] = placeholder.to_bytes(4, "little")
    info = chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 14) + b"Lavf58.76.100\0")
    path.write_bytes(bytes(data) + info + chunk(b"id3 ", b"ID3\3\0\0\0\0\0\1\0"))
    waveform = load_audio(str(path), 16_000)
    assert len(waveform) == frames
    np.testing.assert_array_equal(waveform, sf.read(path, frames=frames, dtype="float32")[0])  # the samples written
    examples, _ = load_manifest(manifest_of(tmp_path, path.name))
    assert examples[0].duration == frames / 16_000


@pytest.mark.parametrize("after", [(), (b"LIST",)], ids=["cover-art-last", "tags-after-it"])
def test_a_streamed_wav_ending_in_a_chunk_of_megabytes_reads_its_samples_alone(tmp_path: Path, after: tuple):
    """A tagger that appended an id3 chunk with 5 MB of cover art (and the RIFF size counting it): the chunk began
    more than 4 MiB before the end, where no chunk was looked for, and its bytes were read as 157 s of samples
    (with a LIST chunk after it, from that chunk on)."""
    path = tmp_path / "tagged.wav"
    sf.write(path, TONE, 16_000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[40:44] = (0xFFFFFFFF).to_bytes(4, "little")
    art = b"ID3\4\0\0\0\0\0\0APIC" + bytes(range(256)) * (5_000_000 // 256)
    data += chunk(b"id3 ", art) + b"".join(chunk(name, b"INFOISFT" + struct.pack("<I", 4) + b"abc\0") for name in after)
    data[4:8] = struct.pack("<I", len(data) - 8)  # the tagger's RIFF size
    path.write_bytes(bytes(data))
    waveform = load_audio(str(path), 16_000)
    np.testing.assert_array_equal(waveform, sf.read(path, frames=16_000, dtype="float32")[0])
    examples, _ = load_manifest(manifest_of(tmp_path, path.name))
    assert examples[0].duration == 1.0


def unsized_aiff(path: Path, form: int, ssnd: int, cut: int = 0) -> Path:
    """The 1-s tone as an AIFF whose sizes were never written: FORM size ``form``, COMM frame count 0, SSND size
    ``ssnd``; its last ``cut`` bytes gone (a writer killed in the middle of a frame)."""
    sf.write(path, TONE, 16_000, format="AIFF", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    comm, samples = data.index(b"COMM"), data.index(b"SSND")
    data[4:8], data[comm + 10 : comm + 14], data[samples + 4 : samples + 8] = (
        struct.pack(">I", form), bytes(4), struct.pack(">I", ssnd))
    path.write_bytes(bytes(data[: len(data) - cut]))
    return path


@pytest.mark.parametrize("cut", [0, 1])
def test_an_aiff_whose_writer_was_killed_before_it_wrote_its_sizes_reads_its_samples(tmp_path: Path, cut: int, caplog):
    """libsndfile and sox write an AIFF's header first (COMM: 0 frames; SSND: 8 bytes, its offset and block-size
    fields) and its sizes when the file is closed: a recorder killed mid-write (as libsndfile's own leaves it, seen
    with os._exit before close: FORM 0xFFFFFFF8) was "empty audio file (0 samples)". Its samples are read, a last
    frame cut in the middle left out."""
    path = unsized_aiff(tmp_path / "killed.aiff", 0xFFFFFFF8, 8, cut)
    assert sf.info(str(path)).frames == 0  # libsndfile alone
    whole = tmp_path / "whole.aiff"
    sf.write(whole, TONE, 16_000, format="AIFF", subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(str(path), 16_000), sf.read(whole, 16_000 - cut, dtype="float32")[0])
    examples, _ = load_manifest(manifest_of(tmp_path, path.name))
    assert examples[0].duration == (16_000 - cut) / 16_000
    assert caplog.records == []


def test_an_aiff_whose_ssnd_size_is_0_is_read_whole_without_a_cut_short_warning(tmp_path: Path, caplog):
    """ffmpeg writes an AIFF's sizes as 0 first (FORM, COMM frames, SSND) and fills them in at the end, which
    it cannot to a pipe: libsndfile reads every sample ('SSND : 0 (should be 32008)'), and the file was warned
    about as "larger than the file ... cut short" (serve: a 400, "only its first 1.00 s are read")."""
    path = unsized_aiff(tmp_path / "piped.aiff", 0, 0)
    with sf.SoundFile(path) as handle:
        assert damage(handle, str(path)) is None
    examples, _ = load_manifest(manifest_of(tmp_path, path.name))
    assert examples[0].duration == 1.0
    assert len(load_audio(str(path), 16_000, warn_cut_short=True)) == 16_000
    assert caplog.records == []


def test_an_ogg_vorbis_file_cut_short_is_said_to_be_cut_not_empty(tmp_path: Path):
    """libsndfile reports 0 frames for a Vorbis stream without its last page: the error said "empty
    audio file (0 samples)" of a 4-s clip missing a tenth of its bytes."""
    path = tmp_path / "cut.ogg"
    sf.write(path, np.tile(TONE, 4), 16_000, format="OGG", subtype="VORBIS")
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 9 // 10])
    reason = load_error(tmp_path, path.name)
    assert reason.startswith(f"field 'audio': {path}: its Ogg stream ends without its end-of-stream page (libsndfile: ")
    assert "cut short (a download or copy that stopped?), and libsndfile reads no sample of it: re-fetch it" in reason
    with pytest.raises(CorruptAudioError, match=re.escape(f"{path}: its Ogg stream ends without its end-of-stream page")):
        load_audio(str(path), 16_000)


def test_an_opus_file_cut_short_is_read_as_far_as_it_goes_with_a_warning(tmp_path: Path, caplog):
    path = tmp_path / "cut.opus"
    sf.write(path, np.tile(TONE, 4), 16_000, format="OGG", subtype="OPUS")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    examples, _ = load_manifest(manifest_of(tmp_path, path.name))
    [record] = [r for r in caplog.records if "cut short" in r.getMessage()]
    assert record.getMessage().startswith(f"{path}: its Ogg stream ends without its end-of-stream page (libsndfile: ")
    assert record.getMessage().endswith(f"its {examples[0].duration:.2f} s are read: re-fetch it, or re-encode what is "
                                        "there (e.g. `ffmpeg -i in.ogg out.flac`), or drop it")
    caplog.clear()
    sf.write(path, np.tile(TONE, 4), 16_000, format="OGG", subtype="OPUS")
    load_manifest(manifest_of(tmp_path, path.name))
    assert not [r for r in caplog.records if "cut short" in r.getMessage()]  # a whole file: no word


@pytest.mark.parametrize("riff", [0, 36, 0xFFFFFFFF])
@pytest.mark.parametrize("tags", [False, True])
def test_a_wav_whose_data_size_was_never_written_reads_its_samples(tmp_path: Path, riff: int, tags: bool, caplog):
    """A writer stopped before it wrote the sizes (Python's ``wave`` module writes RIFF 36 and data 0 first; a recorder
    that crashed) leaves "data : 0" before its samples: libsndfile reads none, and the file was refused (before:
    "empty audio file (0 samples)") of a second of speech. Its samples are read, as a streamed WAV's are (a LIST chunk
    after them left out), and a last frame cut in the middle."""
    path, whole = tmp_path / "unfinished.wav", tmp_path / "whole.wav"
    sf.write(whole, TONE, 16_000, subtype="PCM_16")
    data = bytearray(whole.read_bytes())
    data[4:8], data[40:44] = struct.pack("<I", riff), bytes(4)  # the RIFF and data sizes, after the 36-byte header
    info = chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 14) + b"Lavf58.76.100\0")
    path.write_bytes(bytes(data) + info if tags else bytes(data[:-1]))  # untagged: its last frame cut in the middle
    frames = 16_000 if tags else 15_999
    np.testing.assert_array_equal(load_audio(str(path), 16_000), sf.read(whole, frames, dtype="float32")[0])
    examples, _ = load_manifest(manifest_of(tmp_path, path.name))
    assert examples[0].duration == frames / 16_000
    assert caplog.records == []
    sf.write(path, np.zeros(0, np.float32), 16_000, subtype="PCM_16")  # a really empty WAV is still called empty,
    path.write_bytes(path.read_bytes() + info)  # tagged too
    assert load_error(tmp_path, path.name) == f"field 'audio': empty audio file {path} (0 samples): no recording in it; replace it or drop it"


def test_an_rf64_whose_sizes_were_never_written_is_said_so_not_empty(tmp_path: Path):
    """An RF64 recorder (a broadcast one, for recordings past 4 GB) writes its sizes in its ds64 chunk at the end:
    stopped before, they are 0, and the error said "empty audio file (0 samples)" of a second of speech (libsndfile
    logs RF64's stop in hex, which the check of a WAV's "data : 0" did not read)."""
    path = tmp_path / "unfinished.wav"
    sf.write(path, TONE, 16_000, format="RF64", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[20:44] = bytes(24)  # the ds64 chunk's RIFF size, data size and sample count
    path.write_bytes(bytes(data))
    expected = (f"{path}: its header's ds64 chunk gives a data size of 0 bytes, but 32000 bytes that are no chunk "
                "follow its data chunk (samples it does not count: a recording whose writer stopped before it wrote "
                "the sizes?), and libsndfile reads no sample of it: rewrite its ds64 chunk's sizes to count them or "
                "re-export it from its source, or drop it")
    assert load_error(tmp_path, path.name) == f"field 'audio': {expected}"
    with pytest.raises(CorruptAudioError, match=re.escape(expected)):
        load_audio(str(path), 16_000)


def test_samples_a_wav_header_does_not_count_are_warned_about(tmp_path: Path, caplog):
    """A recorder that wrote its sizes at 0.5 s and stopped at 3 s: libsndfile reads 0.5 s, and the
    rest was left out without a word."""
    path = tmp_path / "stopped.wav"
    sf.write(path, np.tile(TONE, 3), 16_000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[40:44] = (16_000).to_bytes(4, "little")  # the data chunk's size: 0.5 s of 16-bit samples
    path.write_bytes(bytes(data))
    examples, _ = load_manifest(manifest_of(tmp_path, path.name))
    assert examples[0].duration == 0.5
    [record] = [r for r in caplog.records if "no chunk" in r.getMessage()]
    assert record.getMessage() == (
        f"{path}: its header's data chunk says 16000 bytes, but 80000 bytes that are no chunk follow it (samples it "
        "does not count: a recording whose writer stopped before it wrote the sizes?); its 0.50 s are read: rewrite "
        "the header, e.g. `sox --ignore-length in.wav out.wav`, or drop it")

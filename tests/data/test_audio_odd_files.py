"""Odd audio files as real data holds them: FLAC files joined byte for byte (libsndfile read the first
silently), MP3s cut short without a frame count (read short silently), WAVs whose chunks libsndfile
cannot use (its words: "No 'data' chunk marker", "SF_INFO struct incomplete"), files that are no
audio at all (a Git LFS pointer, an HTML page, an image, text) and audio files cut inside their
header (its advice was to convert a format it reads). Each is named with what it is and what to do,
at load, with the manifest's file, line and field."""

from __future__ import annotations

import io
import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import (
    FORMATS_ADVICE,
    CorruptAudioError,
    UnreadableAudioError,
    audio_seconds,
    load_audio,
)
from speechsum.data.flac_streams import flac_frames_offset, flac_stream_starts
from speechsum.data.manifest import ManifestError, load_manifest
from speechsum.data.mp3_frames import Mp3Walk, mp3_walk

RATE = 16_000
TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.float32)  # 1 s
REPLACE = "replace it with the recording, or drop it"
DAMAGED = "re-fetch or re-export it, or drop it"


def load_error(folder: Path, audio: str) -> ManifestError:
    manifest = folder / "train.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": audio, "instruction": "Sum up.", "summary": "ok"}) + "\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert (info.value.path, info.value.line) == (str(manifest), 1)
    return info.value


def joined_flac(tmp_path: Path) -> tuple[Path, int]:
    first, second = tmp_path / "first.flac", tmp_path / "second.flac"
    sf.write(first, TONE, RATE)
    sf.write(second, TONE[: RATE // 2], RATE)
    joined = tmp_path / "joined.flac"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    return joined, first.stat().st_size


def test_flac_files_joined_byte_for_byte_are_refused_naming_the_file_and_where_the_second_begins(tmp_path: Path):
    joined, split = joined_flac(tmp_path)
    assert flac_stream_starts((tmp_path / "first.flac").read_bytes()) == [0]
    assert flac_stream_starts(joined.read_bytes()) == [0, split]
    with sf.SoundFile(joined) as handle:
        assert handle.frames == RATE  # libsndfile: the first file's 1 s of the 1.5 s, without a word
    error = load_error(tmp_path, "joined.flac")
    assert error.reason == (
        f"field 'audio': unreadable audio file {joined}: it holds 2 FLAC streams one after another (files joined "
        f"byte for byte, e.g. by `cat`; the second begins at byte {split}), and libsndfile reads only the first "
        "(1.00 s); join the recordings' audio instead (e.g. `sox first.flac second.flac joined.flac`), or keep "
        f"the first stream (`head -c {split} in.flac > first.flac`), or drop it")
    with pytest.raises(UnreadableAudioError, match="2 FLAC streams"):
        load_audio(str(joined), RATE)
    # cut to a part the first stream holds, it reads as any file libsndfile reads a prefix of (as joined MP3s)
    first = sf.read(tmp_path / "first.flac", dtype="float32")[0]
    assert np.array_equal(load_audio(str(joined), RATE, max_seconds=0.5), first[: RATE // 2])


def cbr_mp3(seconds: float = 3.0) -> tuple[bytes, int]:
    """A constant-bitrate MP3 (16 kHz mono, 360-byte frames of 576 samples) and its Info frame's size."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", RATE, 1, format="MP3", bitrate_mode="CONSTANT", compression_level=0.5) as handle:
        handle.write(np.tile(TONE, int(seconds)))
    data = buffer.getvalue()
    assert data[13:17] == b"Info" and data[2] >> 4 == 9  # the frame counter, then 64 kbit/s frames
    return data, 360


def test_a_constant_bitrate_mp3_cut_short_is_read_with_a_warning_naming_its_cut_frame(tmp_path: Path, caplog):
    data, info = cbr_mp3()
    whole, cut = tmp_path / "whole.mp3", tmp_path / "cut.mp3"
    whole.write_bytes(data[info:])  # no Info frame: libsndfile takes the length from the file's size
    cut.write_bytes(data[info:-100])  # a download that stopped mid-frame
    assert mp3_walk(whole.read_bytes()) == Mp3Walk(86 * 576, None, 0)
    assert mp3_walk(cut.read_bytes()) == Mp3Walk(85 * 576, (260, 360), 260)  # the whole frames
    with caplog.at_level(logging.WARNING):
        assert audio_seconds(str(whole)) == 3.096
        assert caplog.records == []
        assert audio_seconds(str(cut)) == 85 * 576 / RATE  # its header (the file's size over the bitrate): 3.086 s
    assert [r.getMessage() for r in caplog.records] == [
        f"{cut}: its last MP3 frame is cut off (260 of its 360 bytes are there): cut short (a download or copy "
        "that stopped?); its 3.06 s are read: re-fetch it or drop it"]
    assert len(load_audio(str(cut), RATE)) == 85 * 576  # what libsndfile reads: the whole frames


def test_an_mp3_with_a_frame_counter_cut_at_a_frame_boundary_is_said_to_hold_less(tmp_path: Path, caplog):
    data, _ = cbr_mp3()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2 // 360 * 360])  # 43 frames: the Info frame and 42 of audio
    with caplog.at_level(logging.WARNING):
        assert audio_seconds(str(cut)) == 42 * 576 / RATE  # what its frames hold, not its header's 3 s
    assert [r.getMessage() for r in caplog.records] == [
        f"{cut}: its first frame's header counts 3.00 s but its frames hold 1.51 s: cut short (a download or copy "
        "that stopped?); its 1.51 s are read: re-fetch it or drop it"]
    assert 42 * 576 - 1152 <= len(load_audio(str(cut), RATE)) <= 42 * 576  # less the encoder's delay


def wav_chunks(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(rate: int = RATE, channels: int = 1) -> bytes:
    return b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, (rate * 2 * channels) % 2**32, 2 * channels, 16)


def data_chunk(samples: np.ndarray) -> bytes:
    pcm = (samples * 32767).astype("<i2").tobytes()
    return b"data" + struct.pack("<I", len(pcm)) + pcm


def list_chunk(text: bytes) -> bytes:
    return b"LIST" + struct.pack("<I", len(text)) + text + b"\0" * (len(text) & 1)


@pytest.mark.parametrize(("chunks", "samples"), [
    ((data_chunk(TONE), fmt_chunk()), TONE),
    ((list_chunk(b"INFOodd"), data_chunk(TONE[:-1]), list_chunk(b"INFO"), fmt_chunk()), TONE[:-1]),  # padded chunks
], ids=["data-fmt", "list-data-list-fmt"])
def test_a_wav_whose_fmt_chunk_follows_its_data_is_read_as_the_same_wav_in_order(tmp_path: Path, chunks: tuple,
                                                                                 samples: np.ndarray):
    """libsndfile said "No 'data' chunk marker" of a file that has one."""
    late, ordered = tmp_path / "late.wav", tmp_path / "ordered.wav"
    late.write_bytes(wav_chunks(*chunks))
    ordered.write_bytes(wav_chunks(fmt_chunk(), data_chunk(samples)))
    expected = load_audio(str(ordered), RATE)
    assert len(expected) == len(samples)
    assert np.array_equal(load_audio(str(late), RATE), expected)
    assert audio_seconds(str(late)) == len(samples) / RATE
    assert audio_seconds(io.BytesIO(late.read_bytes())) == len(samples) / RATE  # a dataset row's bytes
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "late.wav", "instruction": "Sum up.", "summary": "ok"}) + "\n")
    assert load_manifest(manifest)[0][0].duration == len(samples) / RATE


def unpadded_chunk(name: bytes, body: bytes) -> bytes:
    return name + struct.pack("<I", len(body)) + body  # an odd size without its pad byte


@pytest.mark.parametrize("chunks", [
    (fmt_chunk(), unpadded_chunk(b"LIST", b"INFOISFTabc\0x"), data_chunk(TONE)),
    (unpadded_chunk(b"JUNK", b"odd"), fmt_chunk(), unpadded_chunk(b"bext", b"x" * 603), data_chunk(TONE)),
    (data_chunk(TONE), unpadded_chunk(b"LIST", b"INFOodd"), fmt_chunk()),
], ids=["list-before-data", "junk-before-fmt-bext-before-data", "fmt-after-data"])
def test_a_wav_whose_odd_sized_chunk_lacks_its_pad_byte_is_read(tmp_path: Path, chunks: tuple):
    """Before: libsndfile read the next chunk's name a byte late ("No 'data' chunk marker") and the file was
    refused as damaged or cut short; it is read as the same WAV with its chunks padded."""
    odd, padded = tmp_path / "odd.wav", tmp_path / "padded.wav"
    odd.write_bytes(wav_chunks(*chunks))
    padded.write_bytes(wav_chunks(fmt_chunk(), data_chunk(TONE)))
    assert np.array_equal(load_audio(str(odd), RATE), load_audio(str(padded), RATE))
    assert audio_seconds(str(odd)) == 1.0
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "odd.wav", "instruction": "Sum up.", "summary": "ok"}) + "\n")
    assert load_manifest(manifest)[0][0].duration == 1.0


def test_a_wav_whose_fmt_chunk_follows_a_data_chunk_and_is_cut_off_says_so(tmp_path: Path):
    late = tmp_path / "late.wav"
    late.write_bytes(wav_chunks(data_chunk(TONE), fmt_chunk())[: -24 - RATE])  # the fmt chunk and half the samples
    assert load_error(tmp_path, "late.wav").reason == (
        f"field 'audio': unreadable audio file {late}: it has no 'fmt ' chunk (the sample format) after its RIFF "
        f"header (only 'data'): cut short or not written whole; {DAMAGED}")


@pytest.mark.parametrize(("chunks", "reason", "advice"), [
    ((fmt_chunk(rate=0), data_chunk(TONE)), "its header gives a sample rate of 0 Hz: the header is damaged",
     "re-export the file or drop it"),
    ((fmt_chunk(rate=2**32 - 1), data_chunk(TONE)), "its header gives a sample rate of 4294967295 Hz: the header is "
     "damaged", "re-export the file or drop it"),
    ((fmt_chunk(channels=0), data_chunk(TONE)), "its header gives 0 channels: the header is damaged",
     "re-export the file or drop it"),
    ((data_chunk(TONE), fmt_chunk(rate=0)), "its header gives a sample rate of 0 Hz: the header is damaged",
     "re-export the file or drop it"),
    ((), "it has no 'fmt ' chunk (the sample format) after its RIFF header (nothing): cut short or not written whole",
     DAMAGED),
    ((b"LIST" + struct.pack("<I", 4) + b"INFO",), "it has no 'fmt ' chunk (the sample format) after its RIFF header "
     "(only 'LIST'): cut short or not written whole", DAMAGED),
    ((fmt_chunk(), data_chunk(TONE[:800]), data_chunk(TONE[800:])), "it holds 2 'data' chunks (sample blocks) where a "
     "WAV has one, which libsndfile does not read", "re-export it from its source as one WAV, or drop it"),
], ids=["rate-0", "rate-2**32-1", "no-channels", "rate-0-after-data", "riff-header-only", "no-fmt", "two-data"])
def test_a_wav_whose_chunks_libsndfile_cannot_use_says_which_and_what_to_do(tmp_path: Path, chunks: tuple,
                                                                             reason: str, advice: str):
    path = tmp_path / "odd.wav"
    path.write_bytes(wav_chunks(*chunks))
    assert load_error(tmp_path, "odd.wav").reason == f"field 'audio': unreadable audio file {path}: {reason}; {advice}"
    with pytest.raises(UnreadableAudioError) as error:
        load_audio(str(path), RATE)
    assert (error.value.reason, error.value.advice) == (reason, advice)


LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1"
               b"258daaa5e2ca24d17e2393\nsize 1048576\n")


@pytest.mark.parametrize(("data", "reason", "advice"), [
    (LFS_POINTER, "a Git LFS pointer (a small text file standing for the audio), not the audio itself",
     "fetch the audio, e.g. `git lfs pull` in its repository, or drop it"),
    (b"\n<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>\n", "an HTML/XML page, not audio (a download that "
     "saved an error or login page?)", REPLACE),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "a PNG image, not audio", REPLACE),
    (b"\xff\xd8\xff\xe0" + bytes(100), "a JPEG image, not audio", REPLACE),
    ("Sprecher 1: Grüß Gott\n".encode() * 30, "a text file, not audio (it starts 'Sprecher 1: Grüß Gott\\nSprecher "
     "1: Grüß G')", REPLACE),
], ids=["git-lfs-pointer", "html", "png", "jpeg", "text"])
@pytest.mark.parametrize("name", ["clip.wav", "clip.flac", "clip.mp3"])
def test_a_file_that_is_no_audio_says_what_it_is_whatever_its_extension(tmp_path: Path, name: str, data: bytes,
                                                                         reason: str, advice: str):
    (tmp_path / name).write_bytes(data)
    error = load_error(tmp_path, name)
    assert error.reason == f"field 'audio': unreadable audio file {tmp_path / name}: {reason}; {advice}"


@pytest.mark.parametrize(("container", "subtype", "keep", "name", "libsndfile"), [
    ("FLAC", "PCM_16", 12, "FLAC", "File contains data in an unimplemented format"),
    ("OGG", "VORBIS", 100, "Ogg", "Supported file format but file is malformed"),
    ("AIFF", "PCM_16", 44, "AIFF", "Unspecified internal error"),
    ("WAV", "PCM_16", 4, "WAV", "Format not recognised"),
    ("MP3", "MPEG_LAYER_III", 44, "MP3", "no audio libsndfile can decode (it reports: File does not exist or is not a "
     "regular file (possibly a pipe?))"),
])
def test_an_audio_file_cut_inside_its_header_is_said_damaged_not_a_format_to_convert(
        tmp_path: Path, container: str, subtype: str, keep: int, name: str, libsndfile: str):
    path = tmp_path / f"cut.{container.lower()}"
    sf.write(path, TONE, RATE, format=container, subtype=subtype)
    path.write_bytes(path.read_bytes()[:keep])
    assert load_error(tmp_path, path.name).reason == (
        f"field 'audio': unreadable audio file {path}: it starts as {name} audio but libsndfile cannot read it "
        f"({libsndfile}; the file is {keep} bytes): damaged or cut short; {DAMAGED}")


def test_random_bytes_keep_the_format_advice(tmp_path: Path):
    path = tmp_path / "noise.bin"
    path.write_bytes(bytes([0x00, 0x01, 0x9A]) + np.random.default_rng(1).integers(0, 255, 600, dtype=np.uint8).tobytes())
    assert load_error(tmp_path, "noise.bin").reason == (
        f"field 'audio': unreadable audio file {path}: Format not recognised; "
        + FORMATS_ADVICE.replace("in.m4a", "in.bin"))


def test_skip_mode_counts_every_odd_file_and_keeps_the_good_one(tmp_path: Path, caplog):
    joined, _ = joined_flac(tmp_path)
    sf.write(tmp_path / "good.wav", TONE, RATE)
    (tmp_path / "pointer.wav").write_bytes(LFS_POINTER)
    (tmp_path / "late_fmt.wav").write_bytes(wav_chunks(fmt_chunk(rate=0), data_chunk(TONE)))
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps({"id": str(i), "audio": audio, "instruction": "Sum up.", "summary": "ok"})
                                + "\n" for i, audio in enumerate([joined.name, "good.wav", "pointer.wav", "late_fmt.wav"])))
    examples, skipped = load_manifest(manifest, on_bad_example="skip")
    assert [e.id for e in examples] == ["1"] and examples[0].duration == 1.0
    assert [s.line for s in skipped] == [1, 3, 4]
    assert "2 FLAC streams" in skipped[0].reason and "Git LFS pointer" in skipped[1].reason
    assert "a sample rate of 0 Hz" in skipped[2].reason


def test_a_flac_that_ends_in_its_metadata_is_refused_at_load_not_when_its_batch_is_read(tmp_path: Path):
    """Its header passed at load for 1 s; reading it failed mid-training ("flac decoder lost sync")."""
    path = tmp_path / "header.flac"
    sf.write(path, TONE, RATE)
    data = path.read_bytes()
    offset = flac_frames_offset(data)
    assert data[offset : offset + 2] == b"\xff\xf8"  # the first frame's sync code
    for keep in (offset, 44):  # no frame; the metadata cut (cut shorter, libsndfile cannot open it: above)
        path.write_bytes(data[:keep])
        message = (f"{path}: its header gives 1.00 s, but the file ends in its metadata ({keep} bytes), before any "
                   "audio frame: cut short (a download or copy that stopped?); re-fetch it or drop it")
        assert load_error(tmp_path, "header.flac").reason == f"field 'audio': {message}"
        with pytest.raises(CorruptAudioError) as error:
            load_audio(str(path), RATE)
        assert str(error.value) == message


def test_a_dash_for_standard_input_says_audio_is_read_from_files(tmp_path: Path):
    """It was "<manifest folder>/-: no such file", of a path nobody wrote."""
    assert load_error(tmp_path, "-").reason == ("field 'audio': '-' (standard input, to some tools) names no file: "
                                                "audio is read from files; give its path")


def test_the_server_decodes_a_wav_whose_fmt_chunk_follows_its_data(tmp_path: Path):
    """Its check for a partial file opened it with plain soundfile again: an uncaught libsndfile error."""
    from speechsum.serving.protocol import AudioInput
    from speechsum.serving.speech_backend import decode_audio

    late = AudioInput(wav_chunks(data_chunk(TONE), fmt_chunk()), "wav", 0, "messages[0].content[0].input_audio")
    ordered = AudioInput(wav_chunks(fmt_chunk(), data_chunk(TONE)), "wav", 0, "messages[0].content[0].input_audio")
    assert np.array_equal(decode_audio(late, RATE, None), decode_audio(ordered, RATE, None))


def test_the_server_refuses_an_mp3_upload_cut_short_naming_its_cut_frame():
    from speechsum.serving.protocol import APIError, AudioInput
    from speechsum.serving.speech_backend import decode_audio

    data, info = cbr_mp3()
    assert len(decode_audio(AudioInput(data[info:], "mp3", 0, "input_audio"), RATE, None)) == 86 * 576
    with pytest.raises(APIError) as error:
        decode_audio(AudioInput(data[info:-100], "mp3", 0, "input_audio"), RATE, None)
    assert (error.value.status, str(error.value)) == (400, (
        "input_audio: its last MP3 frame is cut off (260 of its 360 bytes are there): cut short (a download or copy "
        "that stopped?); only its first 3.06 s are read: send the whole file."))


def codec_fmt(tag: int, extra: bytes) -> bytes:
    return b"fmt " + struct.pack("<IHHIIHH", 16 + len(extra), tag, 1, RATE, 4_000, 1, 0) + extra


KSDATAFORMAT_TAIL = bytes.fromhex("000000001000800000aa00389b71")  # the GUID after its 2-byte (then 0-padded) tag


@pytest.mark.parametrize(("fmt", "codec"), [
    (codec_fmt(0x00FF, struct.pack("<HH", 2, 0x1408)), "0x00FF (AAC)"),
    (codec_fmt(0xFFFE, struct.pack("<HHI", 22, 0, 4) + struct.pack("<H", 0x1610) + KSDATAFORMAT_TAIL), "0x1610 (AAC)"),
    (codec_fmt(0x9999, struct.pack("<H", 0)), "0x9999"),
], ids=["aac", "extensible-aac", "unknown"])
def test_a_wav_holding_a_codec_libsndfile_does_not_decode_names_it_not_damage(tmp_path: Path, fmt: bytes, codec: str):
    """libsndfile: "Malformed 'fmt ' chunk", which read as a damaged file to re-fetch."""
    path = tmp_path / "codec.wav"
    path.write_bytes(wav_chunks(fmt, b"data" + struct.pack("<I", 4_000) + bytes(4_000)))
    assert load_error(tmp_path, "codec.wav").reason == (
        f"field 'audio': unreadable audio file {path}: its samples are in a codec libsndfile does not decode (WAVE "
        f"format tag {codec}); convert it to PCM, e.g. `ffmpeg -i in.wav -c:a pcm_s16le out.wav`, or drop it")


@pytest.mark.parametrize(("rate", "channels", "subtype"), [
    (8_000, 1, "PCM_S8"), (16_000, 2, "PCM_16"), (44_100, 6, "PCM_24"), (96_000, 2, "PCM_24")])
@pytest.mark.parametrize("frames", [1, 100, 4_095, 4_096, 4_097, 40_000])
def test_whole_flacs_of_every_shape_pass_the_check_of_their_end(tmp_path: Path, rate: int, channels: int,
                                                                subtype: str, frames: int):
    path = tmp_path / "whole.flac"
    noise = np.random.default_rng(frames).uniform(-0.5, 0.5, (frames, channels)).astype(np.float32)
    sf.write(path, noise, rate, subtype=subtype)
    assert audio_seconds(str(path)) == frames / rate
    assert np.array_equal(load_audio(str(path), rate), sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1))
    path.write_bytes(path.read_bytes()[:-1])  # one byte short: the last frame's checksum
    with pytest.raises(CorruptAudioError, match="libsndfile cannot decode its last"):
        audio_seconds(str(path))


def sphere(coding: str) -> bytes:
    header = (f"NIST_1A\n   1024\nsample_count -i 16000\nsample_rate -i 16000\nchannel_count -i 1\nsample_n_bytes -i 2\n"
              f"sample_byte_format -s2 01\nsample_coding -s{len(coding)} {coding}\nsample_sig_bits -i 16\nend_head\n")
    return header.encode().ljust(1024, b" ")


def test_a_nist_sphere_file_is_not_taken_for_text(tmp_path: Path):
    """Its header is text: a shorten-compressed SPHERE file (TIMIT, WSJ) was called "a text file"."""
    (tmp_path / "a.sph").write_bytes(sphere("pcm,embedded-shorten-v2.00") + bytes(range(256)) * 20)
    assert load_error(tmp_path, "a.sph").reason == (
        f"field 'audio': unreadable audio file {tmp_path / 'a.sph'}: a NIST SPHERE file whose samples are "
        "shorten-compressed, which libsndfile does not decode; convert it, e.g. `sph2pipe -f wav in.sph out.wav`, "
        "or drop it")
    (tmp_path / "b.sph").write_bytes(sphere("pcm") + (TONE * 32767).astype("<i2").tobytes())
    assert audio_seconds(str(tmp_path / "b.sph")) == 1.0  # a PCM one reads
    (tmp_path / "c.sph").write_bytes(sphere("pcm")[:300])
    assert "it starts as NIST SPHERE audio but libsndfile cannot read it" in load_error(tmp_path, "c.sph").reason


def test_an_mp3_whose_frames_stop_at_junk_before_its_end_is_not_said_cut(tmp_path: Path, caplog):
    """The walk stops at bytes that are no frame (junk in the middle, which a decoder skips): it
    cannot tell that the frames after them are missing, so it says nothing."""
    data, _ = cbr_mp3()
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(data[: 360 * 40] + b"\0" * 1000 + data[360 * 40 :])
    assert mp3_walk(junk.read_bytes()) == Mp3Walk(39 * 576, None, len(data) - 360 * 40 + 1000)
    with caplog.at_level(logging.WARNING):
        assert audio_seconds(str(junk)) == 3.0  # its Info header's count, as before
    assert caplog.records == []

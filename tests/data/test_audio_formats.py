"""Unusual but valid audio as users' data holds it (every WAV subtype, other containers, odd rates,
many channels) read to the model's rate; rates no recording has, refused naming the file; a clip one
sample over the limit said to be over."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.audio import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    AudioTooLongError,
    audio_seconds,
    load_audio,
)
from speechsum.data.manifest import ManifestError, load_manifest
from tests.data.test_audio_damaged_streams import ogg_crc


def tone(frames: int, rate: int, channels: int = 1, frequency: float = 440.0) -> np.ndarray:
    x = (0.3 * np.sin(2 * np.pi * frequency * np.arange(frames) / rate)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


# (file name, soundfile format, subtype, rate): what libsndfile writes and reads back
FORMATS = [
    *[(f"{s.lower()}.wav", "WAV", s, 16_000)
      for s in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW", "IMA_ADPCM", "MS_ADPCM")],
    ("wavex.wav", "WAVEX", "PCM_16", 16_000),
    ("rf64.wav", "RF64", "PCM_16", 16_000),
    ("a.aiff", "AIFF", "PCM_16", 22_050),
    ("f24.flac", "FLAC", "PCM_24", 48_000),
    ("v.ogg", "OGG", "VORBIS", 44_100),
    ("o.opus", "OGG", "OPUS", 48_000),
    ("m.mp3", "MP3", "MPEG_LAYER_III", 44_100),
]


@pytest.mark.parametrize(("name", "container", "subtype", "rate"), FORMATS, ids=[f[0] for f in FORMATS])
def test_every_format_libsndfile_writes_reads_as_the_tone(tmp_path: Path, name: str, container: str,
                                                          subtype: str, rate: int):
    if container not in sf.available_formats():
        pytest.skip(f"this libsndfile does not write {container}")
    path = tmp_path / name
    sf.write(path, tone(rate // 2, rate, channels=2), rate, format=container, subtype=subtype)
    seconds = audio_seconds(str(path))
    waveform = load_audio(str(path), 16_000)
    assert 0.5 <= seconds < 0.52  # ADPCM pads to its block
    assert waveform.dtype == np.float32 and abs(len(waveform) - seconds * 16_000) <= 1
    spectrum = np.abs(np.fft.rfft(waveform[:8_000] * np.hanning(8_000)))
    assert abs(np.argmax(spectrum) * 2 - 440) <= 4  # 2 Hz bins: the pitch survives codec and resampler
    assert 0.2 < np.abs(waveform[1_000:7_000]).max() < 0.45  # lossy codecs move the peak a little


@pytest.mark.parametrize("subtype", ["MS_ADPCM", "G721_32", "GSM610"])
def test_a_block_coded_wav_is_read_to_its_fact_count_not_its_last_blocks_padding(tmp_path: Path, subtype: str):
    """libsndfile decodes an ADPCM or G.721 WAV's whole last block: 1 s was read as 1.012 s (MS ADPCM, 192 samples
    of decoder noise up to 0.04 at its end) or 1.005 s, at load and when read; its 'fact' chunk counts 16 000."""
    path = tmp_path / "call.wav"
    sf.write(path, tone(16_000, 16_000), 16_000, subtype=subtype)
    assert sf.info(str(path)).frames >= 16_000  # what libsndfile decodes
    assert audio_seconds(str(path)) == 1.0
    waveform = load_audio(str(path), 16_000)
    assert len(waveform) == 16_000
    assert np.abs(waveform[8_000:] - tone(16_000, 16_000)[8_000:]).max() < 0.05  # the tone, to its last sample


@pytest.mark.parametrize("seconds", [1.0, 0.2])
def test_a_gsm_wav_of_an_odd_number_of_blocks_is_read_to_its_fact_count_not_a_block_of_noise(tmp_path: Path,
                                                                                              seconds: float):
    """A GSM 6.10 WAV at 8 kHz (telephony) of 25 blocks (1 s; 0.2 s: 5) has an odd data size, and libsndfile decodes
    a 26th block past its data: 40 ms of noise peaking at full scale after the call, at load and when read."""
    frames = round(8_000 * seconds)
    path = tmp_path / "call.wav"
    sf.write(path, tone(frames, 8_000), 8_000, subtype="GSM610")
    assert sf.info(str(path)).frames == frames + 320  # what libsndfile decodes
    assert audio_seconds(str(path)) == seconds
    waveform = load_audio(str(path), 8_000)
    assert len(waveform) == frames and np.abs(waveform).max() < 0.45  # the tone, no noise after it


def test_a_bw64_file_is_read_as_the_rf64_it_is(tmp_path: Path):
    """BW64 (ITU-R BS.2088, broadcast audio past 4 GB) is RF64 whose first four bytes say "BW64": libsndfile does
    not know the name ("Format not recognised"), and the file was refused as damaged or cut short."""
    rf64, bw64 = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(rf64, tone(16_000, 16_000, channels=2), 16_000, format="RF64", subtype="PCM_24")
    bw64.write_bytes(b"BW64" + rf64.read_bytes()[4:])
    expected = load_audio(str(rf64), 16_000)
    assert np.array_equal(load_audio(str(bw64), 16_000), expected) and len(expected) == 16_000
    assert np.array_equal(load_audio(str(bw64), 16_000, max_seconds=0.5), expected[:8_000])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "b.wav", "instruction": "Sum up."}) + "\n")
    assert load_manifest(manifest)[0][0].duration == 1.0


def test_a_caf_whose_data_size_says_to_the_end_of_the_file_is_read(tmp_path: Path):
    """Apple's CAF lets the last chunk's size be -1, "to the end of the file" (a recorder still writing): libsndfile
    calls it malformed, and the file was refused as damaged or cut short."""
    whole, open_ended = tmp_path / "a.caf", tmp_path / "b.caf"
    sf.write(whole, tone(16_000, 16_000), 16_000, format="CAF", subtype="PCM_16")
    data = bytearray(whole.read_bytes())
    size_at = data.find(b"data") + 4
    data[size_at : size_at + 8] = struct.pack(">q", -1)
    open_ended.write_bytes(bytes(data))
    expected = load_audio(str(whole), 16_000)
    assert np.array_equal(load_audio(str(open_ended), 16_000), expected) and len(expected) == 16_000
    assert audio_seconds(str(open_ended)) == 1.0


def ogg_page(packet: bytes, kind: int, sequence: int, granule: int = 0) -> bytes:
    """One Ogg page (``kind`` 2: the first of its stream, 4: the last) holding ``packet``, its checksum right."""
    lacing = bytes([255] * (len(packet) // 255) + [len(packet) % 255])
    page = bytearray(b"OggS" + bytes([0, kind]) + struct.pack("<qII", granule, 1234, sequence) + bytes(4)
                     + bytes([len(lacing)]) + lacing + packet)
    page[22:26] = ogg_crc(bytes(page)).to_bytes(4, "little")
    return bytes(page)


@pytest.mark.parametrize(("name", "first_packet", "reason", "tool"), [
    ("clip.spx", b"Speex   1.2rc1" + bytes(66), "an Ogg Speex stream", "`speexdec in.spx out.wav`"),
    ("clip.ogg", b"\x80theora" + bytes(40), "an Ogg Theora video (its first stream)", "`ffmpeg -i in.ogv out.wav`"),
    # ffmpeg writes FLAC into an .ogg/.oga when asked to; it was "damaged or cut short; re-fetch or re-export it"
    ("talk.oga", b"\x7fFLAC\x01\x00\x00\x01fLaC\x00\x00\x00\x22" + bytes(34),
     "an Ogg FLAC stream (FLAC in an Ogg container, .oga)", "`ffmpeg -i in.oga out.flac`"),
], ids=["speex", "theora", "flac"])
def test_an_ogg_stream_in_a_codec_libsndfile_does_not_decode_is_named_not_called_damaged(
        tmp_path: Path, name: str, first_packet: bytes, reason: str, tool: str):
    """Before: "it starts as Ogg audio but libsndfile cannot read it (Unspecified internal error …): damaged or cut
    short; re-fetch or re-export it" of a whole Speex recording."""
    path = tmp_path / name
    path.write_bytes(ogg_page(first_packet, 2, 0) + ogg_page(bytes(40), 0, 1) + ogg_page(bytes(200), 4, 2, 320))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": name, "instruction": "Sum up."}) + "\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == (f"field 'audio': unreadable audio file {path}: {reason}, which libsndfile does not "
                                 f"decode (it reads Ogg Vorbis and Opus); convert it, e.g. {tool}, or drop it")


@pytest.mark.parametrize(("name", "container", "subtype", "encoding", "reason"), [
    ("clip.caf", "CAF", "PCM_16", (b"lpcm", b"aac "), "a CAF file whose samples are in an encoding libsndfile does not "
     "decode ('aac '); convert it to PCM, e.g. `ffmpeg -i in.caf out.wav`"),
    ("clip.aifc", "AIFF", "ULAW", (b"ulaw", b"QDM2"), "an AIFF-C file whose samples are in an encoding libsndfile does "
     "not decode ('QDM2'); convert it to PCM, e.g. `ffmpeg -i in.aifc out.wav`"),
], ids=["caf-aac", "aifc-qdesign"])
def test_a_caf_or_aifc_in_an_encoding_libsndfile_does_not_decode_is_named_not_called_damaged(
        tmp_path: Path, name: str, container: str, subtype: str, encoding: tuple, reason: str):
    """Before: "it starts as CAF audio but libsndfile cannot read it (Supported file format but unsupported
    encoding …): damaged or cut short; re-fetch or re-export it" of a whole AAC-in-CAF recording."""
    path = tmp_path / name
    sf.write(path, tone(1_600, 16_000), 16_000, format=container, subtype=subtype)
    path.write_bytes(path.read_bytes().replace(*encoding, 1))  # the header's four characters naming the encoding
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": name, "instruction": "Sum up."}) + "\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert info.value.reason == f"field 'audio': unreadable audio file {path}: {reason}, or drop it"


@pytest.mark.parametrize("channels", [6, 8])
def test_many_channels_in_opposite_phase_mix_to_silence(tmp_path: Path, channels: int):
    x = tone(1_600, 16_000)
    data = np.stack([x if c % 2 else -x for c in range(channels)], axis=1)
    sf.write(tmp_path / "c.wav", data, 16_000, subtype="PCM_24")
    waveform = load_audio(str(tmp_path / "c.wav"), 16_000)
    assert waveform.shape == (1_600,) and np.abs(waveform).max() < 1e-6  # 24-bit rounding of x and -x


@pytest.mark.parametrize("rate", [8_000, 11_025, 22_050, 44_100, 48_000, 96_000, 384_000])
def test_rates_from_telephone_to_384k_resample_to_the_same_length(tmp_path: Path, rate: int):
    sf.write(tmp_path / "r.wav", tone(rate, rate), rate, subtype="PCM_16")
    assert len(load_audio(str(tmp_path / "r.wav"), 16_000)) == 16_000


def raw_wav(path: Path, rate: int, frames: int = 1_000) -> Path:
    """A 16-bit mono WAV whose header gives ``rate`` (any 31-bit value: no writer checks it)."""
    data = (tone(frames, 16_000) * 32_767).astype("<i2").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, (2 * rate) % 2**32, 2, 16)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + fmt
                     + b"data" + struct.pack("<I", len(data)) + data)
    return path


@pytest.mark.parametrize("rate", [1, 7, MIN_SAMPLE_RATE - 1, MAX_SAMPLE_RATE + 1, 2**31 - 1])
def test_a_rate_no_recording_has_is_refused_naming_file_and_rate(tmp_path: Path, rate: int):
    """1 000 frames said to be at 1 Hz would be 1 000 s (16 M samples) of nothing after resampling,
    and at 2**31 Hz none at all: a damaged header, refused with what to do instead of fed to the model."""
    path = raw_wav(tmp_path / "odd.wav", rate)
    expected = (rf"^{path}: sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz, no "
                r"recording's \(speech is 8-48 kHz\): the header is likely damaged; re-export the file")
    for read in (lambda: audio_seconds(str(path)), lambda: load_audio(str(path), 16_000)):
        with pytest.raises(ValueError, match=expected):
            read()
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "odd.wav", "instruction": "Sum up."}) + "\n"
                        + json.dumps({"id": "b", "audio": "fine.wav", "instruction": "Sum up."}) + "\n")
    raw_wav(tmp_path / "fine.wav", 16_000)
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: field 'audio': .*odd\.wav: sample rate"):
        load_manifest(manifest)
    examples, skipped = load_manifest(manifest, on_bad_example="skip")
    assert [e.id for e in examples] == ["b"] and [s.line for s in skipped] == [1]


@pytest.mark.parametrize("rate", [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE])
def test_the_rates_at_the_bounds_are_read(tmp_path: Path, rate: int):
    path = raw_wav(tmp_path / "edge.wav", rate, frames=rate // 100)  # 10 ms
    assert audio_seconds(str(path)) == 0.01 and len(load_audio(str(path), 16_000)) == 160


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100])
def test_one_sample_over_the_limit_is_said_to_be_over(tmp_path: Path, rate: int):
    """``30.00 s is longer than max_audio_seconds=30.0`` read as a contradiction: the message gives
    the samples when two decimals hide the excess."""
    path = tmp_path / "over.wav"
    sf.write(path, np.zeros(30 * rate + 1), rate, subtype="PCM_16")
    message = (f"{path}: 30.00 s ({30 * rate + 1} samples at {rate} Hz; the limit is {30 * rate}) is longer "
               "than max_audio_seconds=30.0; raise the limit or set too_long_audio='truncate'")
    for read in (lambda: audio_seconds(str(path), 30.0), lambda: load_audio(str(path), 16_000, 30.0, "error")):
        with pytest.raises(AudioTooLongError) as info:
            read()
        assert str(info.value) == message
    sf.write(path, np.zeros(30 * rate), rate, subtype="PCM_16")  # at the limit: read in full
    assert len(load_audio(str(path), 16_000, 30.0, "error")) == 480_000

"""Why libsndfile could not open a file, in words a user can act on, where the file's bytes tell:
a file that is no audio at all (a Git LFS pointer, an HTML error page, an image, text), audio
libsndfile does not decode (MP4/M4A, ADTS AAC, bare FLAC frames, WMA, Matroska/WebM, AMR, shorten-compressed NIST SPHERE)
or video (AVI, QuickTime, MPEG-TS/PS, FLV),
a WAV whose chunks libsndfile cannot use (no ``fmt `` chunk, a sample rate or channel count of 0, a
codec it does not decode, several ``data`` chunks), an Ogg stream, CAF or AIFF-C file in a codec it does
not decode (Speex, FLAC in Ogg; AAC in a CAF), or audio damaged or cut inside its header."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, NamedTuple

from speechsum.data.file_walk import Buffer, walk_file, walk_or_none
from speechsum.data.flac_frames import frame_header
from speechsum.data.wav_order import Spliced, riff_chunks

HEAD_BYTES = 512  # what :func:`not_audio` looks at
REPLACE = "replace it with the recording, or drop it"
# what to do with a file libsndfile cannot open: which formats it reads, how to convert the others
FORMATS_ADVICE = ("speechsum reads what libsndfile reads (WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF, ...; not M4A/AAC, "
                  "WMA or video): convert it, e.g. `ffmpeg -i in.m4a out.wav`, or drop it")


def formats_advice(source: object, suffix: str = "") -> str:
    """:data:`FORMATS_ADVICE` whose example converts a file of ``source``'s own extension (``in.webm``),
    else of ``suffix`` (the format its bytes show), else ``in.m4a``."""
    own = Path(source).suffix.lower() if isinstance(source, str) else ""
    extension = own if 2 <= len(own) <= 6 and own[1:].isalnum() else suffix or ".m4a"
    return FORMATS_ADVICE.replace("in.m4a", f"in{extension}")


# magic bytes at the start of a file -> what the file is
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"),
          (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"))
# audio formats libsndfile reads, by their first bytes -> their name
_AUDIO = ((b"RIFF", "WAV"), (b"RF64", "RF64"), (b"BW64", "BW64"), (b"riff", "W64"), (b"FORM", "AIFF"),
          (b"fLaC", "FLAC"), (b"OggS", "Ogg"), (b"caff", "CAF"), (b"ID3", "MP3"), (b".snd", "AU"), (b"NIST_1A", "NIST SPHERE"))
# containers of audio libsndfile does not decode -> their name
_CONTAINERS = ((b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "an ASF (WMA/WMV) file", ".wma"),
               (b"\x1a\x45\xdf\xa3", "a Matroska/WebM file", ".webm"),
               (b"#!AMR", "an AMR file (a phone's voice recording)", ".amr"),
               (b"FLV\x01", "a Flash video (FLV) file", ".flv"),
               (b"\x00\x00\x01\xba", "an MPEG program stream (MPEG-1/2 video: .mpg, .vob)", ".mpg"))
# RIFF files that are no WAVE (their form type, bytes 8-12) -> their name and extension: a video or image
# starts "RIFF" as a WAV does, and was said to be a WAV damaged or cut short (re-fetch it)
_RIFF_FORMS = {b"AVI ": ("an AVI video file", ".avi"), b"AVIX": ("an AVI video file", ".avi"),
               b"WEBP": ("a WebP image, not audio", ".webp"), b"RMID": ("a MIDI file (notes, not a recording)", ".mid"),
               b"CDXA": ("a Video CD's MPEG video file", ".dat"), b"ACON": ("an animated cursor, not audio", ".ani")}
# QuickTime atoms an MP4/MOV file without an 'ftyp' atom (old QuickTime .mov) starts with
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
MPEG_TS_PACKET = 188  # an MPEG transport stream (.ts, .mts, .m2ts video) is packets of this size, each starting 0x47


class Diagnosis(NamedTuple):
    """What a file is, why libsndfile does not read it, and what to do (None: the usual format advice)."""

    reason: str
    advice: str | None
    suffix: str = ""  # the format's usual extension, for the advice's example when the file's name has none


def audio_format(head: bytes) -> str | None:
    """The name of the audio format libsndfile reads that a file starting with ``head`` has (an MP3
    by its first frame's sync bits and a layer: ADTS AAC has the sync and layer 0), or None."""
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "MP3"
    return next((name for magic, name in _AUDIO if head.startswith(magic)), None)


def headed_view(path: str) -> BinaryIO | None:
    """For a file named ``.raw`` (which soundfile takes for headerless samples by its name) whose first bytes are an
    audio format's magic (a WAV, FLAC, ... named .raw): a view of it to give soundfile instead; else None."""
    head = walk_or_none(path, lambda data: bytes(data[:16])) or b""
    if not any(head.startswith(magic) for magic, _ in _AUDIO):  # not an MP3's sync: a raw sample can hold it
        return None
    return Spliced(open(path, "rb"), b"", 0, 2**63, owned=True)  # noqa: SIM115 (closed with the view)


MAX_CHANNELS = 1024  # libsndfile's limit (SF_MAX_CHANNELS): a header giving more is refused, "Too many channels"
CHANNELS_ADVICE = (f"if the recording has that many channels (a microphone array), export the ones you need (at most "
                   f"{MAX_CHANNELS}) from its source; else its header is damaged: re-export it; or drop it")


def too_many_channels(name: str, channels: int | None = None) -> Diagnosis:
    """A ``name`` file (WAV, ...) whose header gives more channels (``channels``, where known) than libsndfile reads."""
    count = f"{channels} channels" if channels else "more channels than that"
    return Diagnosis(f"its {name} header gives {count}; libsndfile reads at most {MAX_CHANNELS}", CHANNELS_ADVICE)


def damaged(head: bytes, size: int, reason: str) -> Diagnosis | None:
    """For a file of ``size`` bytes starting with ``head`` that libsndfile could not open, saying
    ``reason``: when it starts as an audio format libsndfile reads, that it is damaged or cut short
    (not a format to convert), or holds more channels than it reads; else None."""
    if (name := audio_format(head)) is None:
        return None
    if "Too many channels" in reason:  # its words (a header damaged, or an array's recording): not "cut short"
        return too_many_channels(name)
    return Diagnosis(f"it starts as {name} audio but libsndfile cannot read it ({reason}; the file is {size} "
                     "bytes): damaged or cut short", "re-fetch or re-export it, or drop it")


def _adts_frames(head: bytes) -> bool:
    """Whether ``head`` starts with an ADTS frame header whose frame length leads to the next one."""
    length = (head[3] & 0x03) << 11 | head[4] << 3 | head[5] >> 5 if len(head) >= 6 else 0
    return length >= 7 and len(head) >= length + 2 and head[length] == 0xFF and head[length + 1] & 0xF6 == 0xF0


def not_audio(head: bytes) -> Diagnosis | None:
    """What the file starting with ``head`` (its first :data:`HEAD_BYTES` bytes) is, when its bytes
    say it is no audio libsndfile reads; None when they do not tell (an audio format's first bytes)."""
    if head.startswith(b"NIST_1A") and b"shorten" in head:  # its text header's sample_coding (TIMIT, WSJ, ...)
        return Diagnosis("a NIST SPHERE file whose samples are shorten-compressed, which libsndfile does not decode",
                         "convert it, e.g. `sph2pipe -f wav in.sph out.wav`, or drop it")
    if (video := _video(head)) is not None:
        return video
    if audio_format(head):
        return None
    if head.startswith(b"version https://git-lfs"):
        return Diagnosis("a Git LFS pointer (a small text file standing for the audio), not the audio itself",
                         "fetch the audio, e.g. `git lfs pull` in its repository, or drop it")
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:  # 12 sync bits, then layer 0
        if (frame := frame_header(head, 0)) is not None and not _adts_frames(head):  # FLAC's sync is alike
            return Diagnosis(f"bare FLAC audio frames (from {'sample' if frame.variable else 'frame'} {frame.number} on) "
                             "without the 'fLaC' marker and STREAMINFO header a FLAC file starts with (its start lost, "
                             "or a tool that wrote only the frames), which libsndfile cannot read",
                             "re-export or re-fetch it whole, or drop it", ".flac")
        return Diagnosis("an AAC stream (ADTS), which libsndfile does not read", None, ".aac")
    if head[4:8] == b"ftyp":
        return Diagnosis("an MP4/M4A file (AAC or ALAC audio), which libsndfile does not read", None, ".m4a")
    if head[4:8] in _QUICKTIME_ATOMS and struct.unpack(">I", head[:4])[0] >= 8:
        return Diagnosis("a QuickTime/MP4 file (.mov, .mp4: video or AAC audio), which libsndfile does not read",
                         None, ".mov")
    for magic, name, suffix in _CONTAINERS:
        if head.startswith(magic):
            return Diagnosis(f"{name}, which libsndfile does not read", None, suffix)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped[:15].lower().startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return Diagnosis("an HTML/XML page, not audio (a download that saved an error or login page?)", REPLACE)
    for magic, name in _MAGIC:
        if stripped.startswith(magic):
            return Diagnosis(f"{name}, not audio", REPLACE)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:  # a multi-byte character cut at the end of the head is still text
        text = head[: err.start].decode("utf-8") if err.start >= len(head) - 3 else ""
    if text and all(char.isprintable() or char in "\t\r\n" for char in text):
        return Diagnosis(f"a text file, not audio (it starts {text[:40]!r})", REPLACE)
    return None


def _video(head: bytes) -> Diagnosis | None:
    """For a file starting with ``head`` whose first bytes are those of an audio format libsndfile reads (or an
    MP3 frame's sync) but that is a video or image in fact: a RIFF file of another form type than WAVE (AVI,
    WebP), an MPEG transport stream (its 0x47 sync every 188 bytes); else None."""
    if head.startswith(b"RIFF") and (form := _RIFF_FORMS.get(bytes(head[8:12]))) is not None:
        what, suffix = form
        advice = REPLACE if "not audio" in what or "not a recording" in what else None
        return Diagnosis(f"{what} (RIFF form type {head[8:12].decode('latin-1')!r}, not a WAV's 'WAVE'), which "
                         "libsndfile does not read", advice, suffix)
    packets = range(0, 3 * MPEG_TS_PACKET, MPEG_TS_PACKET)
    if len(head) > 2 * MPEG_TS_PACKET and all(head[offset] == 0x47 for offset in packets):
        return Diagnosis("an MPEG transport stream (video: .ts, .mts, .m2ts), which libsndfile does not read",
                         None, ".ts")
    return None


# WAVE format tags libsndfile decodes: PCM, MS ADPCM, float, A-law, µ-law, IMA ADPCM, GSM 6.10, G.721, MPEG, MP3
DECODED_TAGS = frozenset({0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0040, 0x0050, 0x0055})
CODEC_NAMES = {0x00FF: "AAC", 0x1610: "AAC", 0x0161: "WMA", 0x0162: "WMA", 0x0163: "WMA", 0x704F: "Opus",
               0xF1AC: "FLAC", 0x2000: "AC-3", 0x2001: "DTS", 0x0092: "AC-3"}
EXTENSIBLE = 0xFFFE  # the codec's tag is then the first two bytes of the fmt chunk's sub-format GUID


def _fmt_tag(data: Buffer, offset: int, size: int) -> int:
    """The WAVE format tag of the ``fmt `` chunk at ``offset`` (``size`` bytes); an extensible one's sub-format's."""
    tag = struct.unpack("<H", data[offset + 8 : offset + 10])[0]
    if tag == EXTENSIBLE and size >= 26 and offset + 34 <= len(data):
        tag = struct.unpack("<H", data[offset + 32 : offset + 34])[0]
    return tag


def _sample_size_problem(data: Buffer, offset: int, size: int) -> Diagnosis | None:
    """For the ``fmt `` chunk at ``offset`` (``size`` bytes): integer PCM samples of a size libsndfile does not read
    (0 bits, more than 32), or float ones of other than 32 or 64 bits (libsndfile: "unimplemented format", "internal
    error", which were called damaged or cut short), or None."""
    tag, bits = _fmt_tag(data, offset, size), struct.unpack("<H", data[offset + 22 : offset + 24])[0]
    if (tag, 0 < bits <= 32) == (1, False) or (tag == 3 and bits not in (32, 64)):
        kind, sizes = ("integer", "1 to 32") if tag == 1 else ("float", "32 or 64")
        return Diagnosis(f"its header gives {bits}-bit {kind} samples, which libsndfile does not read ({kind} samples "
                         f"of {sizes} bits): the header is damaged, or its writer used a sample format libsndfile lacks",
                         "re-export it from its source as 16-bit PCM, or drop it")
    return None


def _codec_problem(data: Buffer, offset: int, size: int) -> Diagnosis | None:
    """For the ``fmt `` chunk at ``offset`` (``size`` bytes): a codec libsndfile does not decode, or None."""
    tag = _fmt_tag(data, offset, size)
    if tag in DECODED_TAGS or tag == EXTENSIBLE:
        return None
    name = f" ({CODEC_NAMES[tag]})" if tag in CODEC_NAMES else ""
    return Diagnosis(f"its samples are in a codec libsndfile does not decode (WAVE format tag 0x{tag:04X}{name})",
                     "convert it to PCM, e.g. `ffmpeg -i in.wav -c:a pcm_s16le out.wav`, or drop it")


def riff_problem(data: Buffer) -> Diagnosis | None:
    """Why libsndfile cannot read the RIFF/WAVE ``data``, where its chunks tell: no ``fmt `` chunk
    (the sample format), one giving a sample rate or channel count of 0 or a codec it does not decode
    (wherever it is: one after the ``data`` chunk is read, :mod:`~speechsum.data.wav_order`), or
    several ``data`` chunks; None for a file that is no RIFF WAVE or whose chunks look usable."""
    if bytes(data[:4]) != b"RIFF" or bytes(data[8:12]) != b"WAVE":
        return None
    seen = []
    for name, offset, size in riff_chunks(data):
        seen.append(name)
        if name == b"fmt " and offset + 16 <= len(data):
            channels, rate = struct.unpack("<HI", data[offset + 10 : offset + 16])
            if not 0 < rate < 2**31 or channels == 0:  # libsndfile: "SF_INFO struct incomplete"
                value = f"a sample rate of {rate} Hz" if not 0 < rate < 2**31 else "0 channels"
                return Diagnosis(f"its header gives {value}: the header is damaged", "re-export the file or drop it")
            if channels > MAX_CHANNELS:
                return too_many_channels("WAV", channels)
            if codec := _codec_problem(data, offset, size) or (size >= 16 and offset + 24 <= len(data)
                                                               and _sample_size_problem(data, offset, size)):
                return codec
    if seen.count(b"data") > 1:  # libsndfile: "SF_INFO struct incomplete"
        return Diagnosis(f"it holds {seen.count(b'data')} 'data' chunks (sample blocks) where a WAV has one, which "
                         "libsndfile does not read", "re-export it from its source as one WAV, or drop it")
    if b"fmt " not in seen:
        where = "nothing" if not seen else "only " + ", ".join(repr(name.decode("latin-1")) for name in seen)
        return Diagnosis(f"it has no 'fmt ' chunk (the sample format) after its RIFF header ({where}): cut short "
                         "or not written whole", "re-fetch or re-export it, or drop it")
    return None


# the first packet of an Ogg stream libsndfile does not decode -> (what it is, its usual extension, a tool that decodes it)
_OGG_CODECS = ((b"Speex   ", "an Ogg Speex stream", ".spx", "`speexdec in.spx out.wav`"),
               (b"\x80theora", "an Ogg Theora video (its first stream)", ".ogv", "`ffmpeg -i in.ogv out.wav`"),
               (b"\x7fFLAC", "an Ogg FLAC stream (FLAC in an Ogg container, .oga)", ".oga", "`ffmpeg -i in.oga out.flac`"))


def ogg_codec_problem(head: bytes) -> Diagnosis | None:
    """For an Ogg file starting with ``head`` whose first stream is in a codec libsndfile does not decode
    (Speex, as old voice recordings hold; Theora video; FLAC, which it reads only in its own container), what it is and how to convert it; else None."""
    if not head.startswith(b"OggS") or len(head) < 28:
        return None
    packet = head[27 + head[26] :]  # after the page header and its segment table
    for magic, name, suffix, tool in _OGG_CODECS:
        if packet.startswith(magic):
            return Diagnosis(f"{name}, which libsndfile does not decode (it reads Ogg Vorbis and Opus)",
                             f"convert it, e.g. {tool}, or drop it", suffix)
    return None


# sample encodings libsndfile decodes in a CAF file ('desc' chunk) and an AIFF-C file ('COMM' compression type)
CAF_DECODED = frozenset({b"lpcm", b"ulaw", b"alaw", b"alac"})
AIFC_DECODED = frozenset({b"NONE", b"none", b"twos", b"sowt", b"fl32", b"FL32", b"fl64", b"FL64", b"ulaw", b"ULAW",
                          b"alaw", b"ALAW", b"ima4", b"GSM ", b"raw ", b"in24", b"42ni", b"in32", b"23ni", b"DWVW"})


def _aifc_compression(data: Buffer) -> bytes | None:
    """The compression type of the AIFF-C ``data``'s ``COMM`` chunk, or None (no AIFF-C, or none found)."""
    if bytes(data[:4]) != b"FORM" or bytes(data[8:12]) != b"AIFC":
        return None
    offset = 12
    while offset + 8 <= len(data):
        size = struct.unpack(">I", data[offset + 4 : offset + 8])[0]
        if bytes(data[offset : offset + 4]) == b"COMM":
            return bytes(data[offset + 26 : offset + 30]) if size >= 22 and offset + 30 <= len(data) else None
        offset += 8 + size + (size & 1)
    return None


def encoding_problem(data: Buffer) -> Diagnosis | None:
    """For a CAF or AIFF-C file whose samples are in an encoding libsndfile does not decode (AAC, Opus or MP3
    in a CAF; QDesign, MACE in an AIFF-C): its name (the header's four characters) and how to convert it; else None."""
    if bytes(data[:4]) == b"caff" and bytes(data[8:12]) == b"desc" and len(data) >= 32:
        name, encoding, example = "a CAF", bytes(data[28:32]), "in.caf"
        if encoding in CAF_DECODED:
            return None
    elif (encoding := _aifc_compression(data)) is not None and encoding not in AIFC_DECODED:
        name, example = "an AIFF-C", "in.aifc"
    else:
        return None
    return Diagnosis(f"{name} file whose samples are in an encoding libsndfile does not decode "
                     f"({encoding.decode('latin-1')!r})", f"convert it to PCM, e.g. `ffmpeg -i {example} out.wav`, or drop it")


def diagnose(data: Buffer, reason: str) -> Diagnosis | None:
    """Why libsndfile, saying ``reason``, could not open the file ``data``, where its bytes tell:
    :func:`not_audio`, :func:`riff_problem`, :func:`ogg_codec_problem`, :func:`encoding_problem`, else
    :func:`damaged`; None when they do not tell."""
    head = bytes(data[:HEAD_BYTES])
    return (not_audio(head) or riff_problem(data) or ogg_codec_problem(head) or encoding_problem(data)
            or damaged(head, len(data), reason))


def diagnose_file(source: str | BinaryIO, reason: str) -> Diagnosis | None:
    """:func:`diagnose` of the file ``source`` (a path or a seekable file object); None also when
    it cannot be read (libsndfile's ``reason`` then stands)."""
    try:
        return walk_file(source, lambda data: diagnose(data, reason))
    except (OSError, ValueError):  # unreadable, or not mappable
        return None

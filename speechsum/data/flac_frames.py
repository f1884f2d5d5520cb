"""FLAC audio frames, found by their headers: the sync code, the fields' codes and the header's CRC-8.

A FLAC file's STREAMINFO block counts its samples, and libsndfile reads that many and stops. A writer that
was killed, or a tool that edited the file, can leave a count smaller than its frames hold:
:func:`counted_samples` counts them from its last frames (each header numbers its frame, or its first
sample), so the file can be read whole. :func:`frame_header` also tells bare FLAC frames (a file
without its ``fLaC`` marker and STREAMINFO) from an AAC (ADTS) stream, whose sync code is much alike.
"""

from __future__ import annotations

import re
from typing import BinaryIO, NamedTuple

import soundfile as sf

from speechsum.data.file_walk import Buffer, walk_or_none
from speechsum.data.flac_streams import flac_stream_starts
from speechsum.data.mp3_frames import id3v2_size
from speechsum.data.wav_order import open_spliced

SYNC = re.compile(rb"\xff[\xf8\xf9]")  # 14 sync bits, a reserved 0, the blocking strategy (fixed: 0, variable: 1)
STREAMINFO_END = 42  # "fLaC", the block's 4-byte header, its 34 bytes
TAIL_WINDOW = 1 << 16  # bytes looked at before the last frames, besides two of the largest frames STREAMINFO gives
UNKNOWN_FRAME_BYTES = 1 << 20  # what is looked at when STREAMINFO gives no largest frame size (0)


class FrameHeader(NamedTuple):
    """A frame's first sample (fixed block size: its frame number, times that size), its samples, and
    whether the stream numbers its frames by sample (variable block size)."""

    number: int
    samples: int
    variable: bool


def _crc8(data: bytes) -> int:
    """FLAC's CRC-8 (polynomial x^8 + x^2 + x + 1, initial 0) of ``data``."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _coded_number(data: Buffer, offset: int) -> tuple[int, int] | None:
    """The UTF-8-like coded number at ``offset`` (1 to 7 bytes, up to 36 bits) and its length, or None."""
    if offset >= len(data):
        return None
    first = data[offset]
    if first < 0x80:
        return first, 1
    length = next((n for n in range(2, 8) if first & (0xFF << (7 - n)) & 0xFF == (0xFF << (8 - n)) & 0xFF), None)
    if length is None or offset + length > len(data):
        return None
    value = first & (0x7F >> length)
    for byte in bytes(data[offset + 1 : offset + length]):
        if byte & 0xC0 != 0x80:
            return None
        value = value << 6 | byte & 0x3F
    return value, length


def frame_header(data: Buffer, offset: int) -> FrameHeader | None:
    """The FLAC frame header at ``offset`` of ``data`` when one is there: its sync code, no reserved or
    invalid code, and its CRC-8 matching (a chance of about 1 in 10 000 for bytes that are none); else None."""
    head = bytes(data[offset : offset + 16])
    if len(head) < 6 or head[0] != 0xFF or head[1] & 0xFE != 0xF8:
        return None
    size_code, rate_code, channels, bits = head[2] >> 4, head[2] & 0x0F, head[3] >> 4, head[3] >> 1 & 0x07
    if size_code == 0 or rate_code == 15 or channels > 10 or bits == 3 or head[3] & 1:
        return None
    coded = _coded_number(head, 4)
    if coded is None:
        return None
    number, at = coded[0], 4 + coded[1]
    extra_size = {6: 1, 7: 2}.get(size_code, 0)
    extra_rate = {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if at + extra_size + extra_rate >= len(head):
        return None
    if extra_size:
        samples = int.from_bytes(head[at : at + extra_size], "big") + 1
    else:
        samples = 192 if size_code == 1 else 576 << (size_code - 2) if size_code <= 5 else 256 << (size_code - 8)
    at += extra_size + extra_rate
    if _crc8(head[:at]) != head[at]:
        return None
    return FrameHeader(number, samples, bool(head[1] & 1))


def _stream_samples(data: Buffer) -> tuple[int, int, int] | None:
    """Where the FLAC stream starts in ``data`` (after an ID3v2 tag, if any), its STREAMINFO's largest frame size
    in bytes (0: unknown) and its total samples; None for no FLAC stream there."""
    at = id3v2_size(data)
    if len(data) < at + STREAMINFO_END or bytes(data[at : at + 4]) != b"fLaC" or data[at + 4] & 0x7F != 0:
        return None
    info = bytes(data[at + 8 : at + STREAMINFO_END])
    return at, int.from_bytes(info[7:10], "big"), int.from_bytes(info[10:18], "big") & (1 << 36) - 1


def counted_samples(data: Buffer) -> int | None:
    """The samples the frames of the FLAC file ``data`` hold, from its last frame whose header follows
    another one's in number (two headers by chance in a row: about 1 in 10**8), when that is more than its
    STREAMINFO counts; None otherwise (the usual file, a count of 0: unknown, no FLAC, no frames found)."""
    found = _stream_samples(data)
    if found is None or found[2] == 0:
        return None
    at, largest, counted = found
    start = max(at + STREAMINFO_END, len(data) - (2 * largest + TAIL_WINDOW if largest else UNKNOWN_FRAME_BYTES))
    headers = [(match.start(), header) for match in SYNC.finditer(data, start)
               if (header := frame_header(data, match.start())) is not None]
    for index in range(len(headers) - 1, 0, -1):
        last = headers[index][1]
        before = next((header for _, header in reversed(headers[:index]) if header.variable == last.variable
                       and (header.number + header.samples == last.number if last.variable
                            else header.number + 1 == last.number)), None)
        if before is not None:
            end = last.number + last.samples if last.variable else last.number * before.samples + last.samples
            return end if end > counted else None
    return None


def undercounted_head(data: Buffer) -> bytes | None:
    """For the FLAC file ``data`` (one stream) whose STREAMINFO counts fewer samples than its frames hold
    (:func:`counted_samples`): its bytes up to the end of STREAMINFO, counting them; else None."""
    if (samples := counted_samples(data)) is None or flac_stream_starts(data) != [at := id3v2_size(data)]:
        return None  # several streams joined: check_whole_stream names them
    head = bytearray(data[: at + STREAMINFO_END])
    fields = int.from_bytes(head[at + 18 : at + 26], "big") & ~((1 << 36) - 1) | samples
    head[at + 18 : at + 26] = fields.to_bytes(8, "big")
    return bytes(head)


def undercounted_view(handle: sf.SoundFile, source: str | BinaryIO) -> sf.SoundFile | None:
    """For ``handle``, a FLAC file (one stream) whose STREAMINFO counts fewer samples than its frames hold
    (:func:`counted_samples`): an ``sf.SoundFile`` reading all of them, through a view whose STREAMINFO
    counts them; else None. Walks only the file's last frames (and, for such a file, its stream headers)."""
    if handle.format != "FLAC" or not 0 < handle.frames < 2**62:
        return None
    head = walk_or_none(source, undercounted_head)
    return None if head is None else open_spliced(source, head, len(head), 2**63)

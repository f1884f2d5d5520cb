"""Samples in an MP3 (MPEG-1/2/2.5 audio, layers I-III), counted by walking its frame headers.

libsndfile (through mpg123) takes an MP3's length from its first frame: a Xing/Info/VBRI header's
frame count, else the file's size over the first frame's bitrate, and never reads past it. A
variable-bitrate MP3 without such a header (a stream capture) or files joined together (the first
one's header) are so read only in part, with no error: :func:`mp3_samples` counts what is there, from the first
frame (:func:`first_frame`: past bytes that are none, as a decoder resyncs).
"""

from __future__ import annotations

from typing import NamedTuple

from speechsum.data.file_walk import Buffer

# kbit/s by bitrate index, for (MPEG-1?, layer); index 0 (free format) and 15 (invalid) are None
_MPEG1 = {1: (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
          2: (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
          3: (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)}
_MPEG2 = {1: (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
          2: (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_MPEG2[3] = _MPEG2[2]
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits
_VBR_TAGS = (b"Xing", b"Info", b"VBRI")  # a first frame holding one is a header, decoded as no samples
ID3V1_SIZE = 128  # the tag that may follow the last frame
RESYNC_BYTES = 1 << 16  # how far from its start (after an ID3v2 tag) an MP3's first frame is looked for


def _frame(header: int) -> tuple[int, int] | None:
    """(bytes, samples) of the frame whose 4-byte header is ``header``, or None (no frame header, or
    free format, whose length the header does not give)."""
    version, layer = (header >> 19) & 3, 4 - ((header >> 17) & 3)  # layer bits 3, 2, 1: layers I, II, III
    bitrate, rate = (header >> 12) & 15, (header >> 10) & 3
    if header >> 21 != 0x7FF or version == 1 or layer == 4 or bitrate in (0, 15) or rate == 3:
        return None
    mpeg1, padding = version == 3, (header >> 9) & 1
    kbps = (_MPEG1 if mpeg1 else _MPEG2)[layer][bitrate - 1]
    hz = _RATES[version][rate]
    if layer == 1:
        return (12 * kbps * 1000 // hz + padding) * 4, 384
    per_frame = 1152 if mpeg1 or layer == 2 else 576
    return per_frame // 8 * kbps * 1000 // hz + padding, per_frame


def id3v2_size(data: Buffer) -> int:
    """Bytes of the ID3v2 tag at the start of ``data`` (0: none)."""
    head = bytes(data[:10])
    if len(head) < 10 or head[:3] != b"ID3":
        return 0
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]  # syncsafe: 7 bits a byte
    return 10 + size + (10 if head[5] & 0x10 else 0)  # flag 0x10: a footer follows


def _vbr_header_end(view: memoryview, offset: int) -> int | None:
    """Where the frames end by the byte count of the Xing/Info/VBRI header in the frame at ``offset``
    (a count that includes that frame), or None (no header, or one without a byte count)."""
    head = bytes(view[offset : offset + 60])
    for tag in (b"Xing", b"Info"):
        at = head.find(tag, 4)
        if at >= 0 and int.from_bytes(head[at + 4 : at + 8], "big") & 2:  # flag 2: the byte count is there
            flags_end = at + 8 + (4 if head[at + 7] & 1 else 0)  # flag 1: a frame count comes first
            return offset + int.from_bytes(head[flags_end : flags_end + 4], "big")
    if head[36:40] == b"VBRI":
        return offset + int.from_bytes(head[46:50], "big")
    return None


def _count_fits(view: memoryview, offset: int, size: int) -> bool:
    """Whether the frame count of the Xing/Info/VBRI header in the frame at ``offset`` (none: True) fits in the
    ``size`` bytes its header counts, each frame at least as long as one at the lowest bitrate: a damaged count
    (millions of frames in kilobytes, which libsndfile takes for hours of samples) does not."""
    head = bytes(view[offset : offset + 60])
    at = max(head.find(b"Xing", 4), head.find(b"Info", 4))
    if at >= 0 and int.from_bytes(head[at + 4 : at + 8], "big") & 1:  # flag 1: the frame count is there
        count = int.from_bytes(head[at + 8 : at + 12], "big")
    elif head[36:40] == b"VBRI":
        count = int.from_bytes(head[50:54], "big")
    else:
        return True
    lowest = _frame(int.from_bytes(head[:4], "big") & ~(0xF << 12 | 1 << 9) | 1 << 12)  # bitrate index 1, unpadded
    return lowest is None or count * lowest[0] <= size


class Mp3Walk(NamedTuple):
    """What a walk over an MP3's frames found: ``samples`` (per channel) in its whole frames; ``cut``:
    ``(bytes there, bytes it needs)`` of a last frame that runs past the end of the file (cut short),
    or None; ``rest``: the bytes after the last whole frame (0: the frames reach the end)."""

    samples: int
    cut: tuple[int, int] | None
    rest: int


def mp3_walk(data: Buffer) -> Mp3Walk | None:
    """Walk the MP3 ``data``'s frames from its start (after an ID3v2 tag) up to the first byte that
    is not a frame (an ID3v1/APE tag, the end), not counting a VBR header frame. None when no frame
    starts there, the stream is free format, or its VBR header's byte count reaches the end of
    ``data`` (but for an ID3v1 tag): libsndfile's length, from that header, is then the whole
    file's, and the walk (which touches every frame of the file) is not needed."""
    view = memoryview(data)
    offset, samples, first = first_frame(data, id3v2_size(view)), 0, True
    if offset is None:
        return None
    end = _vbr_header_end(view, offset) if offset + 4 <= len(view) else None
    if end is not None and 0 <= len(view) - end <= ID3V1_SIZE and _count_fits(view, offset, end - offset):
        return None
    while offset + 4 <= len(view):
        frame = _frame(int.from_bytes(view[offset : offset + 4], "big"))
        if frame is None:
            break
        length, count = frame
        if offset + length > len(view):  # its samples are not counted: libsndfile decodes whole frames
            return Mp3Walk(samples, (len(view) - offset, length), len(view) - offset)
        if not (first and any(tag in bytes(view[offset + 4 : offset + 48]) for tag in _VBR_TAGS)):
            samples += count
        offset, first = offset + length, False
    return None if first else Mp3Walk(samples, None, len(view) - offset)


def counts_past_end(data: Buffer) -> bool:
    """Whether the MP3 ``data``'s first frame is a Xing/Info/VBRI header whose counts reach past its end: a byte
    count beyond it, or (none given) a frame count its bytes hold at the lowest bitrate (a file cut short at a frame
    boundary). False: no such header (libsndfile's length is its estimate from the first frame's bitrate, as for a
    stream captured from mid-frame), or one whose frame count no bytes of it could hold (damaged): the frames it
    holds are all there is."""
    view = memoryview(data)
    offset = first_frame(data, id3v2_size(view))
    if offset is None or not any(tag in bytes(view[offset + 4 : offset + 48]) for tag in _VBR_TAGS):
        return False
    end = _vbr_header_end(view, offset)
    return end > len(view) if end is not None else _count_fits(view, offset, len(view) - offset)


def first_frame(data: Buffer, offset: int) -> int | None:
    """Where the MP3 ``data``'s frames start from ``offset`` (after its ID3v2 tag): there, or, where bytes that are
    no frame come first (a stream captured from mid-frame, padding after a tag), the first of three frames in a row
    within :data:`RESYNC_BYTES`, as a decoder resyncs on them; None when none start there. Those bytes were taken
    for the end of the frames: a variable-bitrate file behind them, of which libsndfile reads a part, passed."""
    if offset + 4 <= len(data) and _frame(int.from_bytes(data[offset : offset + 4], "big")) is not None:
        return offset
    head = bytes(data[offset : offset + RESYNC_BYTES])
    at = head.find(b"\xff")
    while at >= 0:
        if _chain_at(data, offset + at):
            return offset + at
        at = head.find(b"\xff", at + 1)
    return None


def _chain_at(data: Buffer, offset: int, chain: int = 3) -> bool:
    """Whether ``chain`` MP3 frames in a row start at ``offset`` of ``data``."""
    for _ in range(chain):
        frame = _frame(int.from_bytes(data[offset : offset + 4], "big")) if offset + 4 <= len(data) else None
        if frame is None:
            return False
        offset += frame[0]
    return True


def mp3_samples(data: Buffer) -> int | None:
    """Samples (per channel) in the MP3 ``data``'s whole frames (:func:`mp3_walk`), or None where
    :func:`mp3_walk` gives None."""
    walked = mp3_walk(data)
    return None if walked is None else walked.samples


def frames_follow(data: Buffer, offset: int, chain: int = 3) -> bool:
    """Whether ``chain`` MP3 frames in a row start somewhere from ``offset`` of ``data`` (a decoder
    resyncs on them: bytes that are no frame in the middle of a stream, not a tag at its end)."""
    at = data.find(b"\xff", offset)
    while 0 <= at <= len(data) - 4:
        position, found = at, 0
        while found < chain and position + 4 <= len(data) and (frame := _frame(int.from_bytes(data[position : position + 4], "big"))):
            position, found = position + frame[0], found + 1
        if found == chain:
            return True
        at = data.find(b"\xff", at + 1)
    return False

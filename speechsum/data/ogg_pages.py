"""Logical streams in an Ogg file, counted by walking its page headers.

An Ogg file may hold streams one after another ("chained": files joined together, a web-radio
capture); libsndfile reads the first one only, without an error, so :func:`ogg_links` says how
many there are. Its last page says where the stream ends (:func:`ogg_end_frames`) and whether the
file ends whole (:func:`ends_with_stream_end`): what a damaged page, which libsndfile drops, hides.
"""

from __future__ import annotations

from typing import NamedTuple

from speechsum.data.file_walk import Buffer

PAGE_HEADER = 27  # "OggS", version, type, granule (8), serial (4), sequence (4), CRC (4), segment count
FIRST_PAGE, LAST_PAGE = 0x02, 0x04  # header-type bits: beginning and end of a stream


def ogg_links(data: Buffer) -> int:
    """Links of the Ogg ``data``: groups of streams that follow each other (a stream that begins after
    one ended; streams multiplexed side by side, as a Skeleton track beside the audio, are one link),
    up to the first byte that is not a page (the end, or damage)."""
    view, offset, links, ended = memoryview(data), 0, 0, True
    while offset + PAGE_HEADER <= len(view) and view[offset : offset + 4] == b"OggS":
        kind, segments = view[offset + 5], view[offset + PAGE_HEADER - 1]
        if kind & FIRST_PAGE and ended:
            links, ended = links + 1, False
        ended = ended or bool(kind & LAST_PAGE)
        offset += PAGE_HEADER + segments + sum(view[offset + PAGE_HEADER : offset + PAGE_HEADER + segments])
    return links


MAX_PAGE = PAGE_HEADER + 255 + 255 * 255  # the largest Ogg page: 255 segments of 255 bytes
OPUS_RATE = 48_000  # an Opus stream's granule positions count 48 kHz samples, whatever its input rate


def last_page(data: Buffer) -> int | None:
    """Offset of the Ogg ``data``'s last page when the file ends with that whole page; None when it
    does not (cut short, or bytes after it), or holds no page near its end."""
    view = memoryview(data)
    start = max(0, len(view) - MAX_PAGE)
    at = bytes(view[start:]).rfind(b"OggS")
    while at >= 0:
        offset = start + at
        if offset + PAGE_HEADER <= len(view) and view[offset + 4] == 0:
            segments = view[offset + PAGE_HEADER - 1]
            if offset + PAGE_HEADER + segments + sum(view[offset + PAGE_HEADER : offset + PAGE_HEADER + segments]) \
                    == len(view):
                return offset
        at = bytes(view[start:offset]).rfind(b"OggS")
    return None


def ends_with_stream_end(data: Buffer) -> bool:
    """Whether the Ogg ``data`` ends with a whole page that ends its stream (so it was not cut short)."""
    offset = last_page(data)
    return offset is not None and bool(memoryview(data)[offset + 5] & LAST_PAGE)


OPUS_FRAME_SAMPLES = (480, 960, 1920, 2880) * 3 + (480, 960) * 2 + (120, 240, 480, 960) * 4  # by TOC config
MIN_OPUS_PACKET = 120  # the shortest Opus packet: one frame of 2.5 ms at 48 kHz
CONTINUED = 0x01  # header-type bit: the page's first packet began on the page before


def opus_packet_samples(packet: Buffer) -> int:
    """48 kHz samples an Opus ``packet`` decodes to, by its TOC byte (RFC 6716, 3.1): frame size × frames;
    :data:`MIN_OPUS_PACKET` for one too short to say."""
    if len(packet) == 0 or (packet[0] & 3 == 3 and len(packet) < 2):
        return MIN_OPUS_PACKET
    frames = (1, 2, 2, packet[1] & 0x3F if len(packet) > 1 else 1)[packet[0] & 3]
    return OPUS_FRAME_SAMPLES[packet[0] >> 3] * frames


def _first_audio_page(view: memoryview) -> int | None:
    """Offset of the first page with a positive granule position (the first that ends audio packets), or None."""
    offset = 0
    while offset + PAGE_HEADER <= len(view) and view[offset : offset + 4] == b"OggS":
        segments = view[offset + PAGE_HEADER - 1]
        if int.from_bytes(view[offset + 6 : offset + 14], "little", signed=True) > 0:
            return offset
        offset += PAGE_HEADER + segments + sum(view[offset + PAGE_HEADER : offset + PAGE_HEADER + segments])
    return None


def _least_samples(view: memoryview, offset: int, head: bytes) -> int:
    """Fewest samples (at the stream's granule rate) that the packets ending in the page at ``offset`` decode
    to: for Opus, what their TOC bytes say (each :data:`MIN_OPUS_PACKET` if the page continues a packet);
    for Vorbis, its short block ``blocksize_0`` / 2 per packet after the first (which decodes to none; the
    header in ``head`` gives the block size)."""
    table = bytes(view[offset + PAGE_HEADER : offset + PAGE_HEADER + view[offset + PAGE_HEADER - 1]])
    ends = [at for at, lace in enumerate(table) if lace < 255]  # a packet ends at a lacing value under 255
    if head.startswith(b"\x01vorbis"):
        return max(0, len(ends) - 1) * (1 << (head[28] & 0x0F)) // 2 if len(head) > 28 else 0
    if view[offset + 5] & CONTINUED:
        return len(ends) * MIN_OPUS_PACKET
    body, start, samples = offset + PAGE_HEADER + len(table), 0, 0
    for end in ends:
        size = sum(table[start : end + 1])
        samples += opus_packet_samples(view[body : body + size])
        body, start = body + size, end + 1
    return samples


class OggEnd(NamedTuple):
    """Where an Ogg stream ends, in frames at the rate asked for: ``frames`` by its last page's granule
    position; ``start``: the largest start offset its first audio page allows (which libsndfile subtracts)."""

    frames: int
    start: int


def ogg_end_frames(data: Buffer, rate: int) -> OggEnd | None:
    """Where the Ogg Vorbis or Opus ``data`` ends (:class:`OggEnd`) by its last page's granule position (its
    header's, read whatever its payload), less an Opus stream's pre-skip, at ``rate`` Hz; with the largest
    start offset its first audio page allows (its granule position less the fewest samples its packets
    decode to, :func:`_least_samples`: a stream cut from a longer one keeps its place in it, and libsndfile
    subtracts that start). None for another codec or a file that does not end with a whole page
    (:func:`last_page`). libsndfile takes the length from the last page it can read: a damaged last page
    made a file shorter without a word; a whole file reads at least ``frames - start``."""
    view = memoryview(data)
    if len(view) < PAGE_HEADER or view[:4] != b"OggS" or (offset := last_page(view)) is None:
        return None
    head = bytes(view[PAGE_HEADER + view[PAGE_HEADER - 1] :][:30])  # the first packet: the codec's header
    if not head.startswith((b"\x01vorbis", b"OpusHead")) or (first := _first_audio_page(view)) is None:
        return None
    start = max(0, int.from_bytes(view[first + 6 : first + 14], "little", signed=True) - _least_samples(view, first, head))
    granule = int.from_bytes(view[offset + 6 : offset + 14], "little", signed=True)
    if not head.startswith(b"OpusHead"):
        return OggEnd(granule, start)
    skip = int.from_bytes(head[10:12], "little")
    return OggEnd((granule - skip) * rate // OPUS_RATE, start * rate // OPUS_RATE)

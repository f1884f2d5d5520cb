"""Logical streams in an Ogg file, counted by walking its page headers.

An Ogg file may hold streams one after another ("chained": files joined together, a web-radio
capture); libsndfile reads the first one only, without an error, so :func:`ogg_links` says how
many there are. Its last page says where the stream ends (:func:`ogg_end_frames`) and whether the
file ends whole (:func:`ends_with_stream_end`): what a damaged page, which libsndfile drops, hides.
"""

from __future__ import annotations

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


# samples one packet decodes to at most: Vorbis (a block of 8192, half of it output), Opus (120 ms at 48 kHz)
MAX_PACKET_SAMPLES = {b"\x01vorbis": 4096, b"OpusHead": 5760}


def _first_audio_page(view: memoryview) -> tuple[int, int] | None:
    """``(granule position, packets that end in it)`` of the first page with a positive granule
    position (the first that ends audio packets), or None."""
    offset = 0
    while offset + PAGE_HEADER <= len(view) and view[offset : offset + 4] == b"OggS":
        segments = view[offset + PAGE_HEADER - 1]
        table = view[offset + PAGE_HEADER : offset + PAGE_HEADER + segments]
        if (granule := int.from_bytes(view[offset + 6 : offset + 14], "little", signed=True)) > 0:
            return granule, sum(1 for lace in table if lace < 255)  # a packet ends at a lacing value under 255
        offset += PAGE_HEADER + segments + sum(table)
    return None


def ogg_end_frames(data: Buffer, rate: int) -> int | None:
    """Frames at ``rate`` Hz that the Ogg Vorbis or Opus ``data`` holds by its last page's granule
    position (its header's, read whatever its payload), less an Opus stream's pre-skip; None for
    another codec, a file that does not end with a whole page (:func:`last_page`), or a stream whose
    granule positions do not start at 0 (its first audio page's is more than its packets decode to:
    a part cut from a longer stream, whose start libsndfile subtracts). libsndfile takes the length
    from the last page it can read: a damaged last page made a file shorter without a word."""
    view = memoryview(data)
    if len(view) < PAGE_HEADER or view[:4] != b"OggS" or (offset := last_page(view)) is None:
        return None
    head = bytes(view[PAGE_HEADER + view[PAGE_HEADER - 1] :][:19])  # the first packet: the codec's header
    codec = next((magic for magic in MAX_PACKET_SAMPLES if head.startswith(magic)), None)
    if codec is None or (first := _first_audio_page(view)) is None:
        return None
    skip = int.from_bytes(head[10:12], "little") if codec == b"OpusHead" else 0
    if first[0] > first[1] * MAX_PACKET_SAMPLES[codec] + skip:
        return None
    granule = int.from_bytes(view[offset + 6 : offset + 14], "little", signed=True)
    return granule if codec != b"OpusHead" else (granule - skip) * rate // OPUS_RATE

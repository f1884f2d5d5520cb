"""Logical streams in an Ogg file, counted by walking its page headers.

An Ogg file may hold streams one after another ("chained": files joined together, a web-radio
capture); libsndfile reads the first one only, without an error, so :func:`ogg_links` says how
many there are.
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

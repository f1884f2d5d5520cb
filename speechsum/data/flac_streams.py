"""FLAC streams in a file, found by their headers: "fLaC" and the STREAMINFO block that must follow.

Two FLAC files joined byte for byte (``cat a.flac b.flac``) are one file holding two streams;
libsndfile reads the first stream's samples (its STREAMINFO's count) and stops, without an error,
so :func:`flac_stream_starts` says where each stream begins.
"""

from __future__ import annotations

import re

from speechsum.data.file_walk import Buffer

# "fLaC", then the first metadata block's header: STREAMINFO (type 0, the last-block bit either way)
# and its fixed length, 34 bytes. Eight bytes that compressed audio holds by chance about once in 2**63.
STREAM_HEADER = re.compile(rb"fLaC[\x00\x80]\x00\x00\x22")


def flac_stream_starts(data: Buffer) -> list[int]:
    """Byte offsets at which a FLAC stream (its "fLaC" marker and STREAMINFO header) begins in ``data``,
    in order; one for a whole FLAC file (after an ID3v2 tag, if any), none for no FLAC."""
    return [match.start() for match in STREAM_HEADER.finditer(data)]


def flac_frames_offset(data: Buffer) -> int | None:
    """Byte offset of the first audio frame of the FLAC stream at the start of ``data`` (after its
    "fLaC" marker and metadata blocks; beyond ``len(data)`` when the metadata runs past the end), or
    None when ``data`` does not start with a FLAC stream."""
    if bytes(data[:4]) != b"fLaC":
        return None
    offset = 4
    while offset + 4 <= len(data):
        header = int.from_bytes(data[offset : offset + 4], "big")  # last-block bit, 7-bit type, 24-bit length
        offset += 4 + (header & 0xFFFFFF)
        if header >> 31:
            return offset
    return max(offset, len(data) + 1)  # the last metadata block never came: no frame can follow

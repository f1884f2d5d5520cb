"""An AIFF (or AIFF-C) file whose writer stopped before it wrote its sizes: libsndfile and sox write the header
first with no frames (``COMM`` frame count 0, ``SSND`` size 8: its offset and block-size fields alone) and
fill them in when the file is closed, so a recorder killed mid-write leaves samples that libsndfile reads
none of ("empty audio file"). :func:`uncounted_samples_view` reads them: the samples there are, through a
view whose ``SSND`` size counts them (libsndfile then takes the frames from it). Also an AU file whose header's
data size is 2 GiB or more (but not ``0xFFFFFFFF``, "unknown") and more than the file holds: libsndfile's sum of it
and the header's size overflows, and it read no sample ("empty audio file" of a second of speech, where a size
below 2 GiB that the file lacks reads what is there with a cut-short warning): :func:`au_samples_view` reads them.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

import soundfile as sf

from speechsum.data.file_walk import Buffer, walk_file, walk_or_none
from speechsum.data.wav_order import open_spliced

SSND_FIELDS = 8  # an SSND chunk's offset and block-size fields, before its samples


def uncounted_ssnd(data: Buffer) -> int | None:
    """For an AIFF/AIFF-C ``data`` whose ``COMM`` chunk counts 0 frames and whose ``SSND`` chunk counts no
    sample (a size of at most :data:`SSND_FIELDS`) though bytes follow it: where the ``SSND`` chunk starts;
    else None."""
    if bytes(data[:4]) != b"FORM" or bytes(data[8:12]) not in (b"AIFF", b"AIFC"):
        return None
    offset, frames = 12, None
    while offset + 8 <= len(data):
        name, size = bytes(data[offset : offset + 4]), struct.unpack(">I", data[offset + 4 : offset + 8])[0]
        if name == b"COMM" and size >= 18:
            frames = struct.unpack(">I", data[offset + 10 : offset + 14])[0]
        if name == b"SSND":
            counts_none = size <= SSND_FIELDS and len(data) > offset + 8 + SSND_FIELDS
            return offset if counts_none and frames == 0 else None
        offset += 8 + size + (size & 1)
    return None


def uncounted_samples_view(handle: sf.SoundFile, source: str | BinaryIO) -> sf.SoundFile | None:
    """For ``handle``, an AIFF of which libsndfile reads no frame because its writer never wrote the sizes
    (:func:`uncounted_ssnd`): an ``sf.SoundFile`` reading the samples there are; else None."""
    if handle.format != "AIFF" or handle.frames != 0:
        return None
    if (ssnd := walk_or_none(source, uncounted_ssnd)) is None:
        return None
    head, length = walk_file(source, lambda data: (bytes(data[: ssnd + 4]), len(data)))
    size = length - ssnd - 8  # the offset and block-size fields and every byte after them
    head = head[:4] + struct.pack(">I", length - 8) + head[8:] + struct.pack(">I", size)
    if (reader := open_spliced(source, head, ssnd + 8, size)) is not None and reader.frames == 0:
        reader.close()
        return None
    return reader


AU_UNKNOWN = 0xFFFFFFFF  # an AU header's data size when its writer did not know it ("to the end": libsndfile reads so)


def au_sizes(data: Buffer) -> tuple[int, int, int] | None:
    """``(data offset, the header's data size, bytes after the header)`` of the AU ``data`` whose header's data size
    (not :data:`AU_UNKNOWN`) is more than the bytes after its header; else None."""
    if bytes(data[:4]) != b".snd" or len(data) < 24:
        return None
    offset, size = struct.unpack(">II", data[4:12])
    there = len(data) - offset
    return (offset, size, there) if size != AU_UNKNOWN and 24 <= offset <= len(data) and size > there else None


def au_samples_view(handle: sf.SoundFile, source: str | BinaryIO) -> sf.SoundFile | None:
    """For ``handle``, an AU file of which libsndfile reads no frame because its header's data size is more than it
    can take (:func:`au_sizes`, 2 GiB or more) or the file holds: an ``sf.SoundFile`` reading the samples there are
    (a view whose data size counts them); else None. The size is still said to be wrong
    (:func:`~speechsum.data.cut_short.damage`: the file is cut short)."""
    if handle.format != "AU" or handle.frames != 0 or (found := walk_or_none(source, au_sizes)) is None:
        return None
    offset, _, there = found
    if there <= 0:
        return None
    head = walk_file(source, lambda data: bytes(data[:offset]))
    head = head[:8] + struct.pack(">I", there) + head[12:]
    if (reader := open_spliced(source, head, offset, there)) is not None and reader.frames == 0:
        reader.close()
        return None
    return reader

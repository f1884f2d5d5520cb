"""A streamed WAV (its data size a writer's "unknown": ``0xFFFFFFFF`` from a pipe, arecord's ``0x7FFFF000``)
that ends in a chunk after its samples (a ``LIST`` of tags, ``id3 ``, ...): libsndfile reads the data to the
end of the file and so reads that chunk's bytes as samples (a click at the end). :func:`trailing_chunks_start`
finds such a chunk where the samples would end, when that is unambiguous: the first known chunk name on a
frame boundary from which the chunks' sizes lead exactly to the end of the file, within the file's last
:data:`TAIL_BYTES` (a cheap look, not a walk over the samples), or anywhere after the samples' start when the
RIFF size counts the whole file (a tagger that appended chunks rewrote it: a chunk of cover art can be
megabytes, and the look at the last 4 MiB read it as samples). That search runs at about 150 MB/s, so
:func:`samples_view` keeps what it found per file (path, size, modification time) in the process: a long file
read every epoch is searched once. :func:`samples_view` reads the samples alone. Also the samples a block-coded
WAV's last block holds beyond its ``fact`` count (:func:`counted_frames`).
"""

from __future__ import annotations

import os
import re
import struct
from typing import BinaryIO

import soundfile as sf

from speechsum.data.cut_short import placeholder_size
from speechsum.data.file_walk import Buffer, walk_file, walk_or_none
from speechsum.data.wav_order import open_spliced, riff_chunks

# chunks writers put after the samples (RIFF INFO tags, ID3 tags, broadcast/cue/sampler metadata)
TRAILING = re.compile(rb"LIST|id3 |ID3 |bext|JUNK|junk|PAD |cue |smpl|inst|acid|PEAK|iXML|_PMX|axml|cart|umid|labl|fact")
BLOCK_CODED = frozenset({"IMA_ADPCM", "MS_ADPCM", "GSM610", "G721_32", "G723_24", "G723_40"})  # samples in blocks
BLOCK_PADDING = 1024  # frames a block-coded WAV's last block may hold beyond its 'fact' count (none logged)
FACT_FRAMES = re.compile(r"^ +frames +: (\d+)$")  # libsndfile's log line of a 'fact' chunk's count
SAMPLES_PER_BLOCK = re.compile(r"^ +Samples/Block +: (\d+)$", re.MULTILINE)  # an ADPCM block's frames
TAIL_BYTES = 1 << 22  # how far back from the end a trailing chunk is looked for in a file whose RIFF size is unknown
MAX_TRAILING = 16  # chunks after the samples, at most
SEARCHED_FILES = 4096  # files whose search :func:`samples_view` keeps (then it starts over)
_searched: dict[tuple, tuple[int, int] | None] = {}  # (path, device, inode, size, mtime) -> what the search found


def _chain_reaches_end(data: Buffer, offset: int) -> bool:
    """Whether the chunks from ``offset`` on (their sizes padded to an even number, the last one's pad
    optional) end exactly at the end of ``data``."""
    end = len(data)
    for _ in range(MAX_TRAILING):
        if offset + 8 > end or not all(32 <= byte < 127 for byte in bytes(data[offset : offset + 4])):
            return False
        stop = offset + 8 + struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        if stop == end or stop + (stop & 1) == end:
            return True
        offset = stop + (stop & 1)
    return False


def trailing_chunks_start(data: Buffer) -> tuple[int, int] | None:
    """For a WAV ``data`` whose ``data`` chunk has a streaming writer's size (:func:`placeholder_size`) and ends
    in chunks after its samples: ``(where its samples start, how many bytes they are)``; for one whose data size is
    0 and samples follow (its sizes never written, :func:`unknown_size`: libsndfile read none of them, the file
    was refused) the same, up to such chunks or the end of the file; else None (not such a file, or no chunk found
    unambiguously)."""
    fmt = data_start = None
    for name, offset, size in riff_chunks(data):
        if name == b"fmt " and size >= 16:
            fmt = offset
        if name == b"data":
            data_start, unsized = (offset + 8 if unknown_size(size) else None), size == 0
            break
    if fmt is None or data_start is None:
        return None
    align = struct.unpack("<H", data[fmt + 20 : fmt + 22])[0] or 1  # nBlockAlign: bytes per frame
    counted = struct.unpack("<I", data[4:8])[0] in (len(data) - 8, len(data) - 9)  # the RIFF size (its pad optional)
    window = data_start if counted else max(data_start, len(data) - TAIL_BYTES)
    for match in TRAILING.finditer(data, window):  # the buffer itself: a long file is not copied
        start = match.start()
        samples = start - data_start
        if (samples % align or align == 1 and data[start - 1] == 0) and samples % 2 == 0 \
                and (samples - 1) % align == 0:
            samples -= 1  # the pad byte of an odd-sized data chunk (8-bit: a 0 byte, -1.0, no speech's last sample)
        if samples > 0 and samples % align == 0 and _chain_reaches_end(data, start):
            return data_start, samples
    if unsized and not _chain_reaches_end(data, data_start):  # not an empty data chunk followed by chunks
        samples = (len(data) - data_start) // align * align  # a last frame cut in the middle left out
        return (data_start, samples) if samples > 0 else None
    return None


def unknown_size(size: int) -> bool:
    """Whether a WAV ``data`` size gives no length: a streaming writer's placeholder (:func:`placeholder_size`), or
    0, left by a writer that stopped before it wrote the sizes (Python's ``wave`` module, a recorder that crashed)."""
    return size == 0 or placeholder_size(size)


def counted_frames(handle: sf.SoundFile) -> int:
    """``handle``'s frames; for a WAV of block-coded samples (ADPCM, GSM, G.72x) whose ``fact`` chunk counts fewer,
    by a block at most (:data:`BLOCK_PADDING` where libsndfile logs no block size): that count. A whole block: a GSM
    6.10 WAV of an odd number of 65-byte blocks (8 kHz telephony, 1 s: 25), of which libsndfile decodes one block
    more than its data holds, 40 ms of full-scale noise. libsndfile decodes the
    whole last block, and its padding was read as samples (a tail of noise; 1.012 s of a 1-s MS ADPCM clip)."""
    if handle.format not in ("WAV", "WAVEX", "RF64") or handle.subtype not in BLOCK_CODED:
        return handle.frames
    lines = handle.extra_info.splitlines()
    fact = next((i for i, line in enumerate(lines) if line.startswith("fact")), None)
    count = FACT_FRAMES.match(lines[fact + 1]) if fact is not None and fact + 1 < len(lines) else None
    block = SAMPLES_PER_BLOCK.search(handle.extra_info)  # a count short by more is no padding (libsndfile's own
    padding = int(block[1]) if block else BLOCK_PADDING  # stereo IMA ADPCM writer counts half the frames)
    return int(count[1]) if count and 0 <= handle.frames - int(count[1]) <= padding else handle.frames


def samples_view(handle: sf.SoundFile, source: str | BinaryIO) -> sf.SoundFile | None:
    """For ``handle``, a streamed WAV that ends in chunks after its samples (:func:`trailing_chunks_start`):
    an ``sf.SoundFile`` reading its samples alone (a :func:`~speechsum.data.wav_order.open_spliced` view whose
    data size counts them); else None. Only a file whose header libsndfile logs a placeholder size for is walked."""
    if handle.format not in ("WAV", "WAVEX") or not any(
            name.strip() == "data" and rest.split("(")[0].strip().isdigit()
            and unknown_size(int(rest.split("(")[0]))
            for name, _, rest in (line.partition(":") for line in handle.extra_info.splitlines())):
        return None
    if (found := _searched_once(source)) is None:
        return None
    start, size = found
    head = walk_file(source, lambda data: bytes(data[: start - 4]))
    head = head[:4] + struct.pack("<I", len(head) + size - 4) + head[8:] + struct.pack("<I", size)
    return open_spliced(source, head, start, size)


def _searched_once(source: str | BinaryIO) -> tuple[int, int] | None:
    """:func:`trailing_chunks_start` of ``source``; for a path, kept per file as it is now (its path, inode,
    size and modification time: a file rewritten is searched again)."""
    try:
        stat = os.stat(source) if isinstance(source, str) else None
    except OSError:
        stat = None
    if stat is None:
        return walk_or_none(source, trailing_chunks_start)
    key = (source, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _searched:
        if len(_searched) >= SEARCHED_FILES:
            _searched.clear()
        _searched[key] = walk_or_none(source, trailing_chunks_start)
    return _searched[key]

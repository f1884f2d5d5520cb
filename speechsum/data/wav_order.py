"""A WAV whose ``fmt `` chunk (the sample format) comes after its ``data`` chunk, or whose chunk of an odd
size before them lacks its pad byte, read as if in order.

RIFF lets chunks come in any order, but libsndfile needs ``fmt `` before ``data`` (its error: "No
'data' chunk marker"), and some writers put it last; RIFF pads a chunk of odd size to an even one, and
some writers leave the pad byte out (a ``LIST``, ``bext`` or ``JUNK`` chunk of odd size: libsndfile then
reads the next chunk's name one byte late and says the same). :func:`open_in_order` presents such a file to
soundfile as the RIFF header, the ``fmt `` chunk and the ``data`` chunk, the samples read from where
they are (nothing is copied); the other chunks (LIST, ...) are left out. A BW64 file (RF64 under another
name) and a CAF file whose data size says "to the end" are read through such a view too. Closing the
``SoundFile`` does not close a virtual file: :class:`Spliced` closes the file it opened when it is collected.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from typing import BinaryIO

import soundfile as sf

from speechsum.data.file_walk import Buffer, walk_file


def _chunk_name_at(data: Buffer, offset: int) -> bool:
    """Whether a chunk name (four printable ASCII characters, as ``LIST``, ``fmt ``) starts at ``offset``."""
    name = bytes(data[offset : offset + 4])
    return len(name) == 4 and all(32 <= byte < 127 for byte in name)


def riff_chunks(data: Buffer, unpadded: bool = False) -> Iterator[tuple[bytes, int, int]]:
    """``(name, offset of its header, size)`` of each chunk header of the RIFF/WAVE ``data``, in
    order, up to the end (none for a file that is no RIFF WAVE). ``unpadded``: a chunk of odd size
    whose pad byte is missing (a chunk name right after it, none a byte later) is followed from there."""
    if bytes(data[:4]) != b"RIFF" or bytes(data[8:12]) != b"WAVE":
        return
    offset = 12
    while offset + 8 <= len(data):
        size = struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        yield bytes(data[offset : offset + 4]), offset, size
        offset += 8 + size
        if size & 1 and not (unpadded and _chunk_name_at(data, offset) and not _chunk_name_at(data, offset + 1)):
            offset += 1  # chunks are padded to an even size


def chunks_out_of_order(data: Buffer) -> tuple[bytes, int, int] | None:
    """For the RIFF/WAVE ``data`` whose ``fmt `` chunk follows its ``data`` chunk, or that libsndfile
    cannot walk for a pad byte missing before them (:func:`riff_chunks` ``unpadded``): ``(the fmt chunk's
    bytes, its header included; where the samples start; the data chunk's size)``; else None."""
    chunks = list(riff_chunks(data, unpadded=True))
    unpadded = chunks != list(riff_chunks(data))
    samples, fmt = None, None
    for name, offset, size in chunks:
        if name == b"fmt " and fmt is None:
            fmt = bytes(data[offset : offset + 8 + size])
            if len(fmt) != 8 + size or not (samples or unpadded):
                return None
            fmt += b"\0" * (size & 1)
        if name == b"data" and samples is None:
            samples = offset + 8, size
        if fmt and samples:
            return fmt, *samples
    return None


class Spliced(io.RawIOBase):
    """``head``, then the bytes of ``file`` from ``start`` on (``size`` of them at most), read as one
    file; ``owned``: close ``file`` too."""

    def __init__(self, file: BinaryIO, head: bytes, start: int, size: int, owned: bool):
        super().__init__()
        self._file, self._head, self._start, self._owned = file, head, start, owned
        available = max(0, file.seek(0, io.SEEK_END) - start)
        self._length, self._position = len(head) + min(size, available), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = (0, self._position, self._length)[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:  # noqa: ANN001 (a writable buffer)
        view, done = memoryview(buffer).cast("B"), 0
        if self._position < len(self._head):
            part = self._head[self._position : self._position + len(view)]
            view[: len(part)] = part
            done = len(part)
        want = min(len(view), self._length - self._position) - done
        if want > 0:
            self._file.seek(self._start + self._position + done - len(self._head))
            done += self._file.readinto(view[done : done + want]) or 0
        self._position += done
        return done

    def close(self) -> None:
        if self._owned and not self._file.closed:
            self._file.close()
        super().close()


def in_order(data: Buffer) -> tuple[bytes, int, int] | None:
    """For the file ``data`` whose chunks :func:`chunks_out_of_order` found: ``(head, start, size)`` of a
    :class:`Spliced` view reading it as RIFF header, ``fmt ``, ``data`` (the samples there are, up to the
    size the chunk gives); else None."""
    if (found := chunks_out_of_order(data)) is None:
        return None
    fmt, start, size = found
    riff = min(4 + len(fmt) + 8 + size, 0xFFFFFFFF)  # a size the 32 bits hold
    return b"RIFF" + struct.pack("<I", riff) + b"WAVE" + fmt + b"data" + struct.pack("<I", size), start, size


def bw64_as_rf64(data: Buffer) -> tuple[bytes, int, int] | None:
    """For a BW64 file (ITU-R BS.2088, broadcast audio past 4 GB: RF64 under another name, which libsndfile
    does not know): the view reading it as the RF64 it is, "RF64" for its first four bytes; else None."""
    return (b"RF64", 4, 2**63) if bytes(data[:4]) == b"BW64" else None


def caf_data_chunk(data: Buffer) -> tuple[int, int] | None:
    """``(offset of its header, size)`` of the CAF ``data``'s ``data`` chunk; None for no CAF or none found. Chunks: a
    4-byte type and a signed 64-bit big-endian size, after an 8-byte header."""
    if bytes(data[:4]) != b"caff":
        return None
    offset = 8
    while offset + 12 <= len(data):
        name, size = bytes(data[offset : offset + 4]), struct.unpack(">q", data[offset + 4 : offset + 12])[0]
        if name == b"data":
            return offset, size
        if size < 0:
            return None
        offset += 12 + size
    return None


def caf_oversized(data: Buffer) -> tuple[int, int] | None:
    """``(the CAF data chunk's size, the bytes the file holds of it)`` when that size is more than those (cut
    short; not -1, "to the end"); else None."""
    if (found := caf_data_chunk(data)) is None:
        return None
    offset, size = found
    return (size, len(data) - offset - 12) if size > len(data) - offset - 12 else None


def caf_data_to_end(data: Buffer) -> tuple[bytes, int, int] | None:
    """For a CAF file whose ``data`` chunk gives its size as -1 (Apple's "to the end of the file", left
    by a recorder still writing, which libsndfile calls malformed), or as more than the file holds (cut short,
    which libsndfile calls malformed too when much is missing; :func:`caf_oversized` says so): the view giving
    the size the file holds; else None."""
    if (found := caf_data_chunk(data)) is None or not (found[1] == -1 or caf_oversized(data)):
        return None
    offset = found[0]
    return bytes(data[: offset + 4]) + struct.pack(">q", len(data) - offset - 12), offset + 12, 2**63


VIEWS = (in_order, bw64_as_rf64, caf_data_to_end)  # files libsndfile refuses that a view of them it reads


def open_in_order(source: str | BinaryIO) -> sf.SoundFile | None:
    """``sf.SoundFile`` reading ``source`` (a path or a seekable file object) through a :class:`Spliced`
    view (:data:`VIEWS`) when it is a WAV whose ``fmt `` chunk follows its ``data`` chunk or whose chunks
    lack a pad byte (:func:`in_order`), a BW64 file (:func:`bw64_as_rf64`) or a CAF file whose data size
    is -1 or more than it holds (:func:`caf_data_to_end`), and libsndfile reads it so; else None."""
    try:
        found = walk_file(source, lambda data: next(filter(None, (view(data) for view in VIEWS)), None))
    except (OSError, ValueError):
        return None
    return None if found is None else open_spliced(source, *found)  # None: not readable so either (the caller says why)


def open_spliced(source: str | BinaryIO, head: bytes, start: int, size: int) -> sf.SoundFile | None:
    """``sf.SoundFile`` reading ``source`` (a path or a seekable file object) through a :class:`Spliced` view
    (``head``, then its bytes from ``start``, ``size`` of them at most), or None when libsndfile cannot."""
    file = open(source, "rb") if isinstance(source, str) else source  # noqa: SIM115 (closed with the view)
    view = Spliced(file, head, start, size, owned=isinstance(source, str))
    try:
        return sf.SoundFile(view)
    except RuntimeError:
        view.close()
        return None

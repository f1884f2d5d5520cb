"""Audio files of which libsndfile reads only a part, or nothing, without an error, as its log for
the file (or, for an MP3 or Ogg file, its bytes) tells: cut short (a download or copy that stopped:
a WAV/AIFF/W64/RF64/AU data chunk larger than the file, a NIST SPHERE header counting more samples, an
Ogg stream without its end-of-stream page, an MP3 whose last frame is cut off), samples a WAV header does
not count (a recorder stopped before it wrote the sizes: a data chunk of 0 bytes, or of fewer than follow it), or damaged mid-stream (an Ogg
file ending whole with a page libsndfile cannot read; an MP3 or Ogg file whose decoder stops short).

What is there is read with a warning naming the file (:func:`warn_if_damaged`); a file damaged
mid-stream is an error (:func:`warn_if_damaged`, :func:`check_early_end`); a file of which libsndfile
reads no sample (an Ogg Vorbis file cut short, an RF64 whose ds64 sizes are 0) is an error saying why
(:func:`check_zero_frames`), not "empty". Also the checks that find a FLAC cut short at load
(:func:`check_flac_frames`, :func:`check_flac_end`), and the salvage of an MP3 ending in a tag
libsndfile does not skip (:func:`read_past_failure`: its frames are read, with a warning).
"""

from __future__ import annotations

import logging
import re
from typing import BinaryIO, NamedTuple

import numpy as np
import soundfile as sf

from speechsum.data.aiff_sizes import au_sizes
from speechsum.data.file_walk import walk_file, walk_or_none
from speechsum.data.flac_streams import flac_frames_offset
from speechsum.data.mp3_frames import ID3V1_SIZE, counts_past_end, frames_follow, mp3_walk
from speechsum.data.ogg_pages import ends_with_stream_end
from speechsum.data.wav_order import caf_oversized

log = logging.getLogger(__name__)

STREAMED_SIZE = 0x7FFFF000  # arecord's and sox's "unknown" WAV data size (sox's rounded down to a whole block)
PLACEHOLDER_SLACK = 0x1000  # how far below a placeholder (that, 2**32) a writer's rounding leaves its "unknown"
RF64_COUNT = re.compile(r"Calculated frame count (\d+) does not match value from 'ds64' chunk of (\d+)")
# libsndfile's log lines for a WAV data chunk followed by what is no chunk (samples it does not count)
FILE_LENGTH = re.compile(r"^Length : (\d+)$", re.MULTILINE)
DATA_SIZE = re.compile(r"^data : (\d+)$|^  Data size : (\d+)$", re.MULTILINE)  # WAV's data chunk; RF64's ds64
BYTES_PER_SECOND = re.compile(r"^ +Bytes/sec +: (\d+)$", re.MULTILINE)
# WAV's parser gives the marker's position; RF64's, in hex, the position after it (4 bytes on)
UNKNOWN_AFTER = re.compile(r"Unknown chunk marker \(\w+\) at position (?:(\d+)|0x([0-9A-Fa-f]+))\. Exiting parser")
# libsndfile's words for an Ogg stream cut short (which it logs depends on where the cut is, and on reading)
OGG_CUT = ("File ended unexpectedly without an End-Of-Stream flag set", "Last page lacks an end-of-stream bit")
CUT = "cut short (a download or copy that stopped?)"
REFETCH = "re-fetch it or drop it"
MP3_SLACK = 4 * 1152  # samples an MP3's frames may hold beyond what libsndfile reads: encoder delay and padding
NIST_HEAD = 4096  # bytes of a NIST SPHERE file its text header is looked for in (it is 1024 bytes, or a multiple)
NIST_COUNT = re.compile(rb"^sample_count -i (\d+)\s*$", re.MULTILINE)  # frames (samples per channel) in its header
REWRITE = "rewrite the header, e.g. `sox --ignore-length in.wav out.wav`"


class CorruptAudioError(ValueError):
    """libsndfile opened the file but could not decode it to its end (a file cut short)."""


def placeholder_size(size: int) -> bool:
    """Whether a WAV ``data`` size is a streaming writer's "unknown", not a length: all ones (``0xFFFFFFFF``,
    from a pipe) or near them, or arecord's and sox's :data:`STREAMED_SIZE` (sox's rounded down to a whole block)
    up to 2**31. A size between those is a recording of 2-4 GiB (hours at 48 kHz) whose header gives its length."""
    return size >= 2**32 - PLACEHOLDER_SLACK or STREAMED_SIZE - PLACEHOLDER_SLACK <= size <= 2**31


def data_cut_short(handle: sf.SoundFile) -> str | None:
    """libsndfile's log line saying that the header's data chunk (WAV ``data``, AIFF ``SSND``, W64's
    ``riff``, RF64's ``ds64`` frame count, an AU file's ``Data Size``) is larger than what the file holds,
    e.g. ``data : 32000 (should be 956)``, or None. libsndfile then reports the frames that are there, so
    nothing else says that a WAV was cut short. A streaming writer's placeholder size
    (:func:`placeholder_size`: ``0xFFFFFFFF`` from a pipe, arecord's ``0x7FFFF000``) is no promise: None
    (a real size of 2-4 GiB is one); nor is a size smaller than what follows (ffmpeg's AIFF ``SSND`` size 0,
    left when it writes to a pipe or is stopped: libsndfile reads all of the samples)."""
    for line in handle.extra_info.splitlines():
        name, _, rest = line.partition(":")
        declared, should_be, actual = (part.strip(" )") for part in rest.partition("(should be"))
        if should_be and name.strip() in ("data", "SSND", "Data Size") and declared.isdigit() \
                and not placeholder_size(int(declared)) \
                and not (actual.isdigit() and int(declared) < int(actual)):  # smaller: samples it does not count
            return line.strip()
        if name.strip() == "riff" and declared.isdigit() and actual.isdigit() and int(actual) < int(declared):
            return line.strip()  # W64's data line does not say: its riff size does
        if (match := RF64_COUNT.search(line)) and int(match[1]) < int(match[2]):
            return line.strip(" *")
    return None


def uncounted_bytes(handle: sf.SoundFile) -> tuple[int, int] | None:
    """``(declared, following)``: a WAV data chunk's size and the bytes after it that are no chunk,
    when those look like samples its header does not count: any after a data size of 0, else a
    second's worth or more. None otherwise (a few bytes of padding)."""
    info = handle.extra_info
    length, stop, data = FILE_LENGTH.search(info), UNKNOWN_AFTER.search(info), DATA_SIZE.search(info)
    if not (length and stop and data):
        return None
    declared, following = int(data[1] or data[2]), int(length[1]) - (int(stop[1]) if stop[1] else int(stop[2], 16) - 4)
    per_second = BYTES_PER_SECOND.search(info)
    second = int(per_second[1]) if per_second else 0
    if following > 0 and (declared == 0 or following >= max(second, 1)):
        return declared, following
    return None


class Damage(NamedTuple):
    """What in a file libsndfile does not read (in words with its own), what to do, whether the
    file was cut short (``cut``; else its header does not count all of it, or it is damaged inside),
    the frames libsndfile reads when only the damage tells (an MP3's whole frames, fewer than its
    header gives; else None), whether it is damaged inside (``mid_stream``: whole but for a page
    libsndfile cannot read; refused, not read in part), and whether nothing is missing after all
    (``whole``: an MP3 whose length libsndfile misreads, :func:`mp3_cut_short`; its ``frames`` are read)."""

    what: str
    advice: str
    cut: bool
    frames: int | None = None
    mid_stream: bool = False  # damaged inside (not cut short): an error, not a part to read
    whole: bool = False  # nothing is missing, only libsndfile's length is wrong (an MP3's): read whole, no warning


def mp3_cut_short(handle: sf.SoundFile, source: str | BinaryIO) -> tuple[str, int, bool] | None:
    """For an MP3 of whose frames (:func:`~speechsum.data.mp3_frames.mp3_walk`) libsndfile reads fewer than its
    length: ``(what, the frames it reads, whether the file is cut short)``; else None (frames that stop at bytes that
    are none: libsndfile may read on). Cut short: its last frame runs past the end of the file (a constant-bitrate
    file has no header that counts its frames, so nothing else says so), or its frames reach its end (but for an
    ID3v1 tag) and its Xing/VBRI header counts more (:func:`~speechsum.data.mp3_frames.counts_past_end`). Not cut
    (nothing is missing): that length is libsndfile's estimate from its first frame's bitrate (a variable-bitrate
    stream captured from mid-frame, without its header) or a damaged frame count."""
    if handle.format != "MP3" or (walked := walk_file(source, mp3_walk)) is None:
        return None
    frames = min(handle.frames, walked.samples)
    if walked.cut:
        return f"its last MP3 frame is cut off ({walked.cut[0]} of its {walked.cut[1]} bytes are there)", frames, True
    if handle.frames > walked.samples and walked.rest <= ID3V1_SIZE:
        rate = handle.samplerate  # within MP3_SLACK: libsndfile's estimate (its size over the bitrate), nothing cut
        cut = handle.frames - walked.samples > MP3_SLACK and walk_file(source, counts_past_end)
        return (f"its first frame's header counts {handle.frames / rate:.2f} s but its frames hold "
                f"{walked.samples / rate:.2f} s"), frames, cut
    return None


def fact_counted(handle: sf.SoundFile) -> bool:
    """Whether ``handle`` is MP3 frames in a WAV (format tag 0x55) cut short: libsndfile's length is then its 'fact'
    chunk's, not what the file holds, which only decoding it tells."""
    return handle.subtype == "MPEG_LAYER_III" and handle.format != "MP3" and data_cut_short(handle) is not None


def frames_there(handle: sf.SoundFile, source: str | BinaryIO, frames: int, limit: int | None) -> int:
    """``frames`` (``handle``'s header's count), or where that is over ``limit`` but more than the file holds, what
    its load measured it by: an MP3's frames (cut short, a damaged Xing count: :func:`mp3_cut_short`); ``limit``
    for MP3 frames in a WAV cut short (:func:`fact_counted`: reading one frame past the limit tells)."""
    if limit is None or frames <= limit:
        return frames
    if fact_counted(handle):
        return limit
    return mp3[1] if handle.format == "MP3" and (mp3 := mp3_cut_short(handle, source)) is not None else frames


def nist_cut_short(handle: sf.SoundFile, source: str | BinaryIO) -> str | None:
    """For a NIST SPHERE file (speech corpora: TIMIT, Switchboard, WSJ) whose header's ``sample_count`` is
    more than the file holds (cut short: libsndfile reads what is there and logs nothing of it), what; else None."""
    if handle.format != "NIST":
        return None
    head = walk_file(source, lambda data: bytes(data[:NIST_HEAD]))
    count = NIST_COUNT.search(head[: head.find(b"end_head")] if b"end_head" in head else head)
    if count is None or int(count[1]) <= handle.frames:
        return None
    rate = handle.samplerate
    return (f"its header's sample_count is {int(count[1])} ({int(count[1]) / rate:.2f} s), but the file holds "
            f"{handle.frames} ({handle.frames / rate:.2f} s)")


def size_cut_short(handle: sf.SoundFile, source: str | BinaryIO) -> str | None:
    """For an AU or CAF file whose header's data size is more than the file holds where libsndfile does not log it
    (it read through a view of the samples there are: an AU size of 2 GiB or more, of which it read none; a CAF it
    called malformed), what; else None."""
    if handle.format == "AU" and (found := walk_or_none(source, au_sizes)) is not None:
        size, there = found[1:]
    elif handle.format == "CAF" and (found := walk_or_none(source, caf_oversized)) is not None:
        size, there = found
    else:
        return None
    return f"its header's data size is {size} bytes, but the file holds {max(there, 0)} of them"


def damage(handle: sf.SoundFile, source: str | BinaryIO | None = None) -> Damage | None:
    """What in ``handle``'s file libsndfile does not read (:class:`Damage`), or None; ``source``: the
    file, for the formats whose damage only their bytes show (an MP3 cut short: :func:`mp3_cut_short`)."""
    if source is not None and (mp3 := mp3_cut_short(handle, source)):
        what, frames, cut = mp3
        return Damage(f"{what}: {CUT}", REFETCH, True, frames) if cut else \
            Damage(f"{what}, which reach its end: its length is misread, nothing is missing", "", False, frames, whole=True)
    if source is not None and (nist := nist_cut_short(handle, source)):
        return Damage(f"{nist}: {CUT}", REFETCH, True)
    if claim := data_cut_short(handle):
        return Damage(f"its header's data chunk is larger than the file (libsndfile: {claim!r}): {CUT}", REFETCH, True)
    if source is not None and (sized := size_cut_short(handle, source)):
        return Damage(f"{sized}: {CUT}", REFETCH, True)
    if ogg := next((line.strip() for line in handle.extra_info.splitlines() if any(w in line for w in OGG_CUT)), None):
        if source is not None and walk_file(source, ends_with_stream_end):
            return Damage(f"it ends with its end-of-stream page, so it is not cut short, but libsndfile cannot read a "
                          f"page of it (libsndfile: {ogg!r}): damaged mid-stream", "re-export or re-fetch it, or drop it",
                          False, mid_stream=True)
        return Damage(f"its Ogg stream ends without its end-of-stream page (libsndfile: {ogg!r}): {CUT}",
                      "re-fetch it, or re-encode what is there (e.g. `ffmpeg -i in.ogg out.flac`), or drop it", True)
    if uncounted := uncounted_bytes(handle):
        rf64 = handle.format == "RF64"  # its sizes are in its ds64 chunk (the data chunk says 0xFFFFFFFF)
        return Damage(f"its header's {'ds64 chunk gives a data size of' if rf64 else 'data chunk says'} {uncounted[0]} "
                      f"bytes, but {uncounted[1]} bytes that are no chunk follow {'its data chunk' if rf64 else 'it'} "
                      "(samples it does not count: a recording whose writer stopped before it wrote the sizes?)",
                      "rewrite its ds64 chunk's sizes to count them or re-export it from its source, or drop it" if rf64
                      else f"{REWRITE}, or drop it", False)
    return None


def check_flac_frames(handle: sf.SoundFile, source: str | BinaryIO) -> None:
    """Raise :class:`CorruptAudioError` naming ``source`` for a FLAC file whose header gives samples
    but that ends in its metadata (:func:`~speechsum.data.flac_streams.flac_frames_offset`): no
    audio frame follows (a download that stopped after the header). Its header passed for the whole
    length, and the file failed only when its batch was read."""
    if handle.format != "FLAC" or handle.frames == 0:
        return
    offset, size = walk_file(source, lambda data: (flac_frames_offset(data), len(data)))
    if offset is not None and offset >= size:
        raise CorruptAudioError(f"{source}: its header gives {handle.frames / handle.samplerate:.2f} s, but the file "
                                f"ends in its metadata ({size} bytes), before any audio frame: {CUT}; {REFETCH}")


FLAC_TAIL = 4096  # frames decoded at the end of a FLAC file to find it cut (a common block size: one or two frames)


def check_flac_end(handle: sf.SoundFile, source: str | BinaryIO, end: int | None = None) -> None:
    """Raise :class:`CorruptAudioError` naming ``source`` for a FLAC file whose last
    :data:`FLAC_TAIL` frames, by its header's length, cannot be decoded: cut short (or damaged at its
    end). Its header passed for the whole length and the file failed when its batch was read, deep in
    training; decoding its end costs one seek and a frame or two. ``end``: the frames that will be read
    (a clip truncated to its first ``end``): the :data:`FLAC_TAIL` before them are decoded instead (a file
    cut before there failed when its batch was read). ``handle`` is left at its start when they decode."""
    if handle.format != "FLAC" or not 0 < handle.frames < 2**62:  # 2**63 - 1: the header gives no length
        return
    end = handle.frames if end is None else min(end, handle.frames)
    tail = min(end, FLAC_TAIL)
    try:
        handle.seek(end - tail)
        failure = None if len(handle.read(tail, dtype="float32")) == tail else "fewer samples than that"
    except RuntimeError as err:  # libsndfile's errors (after which it may not seek back)
        failure = str(err).rstrip(".")
    if not failure:
        handle.seek(0)
        return
    rate = handle.samplerate
    which = f"its last {tail} samples" if end == handle.frames else \
        f"the {tail} samples before {end / rate:.2f} s, where max_audio_seconds cuts it"
    raise CorruptAudioError(f"{source}: its header gives {handle.frames / rate:.2f} s, but libsndfile cannot decode "
                            f"{which} ({failure}): {CUT} or damaged {'at its end' if end == handle.frames else 'there'}; "
                            f"{REFETCH}")


def warn_if_damaged(handle: sf.SoundFile, source: str | BinaryIO, seconds: float) -> Damage | None:
    """Log a warning naming ``source`` when libsndfile does not read all of it (:func:`damage`, which
    it returns; :class:`CorruptAudioError` for one damaged mid-stream); ``seconds``: what it reads (by
    the header: the damage's frames where it gives them)."""
    if (found := damage(handle, source)) and found.mid_stream:
        raise CorruptAudioError(f"{source}: {found.what}; {found.advice}")
    if found and not found.whole:
        seconds = seconds if found.frames is None else found.frames / handle.samplerate
        log.warning("%s: %s; its %.2f s are read: %s", source, found.what, seconds, found.advice)
    return found


def check_zero_frames(handle: sf.SoundFile, source: str | BinaryIO) -> None:
    """For a file of which libsndfile reads no sample: :class:`CorruptAudioError` naming ``source``
    when the file says why (:func:`damage`: an Ogg Vorbis file without its last page, an RF64 whose
    sizes were never written, an AU of only its header giving a data size), which would otherwise be called empty."""
    if (found := damage(handle, source)) and not found.whole:
        raise CorruptAudioError(f"{source}: {found.what}, and libsndfile reads no sample of it: {found.advice}")


def check_early_end(handle: sf.SoundFile, source: str | BinaryIO, frames: int, done: int) -> None:
    """libsndfile stopped after ``done`` of the ``frames`` frames ``handle``'s header gives: a warning
    naming ``source`` where the file says why (:func:`damage`: cut short, which its load warned about
    too) or the shortfall is within :data:`MP3_SLACK`; else :class:`CorruptAudioError`. A file damaged
    mid-stream (an MP3 or Ogg Opus file with bytes overwritten or lost) passed its load for the header's
    length, and its decoder skips what it cannot read: without the error, a part of it was trained on
    as the whole recording. An MP3 read as far as its frames go (:func:`mp3_cut_short`) gets no warning here: its load
    said whether it is cut short (as ``warn_cut_short`` does), and each read (every epoch) said it again, as "cut
    short?" of a file whose length libsndfile only misreads."""
    rate = handle.samplerate
    found = damage(handle, source)
    if found is not None and found.frames is not None and not found.mid_stream and done >= found.frames - MP3_SLACK:
        return
    if frames - done > MP3_SLACK and (found is None or found.mid_stream):
        raise CorruptAudioError(f"{source}: {found.what}; {found.advice}" if found else
                                f"{source}: its header gives {frames / rate:.2f} s, but libsndfile decodes only "
                                f"{done / rate:.2f} s of it and the file is not cut short: damaged mid-stream (bytes "
                                "overwritten or lost); re-export or re-fetch it, or drop it")
    log.warning("%s: the header promises %d frames but the file ends after %d (%.2f s): cut short? Using what is "
                "there.", source, frames, done, done / rate)


SALVAGE_STEP = 1152  # frames per read after a failed one: the most an MP3 frame holds


def read_past_failure(handle: sf.SoundFile, source: str | BinaryIO, done: int, frames: int | None) -> np.ndarray | None:
    """For an MP3 whose read of the block after frame ``done`` failed because the file ends in bytes
    that are no frames (a tag libsndfile does not skip, e.g. APEv2 with cover art, Lyrics3; no frame
    follows them) that its header's length (the file's size over the bitrate) counts: its frames
    from ``done`` up to ``frames`` (None: all), read in small steps, as one block (frames × channels),
    with a warning naming ``source``. None for
    any other failure (damage mid-stream: frames follow the bytes), which stays an error."""
    if handle.format != "MP3" or (walked := walk_file(source, mp3_walk)) is None or walked.cut \
            or walked.rest <= ID3V1_SIZE or walk_file(source, lambda data: frames_follow(data, len(data) - walked.rest)):
        return None
    blocks, got = [np.zeros((0, handle.channels), np.float32)], done
    end = walked.samples if frames is None else min(frames, walked.samples)
    try:
        handle.seek(done)
        while got < end and len(block := handle.read(min(SALVAGE_STEP, end - got), dtype="float32", always_2d=True)):
            blocks.append(block)
            got += len(block)
    except RuntimeError:  # the frame before the tag: its samples are lost (at most one step)
        pass
    if end - got > SALVAGE_STEP:
        return None
    log.warning("%s: its last %d bytes are no MP3 frames (a tag libsndfile does not skip, e.g. APEv2 or Lyrics3?) and "
                "its header's length counts them: its frames are read, %.2f s", source, walked.rest, got / handle.samplerate)
    return np.concatenate(blocks)

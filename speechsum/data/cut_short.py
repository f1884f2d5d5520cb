"""Audio files cut short (a download or copy that stopped), as libsndfile's log for the file tells:
a WAV/AIFF data chunk larger than the file, an Ogg stream without its end-of-stream page.

libsndfile reads what is there (a WAV's frames, an Opus stream's pages) without an error, so
nothing else says that the file was cut: those are read with a warning naming the file. An Ogg
Vorbis file cut so is reported as 0 frames, and so is a WAV whose data size was never written (0,
samples following): each is an error saying so, not "empty".
"""

from __future__ import annotations

import logging
import re
from typing import BinaryIO

import soundfile as sf

log = logging.getLogger(__name__)

STREAMED_SIZE = 0x7FFFF000  # a WAV data size from here up is a streaming writer's "unknown", not a length
RF64_COUNT = re.compile(r"Calculated frame count (\d+) does not match value from 'ds64' chunk of (\d+)")
# libsndfile's log lines for a WAV data chunk of 0 bytes followed by what is no chunk (samples)
FILE_LENGTH = re.compile(r"^Length : (\d+)$", re.MULTILINE)
EMPTY_DATA = re.compile(r"^data : 0$", re.MULTILINE)
UNKNOWN_AFTER = re.compile(r"Unknown chunk marker \(\w+\) at position (\d+)\. Exiting parser")
# libsndfile's words for an Ogg stream cut short (which it logs depends on where the cut is, and on reading)
OGG_CUT = ("File ended unexpectedly without an End-Of-Stream flag set", "Last page lacks an end-of-stream bit")


class CorruptAudioError(ValueError):
    """libsndfile opened the file but could not decode it to its end (a file cut short)."""


def data_cut_short(handle: sf.SoundFile) -> str | None:
    """libsndfile's log line saying that the header's data chunk (WAV ``data``, AIFF ``SSND``, W64's
    ``riff``, RF64's ``ds64`` frame count) is larger than what the file holds, e.g. ``data : 32000
    (should be 956)``, or None. libsndfile then reports the frames that are there, so nothing else
    says that a WAV was cut short. A streaming writer's placeholder size (``0xFFFFFFFF`` from a pipe,
    arecord's ``0x7FFFF000``) is no promise: None."""
    for line in handle.extra_info.splitlines():
        name, _, rest = line.partition(":")
        declared, should_be, actual = (part.strip(" )") for part in rest.partition("(should be"))
        if should_be and name.strip() in ("data", "SSND") and declared.isdigit() and int(declared) < STREAMED_SIZE:
            return line.strip()
        if name.strip() == "riff" and declared.isdigit() and actual.isdigit() and int(actual) < int(declared):
            return line.strip()  # W64's data line does not say: its riff size does
        if (match := RF64_COUNT.search(line)) and int(match[1]) < int(match[2]):
            return line.strip(" *")
    return None


def cut_short(handle: sf.SoundFile) -> str | None:
    """How ``handle``'s file shows that it was cut short, in words with libsndfile's own, or None."""
    if claim := data_cut_short(handle):
        return f"its header's data chunk is larger than the file (libsndfile: {claim!r})"
    ogg = next((line.strip() for line in handle.extra_info.splitlines() if any(words in line for words in OGG_CUT)), None)
    return f"its Ogg stream ends without its end-of-stream page (libsndfile: {ogg!r})" if ogg else None


def warn_if_cut_short(handle: sf.SoundFile, source: str | BinaryIO, seconds: float) -> None:
    """Log a warning naming ``source`` when it was cut short (:func:`cut_short`); ``seconds``: what is there."""
    if how := cut_short(handle):
        log.warning("%s: %s: cut short (a download or copy that stopped?); its %.2f s are read: re-fetch it or "
                    "drop it", source, how, seconds)


def bytes_after_empty_data(handle: sf.SoundFile) -> int | None:
    """Bytes that follow a WAV data chunk whose header says 0 bytes (a writer stopped before it wrote
    the sizes: the samples are there, but libsndfile reads none), or None."""
    info = handle.extra_info
    length, stop = FILE_LENGTH.search(info), UNKNOWN_AFTER.search(info)
    if not (length and stop and EMPTY_DATA.search(info)):
        return None
    return int(length[1]) - int(stop[1]) or None


def check_zero_frames(handle: sf.SoundFile, source: str | BinaryIO) -> None:
    """For a file of which libsndfile reads no sample: :class:`CorruptAudioError` naming ``source``
    when the file says why, which would otherwise be called empty: a WAV whose header's data size
    was never written (:func:`bytes_after_empty_data`), or a file cut short (an Ogg Vorbis file
    without its last page is read as 0 frames)."""
    if following := bytes_after_empty_data(handle):
        raise CorruptAudioError(f"{source}: its header's data chunk says 0 bytes, but {following} bytes follow it (a "
                                "recording whose writer stopped before it wrote the sizes?), and libsndfile reads no "
                                "sample of it: rewrite the header, e.g. `sox --ignore-length in.wav out.wav`, or drop it")
    if how := cut_short(handle):
        raise CorruptAudioError(f"{source}: {how}: cut short (a download or copy that stopped?), and libsndfile reads "
                                "no sample of it: re-fetch it, or recover what is there with e.g. `ffmpeg -i in.ogg "
                                "out.flac`, or drop it")

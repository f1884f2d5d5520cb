"""Audio loading: soundfile → mono float32 → resampled to the model's rate, with a length policy.

Files are read in blocks of :data:`BLOCK_FRAMES` and only as far as the length policy needs, so a
two-hour recording truncated to 30 s costs 30 s of memory, not two hours. Every block is checked
for NaN/Inf samples and floats far outside [-1, 1] (a float WAV can hold both), which would otherwise
flow into features and losses. A header that leaves the length out (streamed FLAC) is read to its end.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from speechsum.data.aiff_sizes import au_samples_view, uncounted_samples_view
from speechsum.data.audio_length import AudioTooLongError, TooLong, check_length, too_long_advice
from speechsum.data.audio_notes import MixEnergy, clip_notes, say_once
from speechsum.data.audio_paths import path_problem
from speechsum.data.clip_advice import DROP_FROM_MANIFEST, without_manifest
from speechsum.data.cut_short import (
    MP3_SLACK,
    CorruptAudioError,
    check_early_end,
    check_flac_end,
    check_flac_frames,
    check_zero_frames,
    fact_counted,
    frames_there,
    read_past_failure,
    warn_if_damaged,
)
from speechsum.data.file_walk import walk_file
from speechsum.data.flac_frames import undercounted_view
from speechsum.data.flac_streams import flac_stream_starts
from speechsum.data.mp3_frames import mp3_samples
from speechsum.data.not_audio import FORMATS_ADVICE, diagnose_file, formats_advice, headed_view
from speechsum.data.ogg_pages import ogg_end_frames, ogg_links
from speechsum.data.sample_checks import (  # noqa: F401 (BadSampleError … are this module's errors too)
    LOUD_SAMPLE,
    MAX_SAMPLE,
    UNSCALED_SAMPLE,
    BadSampleError,
    NonFiniteAudioError,
    OutOfRangeAudioError,
    Peak,
    UnscaledAudioError,
    check_block,
    loud_note,
)
from speechsum.data.wav_order import open_in_order
from speechsum.data.wav_tail import counted_frames, samples_view

log = logging.getLogger(__name__)

BLOCK_FRAMES = 1 << 16  # frames per read: ~4 s at 16 kHz; bounds what a scan holds at once
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})  # sample formats that can store NaN/Inf and unbounded values
TRUSTED_SECONDS = 3_600  # read buffers take a header's length up to this; beyond, they grow as frames arrive
UNKNOWN_LENGTH = 2**62  # libsndfile's frame count for a header without one is 2**63 - 1
# sample rates a recording can have (telephone speech: 8 kHz; studio: up to 768 kHz); outside them the
# header is damaged, and resampling would make 1 000 frames "at 1 Hz" 16 M samples or "at 2 GHz" none
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 1_000_000
# what reading a file can raise: missing/unreadable (OSError), libsndfile (RuntimeError), bad data (ValueError)
AUDIO_ERRORS = (OSError, RuntimeError, ValueError)

RAW_REASON = ("a headerless .raw file, which does not say its sample rate, sample format or channels; convert it to "
              "WAV giving them, e.g. `sox -t raw -r 16000 -e signed -b 16 -c 1 in.raw out.wav`")


class UnreadableAudioError(ValueError):
    """libsndfile could not open the file as audio, or would read only a part of it; ``reason``: why,
    without the file's name; ``advice``: what to do (None: the reason says it)."""

    def __init__(self, source: str | BinaryIO, reason: str, advice: str | None = FORMATS_ADVICE, suffix: str = ""):
        self.formats = advice is FORMATS_ADVICE  # the usual advice: which formats work (its example fits the file)
        self.reason, self.advice = reason, formats_advice(source, suffix) if self.formats else advice
        super().__init__(f"unreadable audio file {source}: {reason}" + (f"; {self.advice}" if self.advice else ""))


class EmptyAudioError(ValueError):
    """The clip has no samples at the rate it is read at: a header of 0 frames, or a clip shorter than
    one sample there (1 frame at 44.1 kHz is none at 16 kHz)."""


class SampleRateError(ValueError):
    """A header's sample rate outside [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`]: no recording's."""


def check_rate(source: str | BinaryIO, rate: int) -> None:
    """Raise :class:`SampleRateError` naming ``source`` when ``rate`` is no recording's."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise SampleRateError(f"{source}: sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz, "
                              "no recording's (speech is 8-48 kHz): the header is likely damaged; re-export the "
                              f"file or {DROP_FROM_MANIFEST}")


def check_waveform(name: str, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """``waveform`` (given in Python, not read by :func:`load_audio`) as an array, if it is what a
    processor reads: mono float samples, at least one, finite and within ±``UNSCALED_SAMPLE``; else a
    ``ValueError`` naming ``name`` and what to do (a stereo array, int16 samples, an empty or NaN
    clip were summarised without a word)."""
    array = np.asarray(waveform)
    if array.ndim != 1:
        raise ValueError(f"{name}: an array of shape {array.shape}; a waveform is mono samples, one dimension: "
                         "average the channels first (e.g. waveform.mean(axis=0) for channels first)")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name}: {array.dtype} samples; a waveform is float samples within [-1, 1]: convert it "
                         "(int16: waveform / 32768)")
    if array.size == 0:
        raise EmptyAudioError(f"{name}: no samples")
    peak = Peak()
    try:
        peak.add(array[:, None], check_block(array[:, None], name, 0, sample_rate), 0)
        peak.check(name, sample_rate)
    except BadSampleError as err:
        raise without_manifest(err, "leave the clip out") from None
    return array


def open_audio(source: str | BinaryIO, whole: bool = True) -> sf.SoundFile:
    """``sf.SoundFile`` for reading (:func:`_open_soundfile`); ``whole``: once :func:`check_whole_stream`
    finds that libsndfile reads all of it (False: the caller checks, if it reads to the end)."""
    handle = _open_soundfile(source)
    try:
        if whole:
            check_whole_stream(handle, source)
    except BaseException:
        handle.close()
        raise
    return handle


def check_whole_stream(handle: sf.SoundFile, source: str | BinaryIO) -> None:
    """Raise :class:`UnreadableAudioError` naming ``source`` when libsndfile would read only the first
    part of it, without an error: an MP3 whose frames (:func:`~speechsum.data.mp3_frames.mp3_samples`)
    hold more than :data:`MP3_SLACK` samples beyond the length it took from the first frame (a VBR
    file without a Xing header, files joined together), an Ogg file of several streams one after
    another (:func:`~speechsum.data.ogg_pages.ogg_links`: chained, as joined files or a web-radio capture),
    or a FLAC file of several (:func:`~speechsum.data.flac_streams.flac_stream_starts`: joined with ``cat``)."""
    rate = handle.samplerate
    if handle.format == "MP3" and (samples := walk_file(source, mp3_samples)) is not None \
            and samples - handle.frames > MP3_SLACK:
        raise UnreadableAudioError(source, f"its MP3 frames hold {samples / rate:.2f} s but libsndfile reads only the "
                                   f"first {handle.frames / rate:.2f} s (the length its first frame gives: a "
                                   "variable-bitrate file without a Xing header, or files joined together)",
                                   "re-encode it, e.g. `ffmpeg -i in.mp3 out.flac`, and use that")
    if handle.format == "OGG" and (links := walk_file(source, ogg_links)) > 1:
        raise UnreadableAudioError(source, f"it holds {links} Ogg streams one after another (chained: files joined "
                                   "together, or a web-radio capture), and libsndfile reads only the first "
                                   f"({handle.frames / rate:.2f} s)", "decode it with a tool that reads every stream "
                                   "of a chained file, e.g. `sox in.ogg out.flac`, and use that")
    if handle.format == "OGG" and (end := walk_file(source, lambda data: ogg_end_frames(data, rate))) is not None \
            and end.frames - end.start - handle.frames > MP3_SLACK:  # a late start is subtracted: at most end.start
        raise UnreadableAudioError(source, f"its last Ogg page ends at {end.frames / rate:.2f} s but libsndfile reads only "
                                   f"{handle.frames / rate:.2f} s (it cannot read a page of it: damaged)",
                                   "re-export or re-fetch it, or drop it")
    if handle.format == "FLAC" and len(starts := walk_file(source, flac_stream_starts)) > 1:
        raise UnreadableAudioError(source, f"it holds {len(starts)} FLAC streams one after another (files joined "
                                   f"byte for byte, e.g. by `cat`; the second begins at byte {starts[1]}), and "
                                   f"libsndfile reads only the first ({handle.frames / rate:.2f} s)",
                                   "join the recordings' audio instead (e.g. `sox first.flac second.flac joined.flac`), "
                                   f"or keep the first stream (`head -c {starts[1]} in.flac > first.flac`), or drop it")


def _open_soundfile(source: str | BinaryIO) -> sf.SoundFile:
    """``sf.SoundFile`` for reading. soundfile encodes a str path strictly as UTF-8, and a file name
    that is not UTF-8 reaches Python as lone surrogates: such a path goes as the OS's bytes (any
    other as itself). A file that cannot be opened raises a ``ValueError`` naming it: the
    :func:`path_problem` (a file gone since the manifest was loaded), else :class:`UnreadableAudioError`."""
    target = source if not isinstance(source, str) or _utf8(source) else os.fsencode(source)
    if isinstance(source, str) and Path(source).suffix.lower() == ".raw" and (target := headed_view(source)) is None:
        raise UnreadableAudioError(source, RAW_REASON, advice=None)  # soundfile would ask for a rate
    try:
        handle = sf.SoundFile(target)
    except RuntimeError as err:  # libsndfile's errors
        problem = path_problem(source) if isinstance(source, str) else None
        if problem:
            raise ValueError(f"{source}: {problem}") from None
        if (reordered := open_in_order(source)) is not None:  # a WAV whose 'fmt ' chunk follows its 'data'
            return reordered
        reason = getattr(err, "error_string", str(err)).rstrip(".")
        if "does not exist" in reason:  # its words when no decoder takes a file that exists (an MP3 with no valid frame)
            reason = f"no audio libsndfile can decode (it reports: {reason})"
        if diagnosis := diagnose_file(source, reason):
            raise UnreadableAudioError(source, diagnosis.reason, diagnosis.advice or FORMATS_ADVICE, diagnosis.suffix) from None
        raise UnreadableAudioError(source, reason) from None
    # a streamed WAV ending in a chunk (not its samples); an AIFF whose writer never wrote its sizes (none
    # counted); an AU whose data size libsndfile cannot take; a FLAC whose STREAMINFO counts fewer samples than its frames hold
    if (samples := samples_view(handle, source) or uncounted_samples_view(handle, source)
            or au_samples_view(handle, source) or undercounted_view(handle, source)) is not None:
        handle.close()
        return samples
    return handle


def _utf8(path: str) -> bool:
    """Whether ``path`` encodes as UTF-8 (a name that is not reaches Python as lone surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def header_frames(handle: sf.SoundFile) -> int | None:
    """Frames the header says the file holds (a block-coded WAV: its 'fact' count, :func:`counted_frames`); None
    when it leaves the length out (a streamed or piped FLAC: libsndfile then reports 2**63 - 1)."""
    return None if handle.frames >= UNKNOWN_LENGTH else counted_frames(handle)


def _read_blocks(handle: sf.SoundFile, source: str | BinaryIO, frames: int | None,
                 peak: Peak | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """:func:`_checked_blocks`, then :class:`UnscaledAudioError` if what they hold peaks beyond ±``UNSCALED_SAMPLE``
    (a float file written at a wrong scale), naming that peak; ``peak``: where their peak is kept (read after)."""
    peak, done = peak or Peak(), 0
    for block, block_peak in _checked_blocks(handle, source, frames):
        peak.add(block, block_peak, done)
        done += len(block)
        yield block, block_peak
    peak.check(str(source), handle.samplerate)


def _checked_blocks(handle: sf.SoundFile, source: str | BinaryIO, frames: int | None) -> Iterator[tuple[np.ndarray, float]]:
    """Checked float32 blocks (frames × channels) with their peaks from the start, up to ``frames`` frames (None: to
    the end) or the end of the data, whichever comes first (a header may promise more than a cut
    file holds, or say nothing; a file that is not cut short and ends early: :func:`check_early_end`)."""
    path, done, unknown_length = str(source), 0, header_frames(handle) is None
    # libsndfile fails on the last FLAC block of a file whose header has no length, and a failed read
    # returns nothing: small reads there lose only the frames it cannot decode (~10 ms)
    size = 1024 if unknown_length else BLOCK_FRAMES
    while frames is None or done < frames:
        try:
            block = handle.read(size if frames is None else min(size, frames - done), dtype="float32", always_2d=True)
        except RuntimeError as err:  # libsndfile's own error types
            if not unknown_length and (rest := read_past_failure(handle, source, done, frames)) is not None:
                peak = check_block(rest, path, done, handle.samplerate)
                yield from [(rest, peak)] if len(rest) else []
                return
            if not unknown_length or done == 0:
                raise CorruptAudioError(f"{path}: unreadable in the block after frame {done} ({done / handle.samplerate:.2f} s; "
                                        f"{err}): the file is cut short or corrupt; re-export it or drop it") from None
            log.warning("%s: the header gives no length and libsndfile stopped after %d frames (%.2f s; %s): "
                        "what follows (a part of the last FLAC block) is not read; re-encode the file "
                        "(e.g. ffmpeg -i in.flac out.flac) to keep it", path, done, done / handle.samplerate, err)
            return
        if len(block) == 0:
            if not unknown_length and frames is not None and done < frames:
                check_early_end(handle, source, frames, done)
            return
        peak = check_block(block, path, done, handle.samplerate)
        done += len(block)
        yield block, peak


def audio_seconds(source: str | BinaryIO, max_seconds: float | None = None, truncate_at: float | None = None) -> float:
    """Duration of a file (a path or a seekable file object) in seconds: from the header, or counted
    block by block when the header leaves the length out (or gives its 'fact' count: MP3 in a WAV cut
    short). Float files (:data:`FLOAT_SUBTYPES`) are scanned block by block for bad samples (memory: one
    block; a peak over :data:`LOUD_SAMPLE` is logged); integer PCM, normalised to [-1, 1] and free of
    NaN, is not read beyond its header. Raises a ``ValueError`` naming the source for a
    path that is no readable file (:func:`path_problem`), an unreadable, cut or empty file, a bad
    sample or a sample rate no recording has (:class:`SampleRateError`); :class:`AudioTooLongError`
    for one longer than ``max_seconds`` (when given); :class:`UnreadableAudioError` for a file
    libsndfile reads only the first part of (:func:`check_whole_stream`), unless it will be cut to
    ``truncate_at`` seconds (when given) and that part is as long (a FLAC: and decodes up to there)."""
    problem = path_problem(source) if isinstance(source, str) else None
    if problem:
        raise ValueError(f"{source}: {problem}")
    try:
        with open_audio(source, whole=False) as handle:
            frames, rate = header_frames(handle), handle.samplerate
            check_rate(source, rate)
            check_flac_frames(handle, source)
            if whole := truncate_at is None or handle.frames < round(truncate_at * rate):  # as in check_length
                check_whole_stream(handle, source)
            check_flac_end(handle, source, None if whole else round(truncate_at * rate))  # the part read
            counted = fact_counted(handle)  # MP3 frames in a WAV cut short: libsndfile's length is its 'fact' count
            if handle.subtype in FLOAT_SUBTYPES or frames is None or counted:
                done, peak = 0, 0.0
                for block, block_peak in _read_blocks(handle, source, None if counted else frames):
                    done, peak = done + len(block), max(peak, block_peak)
                frames = done
                if peak > LOUD_SAMPLE:
                    log.warning("%s", loud_note(source, peak))
            if not frames:
                check_zero_frames(handle, source)
            elif (found := warn_if_damaged(handle, source, frames / rate)) and found.frames is not None:
                frames = found.frames  # an MP3 cut short: its whole frames, fewer than its header's count
    except ValueError:
        raise  # ours (unopenable, bad sample, cut short, sample rate): their messages name the file already
    except Exception as err:  # soundfile raises its own LibsndfileError / RuntimeError types
        raise ValueError(f"unreadable audio file {source}: {err}") from err
    if frames == 0 or rate <= 0:
        raise ValueError(f"empty audio file {source} (0 samples): no recording in it; replace it or drop it")
    check_length(source, frames, rate, max_seconds)
    return frames / rate


def _mixed(blocks: Iterator[tuple[np.ndarray, float]], mix: MixEnergy | None) -> Iterator[np.ndarray]:
    """Each block averaged to mono; ``mix`` (for a multichannel file) counts the energies of both."""
    for block, _ in blocks:
        if block.shape[1] == 1:
            yield block[:, 0]
            continue
        mono = block.mean(axis=1)
        if mix is not None:
            mix.add(block, mono)
        yield mono


def _read_mono(handle: sf.SoundFile, path: str | BinaryIO, frames: int | None, mix: MixEnergy | None = None,
               peak: Peak | None = None) -> np.ndarray:
    """The first ``frames`` frames of ``handle`` (None or past its end: all of it) as mono float32; ``peak``:
    where the largest |sample| read is kept."""
    mono = _mixed(_read_blocks(handle, path, frames, peak), mix)
    if frames is None:  # the length is learnt by reading
        parts = list(mono)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    # filled in place: memory for the kept frames only. The header is trusted up to TRUSTED_SECONDS: a
    # corrupt FLAC or MP3 header can promise days in a few kB, and allocating them was a MemoryError
    waveform = np.empty(min(frames, TRUSTED_SECONDS * handle.samplerate), dtype=np.float32)
    done = 0
    for block in mono:
        if done + len(block) > len(waveform):  # frames really there beyond the trusted length: grow
            grown = np.empty(min(frames, max(2 * len(waveform), done + len(block))), dtype=np.float32)
            grown[:done] = waveform[:done]
            waveform = grown
        waveform[done : done + len(block)] = block
        done += len(block)
    return waveform[:done] if done == len(waveform) else waveform[:done].copy()  # not the unfilled rest


def load_audio(
    path: str,
    sample_rate: int,
    max_seconds: float | None = None,
    too_long: TooLong = "truncate",
    warn_cut_short: bool = False,
    checked_at_load: bool = False,
    notes: list[str] | None = None,
) -> np.ndarray:
    """Read ``path`` as a mono float32 waveform at ``sample_rate`` Hz, shape ``(samples,)``.

    Multi-channel audio is averaged to mono; other rates are resampled with soxr (high quality).
    Clips longer than ``max_seconds`` are cut to the first ``max_seconds`` (``too_long="truncate"``:
    only those frames are read and resampled) or rejected from the header alone with
    :class:`AudioTooLongError` (``too_long="error"``). A NaN/Inf or out-of-range sample in what is
    read raises :class:`BadSampleError` (a ``ValueError`` naming the file and frame), a sample rate
    no recording has :class:`SampleRateError`, no sample at ``sample_rate`` :class:`EmptyAudioError`.
    ``warn_cut_short``: warn about a file cut short (:func:`warn_if_damaged`) where no manifest load
    (:func:`audio_seconds`) has already said so, as for ``speechsum summarize``'s files.
    A clip of only zeros, or whose channels cancel when averaged to mono (opposite phase), is read with
    a warning (once per file and process), as no speech is in it, and so is one of float samples over
    ±``LOUD_SAMPLE`` (unless ``checked_at_load``: its load warned); ``notes``: a list such warnings are
    added to instead (:mod:`speechsum.data.audio_notes`), for a caller that reports them itself.
    ``checked_at_load``: ``path`` passed :func:`audio_seconds` when its manifest or dataset loaded, so
    the checks that walk the whole file (a FLAC without audio frames or cut short, :func:`check_flac_end`;
    streams libsndfile reads only in part, :func:`check_whole_stream`) are not repeated on every read (each epoch)."""
    if isinstance(path, str) and (problem := path_problem(path)):  # opening a FIFO would wait for a writer
        raise ValueError(f"{path}: {problem}")
    with open_audio(path, whole=False) as handle:  # a prefix libsndfile holds needs no walk over the file
        rate, frames = handle.samplerate, header_frames(handle)
        mix, peak = MixEnergy() if handle.channels > 1 else None, Peak()
        check_rate(path, rate)
        limit = None if max_seconds is None else round(max_seconds * rate)  # as in check_length
        if frames is not None and too_long == "error":  # from the header (an MP3's frames, where they hold less)
            check_length(path, frames_there(handle, path, frames, limit), rate, max_seconds)
        cut = limit is not None and (frames is None or frames > limit)  # only its first `limit` frames are read
        if not checked_at_load:  # a FLAC without audio frames, or cut short: said so, not "unreadable in the block ..."
            check_flac_frames(handle, path)
            if not cut:
                check_whole_stream(handle, path)
            check_flac_end(handle, path, limit if cut and frames is not None else None)
        if cut:  # one frame past the limit tells "too long"
            waveform = _read_mono(handle, path, limit + 1 if too_long == "error" else limit, mix, peak)
            if len(waveform) > limit:
                raise AudioTooLongError(f"{path}: more than {max_seconds:g} s {too_long_advice(max_seconds)}")
        else:
            waveform = _read_mono(handle, path, frames, mix, peak)
        if len(waveform) == 0:
            check_zero_frames(handle, path)
        elif warn_cut_short:
            warn_if_damaged(handle, path, len(waveform) / rate)
    frames_read = len(waveform)
    found = clip_notes(path, waveform, rate, mix, 0.0 if checked_at_load else peak.value)  # its load said it
    if notes is None:
        say_once(found, log)
    else:
        notes.extend(found)
    if rate != sample_rate:
        waveform = soxr.resample(waveform, rate, sample_rate, quality="HQ")
    if waveform.size == 0:
        raise EmptyAudioError(f"{path}: no samples at {sample_rate} Hz (it holds {frames_read} frame(s) at {rate} Hz); "
                              "replace the file or drop it")
    return np.ascontiguousarray(waveform, dtype=np.float32)

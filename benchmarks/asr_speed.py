"""The cascade's Whisper transcription (:class:`speechsum.models.asr.WhisperTranscriber`): HF
``generate`` (the path before 2026-12-04) against the own greedy loop
(:mod:`speechsum.models.whisper_decode`), each in float32 and bfloat16, in one run:
windows per second, audio seconds per second per thread, the ratio to ``generate``, the word error
rate of each against what the audio says (the transcript without its speaker labels), and how
many clips get another transcript than ``generate``'s.

The variants alternate (order flipped every other repetition) ``--repeats`` times on the same
clips with no cache; the median wall and CPU seconds of each are reported (on a shared machine
the process's CPU seconds are the fairer measure; the speed-ups are computed from them).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.asr_speed --manifest runs/pipeline/data/test.jsonl
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from benchmarks.common import emit, machine_description
from speechsum.data.audio import load_audio
from speechsum.data.manifest import load_manifest
from speechsum.models.asr import WhisperTranscriber, split_at_silences, word_error_rate
from speechsum.stages.align import spoken_text

# name -> WhisperTranscriber keyword arguments; "generate" is the baseline
VARIANTS = {
    "generate": {"decoder": "generate"},
    "generate_bf16": {"decoder": "generate", "dtype": "bfloat16"},
    "loop": {"decoder": "loop"},
    "loop_bf16": {"decoder": "loop", "dtype": "bfloat16"},
}


def load_clips(manifest: str, count: int) -> tuple[list[np.ndarray], list[str]]:
    """The first ``count`` distinct clips of a manifest (16 kHz) and their spoken text."""
    examples, _ = load_manifest(manifest, require_summary=False, require_transcript=True)
    clips: dict[str, str] = {}
    for example in examples:
        clips.setdefault(example.audio, spoken_text(example.transcript, strip_speaker_labels=True))
        if len(clips) == count:
            break
    return [load_audio(path, 16_000) for path in clips], list(clips.values())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="a manifest with transcripts (its distinct clips are used)")
    parser.add_argument("--clips", type=int, default=16, help="distinct clips to transcribe (default 16)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows decoded together (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per variant (default 2)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--output", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    names = ["generate"] + [name for name in args.variants.split(",") if name != "generate"]

    waveforms, references = load_clips(args.manifest, args.clips)
    audio_seconds = sum(len(w) for w in waveforms) / 16_000
    windows = sum(len(split_at_silences(w, 16_000)) for w in waveforms)
    transcribers = {name: WhisperTranscriber(batch_size=args.batch_size, **VARIANTS[name]) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu_times: dict[str, list[float]] = {name: [] for name in names}
    texts: dict[str, list[str]] = {}
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            start, cpu_start = time.perf_counter(), time.process_time()
            texts[name] = transcribers[name].transcribe(waveforms)
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)
            print(f"  repeat {repeat + 1}/{args.repeats} {name}: {times[name][-1]:.1f} s, {cpu_times[name][-1]:.1f} CPU s",
                  flush=True)
    threads = torch.get_num_threads()
    base = statistics.median(cpu_times["generate"])
    variants = {}
    for name in names:
        cpu_seconds = statistics.median(cpu_times[name])
        variants[name] = {
            "wall_seconds": round(statistics.median(times[name]), 2),
            "cpu_seconds": round(cpu_seconds, 2),
            "windows_per_cpu_s": round(windows / cpu_seconds, 3),
            "audio_s_per_cpu_s": round(audio_seconds / cpu_seconds, 1),
            "speedup_vs_generate": round(base / cpu_seconds, 2),
            "wer": round(word_error_rate(references, texts[name]), 4),
            "clips_with_other_transcript": sum(a != b for a, b in zip(texts["generate"], texts[name])),
        }
    result = {
        "benchmark": "asr_speed", "machine": machine_description(), "threads": threads, "manifest": args.manifest,
        "clips": len(waveforms), "windows": windows, "audio_seconds": round(audio_seconds, 1),
        "repeats": args.repeats, "batch_size": args.batch_size, "variants": variants,
    }
    return emit(result, args.output)


if __name__ == "__main__":
    main()

"""The cascade's Whisper tiny.en transcription (:class:`speechsum.models.asr.WhisperTranscriber`)
in float32 against bfloat16, in one run: seconds, audio seconds per second per thread, and the
word error rate of each against what the audio says (the transcript without its speaker labels),
plus how many clips get a different transcript in bf16.

The two variants alternate (fp32, bf16, fp32, bf16, …) ``--repeats`` times on the same clips with
no cache; the median time of each is reported with the bf16/fp32 speed ratio.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.asr_dtype --manifest runs/pipeline/data/val.jsonl
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import emit, machine_description
from speechsum.data.audio import load_audio
from speechsum.data.manifest import load_manifest
from speechsum.models.asr import WhisperTranscriber, word_error_rate
from speechsum.stages.align import spoken_text

DTYPES = ("float32", "bfloat16")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="a manifest with transcripts (its distinct clips are used)")
    parser.add_argument("--clips", type=int, default=24, help="distinct clips to transcribe (default 24)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows decoded together (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per variant (default 2)")
    parser.add_argument("--output", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)

    examples, _ = load_manifest(args.manifest, require_summary=False, require_transcript=True)
    clips: dict[str, str] = {}
    for example in examples:
        clips.setdefault(example.audio, spoken_text(example.transcript, strip_speaker_labels=True))
        if len(clips) == args.clips:
            break
    waveforms = [load_audio(path, 16_000) for path in clips]
    references = list(clips.values())
    audio_seconds = sum(len(w) for w in waveforms) / 16_000

    transcribers = {dtype: WhisperTranscriber(batch_size=args.batch_size, dtype=dtype) for dtype in DTYPES}
    times: dict[str, list[float]] = {dtype: [] for dtype in DTYPES}
    texts: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for dtype, transcriber in transcribers.items():
            start = time.perf_counter()
            texts[dtype] = transcriber.transcribe(waveforms)
            times[dtype].append(time.perf_counter() - start)
    threads = torch.get_num_threads()
    variants = {}
    for dtype in DTYPES:
        seconds = statistics.median(times[dtype])
        variants[dtype] = {
            "seconds": round(seconds, 2),
            "audio_s_per_s_per_thread": round(audio_seconds / seconds / threads, 1),
            "wer": round(word_error_rate(references, texts[dtype]), 4),
        }
    ratio = variants["float32"]["seconds"] / variants["bfloat16"]["seconds"]
    result = {
        "benchmark": "asr_dtype", "machine": machine_description(), "threads": threads,
        "clips": len(waveforms), "audio_seconds": round(audio_seconds, 1), "repeats": args.repeats,
        "variants": variants, "bf16_speedup": round(ratio, 2),
        "clips_with_other_transcript_in_bf16": sum(a != b for a, b in zip(texts["float32"], texts["bfloat16"])),
    }
    return emit(result, args.output)


if __name__ == "__main__":
    main()

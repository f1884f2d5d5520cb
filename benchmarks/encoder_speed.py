"""Frozen Whisper tiny.en encoder speed: audio seconds encoded per second per CPU thread, the
module in float32 (the path before issue 16) against each fast variant, in one run.

Clips are benchmark speech (20–60 s), sorted by duration and cut into batches of
``--batch-size`` clips, as the data module's duration buckets do; every variant encodes the same
batches (clips longer than 30 s in windows, :func:`speechsum.models.encoder_windows.encode_in_windows`).
Variants run alternately (A B C … A B C …), ``--repeats`` times; the median pass time of each is
reported with its ratio to the baseline measured in the same run.

- ``module_fp32_one_call`` (baseline): transformers' encoder layers, float32, all windows of a
  batch in one call padded to the longest (the pre-issue-16 ``encoder_frames``);
- ``module_bf16_autocast_one_call``: the same under ``torch.autocast(bfloat16)``;
- ``module_fp32_by_length``: the module, windows in length-sorted calls;
- ``fast_fp32_by_length`` / ``fast_bf16_by_length``: :class:`FastWhisperEncoder` snapshots.

Also reported: how far the bf16 frames are from the float32 ones (max / mean absolute error and
per-frame cosine over every real frame).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.encoder_speed --manifest runs/benchmark/data/val.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from benchmarks.common import emit, machine_description
from speechsum.data.audio import load_audio
from speechsum.data.manifest import load_manifest
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.encoder_windows import encode_in_windows
from speechsum.models.whisper_fast import FastWhisperEncoder

TINY_LLM = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 272}
ONE_CALL = 10**9  # frame budget that puts every window of a batch in one call


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default="runs/benchmark/data/val.jsonl",
                        help="benchmark manifest whose clips are encoded; generated in-process if missing")
    parser.add_argument("--clips", type=int, default=16, help="distinct clips")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed passes per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (figures are per thread)")
    parser.add_argument("--output", default=None, help="write the figures as JSON here")
    return parser.parse_args(argv)


def load_clips(manifest: Path, count: int) -> tuple[list[np.ndarray], str]:
    """``count`` distinct 16-kHz waveforms from ``manifest``, or from the benchmark generator."""
    if manifest.is_file():
        examples, _ = load_manifest(manifest)
        paths = list(dict.fromkeys(example.audio for example in examples))[:count]
        return [load_audio(path, 16_000) for path in paths], str(manifest)
    from speechsum.benchmark.build import doc_language_and_genre, synthesize_document
    from speechsum.benchmark.documents import generate_document

    waves = []
    for index in range(count):
        lang, genre = doc_language_and_genre("val", index)
        waves.append(synthesize_document(generate_document(f"val-{index:06d}", "val", 0, genre, lang), 0))
    return waves, "generated in-process (benchmark generator, val, seed 0)"


def feature_batches(model: ComposedSpeechLLM, waves: list[np.ndarray], batch_size: int) -> list[tuple[Tensor, Tensor]]:
    """Duration-sorted batches of ``(features (B, n_mels, T_max), mel_frames (B,))``."""
    extractor = model.processor.feature_extractor
    ordered = sorted(waves, key=len)
    batches = []
    for start in range(0, len(ordered), batch_size):
        features = [
            torch.from_numpy(extractor(w, sampling_rate=16_000, padding="longest", truncation=False,
                                       return_tensors="np")["input_features"][0])
            for w in ordered[start : start + batch_size]
        ]
        mel_frames = torch.tensor([f.shape[-1] for f in features])
        stacked = torch.zeros(len(features), features[0].shape[0], int(mel_frames.max()))
        for row, feature in enumerate(features):
            stacked[row, :, : feature.shape[-1]] = feature
        batches.append((stacked, mel_frames))
    return batches


def variants(model: ComposedSpeechLLM) -> dict[str, Callable[[Tensor, Tensor], list[Tensor]]]:
    window = 2 * model.encoder.config.max_source_positions
    fast32 = FastWhisperEncoder(model.encoder, torch.float32)
    fast16 = FastWhisperEncoder(model.encoder, torch.bfloat16)

    def run(encode, budget=None, autocast=False):
        def call(features: Tensor, mel_frames: Tensor) -> list[Tensor]:
            context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with torch.no_grad(), context:
                kwargs = {} if budget is None else {"frame_budget": budget}
                return [f.float() for f in encode_in_windows(encode, features, mel_frames, window, **kwargs)]
        return call

    return {
        "module_fp32_one_call": run(model._encode_windows_module, ONE_CALL),
        "module_bf16_autocast_one_call": run(model._encode_windows_module, ONE_CALL, autocast=True),
        "module_fp32_by_length": run(model._encode_windows_module),
        "fast_fp32_by_length": run(fast32),
        "fast_bf16_by_length": run(fast16),
    }


def frame_errors(approx: list[Tensor], exact: list[Tensor]) -> dict[str, float]:
    a, e = torch.cat(approx), torch.cat(exact)
    diff, cosine = (a - e).abs(), F.cosine_similarity(a, e, dim=-1)
    return {"max_abs": diff.max().item(), "mean_abs": diff.mean().item(), "mean_abs_of_frames": e.abs().mean().item(),
            "cosine_min": cosine.min().item(), "cosine_mean": cosine.mean().item()}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = ComposedSpeechLLM(llm=TINY_LLM, encoder="bundled:whisper-tiny.en").eval()
    waves, source = load_clips(Path(args.manifest), args.clips)
    batches = feature_batches(model, waves, args.batch_size)
    audio_seconds = sum(len(w) for w in waves) / 16_000
    runs = variants(model)
    outputs = {name: [f for batch in batches for f in encode(*batch)] for name, encode in runs.items()}  # warm-up
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, encode in runs.items():
            started = time.perf_counter()
            for batch in batches:
                encode(*batch)
            timings[name].append(time.perf_counter() - started)
    baseline = statistics.median(timings["module_fp32_one_call"])
    result = {
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "data": source, "clips": len(waves), "audio_seconds": round(audio_seconds, 1),
        "clip_seconds": [round(min(len(w) for w in waves) / 16_000, 1), round(max(len(w) for w in waves) / 16_000, 1)],
        "batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
        "realtime_factor_per_thread": {
            name: round(audio_seconds / statistics.median(t) / args.threads, 1) for name, t in timings.items()},
        "speedup_vs_baseline": {name: round(baseline / statistics.median(t), 2) for name, t in timings.items()},
        "pass_seconds": {name: [round(x, 2) for x in t] for name, t in timings.items()},
        "errors_vs_module_fp32": {
            name: frame_errors(outputs[name], outputs["module_fp32_one_call"])
            for name in runs if name != "module_fp32_one_call"},
    }
    return emit(result, args.output)


if __name__ == "__main__":
    main()

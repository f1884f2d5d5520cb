"""SFT steps/s with vs without the frozen-encoder feature cache (real Whisper tiny.en encoder,
small random LM), on benchmark documents.

Both settings run in one process on the same model and the same pre-collated batches,
alternating (A B A B …); the cache is warmed by one pass first (an epoch ≥ 2 situation).
A step = forward + backward + AdamW step of the SFT loss (collation excluded: it runs in data
loader workers in training and is the same either way). Reports the median steps/s of each
setting and their ratio.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.sft_feature_cache --bench /tmp/bench_small
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import emit
from speechsum.data.audio import load_audio
from speechsum.data.batch import SpeechCollator
from speechsum.data.manifest import Example, load_manifest
from speechsum.losses import masked_cross_entropy
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.feature_cache import EncoderFeatureCache
from speechsum.models.policy import TrainingPolicy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default="/tmp/bench_small",
                        help="benchmark directory (its train.jsonl is used when READY exists there); "
                        "otherwise documents are generated and synthesised in-process")
    parser.add_argument("--clips", type=int, default=8, help="distinct training examples")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per step")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed passes per setting")
    parser.add_argument("--llm-hidden", type=int, default=256, help="random Llama LM width")
    parser.add_argument("--llm-layers", type=int, default=4, help="random Llama LM layers")
    parser.add_argument("--output", default=None, help="write the figures as JSON here")
    return parser.parse_args(argv)


def load_examples(bench: Path, count: int) -> tuple[list[tuple[Example, object]], str]:
    if (bench / "READY").exists():
        examples, _ = load_manifest(bench / "train.jsonl", require_summary=True)
        chosen, seen = [], set()
        for example in examples:  # one instruction per document: distinct audio
            if example.audio not in seen:
                seen.add(example.audio)
                chosen.append((example, load_audio(example.audio, 16_000)))
            if len(chosen) == count:
                break
        return chosen, f"{bench}/train.jsonl"
    from speechsum.benchmark.build import doc_language_and_genre, make_records, synthesize_document
    from speechsum.benchmark.documents import generate_document

    chosen = []
    for index in range(count):
        lang, genre = doc_language_and_genre("train", index)
        doc = generate_document(f"train-{index:06d}", "train", 0, genre, lang)
        audio = synthesize_document(doc, 0)
        record = make_records(doc, 0, 1, "-", len(audio) / 16_000)[0]
        example = Example(id=record["id"], audio="-", instruction=record["instruction"],
                          duration=len(audio) / 16_000, summary=record["summary"])
        chosen.append((example, audio))
    return chosen, "generated in-process (benchmark generator, seed 0)"


def run_pass(model, batches, optimizer) -> float:
    """Seconds for one SFT step on every batch."""
    started = time.perf_counter()
    for batch in batches:
        logits = model.response_logits(batch, batch.response_ids, batch.response_mask)
        loss = masked_cross_entropy(logits, batch.response_ids, batch.response_mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    items, source = load_examples(Path(args.bench), args.clips)
    seconds = [len(wave) / 16_000 for _, wave in items]
    llm = {"model_type": "llama", "hidden_size": args.llm_hidden, "intermediate_size": 4 * args.llm_hidden,
           "num_hidden_layers": args.llm_layers, "num_attention_heads": 4, "num_key_value_heads": 4,
           "vocab_size": 272, "max_position_embeddings": 4096}
    with tempfile.TemporaryDirectory() as cache_dir:
        model = ComposedSpeechLLM(llm=llm, encoder="bundled:whisper-tiny.en", end_of_turn="<|im_end|>",
                                  policy=TrainingPolicy(lora_dropout=0.0), feature_cache=cache_dir)
        cache: EncoderFeatureCache = model.feature_cache
        collate = SpeechCollator(model.processor)
        batches = [collate(items[i : i + args.batch_size]) for i in range(0, len(items), args.batch_size)]
        optimizer = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=1e-4)
        model.train()
        cold = run_pass(model, batches, optimizer)  # fills the cache
        timings = {"without_cache": [], "with_cache": []}
        for _ in range(args.repeats):
            model.feature_cache = None
            timings["without_cache"].append(run_pass(model, batches, optimizer))
            model.feature_cache = cache
            timings["with_cache"].append(run_pass(model, batches, optimizer))
    steps = len(batches)
    result = {
        "data": source,
        "clips": len(items),
        "audio_seconds_mean": round(statistics.mean(seconds), 1),
        "batch_size": args.batch_size,
        "steps_per_pass": steps,
        "threads": torch.get_num_threads(),
        "llm_params_M": round(sum(p.numel() for p in model.llm.parameters()) / 1e6, 2),
        "cold_pass_steps_per_s": round(steps / cold, 3),
        "steps_per_s_without_cache": round(steps / statistics.median(timings["without_cache"]), 3),
        "steps_per_s_with_cache": round(steps / statistics.median(timings["with_cache"]), 3),
        "cache_hits": cache.hits,
        "cache_misses": cache.misses,
    }
    result["speedup"] = round(result["steps_per_s_with_cache"] / result["steps_per_s_without_cache"], 2)
    return emit(result, args.output)


if __name__ == "__main__":
    main()

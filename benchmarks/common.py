"""What the side-by-side benchmarks share: the workload (benchmark documents, a BPE tokenizer,
tiny random-init Llama student and teacher), batches in both formats, the alternation of two
settings with medians, step timers for Lightning and the HF Trainer, and the machine description.

Nothing here imports TRL: the TRL side lives in ``benchmarks/trl_side.py`` (needs the ``bench``
extra), so ``tests/test_bench_harness.py`` can check these helpers without it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from torch import Tensor

from speechsum.data.batch import SpeechBatch
from speechsum.data.processor import pad_sequences

# Tiny random-init Llama LMs (the shapes of the benchmark's small LMs): a student and a larger teacher.
STUDENT_LLM = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
               "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 2048}
TEACHER_LLM = {**STUDENT_LLM, "hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6,
               "num_attention_heads": 6, "num_key_value_heads": 6}


def pipeline_llm(config: str) -> dict:
    """The ``llm`` of a text-LM stage config (``configs/benchmark/text_lm.yaml``: the default
    pipeline's backbone, Phi 4×128; ``text_teacher.yaml``: its teacher, Phi 4×256)."""
    from speechsum.models.checkpoint import model_config_from_yaml
    from speechsum.pipeline.config import find_config_file

    return dict(model_config_from_yaml(find_config_file(config))["init_args"]["llm"])


def model_shapes(name: str) -> tuple[dict, dict, str]:
    """(student, teacher, world) of a benchmark workload: ``pipeline`` = the default pipeline's
    text backbone and teacher in the compact world (whose BPE has ~2.2 k tokens; the default run's
    compact-heard adds one short turn per document, measured in compact before 2026-12-06); ``llama`` = the
    Llama 4×256 / 6×384 pair of the benchmarks before 2026-12-05, in the full world."""
    if name == "pipeline":
        return pipeline_llm("configs/benchmark/text_lm.yaml"), pipeline_llm("configs/benchmark/text_teacher.yaml"), "compact"
    if name == "llama":
        return STUDENT_LLM, TEACHER_LLM, "full"
    raise ValueError(f"unknown shapes {name!r}; expected pipeline or llama")


def describe_llm(config: dict) -> str:
    """``Phi 4×128`` for a config dict."""
    return f"{config['model_type'].capitalize()} {config['num_hidden_layers']}×{config['hidden_size']}"


def with_vocab(config: dict, vocab: int | None) -> dict:
    """``config`` with ``vocab_size`` rows of embedding / LM head (None: the tokenizer's size).
    Real LLMs have vocabularies of 32 k–200 k, far above the benchmark BPE's few thousand; ids
    beyond the tokenizer are simply unused tokens (they decode to nothing)."""
    return config if vocab is None else {**config, "vocab_size": vocab}


@dataclass
class TextExample:
    """One pre-tokenized example: chat-formatted prompt ids (transcript + instruction, the
    :class:`~speechsum.models.text_llm.TextProcessor` prompt), response ids (+ end-of-turn), texts."""

    id: str
    instruction: str
    transcript: str
    summary: str
    prompt: list[int]
    response: list[int]
    rejected: list[int] | None = None
    rejected_text: str | None = None


def benchmark_records(documents: int, seed: int = 0, world: str = "full") -> list[dict]:
    """Manifest-like records (instruction, transcript, summary) of ``documents`` generated train
    documents of ``world`` (the bundled benchmark's generator; no audio synthesis)."""
    from speechsum.benchmark.text_corpus import text_records

    return text_records(documents, 1, seed, "-", world=world)


def build_tokenizer(records: Sequence[dict], vocab_size: int):
    """The benchmark's byte-level BPE trained on these records' texts."""
    from speechsum.benchmark.bpe import train_bpe_tokenizer

    texts = [r[k] for r in records for k in ("transcript", "instruction", "summary")]
    return train_bpe_tokenizer(texts, vocab_size=vocab_size)


def rejected_summary(summary: str) -> str:
    """A worse summary for a preference pair: the first sentence repeated, the rest dropped."""
    first = summary.split(". ")[0].rstrip(".")
    return ". ".join([first] * 3) + "."


def tokenize_examples(records: Sequence[dict], processor, max_prompt_tokens: int) -> list[TextExample]:
    """Records → :class:`TextExample` with our processor (prompts truncated from the left of the
    transcript until they fit ``max_prompt_tokens``)."""
    examples = []
    for r in records:
        transcript = r["transcript"]
        prompt = processor.prompt_ids(r["instruction"], transcript)
        while len(prompt) > max_prompt_tokens:
            transcript = transcript[: int(len(transcript) * 0.9)]
            prompt = processor.prompt_ids(r["instruction"], transcript)
        response = processor.encode_responses([r["summary"]])[0][0].tolist()
        worse = rejected_summary(r["summary"])
        rejected = processor.encode_responses([worse])[0][0].tolist()
        examples.append(TextExample(r["id"], r["instruction"], transcript, r["summary"], prompt, response,
                                    rejected, worse))
    return examples


def speech_batch(examples: Sequence[TextExample], pad_id: int, preference: bool = False) -> SpeechBatch:
    """Our batch type from pre-tokenized examples: left-padded prompts, right-padded responses."""
    prompt_ids, prompt_mask = pad_sequences([e.prompt for e in examples], pad_id, side="left")
    response_ids, response_mask = pad_sequences([e.response for e in examples], pad_id, side="right")
    batch = SpeechBatch(
        ids=[e.id for e in examples], audio={}, audio_seconds=torch.zeros(len(examples)),
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, instructions=[e.instruction for e in examples],
        transcripts=[e.transcript for e in examples], references=[e.summary for e in examples],
        response_ids=response_ids, response_mask=response_mask,
    )
    if preference:
        batch.chosen_ids, batch.chosen_mask = response_ids, response_mask
        batch.rejected_ids, batch.rejected_mask = pad_sequences([e.rejected for e in examples], pad_id, "right")
    return batch


def prompt_completion_inputs(prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                             completion_mask: Tensor) -> dict[str, Tensor]:
    """HF-style inputs of left-padded prompts followed by completions: ``input_ids``,
    ``attention_mask`` and ``labels`` (−100 outside the completion), as TRL's GKD builds them."""
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, : prompt_ids.shape[1]] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "prompts": prompt_ids, "prompt_attention_mask": prompt_mask}


# -- timing -------------------------------------------------------------------------------------
@dataclass
class StepLog:
    """Wall-clock start of every training step (``starts``) and work per step (samples, tokens)."""

    starts: list[float]
    samples: list[int]
    tokens: list[int]

    @classmethod
    def empty(cls) -> StepLog:
        return cls([], [], [])

    def throughput(self, warmup: int = 1) -> dict[str, float]:
        """Samples/s and completion tokens/s over steps ``warmup … n-2`` (step i lasts from its
        start to the next step's start, so everything in the loop counts; the last step only
        marks the end of the one before)."""
        steps = range(warmup, len(self.starts) - 1)
        if not steps:
            raise ValueError(f"need at least {warmup + 2} steps, got {len(self.starts)}")
        seconds = self.starts[steps.stop] - self.starts[warmup]
        return {
            "seconds_per_step": seconds / len(steps),
            "samples_per_s": sum(self.samples[i] for i in steps) / seconds,
            "tokens_per_s": sum(self.tokens[i] for i in steps) / seconds,
            "tokens_per_step": sum(self.tokens[i] for i in steps) / len(steps),
        }


def alternate(runs: dict[str, Callable[[], dict[str, float]]], repeats: int,
              log: Callable[[str], None] = print) -> dict[str, list[dict[str, float]]]:
    """Run every setting once per repetition, in turn (A B A B …, order flipped every other
    repetition so neither always runs first after the other), ``repeats`` times."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            results[name].append(runs[name]())
            log(f"  repeat {repeat + 1}/{repeats} {name}: {results[name][-1]} ({time.perf_counter() - started:.1f} s)")
    return results


def medians(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per setting, the median of every figure over the repetitions."""
    return {name: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for name, rows in results.items()}


def speedup(ours: dict[str, float], baseline: dict[str, float], key: str = "samples_per_s") -> float:
    """Throughput ratio ours / baseline (= baseline time / our time for the same work)."""
    return ours[key] / baseline[key]


def close(a: float, b: float, rel: float = 1e-4, abs_: float = 1e-5) -> bool:
    return abs(a - b) <= max(abs_, rel * max(abs(a), abs(b)))


# -- the machine ----------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description() -> dict[str, str]:
    """CPU, cores, threads, load, package versions: the context every figure needs."""
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "cpu": cpu_model(), "cores": str(os.cpu_count()), "torch_threads": str(torch.get_num_threads()),
        "load_1min_at_start": f"{load:.1f}", "python": platform.python_version(),
        **{name: version(name) for name in ("torch", "transformers", "trl", "lightning")},
    }


def write_json(path: str | Path, result: dict) -> None:
    """``result`` as indented JSON at ``path`` (its folder created; values JSON cannot hold as str)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")


def emit(result: dict, output: str | None) -> dict:
    """Print ``result`` as indented JSON and, when ``output`` is set, also write it there."""
    print(json.dumps(result, indent=2, default=str))
    if output:
        write_json(output, result)
    return result

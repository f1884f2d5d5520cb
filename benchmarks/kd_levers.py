"""Two speed levers for the on-policy KD step that change its floats, measured before deciding on them:

1. **rows grouped by length** for the teacher's no-grad forward and the student's forward +
   backward (``SpeechLLM.response_logits``): rows sorted by prompt length and run in groups of at
   most ``budget`` tokens (rows × the group's longest row), each group's left padding trimmed,
   instead of one forward of the whole batch padded to its longest prompt;
2. **the tanh GELU as x · sigmoid(2z)** (z = √(2/π)(x + 0.044715 x³), the same function) in five
   in-place tensor ops, against torch's ``gelu(approximate="tanh")`` kernel, on the MLP's shapes.

Workload: ``run_vs_trl.py``'s KD case (the default pipeline's text backbone and teacher shapes,
its compact world's BPE, model vocabulary 2210, batch 8, 64 sampled completion tokens per row).
Each lever gives the same values up to float rounding (max |Δ| printed), not the same bits: either
would change every model the default run trains (benchmarks/RESULTS.md, 2026-12-07, says why they
were measured and not adopted). Variants alternate within each repetition; medians are reported.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.kd_levers --repeats 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from benchmarks.common import (
    benchmark_records,
    build_tokenizer,
    emit,
    machine_description,
    model_shapes,
    speech_batch,
    tokenize_examples,
)
from speechsum.data.batch import SpeechBatch
from speechsum.models.base import SpeechLLM
from speechsum.utils.denormals import flush_denormals

GELU_SCALE = 2 * math.sqrt(2 / math.pi)


def length_groups(lengths: list[int], budget: int) -> list[list[int]]:
    """Row indices sorted by length, cut into groups whose rows × longest row stays within
    ``budget`` tokens (a row longer than the budget is a group of its own)."""
    groups: list[list[int]] = [[]]
    for row in sorted(range(len(lengths)), key=lambda r: lengths[r]):
        if groups[-1] and (len(groups[-1]) + 1) * lengths[row] > budget:
            groups.append([])
        groups[-1].append(row)
    return groups


def grouped_response_logits(model: SpeechLLM, batch: SpeechBatch, ids: Tensor, mask: Tensor,
                            budget: int | None) -> Tensor:
    """``model.response_logits`` ``(B, R, V)`` computed in :func:`length_groups` (text-only batches:
    no audio to split); ``budget`` None: one padded forward."""
    if budget is None:
        return model.response_logits(batch, ids, mask)
    prompt_lengths = batch.prompt_mask.sum(-1)
    parts, order = [], []
    for group in length_groups((prompt_lengths + ids.shape[1]).tolist(), budget):
        rows = torch.tensor(group)
        width = int(prompt_lengths[rows].max())
        sub = replace(batch, prompt_ids=batch.prompt_ids[rows, -width:], prompt_mask=batch.prompt_mask[rows, -width:])
        parts.append(model.response_logits(sub, ids[rows], mask[rows]))
        order += group
    return torch.cat(parts)[torch.argsort(torch.tensor(order))]


def sigmoid_form_gelu(x: Tensor) -> Tensor:
    """tanh GELU = x · sigmoid(2z), z = √(2/π)(x + 0.044715 x³), in five in-place ops."""
    z = x * x
    z.mul_(0.044715 * GELU_SCALE).add_(GELU_SCALE).mul_(x)
    return z.sigmoid_().mul_(x)


def alternating_medians(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each variant, the variants run in turn within each repetition."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="alternating repetitions (median reported)")
    parser.add_argument("--budgets", default="512,768,1024", help="comma list of group token budgets")
    parser.add_argument("--output", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    flush_denormals()  # as the stages run
    from benchmarks.ours_side import build_kd
    from speechsum.models.text_llm import TextProcessor

    student_llm, teacher_llm, world = model_shapes("pipeline")
    records = benchmark_records(1000, world=world)
    tokenizer = build_tokenizer(records, 4096)  # run_vs_trl's defaults: BPE on 1,000 documents
    folder = tempfile.mkdtemp(prefix="bench-tok-")
    tokenizer.save_pretrained(folder)
    examples = tokenize_examples(records[:32], TextProcessor(tokenizer), 320)
    module = build_kd(folder, student_llm, teacher_llm, vocab=2210, max_new_tokens=64, temperature=1.0,
                      beta=0.5, learning_rate=1e-5)
    batches = [speech_batch(examples[i : i + 8], module.processor.pad_id) for i in range(0, 32, 8)]
    torch.manual_seed(0)
    completions = [module.model.generate(b, max_new_tokens=64, do_sample=True) for b in batches]
    teacher_batches = [module.teacher._teacher_batch(b, torch.device("cpu")) for b in batches]
    budgets = [None] + [int(b) for b in args.budgets.split(",")]

    def teacher(budget: int | None) -> list[Tensor]:
        with torch.no_grad():
            return [grouped_response_logits(module.teacher.lm, b, i, m, budget)
                    for b, (i, m) in zip(teacher_batches, completions)]

    def student(budget: int | None) -> None:
        for b, (i, m) in zip(batches, completions):
            grouped_response_logits(module.model, b, i, m, budget).logsumexp(-1).mean().backward()

    padded = teacher(None)
    figures: dict = {"machine": machine_description(), "max_abs_diff": {}, "teacher_s_per_batch": {},
                     "student_s_per_batch": {}, "gelu_ms": {}}
    for budget in budgets[1:]:
        figures["max_abs_diff"][str(budget)] = max(float((a - b).abs().max()) for a, b in zip(teacher(budget), padded))
    for name, run in (("teacher_s_per_batch", teacher), ("student_s_per_batch", student)):
        medians = alternating_medians({str(b): (lambda b=b, run=run: run(b)) for b in budgets}, args.repeats)
        figures[name] = {key: value / len(batches) for key, value in medians.items()}
    for rows, width in ((2072, 1024), (2072, 384)):  # the teacher's and the student's fc1 output
        x = torch.randn(rows, width)
        kernels = {"torch": lambda x=x: torch.nn.functional.gelu(x, approximate="tanh"),
                   "sigmoid_form": lambda x=x: sigmoid_form_gelu(x)}
        medians = alternating_medians({k: (lambda f=f: [f() for _ in range(10)]) for k, f in kernels.items()},
                                      args.repeats)
        diff = float((sigmoid_form_gelu(x) - torch.nn.functional.gelu(x, approximate="tanh")).abs().max())
        figures["gelu_ms"][f"{rows}x{width}"] = {**{k: v * 100 for k, v in medians.items()}, "max_abs_diff": diff}
    emit(figures, args.output)
    return figures


if __name__ == "__main__":
    main()

"""speechsum vs TRL, side by side in one process: on-policy KD (``OnPolicyKDModule`` vs
``GKDTrainer``) and DPO (``DPOModule`` vs ``DPOTrainer``), optionally the SFT feature-cache case.

Workload: documents of the bundled benchmark's generator (transcript + instruction → summary), the
benchmark's byte-level BPE trained on them, a random-init student and teacher of the default
pipeline's text-LM shapes (``--shapes pipeline``: Phi 4×128 and 4×256, read from
configs/benchmark/; ``--shapes llama``: the Llama 4×256 / 6×384 pair of the runs before
2026-12-05), fp32 or bf16 on CPU, the same pre-tokenized prompts, batch size and decoding on both sides.
Before timing it checks that both sides compute the same thing (the KD loss of a fixed completion
per example; DPO reference log-probs and the loss of perturbed policies; identical token ids).
Then, per case, it alternates ours and TRL (order flipped each repetition), each run a fresh
trainer doing 1 warm-up step + ``--steps`` timed steps, and reports medians and the speed-up
(TRL time / our time for the same work). Results are appended to ``benchmarks/RESULTS.md``.

    pip install -e '.[bench]'          # TRL (never needed by the package or the tests)
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.run_vs_trl --threads 1 --batch-size 8 --model-vocab 2210
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import json
import tempfile
from pathlib import Path

import torch

from benchmarks.common import (
    alternate,
    benchmark_records,
    build_tokenizer,
    close,
    describe_llm,
    machine_description,
    medians,
    model_shapes,
    speech_batch,
    speedup,
    tokenize_examples,
    write_json,
)
from speechsum.utils.denormals import flush_denormals


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="kd,dpo", help="comma list of kd, dpo, sft (sft: benchmarks/sft_feature_cache.py)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both sides")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true",
                   help="both sides: fp32, or bf16 autocast (our trainer's bf16-mixed, TRL's bf16=True); in the "
                        "fairness checks our loss is computed in fp32 and TRL's under its own precision")
    p.add_argument("--repeats", type=int, default=3, help="alternating repetitions per setting (median reported)")
    p.add_argument("--steps", type=int, default=5, help="timed optimiser steps per run (after 1 warm-up step)")
    p.add_argument("--shapes", choices=["pipeline", "llama"], default="pipeline",
                   help="models and world: pipeline = the default pipeline's text backbone (student, Phi 4x128) and "
                        "teacher (Phi 4x256) from configs/benchmark/, documents of its compact world (BPE ~2.2 k "
                        "tokens); llama = the Llama 4x256 / 6x384 pair in the full world (the runs before 2026-12-05)")
    p.add_argument("--batch-size", type=int, default=4, help="examples (KD) or pairs (DPO) per step")
    p.add_argument("--documents", type=int, default=24, help="generated benchmark documents (one example each)")
    p.add_argument("--tokenizer-documents", type=int, default=1000, help="documents the BPE is trained on")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary (the benchmark's default)")
    p.add_argument("--model-vocab", type=int, default=None,
                   help="embedding / LM-head rows of both models (default: the tokenizer's size); e.g. 32768 for "
                   "the vocabulary-to-width ratio of real small LLMs (extra ids are unused tokens)")
    p.add_argument("--max-prompt-tokens", type=int, default=320, help="transcripts are cut until prompts fit")
    p.add_argument("--max-new-tokens", type=int, default=64, help="KD: tokens sampled per completion")
    p.add_argument("--temperature", type=float, default=1.0, help="KD: sampling temperature")
    p.add_argument("--kd-beta", type=float, default=0.5, help="KD: generalized-JSD beta")
    p.add_argument("--dpo-beta", type=float, default=0.1, help="DPO: beta")
    p.add_argument("--sft-bench", default="/tmp/bench_small", help="sft case: benchmark directory (see its --help)")
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")), help="Markdown file appended to")
    p.add_argument("--no-write", action="store_true", help="print only; do not append to --results")
    p.add_argument("--json", default=None, help="also write all figures as JSON here")
    return p.parse_args(argv)


def check(ok: bool, what: str, checks: list[str]) -> None:
    checks.append(("ok   " if ok else "FAIL ") + what)
    print(checks[-1])
    if not ok:
        raise SystemExit(f"fairness check failed: {what}")


def kd_case(args, student_llm: dict, teacher_llm: dict, tokenizer, tok_dir: str, examples, checks: list[str]) -> dict:
    from benchmarks.ours_side import build_kd, fit_steps, kd_loss_on
    from benchmarks.trl_side import TRLGKD

    lr = 1e-5
    ours = build_kd(tok_dir, student_llm, teacher_llm, vocab=args.model_vocab, max_new_tokens=args.max_new_tokens, temperature=args.temperature, beta=args.kd_beta,
                    learning_rate=lr)
    pad = ours.processor.pad_id
    theirs = TRLGKD(copy.deepcopy(ours.model.llm), copy.deepcopy(ours.teacher.lm.llm), tokenizer, examples,
                    batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    beta=args.kd_beta, learning_rate=lr, stop_ids=ours.processor.stop_token_ids,
                    bf16=args.precision == "bf16-mixed")
    # Same loss for the same completion (one example per row: no padding involved).
    first = speech_batch(examples[: args.batch_size], pad)
    torch.manual_seed(0)
    ids, mask = ours.model.generate(first, max_new_tokens=args.max_new_tokens, do_sample=True,
                                    temperature=args.temperature)
    for row, example in enumerate(examples[: args.batch_size]):
        n = int(mask[row].sum())
        one = speech_batch([example], pad)
        a = kd_loss_on(ours, one, ids[row : row + 1, :n], mask[row : row + 1, :n])
        b = theirs.loss(one.prompt_ids, one.prompt_mask, ids[row : row + 1, :n], mask[row : row + 1, :n])
        check(close(a, b, rel=2e-3), f"KD loss of a fixed completion, example {row}: ours {a:.6f}, TRL {b:.6f}", checks)
    batches = [speech_batch(examples[i : i + args.batch_size], pad)
               for i in range(0, len(examples) - args.batch_size + 1, args.batch_size)]
    steps = args.steps + 2  # warm-up + timed + end marker
    results = alternate({"speechsum OnPolicyKDModule": lambda: fit_steps(ours, batches, steps, args.precision).throughput(),
                         "TRL GKDTrainer": lambda: theirs.run(steps).throughput()}, args.repeats)
    table = medians(results)
    a, b = table["speechsum OnPolicyKDModule"], table["TRL GKDTrainer"]
    check(abs(a["tokens_per_step"] - b["tokens_per_step"]) <= 0.1 * b["tokens_per_step"],
          f"KD completion tokens per step: ours {a['tokens_per_step']:.0f}, TRL {b['tokens_per_step']:.0f}", checks)
    return {"rows": table, "speedup": speedup(a, b), "runs": results}


def dpo_case(args, student_llm: dict, tokenizer, tok_dir: str, examples, checks: list[str]) -> dict:
    from benchmarks.ours_side import build_dpo, dpo_loss_on, fill_reference_table, fit_steps
    from benchmarks.trl_side import TRLDPO

    lr = 1e-5
    size = args.batch_size
    out: dict = {"rows": {}, "speedup": {}, "runs": {}}
    for reference in ("precomputed", "frozen_copy"):
        ours = build_dpo(tok_dir, student_llm, reference, vocab=args.model_vocab, beta=args.dpo_beta, learning_rate=lr)
        pad = ours.processor.pad_id
        batches = [speech_batch(examples[i : i + size], pad, preference=True)
                   for i in range(0, len(examples) - size + 1, size)]
        theirs = TRLDPO(copy.deepcopy(ours.model.llm), tokenizer, examples, reference=reference, batch_size=size,
                        beta=args.dpo_beta, learning_rate=lr, bf16=args.precision == "bf16-mixed")
        same_ids = all(list(p) == e.prompt and list(c) == e.response and list(r) == e.rejected
                       for (p, c, r), e in zip(theirs.token_ids(), examples))
        check(same_ids, f"DPO ({reference}): TRL tokenizes every prompt/chosen/rejected as we do", checks)
        if reference == "precomputed":
            fill_reference_table(ours, batches)
            data = theirs.trainer.train_dataset
            worst = max(abs(ours.reference_table[e.id][0] - c) + abs(ours.reference_table[e.id][1] - r)
                        for e, c, r in zip(examples, data["ref_chosen_logps"], data["ref_rejected_logps"]))
            check(worst < 1e-2, f"DPO precomputed reference log-probs agree (max |Δ| {worst:.2e} nats)", checks)
        else:  # perturb both policies identically: a loss that is not log 2
            for model in (ours.model.llm, theirs.trainer.model):
                generator = torch.Generator().manual_seed(5)
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(torch.randn(p.shape, generator=generator) * 0.02)
            a, b = dpo_loss_on(ours, batches[0]), theirs.loss(range(size))
            # TRL's loss under its bf16 autocast (ours in fp32) rounds like the KD check's
            check(close(a, b, rel=1e-4 if args.precision == "32-true" else 2e-3), f"DPO loss of perturbed policies: ours {a:.6f}, TRL {b:.6f}", checks)
        steps = args.steps + 2
        name = f"speechsum DPOModule ({reference})"
        runs = {name: functools.partial(fit_steps, ours, batches, steps, args.precision),
                f"TRL DPOTrainer ({reference})": functools.partial(theirs.run, steps)}
        results = alternate({key: (lambda run=run: run().throughput()) for key, run in runs.items()}, args.repeats)
        table = medians(results)
        out["rows"].update(table)
        out["runs"].update(results)
        out["speedup"][reference] = speedup(table[name], table[f"TRL DPOTrainer ({reference})"])
    return out


def sft_case(args) -> dict:
    from benchmarks import sft_feature_cache

    return sft_feature_cache.main(["--bench", args.sft_bench, "--repeats", str(args.repeats)])


def markdown(args, machine: dict, results: dict, checks: list[str], workload: str) -> str:
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"\n## speechsum vs TRL (`benchmarks/run_vs_trl.py`), {now}\n",
             f"Machine: {machine['cpu']}, {machine['cores']} cores, **{machine['torch_threads']} torch thread(s)**, "
             f"load average {machine['load_1min_at_start']} at start (shared machine); Python {machine['python']}, "
             f"torch {machine['torch']}, transformers {machine['transformers']}, trl {machine['trl']}, "
             f"lightning {machine['lightning']}. {'fp32' if args.precision == '32-true' else 'bf16 autocast on both sides'}; "
             "subnormal floats flushed to zero on both sides.\n",
             workload + "\n",
             f"Median of {args.repeats} alternating repetitions, each 1 warm-up + {args.steps} timed optimiser "
             "steps with a fresh trainer; a step lasts from its start to the next one's (generation, teacher, "
             "forward, backward, optimiser, framework overhead).\n",
             "| case | setting | samples/s | completion tokens/s | s/step | speed-up (TRL time / ours) |",
             "|---|---|---|---|---|---|"]
    for case, label in (("kd", "on-policy KD"), ("dpo", "DPO")):
        if case not in results:
            continue
        for name, row in results[case]["rows"].items():
            ratio = results[case]["speedup"]
            if isinstance(ratio, dict):
                ratio = ratio["precomputed" if "precomputed" in name else "frozen_copy"]
            tokens = f"{row['tokens_per_s']:.0f}" if case == "kd" else "–"
            shown = f"**{ratio:.2f}×**" if name.startswith("speechsum") else ""
            lines.append(f"| {label} | {name} | {row['samples_per_s']:.2f} | {tokens} | {row['seconds_per_step']:.3f} "
                         f"| {shown} |")
    if "sft" in results:
        s = results["sft"]
        lines.append(f"| SFT feature cache | with vs without cache (steps/s {s['steps_per_s_with_cache']} vs "
                     f"{s['steps_per_s_without_cache']}) | | | | **{s['speedup']:.2f}×** |")
    lines += ["", "Checks before timing:", "", *[f"- {c}" for c in checks], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # our stages flush subnormal floats when set up (speechsum/utils/denormals.py), which would leave
    # the mode on for whatever runs after them in this process: both sides run flushed from the start
    flush_denormals()
    machine = machine_description()
    print(json.dumps(machine))
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    checks: list[str] = []
    results: dict = {}
    if {"kd", "dpo"} & set(cases):
        from speechsum.models.text_llm import TextProcessor

        student_llm, teacher_llm, world = model_shapes(args.shapes)
        records = benchmark_records(max(args.documents, args.tokenizer_documents), world=world)
        tokenizer = build_tokenizer(records[: args.tokenizer_documents], args.vocab_size)
        records = records[: args.documents]
        tok_dir = tempfile.mkdtemp(prefix="bench-tok-")
        tokenizer.save_pretrained(tok_dir)
        examples = tokenize_examples(records, TextProcessor(tokenizer), args.max_prompt_tokens)
        prompt_mean = sum(len(e.prompt) for e in examples) / len(examples)
        workload = (f"Workload: {len(examples)} generated benchmark documents, BPE vocabulary {len(tokenizer)} "
                    f"(model vocabulary {args.model_vocab or len(tokenizer)}), "
                    f"prompts (transcript + instruction) mean {prompt_mean:.0f} tokens, batch {args.batch_size}; "
                    f"{world} world; student {describe_llm(student_llm)}, teacher {describe_llm(teacher_llm)} "
                    f"(random init, full fine-tuning); "
                    f"KD: max_new_tokens {args.max_new_tokens}, temperature {args.temperature}, beta {args.kd_beta}, "
                    f"lmbda 1; DPO: beta {args.dpo_beta}, sigmoid loss.")
        print(workload)
        if "kd" in cases:
            results["kd"] = kd_case(args, student_llm, teacher_llm, tokenizer, tok_dir, examples, checks)
        if "dpo" in cases:
            results["dpo"] = dpo_case(args, student_llm, tokenizer, tok_dir, examples, checks)
    else:
        workload = ""
    if "sft" in cases:
        results["sft"] = sft_case(args)
    text = markdown(args, machine, results, checks, workload)
    print(text)
    if not args.no_write:
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write(text)
    if args.json:
        write_json(args.json, {"machine": machine, "precision": args.precision, "results": results, "checks": checks})
    return results


if __name__ == "__main__":
    main()

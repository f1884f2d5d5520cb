"""What each pipeline stage runs. Every stage is a function ``(ctx) -> list[output paths]`` that
runs speechsum commands as subprocesses through ``ctx.run`` (see :mod:`speechsum.pipeline.runner`);
``*_outputs(ctx)`` name what a stage writes, so a rerun can delete a half-done one. Which function
belongs to which stage: :mod:`speechsum.pipeline.table`.

Paths: everything lives under the run folder ``RUN`` — ``data/``, ``text_corpus/``, ``tokenizer/``
(benchmark), ``text_lm/``, ``align/``, ``text_teacher/``, ``sft/``, ``kd/``, ``dpo/`` (fit runs, each
with its resolved ``config.yaml``), ``feature_cache/`` (frozen-encoder outputs, shared, never
deleted), ``pairs/``, ``baselines/`` (text teacher, backbone, cascade rows), ``evaluate/`` (the
student rows, ``evaluate/<system>/`` each written by a stage of its own), ``report.md``, ``report.csv``,
``chart_<metric>.png``.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from speechsum.data.manifest import audio_path
from speechsum.evaluation.runs import summary_csv
from speechsum.pipeline.config import (
    STUDENT_SYSTEMS,
    aligns,
    backbone_path,
    get_path,
    resolve_stage_config,
    section_options,
    teacher_model_path,
    trains_text_lms,
)
from speechsum.pipeline.resume import RESUME_FOLDER, TEACHER_SERVER_URL, resume_point
from speechsum.pipeline.sections import BENCHMARK_TEST_SPLITS
from speechsum.pipeline.stage_secrets import credentials_apart, credentials_config, judge_url_options
from speechsum.pipeline.teacher_server import SERVE_KEY_ENV, SPEECHSUM, teacher_server
from speechsum.utils.io import atomic_path, jsonl_lines, write_atomic, write_jsonl

# what the warm-start server imports once for all the stages' commands (utils/warm_start.py)
WARM_MODULES = ("torch", "transformers", "lightning.pytorch", "torchmetrics", "speechsum.lightning_cli",
                "speechsum.stages", "speechsum.evaluation.evaluate", "speechsum.pairs")
STUDENTS_FOLDER = "evaluate"


def delete_outputs(paths: list[Path]) -> None:
    """Delete files and folders (missing ones are fine)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


# -- benchmark ------------------------------------------------------------------------------------
def run_benchmark(ctx) -> list[Path]:
    """Build the bundled benchmark, the text LMs' corpus and the shared tokenizer."""
    bench = ctx.config.get("benchmark")
    if not bench:
        ctx.note("benchmark: null — using the manifests under data:")
        return []
    opts = section_options(ctx.config, "benchmark")
    run = ctx.run_dir
    ctx.run([*SPEECHSUM, "benchmark", "build", "--out", str(run / "data"), "--size", opts["size"],
             "--seed", str(opts["seed"]), "--workers", str(opts["workers"]), "--no-progress", "--overwrite",
             *map(str, opts["args"])])
    if trains_text_lms(ctx.config):
        ctx.run([*SPEECHSUM, "benchmark", "textcorpus", "--data", str(run / "data"), "--out", str(run / "text_corpus"),
                 "--documents", str(opts["text_documents"]), "--seed", str(opts["seed"] + 1),
                 "--unseen-share", str(opts["text_unseen_share"]), "--xling-share", str(opts["text_xling_share"]),
                 "--unlabeled-share", str(opts["text_unlabeled_share"])])
        ctx.run([*SPEECHSUM, "benchmark", "tokenizer", "--data", str(run / "text_corpus"),
                 "--out", str(run / "tokenizer"), "--vocab-size", str(opts["vocab_size"])])
        return [run / "data", run / "text_corpus", run / "tokenizer"]
    return [run / "data"]  # what the marker lists must exist: a rerun redoes a stage whose outputs are gone


def benchmark_outputs(ctx) -> list[Path]:
    """What ``run_benchmark`` writes (nothing with ``benchmark: null``)."""
    run = ctx.run_dir
    return [run / "data", run / "text_corpus", run / "tokenizer"] if ctx.config.get("benchmark") else []


# -- training stages (speechsum fit) -------------------------------------------------------------
def run_fit(ctx, teacher: dict | None = None) -> list[Path]:
    """Write the resolved config to RUN/<stage>/config.yaml and run ``speechsum fit`` on it: from
    the newest checkpoint of an interrupted run of the same config when the runner allows it
    (``ctx.resume``), else from scratch in an emptied folder."""
    stage, folder = ctx.stage, ctx.run_dir / ctx.stage
    if stage in ("text_lm", "text_teacher") and not trains_text_lms(ctx.config):
        ctx.note("text_lms: null — using " + ("backbone:" if stage == "text_lm" else "teacher_model:"))
        return []
    if stage == "align" and not aligns(ctx.config):
        ctx.note("stages.align: false — SFT starts from the model as configured")
        return []
    resolved = resolve_stage_config(ctx.config, stage, ctx.run_dir, wandb=ctx.wandb, teacher=teacher,
                                    checkpoint_every_s=ctx.checkpoint_every_s)
    saved, credentials = credentials_apart(resolved)  # a teacher base_url's user:password@ not in the run folder
    text = yaml.safe_dump(saved, sort_keys=False)
    ignore = TEACHER_SERVER_URL if teacher and teacher["mode"] == "serve" else None
    checkpoint, why = resume_point(folder, text, ctx.needs_finished, ignore) if ctx.resume else (None, "")
    if checkpoint is not None:
        saved = datetime.fromtimestamp(checkpoint.stat().st_mtime, timezone.utc).strftime("%H:%M:%S UTC")
        ctx.note(f"resuming from {checkpoint} ({why}, saved {saved})")
    else:
        if why and folder.exists():
            ctx.note(f"starting over: {why}")
        delete_outputs([folder])
    path = folder / "config.yaml"
    write_atomic(path, text)
    with credentials_config(ctx.run_dir / ".state", stage, credentials) as secret:  # not on the command line (ps)
        ctx.run([*SPEECHSUM, "fit", "--config", str(path), *secret,
                 *(["--ckpt_path", str(checkpoint)] if checkpoint else [])])
    last = folder / "checkpoints" / "last.ckpt"
    if checkpoint is not None and checkpoint.parent.name == RESUME_FOLDER and not last.exists():
        # killed after its final resume checkpoint, before last.ckpt: resumed there, fit had no step left to
        # train and saved nothing; that checkpoint is the trained model
        last.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(last) as partial:
            shutil.copyfile(checkpoint, partial)
        ctx.note(f"{checkpoint.name} was the last step: copied to {last}")
    outputs = [path, last]
    if stage in ("text_lm", "text_teacher"):
        outputs.append(folder / "model" / "config.json")
    missing = [str(p) for p in outputs if not p.exists()]
    if missing:
        raise RuntimeError(f"stage {stage}: fit finished but {', '.join(missing)} is missing "
                           f"(see {ctx.log_path(stage)})")
    if stage in ("text_lm", "text_teacher"):  # every file of the HF folder the later stages load, its weights too:
        outputs += model_files(folder / "model")  # with config.json alone, a lost weights file kept the stage complete
    delete_outputs([folder / RESUME_FOLDER])  # complete: nothing left to resume
    return outputs


def model_files(folder: Path) -> list[Path]:
    """The files of a Hugging Face model folder other than its ``config.json``, sorted."""
    return sorted(path for path in folder.rglob("*") if path.is_file() and path != folder / "config.json")


def kd_teacher(settings: dict, mode: str, serve_url: str) -> dict:
    """The ``teacher`` settings the KD stage gets (:func:`resolve_stage_config`): ``serve`` points at
    our own server at ``serve_url``, ``remote`` at the YAML's endpoint, ``inprocess`` needs none."""
    if mode == "serve":
        return {"mode": "serve", "base_url": serve_url, "model": "teacher", "api_key_env": SERVE_KEY_ENV}
    if mode == "remote":
        if not settings["base_url"] or not settings["model"]:
            raise ValueError("teacher.mode remote needs teacher.base_url and teacher.model in the pipeline YAML")
        return {**settings, "mode": "remote"}
    if mode != "inprocess":
        raise ValueError(f"teacher mode {mode!r}: use inprocess, serve or remote")
    return {"mode": "inprocess"}


def run_kd(ctx) -> list[Path]:
    """On-policy KD with the teacher in-process, behind a ``speechsum serve`` we start, or remote."""
    settings = section_options(ctx.config, "teacher")
    mode = ctx.teacher_mode or settings["mode"]
    if mode == "serve":
        with teacher_server(ctx, teacher_model_path(ctx.config, ctx.run_dir), settings["serve_args"]) as url:
            return run_fit(ctx, kd_teacher(settings, mode, url))
    return run_fit(ctx, kd_teacher(settings, mode, ""))


# -- manifests ------------------------------------------------------------------------------------
def subset_manifest(source: Path, out: Path, limit: int | None) -> list[str]:
    """Write ``limit`` lines of ``source`` spread evenly over it (all when None) to ``out`` with
    absolute audio paths (relative ones resolve against the source's folder); returns the ids."""
    if limit is not None and limit < 1:
        raise ValueError(f"examples per split must be at least 1 (got {limit}); null takes every example")
    numbered = list(jsonl_lines(source))
    if limit is not None and limit < len(numbered):
        step = len(numbered) / limit
        numbered = [numbered[int(i * step)] for i in range(limit)]
    rows = []
    for number, line in numbered:  # the source file's own line numbers in errors
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: line {number}: invalid JSON ({err})") from err
        if not isinstance(record, dict):  # record.get was an AttributeError traceback
            raise ValueError(f"{source}: line {number}: expected a JSON object (one example), got "
                             f"{type(record).__name__}; write one object per line")
        if isinstance(record.get("audio"), str):  # joined and normalised as load_manifest does (symlinks kept)
            try:
                record["audio"] = str(audio_path(record["audio"], source.parent, allow_outside=True))
            except ValueError as err:
                raise ValueError(f"{source}: line {number}: field 'audio': {err}") from err
        rows.append(record)
    write_jsonl(out, rows)
    return [r.get("id") for r in rows]


def manifests(ctx) -> dict[str, Any]:
    """``{"train", "val", "tests": {name: path}}`` — the benchmark's or the YAML's ``data:``."""
    data = ctx.config.get("data")
    if data:
        return {"train": Path(data["train"]), "val": Path(data["val"]),
                "tests": {name: Path(path) for name, path in data["tests"].items()}}
    folder = ctx.run_dir / "data"
    tests = {s: folder / f"{s}.jsonl" for s in BENCHMARK_TEST_SPLITS if (folder / f"{s}.jsonl").is_file()}
    return {"train": folder / "train.jsonl", "val": folder / "val.jsonl", "tests": tests}


# -- pairs ----------------------------------------------------------------------------------------
PAIRS_FILES = ("train_inputs.jsonl", "val_inputs.jsonl", "inputs.jsonl", "all.jsonl", "train.jsonl", "val.jsonl")


def pairs_outputs(ctx) -> list[Path]:
    """What ``run_pairs`` writes (its resumable ``pairs/cache/`` is kept)."""
    return [ctx.run_dir / "pairs" / name for name in PAIRS_FILES]


def run_pairs(ctx) -> list[Path]:
    """``speechsum pairs`` on the KD student over a train + val subset, in one call (one model
    load), then split into RUN/pairs/train.jsonl and val.jsonl by id."""
    opts = section_options(ctx.config, "pairs")
    judge = section_options(ctx.config, "judge")
    folder, data = ctx.run_dir / "pairs", manifests(ctx)
    train_ids = subset_manifest(data["train"], folder / "train_inputs.jsonl", opts["train_examples"])
    subset_manifest(data["val"], folder / "val_inputs.jsonl", opts["val_examples"])
    inputs = folder / "inputs.jsonl"
    write_atomic(inputs, (folder / "train_inputs.jsonl").read_text(encoding="utf-8")
                       + (folder / "val_inputs.jsonl").read_text(encoding="utf-8"))
    command = [*SPEECHSUM, "pairs", "--ckpt", str(ctx.run_dir / "kd" / "checkpoints" / "last.ckpt"),
               "--config", str(ctx.run_dir / "kd" / "config.yaml"), "--manifest", str(inputs),
               "--out", str(folder / "all.jsonl"), "--cache", str(folder / "cache"),
               "--num-samples", str(opts["num_samples"]), "--temperature", str(opts["temperature"]),
               "--top-p", str(opts["top_p"]), "--max-new-tokens", str(opts["max_new_tokens"]),
               "--batch-size", str(opts["batch_size"]), "--judge", "openai" if judge["kind"] == "openai" else "fact"]
    if judge["kind"] == "openai":
        command += ["--judge-model", judge["model"], "--api-key-env", judge["api_key_env"]]
        command += judge_url_options(ctx, judge["base_url"])
    if opts["add_reference"]:
        command.append("--add-reference")
    ctx.run(command + [str(a) for a in opts["args"]])
    train_set = set(train_ids)
    lines = [line for _, line in jsonl_lines(folder / "all.jsonl")]
    train = [line for line in lines if json.loads(line)["id"] in train_set]
    val = [line for line in lines if json.loads(line)["id"] not in train_set]
    if not train or not val:
        raise RuntimeError(
            f"pairs: {len(train)} train / {len(val)} val preference pairs — DPO needs both. The judge tied every "
            "sample (a weak student scores the fact judge's floor); train SFT/KD longer, raise pairs.num_samples "
            "or pairs.train_examples/val_examples, or set pairs.add_reference: true in the pipeline YAML")
    write_atomic(folder / "train.jsonl", "".join(line + "\n" for line in train))
    write_atomic(folder / "val.jsonl", "".join(line + "\n" for line in val))
    ctx.note(f"pairs: {len(train)} train, {len(val)} val")
    return [folder / "train.jsonl", folder / "val.jsonl"]


# -- evaluate and report ----------------------------------------------------------------------------
def evaluation_systems(ctx, wanted: list[str]) -> list[str]:
    """``--system`` specs for the wanted rows whose model exists."""
    run = ctx.run_dir
    teacher = teacher_model_path(ctx.config, run)
    backbone = backbone_path(ctx.config, run)
    candidates = {
        "teacher": f"text:teacher:{teacher}" if Path(teacher).exists() else None,
        "backbone": f"text:backbone:{backbone}" if backbone and Path(backbone).exists() else None,
        "cascade": f"cascade:cascade:{backbone}" if backbone and Path(backbone).exists() else None,
        **{stage: f"student:{stage}:{run / stage / 'checkpoints' / 'last.ckpt'}" for stage in ("sft", "kd", "dpo")},
    }
    specs = []
    for name in wanted:
        if candidates[name] is None:
            ctx.note(f"{ctx.stage}: no local model for the {name} row; skipped")
        else:
            specs.append(candidates[name])
    return specs


def student_row(ctx, system: str) -> list[Path]:
    """What a student's evaluation stage writes: ``RUN/evaluate/<system>/`` (the other rows are kept)."""
    return [ctx.run_dir / STUDENTS_FOLDER / system]


def write_students_summary(folder: Path) -> None:
    """``RUN/evaluate/summary.csv`` of every student row there: each stage's own ``speechsum evaluate``
    writes one of its row only. The last stage to write it has seen every row written before."""
    results = {}
    for name in STUDENT_SYSTEMS:
        try:
            results[name] = json.loads((folder / name / "metrics.json").read_text(encoding="utf-8"))
        except FileNotFoundError:  # not evaluated (yet), or its stage is rerunning
            continue
    write_atomic(folder / "summary.csv", summary_csv(results))


def split_manifest_args(ctx, out: Path, limit: int | None) -> list[str]:
    """``--manifest NAME=PATH`` for every test split, each the first ``limit`` examples of the split
    written to ``out/manifests/NAME.jsonl`` (the same subsets for every stage that asks)."""
    args = []
    for name, source in manifests(ctx)["tests"].items():
        subset = out / "manifests" / f"{name}.jsonl"
        subset_manifest(source, subset, limit)
        args += ["--manifest", f"{name}={subset}"]
    return args


def run_features(ctx) -> list[Path]:
    """``speechsum evaluate --encode-only`` with the first evaluated student stage's model (built from
    its resolved config, no trained weights: only its frozen encoder is run) on the test subsets the
    student evaluations read, into RUN/features/: every test clip's encoder frames go to the feature
    cache once, and the student evaluations (two of them side by side) read them instead of each
    encoding the clips. Batched as they batch, so their predictions do not change."""
    opts = section_options(ctx.config, "evaluate")
    students = [name for name in opts["systems"] if name in STUDENT_SYSTEMS]
    if not students:
        ctx.note(f"{ctx.stage}: no student among evaluate.systems; nothing to encode")
        return []
    resolved = resolve_stage_config(ctx.config, students[0], ctx.run_dir)
    backbone = "model.init_args.model.init_args"
    if not get_path(resolved, f"{backbone}.feature_cache") or get_path(resolved, f"{backbone}.policy.train_encoder"):
        # not built to find out: a native backbone (Phi-4-multimodal, Qwen2-Audio) takes minutes to load
        ctx.note(f"{ctx.stage}: the {students[0]} student reads no feature cache (model.init_args.model.init_args."
                 "feature_cache unset, or its encoder trains); nothing to encode ahead")
        return []
    out = ctx.run_dir / ctx.stage
    student = out / f"{students[0]}_config.yaml"
    write_atomic(student, yaml.safe_dump(resolved, sort_keys=False))
    command = [*SPEECHSUM, "evaluate", "--encode-only", "--out", str(out), "--batch-size", str(opts["batch_size"]),
               *split_manifest_args(ctx, out, opts["examples_per_split"]), "--system", f"student:features:{student}"]
    ctx.run(command + [str(a) for a in opts["args"]])
    return [out / "features.json"]


def run_evaluate(ctx, rows: tuple[str, ...], folder: str | None = None) -> list[Path]:
    """``speechsum evaluate`` of the wanted systems among ``rows`` on every test split
    (``examples_per_split`` each) into ``RUN/<folder>/`` (default ``RUN/<stage>/``): the ``baselines``
    stage evaluates the text LMs and the cascade (they need no student, so they run while the student
    trains); ``evaluate_sft``, ``evaluate_kd`` and ``evaluate_dpo`` each evaluate one student as soon
    as it exists, into the shared ``RUN/evaluate/`` (:data:`STUDENTS_FOLDER`; the judge's usage goes
    to ``llm_judge_usage_<stage>.json`` there, one file per stage)."""
    opts = section_options(ctx.config, "evaluate")
    judge = section_options(ctx.config, "judge")
    system_splits = opts["system_splits"] or {}  # both checked on load (config.check_sections)
    specs = evaluation_systems(ctx, [name for name in opts["systems"] if name in rows])
    out = ctx.run_dir / (folder or ctx.stage)
    if not specs:
        ctx.note(f"{ctx.stage}: no system to evaluate (evaluate.systems: {', '.join(opts['systems'])})")
        if folder == STUDENTS_FOLDER and out.is_dir():
            write_students_summary(out)  # without this stage's row (deleted before it ran)
        return []
    command = [*SPEECHSUM, "evaluate", "--out", str(out), "--max-new-tokens", str(opts["max_new_tokens"]),
               "--batch-size", str(opts["batch_size"]), *split_manifest_args(ctx, out, opts["examples_per_split"])]
    metrics = opts["metrics"]
    if judge["kind"] == "openai":
        metrics = ",".join(dict.fromkeys([*metrics.split(","), "llm_judge"]))
        command += ["--judge-model", judge["model"], "--api-key-env", judge["api_key_env"]]
        command += judge_url_options(ctx, judge["base_url"])
        # outside RUN/<stage> (deleted when the stage reruns): paid verdicts are never asked twice;
        # one file per stage, as the evaluation stages may run at the same time
        cache = ctx.run_dir / "evaluate_cache" / f"llm_judge_{ctx.stage}.jsonl"
        legacy = ctx.run_dir / "evaluate_cache" / "llm_judge.jsonl"  # the single student stage's, before 2026-12-04
        if folder == STUDENTS_FOLDER and legacy.is_file() and not cache.exists():
            shutil.copyfile(legacy, cache)  # verdicts are keyed by content: its rows' verdicts are reused
        command += ["--judge-cache", str(cache)]
    command += ["--metrics", metrics]
    for spec in specs:
        command += ["--system", spec]
        name = spec.split(":")[1]
        if name in system_splits:
            command += ["--system-splits", f"{name}={','.join(map(str, system_splits[name]))}"]
    if ctx.wandb:
        command.append("--wandb")
    ctx.run(command + [str(a) for a in opts["args"]])
    if folder == STUDENTS_FOLDER:
        if (out / "llm_judge_usage.json").is_file():
            os.replace(out / "llm_judge_usage.json", out / f"llm_judge_usage_{ctx.stage}.json")
        write_students_summary(out)
    return [out / "summary.csv", *(out / spec.split(":")[1] / "metrics.json" for spec in specs)]


def report_outputs(ctx) -> list[Path]:
    """What ``run_report`` writes."""
    return [ctx.run_dir / "report.md", ctx.run_dir / "report.csv", ctx.run_dir / "paired.csv",
            *ctx.run_dir.glob("chart_*.png")]


def run_report(ctx) -> list[Path]:
    """``speechsum report`` on both evaluation folders into the run folder; prints the table."""
    opts = section_options(ctx.config, "report")
    folders = [str(ctx.run_dir / name) for name in ("baselines", "evaluate")
               if list((ctx.run_dir / name).glob("*/metrics.json"))]
    if not folders:
        raise RuntimeError(f"report: no metrics.json under {ctx.run_dir / 'baselines'} or {ctx.run_dir / 'evaluate'}; "
                           "evaluate.systems names no system with a model (see logs/baselines.log, logs/evaluate*.log)")
    command = [*SPEECHSUM, "report", *folders, "--out", str(ctx.run_dir)]
    command += ["--metric", opts["metric"]] if opts["metric"] else []
    command += ["--baseline", opts["baseline"]] if opts["baseline"] else []
    ctx.run(command)
    return [ctx.run_dir / "report.md", ctx.run_dir / "report.csv", ctx.run_dir / "paired.csv",
            *sorted(ctx.run_dir.glob("chart_*.png"))]

"""The pipeline run as users run it (``python -m speechsum.cli pipeline`` in a subprocess): the
tiny preset end to end with resume and ``--from``, a failing stage, and ``--teacher serve`` resuming
against a new server."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from speechsum.pipeline.cli import read_marker
from speechsum.pipeline.config import TRAINING_STAGES
from speechsum.pipeline.runner import marker_path
from speechsum.pipeline.table import STAGES
from tests.conftest import REPO


# -- the tiny preset end to end ----------------------------------------------------------------------
def run_pipeline(run_dir: Path, *extra: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "speechsum.cli", "pipeline", "--preset", "tiny",
                             "--run-dir", str(run_dir), *extra], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_tiny_pipeline_end_to_end_then_resume_then_from_dpo(tmp_path):
    """The whole recipe on the tiny preset, two stages at a time (every artefact checked), a rerun
    that runs nothing, and `--from dpo` that re-runs exactly dpo, evaluate and report. ~3 min on
    one CPU core (two single-thread commands at once where stages are independent)."""
    run = tmp_path / "run"
    out = run_pipeline(run)
    for number, stage in enumerate(STAGES, start=1):
        assert f"[{number}/14] {stage} … done in " in out
    # benchmark, text LMs (HF directories), the aligned projector, student checkpoints, pairs
    for split in ("train", "val", "test", "test_unseen", "test_xling"):
        assert (run / "data" / f"{split}.jsonl").stat().st_size > 0
    assert (run / "text_corpus" / "train.jsonl").is_file() and (run / "tokenizer" / "tokenizer.json").is_file()
    corpus = [json.loads(line) for line in (run / "text_corpus" / "train.jsonl").read_text().splitlines()]
    assert {r["lang"] for r in corpus if r["id"].startswith("lmtext-")} == {"en", "es", "de"}  # the shares reached it
    unlabeled = [r for r in corpus if r["meta"].get("unlabeled")]
    assert unlabeled and all("\n" not in r["transcript"] for r in unlabeled)  # text_unlabeled_share reached it
    for name in ("text_lm", "text_teacher"):
        assert (run / name / "model" / "config.json").is_file() and (run / name / "checkpoints" / "last.ckpt").exists()
    for name in ("align", "sft", "kd", "dpo"):
        assert (run / name / "checkpoints" / "last.ckpt").exists()
    for name in TRAINING_STAGES:  # the resolved config of every stage
        saved = yaml.safe_load((run / name / "config.yaml").read_text())
        assert saved["trainer"]["default_root_dir"] == str(run / name)
        assert "WandbLogger" not in yaml.safe_dump(saved)
    sft = yaml.safe_load((run / "sft" / "config.yaml").read_text())
    assert sft["model"]["init_args"]["init_from"] == str(run / "align" / "checkpoints" / "last.ckpt")
    assert list((run / "align" / "logs").glob("version_*/samples/*.jsonl"))  # CTC transcripts of validation
    pairs = [json.loads(line) for line in (run / "pairs" / "train.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen"] != p["rejected"] and "judge" in p["meta"] for p in pairs)
    assert (run / "pairs" / "val.jsonl").read_text().strip()
    # evaluation of every system on every split (baselines, then the students), the report
    for folder, systems in (("baselines", ("teacher", "backbone", "cascade")), ("evaluate", ("sft", "kd", "dpo"))):
        assert (run / folder / "summary.csv").is_file()
        for system in systems:
            metrics = json.loads((run / folder / system / "metrics.json").read_text())
            splits = {"test"} if system == "cascade" else {"test", "test_unseen", "test_xling"}  # system_splits
            assert set(metrics["results"]["split"]) == splits
            assert metrics["results"]["split"]["test"]["fact_judge"]["n"] == 2
    report = (run / "report.md").read_text()
    assert "| text teacher |" in report and "| cascade" in report and "student + DPO" in report
    assert (run / "report.csv").is_file() and list(run.glob("chart_*.png"))
    assert report.splitlines()[0] in out  # the table is printed at the end
    summary = json.loads((run / "pipeline_summary.json").read_text())
    stages = summary["stages"]
    assert set(stages) == set(STAGES) and all(s["status"] == "ran" for s in stages.values())
    assert summary["peak_child_rss_gib"] > 0.1 and summary["peak_rss_at_once_gib"] >= summary["peak_child_rss_gib"]
    assert stages["text_teacher"]["start_s"] < stages["text_lm"]["end_s"]  # the two lanes ran at once
    # the features stage runs once align is done and before the students' evaluation; whether it starts beside
    # SFT or just after depends on which lane frees first (43.72 s after an SFT that ended at 43.71 s, idle)
    assert stages["align"]["end_s"] <= stages["features"]["start_s"] <= stages["features"]["end_s"] <= stages["evaluate_sft"]["start_s"]
    assert summary["wall_s"] < summary["stages_s"]
    markers = {stage: read_marker(run, stage) for stage in STAGES}
    assert all(m and m["commands"] for m in markers.values())
    first = {stage: marker_path(run, stage).stat().st_mtime_ns for stage in STAGES}

    # A rerun runs nothing: every marker untouched, no stage log written, in seconds.
    logs = {p: p.stat().st_mtime_ns for p in (run / "logs").glob("*.log")}
    started = time.monotonic()
    out = run_pipeline(run)
    assert time.monotonic() - started < 30
    assert out.count("complete, skipped") == 14 and "running" not in out
    assert {stage: marker_path(run, stage).stat().st_mtime_ns for stage in STAGES} == first
    assert {p: p.stat().st_mtime_ns for p in (run / "logs").glob("*.log")} == logs

    # --from dpo: exactly dpo, its evaluation and the report again; the SFT and KD rows are kept.
    rows = {p: p.stat().st_mtime_ns for p in (run / "evaluate").glob("*/metrics.json")}
    out = run_pipeline(run, "--from", "dpo")
    rerun = {stage for stage in STAGES if marker_path(run, stage).stat().st_mtime_ns != first[stage]}
    assert rerun == {"dpo", "evaluate_dpo", "report"}
    assert out.count("complete, skipped") == 11 and "[12/14] dpo … done in" in out
    assert {p: p.stat().st_mtime_ns for p in rows if p.parent.name != "dpo"} == {
        p: t for p, t in rows.items() if p.parent.name != "dpo"}
    assert {row.split(",")[0] for row in (run / "evaluate" / "summary.csv").read_text().splitlines()[1:]} == {
        "sft", "kd", "dpo"}  # every student's row, though each stage's `speechsum evaluate` wrote one
    summary = json.loads((run / "pipeline_summary.json").read_text())
    assert [s for s, v in summary["stages"].items() if v["status"] == "ran"] == ["dpo", "evaluate_dpo", "report"]
    assert "| text teacher |" in (run / "report.md").read_text()  # the baselines' rows are kept


def test_a_failing_stage_stops_with_its_log_and_leaves_no_marker(tmp_path):
    """Your own manifests (benchmark: null, text_lms: null, no alignment): the benchmark, text-LM
    and align stages are skipped with a note; SFT fails on the manifest that is no JSON -> exit code,
    the log named, no marker; `--until sft` leaves out the teacher."""
    (tmp_path / "bad.jsonl").write_text("not json\n")  # a missing one is refused when the YAML is loaded
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({
        "benchmark": None, "text_lms": None, "backbone": str(tmp_path / "backbone"),
        "teacher_model": str(tmp_path / "teacher"), "stages": {"align": False},
        "data": {"train": str(tmp_path / "bad.jsonl"), "val": str(tmp_path / "bad.jsonl"),
                 "tests": {"test": str(tmp_path / "bad.jsonl")}}}))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "speechsum.cli", "pipeline", "--config", str(config),
                             "--run-dir", str(run), "--until", "sft"], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "stage sft:" in result.stderr and str(run / "logs" / "sft.log") in result.stderr
    assert "benchmark: null" in result.stdout and "text_lms: null" in result.stdout
    assert "stages.align: false" in result.stdout
    assert [s for s in STAGES if read_marker(run, s)] == ["benchmark", "text_lm", "align"]
    saved = yaml.safe_load((run / "sft" / "config.yaml").read_text())
    assert saved["data"]["train_manifest"] == str(tmp_path / "bad.jsonl")


def test_kd_under_teacher_serve_resumes_against_a_new_server(tmp_path):
    """`--teacher serve` gives the teacher server a free port each run. A KD stage stopped before
    its marker was written (here: after training ended) resumes from its checkpoint against the
    next run's server, rather than starting over because the port in its config changed."""
    run = tmp_path / "run"
    first = run_pipeline(run, "--until", "kd", "--teacher", "serve")
    marker_path(run, "kd").unlink()
    port = int(re.search(r"teacher server: http://127\.0\.0\.1:(\d+)/v1", first).group(1))
    with socket.socket() as taken:  # the first server's port stays busy: the second gets another
        # its closed connections may sit in TIME_WAIT on that port: bind as a server would, then listen
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        second = run_pipeline(run, "--until", "kd", "--teacher", "serve")
    assert f"teacher server: http://127.0.0.1:{port}/v1" not in second
    assert "starting over" not in second
    assert re.search(r"\[kd\] resuming from .*kd/checkpoints/last\.ckpt \(step 2, saved", second)
    assert read_marker(run, "kd") is not None

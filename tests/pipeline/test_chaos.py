"""Chaos test (benchmarks/chaos_pipeline.py): the tiny pipeline SIGKILLed (its whole process group)
at seeded random moments and rerun until it completes ends with the uninterrupted run's report and
predictions, nothing half-written, and every interrupted training stage resumed from its checkpoint.
The pure helpers are checked on their own first. ~5 min on one CPU core (reference + chaos run)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.chaos_pipeline import (
    chaos_test,
    compare_results,
    half_written,
    kill_delays,
    resume_problems,
    without_run_dir,
)


def test_kill_delays_are_seeded_and_spread_over_the_reference_wall():
    delays = kill_delays(4, 100.0, seed=3)
    assert delays == kill_delays(4, 100.0, seed=3) != kill_delays(4, 100.0, seed=4)
    assert len(delays) == 4 and all(d >= 3.0 for d in delays) and sum(delays) <= 100.0 + 4 * 3.0


def test_run_dir_paths_and_timing_fields_are_ignored():
    row = {"audio": "/r/data/a.wav", "pred": "x", "latency_s": 1.5, "gen_time": 2, "meta": {"wall_s": 3, "k": "/r"}}
    assert without_run_dir(row, Path("/r")) == {"audio": "RUN/data/a.wav", "pred": "x", "meta": {"k": "RUN"}}


def write_results(run: Path, prediction: str) -> None:
    (run / "evaluate" / "sft").mkdir(parents=True)
    (run / "report.csv").write_text(f"system,rouge\nsft,0.5\nfrom,{run}/x\n")
    (run / "evaluate" / "sft" / "predictions.jsonl").write_text(
        json.dumps({"id": 1, "pred": prediction, "path": f"{run}/a", "seconds": 9.0}) + "\n")


def test_results_compare_cell_for_cell(tmp_path):
    write_results(tmp_path / "ref", "hello")
    write_results(tmp_path / "same", "hello")
    write_results(tmp_path / "other", "bye")
    assert compare_results(tmp_path / "same", tmp_path / "ref") == ([], 0)
    problems, lost = compare_results(tmp_path / "other", tmp_path / "ref")
    assert len(problems) == 1 and "predictions.jsonl row 0" in problems[0] and lost == 0
    (tmp_path / "other" / "evaluate" / "sft" / "predictions.jsonl").write_text("")
    (tmp_path / "other" / "report.csv").write_text("system,rouge\nsft,0.4\n")
    problems, lost = compare_results(tmp_path / "other", tmp_path / "ref")
    assert lost == 1 and any("report.csv row 1 col 1: '0.4' != '0.5'" in p for p in problems)


def test_half_written_outputs_are_found(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "good.ckpt")
    (tmp_path / "good.jsonl").write_text('{"a": 1}\n')
    assert half_written(tmp_path) == []
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "good.ckpt").read_bytes()[:100])
    (tmp_path / "cut.jsonl").write_text('{"a": 1}\n{"a": ')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".report.csv.tmp").write_text("x")
    (tmp_path / "sub" / ".model.tmp-k2x9").mkdir()
    assert len(half_written(tmp_path)) == 4


def test_a_stage_that_started_over_is_reported(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "sft.log").write_text("[pipeline] resuming from /r/sft/resume/resume-step=1.ckpt\n")
    (tmp_path / "logs" / "kd.log").write_text("[pipeline] starting over: its resolved config changed\n")
    (tmp_path / "logs" / "dpo.log").write_text("[pipeline] starting over: the interrupted run left no whole checkpoint\n")
    problems, seen = resume_problems(tmp_path, {"sft": 1, "kd": 1})
    assert seen["sft"] == 1 and seen["kd"] == 0
    assert [p.split(":")[0] for p in problems] == ["kd", "kd"]


def test_tiny_pipeline_survives_sigkills(tmp_path):
    summary = chaos_test(tmp_path, kills=2, seed=1, preset="tiny", threads=1, checkpoint_every=0.0)
    detail = json.dumps(summary, indent=1)[:6000]
    # 2 kills planned; a run that finishes before its kill (a machine faster than at the reference) is fine
    assert summary["completed"] and summary["kills"] >= 1, detail
    assert summary["mismatches"] == [] and summary["items_lost"] == 0, detail
    assert summary["half_written"] == [] and summary["resume_problems"] == [], detail
    assert summary["ok"], detail

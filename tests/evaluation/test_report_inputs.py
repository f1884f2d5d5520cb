"""`speechsum report` on run folders whose files do not belong together: a predictions.jsonl that is
not the one its metrics.json was computed from (another run's, or cut short) is named, not paired."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speechsum.evaluation.report_cli import report_main
from speechsum.evaluation.scoring import summarise

# name: (role, stage, per-example fact_judge scores on split test)
SYSTEMS = {"sft": ("student", "sft", [3.0, 4.0, 5.0, 4.5]), "kd": ("student", "kd", [4.0, 5.5, 6.0, 5.0])}


def write_run(folder: Path, name: str, role: str, stage: str, scores: list[float], prefix: str = "test") -> None:
    """A run folder as `speechsum evaluate` writes it: predictions.jsonl and the metrics.json of those rows
    (ids ``<prefix>-<i>``)."""
    rows = [{"id": f"{prefix}-{i}", "system": name, "split": "test", "audio": f"a{i}.wav", "instruction": "Summarise.",
             "reference": f"r{i}", "prediction": "p", "scores": {"fact_judge": value, "repetition": 0.1 * i}}
            for i, value in enumerate(scores)]
    values = {metric: np.array([row["scores"][metric] for row in rows]) for metric in ("fact_judge", "repetition")}
    stats = summarise(values, 50, 0)
    result = {"format": "speechsum-eval/1", "system": {"kind": "student", "name": name, "path": "x", "role": role,
                                                       "stage": stage},
              "metrics": {"fact_judge": "fact judge"}, "results": {"all": stats, "split": {"test": stats}},
              "num_examples": len(rows), "skipped": []}
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / "metrics.json").write_text(json.dumps(result))
    (folder / name / "predictions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def runs(tmp_path) -> Path:
    for name, (role, stage, scores) in SYSTEMS.items():
        write_run(tmp_path / "eval", name, role, stage, scores)
    return tmp_path / "eval"


def report_error(runs: Path, tmp_path: Path) -> str:
    with pytest.raises(SystemExit) as stop:
        report_main([str(runs), "--out", str(tmp_path / "report")])
    assert not (tmp_path / "report").exists()
    return str(stop.value)


def test_matching_files_are_reported(runs, tmp_path):
    report_main([str(runs), "--out", str(tmp_path / "report")])
    assert "| student + KD (kd) − student + SFT (sft) | test | 4 | +1.000 |" in (tmp_path / "report" / "report.md").read_text()


def test_predictions_of_another_run_of_the_same_system_are_named(runs, tmp_path):
    """Same ids, same count, other scores (an earlier evaluation's file copied in): paired silently before."""
    write_run(tmp_path / "earlier", "kd", "student", "kd", [2.0, 2.5, 3.0, 3.5])
    (runs / "kd" / "predictions.jsonl").write_bytes((tmp_path / "earlier" / "kd" / "predictions.jsonl").read_bytes())
    message = report_error(runs, tmp_path)
    assert message.startswith(f"speechsum report: {runs / 'kd' / 'predictions.jsonl'}: split 'test': 4 scores of "
                              f"fact_judge averaging 2.75, but {runs / 'kd' / 'metrics.json'} says n 4, mean 5.125 "
                              "(results.split.test.fact_judge): the two files are not of one run")
    assert "evaluate system 'kd' again" in message


def test_predictions_cut_short_are_named(runs, tmp_path):
    path = runs / "kd" / "predictions.jsonl"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:3]))
    assert report_error(runs, tmp_path).startswith(
        f"speechsum report: {path}: 3 rows, but {runs / 'kd' / 'metrics.json'} counts num_examples 4: the two files "
        "are not of one run (a predictions file copied from another run, or one cut short)")


def test_predictions_of_another_system_are_named(runs, tmp_path):
    (runs / "kd" / "predictions.jsonl").write_bytes((runs / "sft" / "predictions.jsonl").read_bytes())
    assert report_error(runs, tmp_path).startswith(
        f"speechsum report: {runs / 'kd' / 'predictions.jsonl'}: rows of system 'sft', but "
        f"{runs / 'kd' / 'metrics.json'} is system 'kd'")


def test_as_many_examples_but_other_ids_are_named_above_the_table(runs, tmp_path):
    """Two systems run on two test sets of one size: the main table and the relative improvement put their
    means side by side with no word above them (only the paired table said "no id in common")."""
    write_run(runs, "kd", "student", "kd", SYSTEMS["kd"][2], prefix="other")
    report_main([str(runs), "--out", str(tmp_path / "report")])
    markdown = (tmp_path / "report" / "report.md").read_text()
    note = ("Means over different examples (as many in each system, but other ids: another test set? the paired "
            "comparisons use the shared ones): test: 0 of the 4 example ids are scored in every one of sft, kd.\n")
    assert note in markdown and markdown.index(note) < markdown.index("| system |")
    assert "Not compared, no example id in common (different test sets?)" in markdown

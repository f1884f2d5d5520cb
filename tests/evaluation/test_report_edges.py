"""`speechsum report` at the edges the default run never reaches: one example, no interval, statistics a
chart cannot draw. Run folders as `speechsum evaluate` writes them (:func:`write_run`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from speechsum.evaluation.report import build_report
from speechsum.evaluation.report_cli import report_main
from tests.evaluation.test_report_inputs import write_run


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_one_example_has_empty_ci_columns_not_a_number(tmp_path):
    # report.csv repeated the mean as low and high (a certain interval); paired.csv wrote `nan` there
    write_run(tmp_path / "eval", "sft", "student", "sft", [3.5])
    write_run(tmp_path / "eval", "kd", "student", "kd", [5.0])
    paths = build_report([tmp_path / "eval"], tmp_path / "report", num_resamples=200)
    cells = [(r["system"], r["metric"], r["mean"], r["low"], r["high"], r["n"]) for r in read_csv(paths["csv"])]
    assert cells == [("sft", "fact_judge", "3.5", "", "", "1"), ("kd", "fact_judge", "5.0", "", "", "1"),
                     ("sft", "repetition", "0.0", "", "", "1"), ("kd", "repetition", "0.0", "", "", "1")]
    paired = [(r["metric"], r["n"], r["recordings"], r["diff"], r["low"], r["high"], r["p_value"], r["exact"])
              for r in read_csv(paths["paired_csv"])]
    assert paired == [("fact_judge", "1", "1", "1.5", "", "", "1.0", "1"), ("repetition", "1", "1", "0.0", "", "", "1.0", "1")]
    assert "nan" not in paths["csv"].read_text().lower() + paths["paired_csv"].read_text().lower()
    # two examples keep both columns
    write_run(tmp_path / "eval", "sft", "student", "sft", [3.0, 4.0])
    write_run(tmp_path / "eval", "kd", "student", "kd", [4.0, 6.0])
    paths = build_report([tmp_path / "eval"], tmp_path / "report", num_resamples=200)
    stats = json.loads((tmp_path / "eval" / "kd" / "metrics.json").read_text())["results"]["split"]["test"]
    kd = next(r for r in read_csv(paths["csv"]) if (r["system"], r["metric"]) == ("kd", "fact_judge"))
    assert (float(kd["low"]), float(kd["high"])) == (stats["fact_judge"]["low"], stats["fact_judge"]["high"]) == (4.0, 6.0)
    # d = (1, 2): resample means 1, 1.5, 2 → CI [1, 2]; p: |±1 ± 2| ≥ 3 for 2 of 4 sign vectors
    diff = next(r for r in read_csv(paths["paired_csv"]) if r["metric"] == "fact_judge")
    assert (diff["diff"], diff["low"], diff["high"], diff["p_value"]) == ("1.5", "1.0", "2.0", "0.5")


def test_a_mean_outside_its_interval_is_named_not_a_chart_traceback(tmp_path):
    # matplotlib's "'yerr' must not contain negative values", after every table was made
    write_run(tmp_path / "eval", "sft", "student", "sft", [3.0, 4.0, 5.0])
    path = tmp_path / "eval" / "sft" / "metrics.json"
    run = json.loads(path.read_text())
    run["results"]["split"]["test"]["fact_judge"] = {"mean": 4.0, "low": 4.2, "high": 4.8, "n": 3}
    path.write_text(json.dumps(run))
    with pytest.raises(SystemExit) as stop:
        report_main([str(tmp_path / "eval"), "--out", str(tmp_path / "report")])
    assert str(stop.value) == (f"speechsum report: {path}: results.split.test.fact_judge: mean 4.0 is not within its "
                               "interval [low 4.2, high 4.8]: a statistic of speechsum evaluate has low <= mean <= high "
                               "(an edited or another tool's metrics.json?); evaluate the system again")
    assert not (tmp_path / "report").exists()
    # a bootstrap of equal values may put the mean an ulp beside its bounds: read, and drawn without error bars
    run["results"]["split"]["test"]["fact_judge"] = {"mean": 4.0 + 4e-15, "low": 4.0, "high": 4.0, "n": 3}
    path.write_text(json.dumps(run))
    assert build_report([tmp_path / "eval"], tmp_path / "report", num_resamples=50)["chart"].is_file()


def test_evaluates_summary_csv_gives_a_group_of_one_example_no_interval():
    from speechsum.evaluation.runs import summary_csv
    from speechsum.evaluation.scoring import aggregate

    values = {"fact_judge": np.array([3.0, 5.0, 6.0])}
    results = aggregate(values, {"genre": ["meeting", "meeting", "lecture"]}, num_resamples=100)
    text = summary_csv({"sft": {"system": {"role": "student", "stage": "sft"}, "results": results}})
    # meeting (3, 5): resample means 3, 4, 5 → [3, 5]; lecture holds one example (it read 6.0,6.0,6.0)
    assert text.splitlines()[2:] == ["sft,student,sft,genre,lecture,fact_judge,6.0,,,1",
                                     "sft,student,sft,genre,meeting,fact_judge,4.0,3.0,5.0,2"]

"""`speechsum report` on hand-made metrics.json files: row order, cells, derived tables, CSV, PNG."""

from __future__ import annotations

import csv
import json

import pytest

from speechsum.evaluation.report import build_report
from speechsum.evaluation.report_cli import report_main

# name: (kind, role, stage, fact_judge on test, fact_judge on test_xling)
SYSTEMS = {
    "dpo": ("student", "student", "dpo", 6.0, 5.0),
    "teacher": ("text", "teacher", None, 6.5, 6.0),
    "sft": ("student", "student", "sft", 4.0, 4.0),
    "cascade": ("cascade", "cascade", None, 5.0, 4.5),
    "kd": ("student", "student", "kd", 5.5, 3.5),
    "backbone": ("text", "backbone", None, 5.5, 5.0),
}


# per system: (fact_recall, hallucination, repetition) means, the same on every split
FAITHFULNESS = {"dpo": (0.9, 0.1, 0.02), "teacher": (0.95, 0.05, 0.01), "sft": (0.6, 0.2, 0.05),
                "cascade": (0.8, 0.15, 0.03), "kd": (0.85, 0.3, 0.12), "backbone": (0.9, 0.1, 0.02)}
NOISE = [-0.5, 0.5] * 20  # per-example deviation shared by every system: paired differences are constant


def stat(mean: float) -> dict:
    return {"mean": mean, "low": mean - 0.25, "high": mean + 0.25, "n": 40}


def prediction_rows(name: str, test: float, xling: float) -> list[dict]:
    """40 examples per split whose fact_judge averages ``test`` / ``xling``; dpo lacks test example 0."""
    recall, hallucination, _ = FAITHFULNESS[name]
    return [{"id": f"{split}-{i}", "split": split, "scores": {"fact_judge": mean + NOISE[i], "fact_recall": recall,
                                                              "hallucination": hallucination, "rougeL": None}}
            for split, mean in (("test", test), ("test_xling", xling)) for i in range(40)
            if not (name == "dpo" and split == "test" and i == 0)]


@pytest.fixture
def runs(tmp_path):
    for name, (kind, role, stage, test, xling) in SYSTEMS.items():
        faithful = dict(zip(("fact_recall", "hallucination", "repetition"), map(stat, FAITHFULNESS[name])))
        result = {
            "system": {"kind": kind, "name": name, "path": "x", "role": role, "stage": stage},
            "metrics": {"fact_judge": "offline fact judge fact-judge-v1: score 1-7", "rougeL": "rougeL F1",
                        "hallucination": "share of predictions naming an unknown entity"},
            "results": {
                "all": {"fact_judge": stat((test + xling) / 2), "rougeL": stat(0.3)} | faithful,
                "split": {"test_xling": {"fact_judge": stat(xling), "rougeL": stat(0.2)} | faithful,
                          "test": {"fact_judge": stat(test), "rougeL": stat(0.4)} | faithful},
            },
        }
        (tmp_path / "eval" / name).mkdir(parents=True)
        (tmp_path / "eval" / name / "metrics.json").write_text(json.dumps(result))
        if name != "backbone":  # the backbone run has no predictions.jsonl (it is in no comparison)
            (tmp_path / "eval" / name / "predictions.jsonl").write_text(
                "".join(json.dumps(row) + "\n" for row in prediction_rows(name, test, xling)))
    return tmp_path / "eval"


def table_rows(markdown: str, heading: str | None = None) -> list[list[str]]:
    """Cells of the first Markdown table after ``heading`` (or of the first table), separator row dropped."""
    text = markdown if heading is None else markdown.split(heading, 1)[1]
    block: list[str] = []
    for line in text.splitlines():
        if line.startswith("|"):
            block.append(line)
        elif block:
            break
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in block]
    return [row for row in rows if not set("".join(row)) <= {"-"}]


def test_table_in_paper_layout_with_cis(runs, tmp_path):
    paths = build_report([runs], tmp_path / "report")
    markdown = paths["markdown"].read_text()
    rows = table_rows(markdown)
    assert rows[0] == ["system", "test", "test_xling"]
    assert [r[0] for r in rows[1:]] == ["text teacher", "text backbone", "cascade (ASR → text LM)",
                                        "student + SFT (sft)", "student + KD (kd)", "student + DPO (dpo)"]
    assert rows[1][1:] == ["6.500 [6.250, 6.750]", "6.000 [5.750, 6.250]"]
    assert rows[5][1:] == ["5.500 [5.250, 5.750]", "3.500 [3.250, 3.750]"]
    assert "offline fact judge" in markdown  # the metric's description (default metric: fact_judge)


def test_relative_improvement_and_gap_closed_hand_computed(runs, tmp_path):
    markdown = build_report([runs], tmp_path / "report")["markdown"].read_text()
    improvement = table_rows(markdown, "## Relative improvement")
    # KD over SFT: (5.5-4)/4 = +37.5 %, (3.5-4)/4 = -12.5 %; DPO over KD: 0.5/5.5 = +9.1 %, 1.5/3.5 = +42.9 %
    assert improvement[1:] == [["student + KD (kd)", "+37.5 %", "-12.5 %"], ["student + DPO (dpo)", "+9.1 %", "+42.9 %"]]
    gap = table_rows(markdown, "## Share of the text-teacher gap closed (baseline: student + SFT (sft))")
    # (x - sft) / (teacher - sft): teacher - sft = 2.5 (test), 2.0 (xling)
    assert gap[1:] == [["student + SFT (sft)", "0.0 %", "0.0 %"], ["student + KD (kd)", "60.0 %", "-25.0 %"],
                       ["student + DPO (dpo)", "80.0 %", "50.0 %"]]


def test_configurable_baseline_and_csv(runs, tmp_path):
    paths = build_report([runs], tmp_path / "report", metric="fact_judge", baseline="backbone")
    gap = table_rows(paths["markdown"].read_text(), "## Share of the text-teacher gap closed (baseline: text backbone)")
    # teacher - backbone = 1.0 on both splits: sft (4-5.5) = -150 %, kd 0 %, dpo 50 %; xling: -100 %, -150 %, 0 %
    assert [r[1:] for r in gap[1:]] == [["-150.0 %", "-100.0 %"], ["0.0 %", "-150.0 %"], ["50.0 %", "0.0 %"]]
    with open(paths["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 * 4 and rows[0]["system"] == "teacher" and rows[0]["split"] == "test"
    assert [r["metric"] for r in rows[::12]] == ["fact_judge", "fact_recall", "hallucination", "repetition"]
    kd_repetition = next(r for r in rows if r["system"] == "kd" and r["metric"] == "repetition")
    assert float(kd_repetition["mean"]) == 0.12 and kd_repetition["gap_closed"] == ""
    dpo_xling = next(r for r in rows if r["system"] == "dpo" and r["split"] == "test_xling")
    assert float(dpo_xling["mean"]) == 5.0 and float(dpo_xling["gap_closed"]) == 0.0
    assert float(dpo_xling["rel_improvement"]) == pytest.approx(1.5 / 3.5)


def test_png_chart_and_cli(runs, tmp_path, capsys):
    report_main([str(runs / "teacher"), str(runs / "sft"), str(runs / "kd"), "--out", str(tmp_path / "r"),
                 "--metric", "rouge"])
    chart = tmp_path / "r" / "chart_rougeL.png"
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    printed = capsys.readouterr().out
    assert "# speechsum report: rougeL" in printed and "0.400 [0.150, 0.650]" in printed
    assert not list((tmp_path / "r").glob(".*tmp*"))  # atomic writes leave no temporary files


def test_a_failure_while_making_the_report_leaves_the_earlier_report_whole(runs, tmp_path, monkeypatch):
    """The chart was made after report.md and both CSVs were written: its failure left them new beside
    the earlier chart (one report's table, another's chart)."""
    from speechsum.evaluation import report

    out = tmp_path / "r"
    build_report([runs], out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    (runs / "kd" / "predictions.jsonl").unlink()  # a report that differs from the earlier one

    def broken_chart(*args):
        raise RuntimeError("no font")

    monkeypatch.setattr(report, "plot_chart", broken_chart)
    with pytest.raises(RuntimeError, match="no font"):
        build_report([runs], out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_errors_name_the_problem(runs, tmp_path):
    with pytest.raises(ValueError, match="metric 'llm_judge' missing in run"):
        build_report([runs], tmp_path / "r", metric="llm_judge")
    with pytest.raises(ValueError, match="baseline 'nobody' is not one of the systems"):
        build_report([runs], tmp_path / "r", baseline="nobody")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        build_report([tmp_path / "empty"], tmp_path / "r")


def test_a_metrics_json_with_a_byte_order_mark_is_read(runs, tmp_path):
    """An editor's UTF-8 BOM (Notepad) stopped the report: "invalid JSON (Unexpected UTF-8 BOM …)"."""
    path = runs / "kd" / "metrics.json"
    expected = build_report([runs], tmp_path / "plain")["markdown"].read_text()
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert build_report([runs], tmp_path / "bom")["markdown"].read_text() == expected


@pytest.mark.parametrize("content, message", [
    (b'{"results": {}}', "not a `speechsum evaluate` metrics.json"),
    (b'[1, 2]', "not a `speechsum evaluate` metrics.json"),
    (b'{"system": {"name": 3}, "results": {}}', "not a `speechsum evaluate` metrics.json"),
    (b'{"system": {"name": "x"}}', "not a `speechsum evaluate` metrics.json"),
    (b'{"system": \xff}', "not UTF-8 text"),
    ('{"system": 1}'.encode("utf-16"), "metrics.json: UTF-16LE text, not UTF-8: save it as UTF-8 (e.g. iconv -f "
                                      "UTF-16LE -t UTF-8"),  # before: "not UTF-8 text (invalid start byte at byte 0)"
    (b'{"system": ', "metrics.json:1: invalid JSON"),
    (b'{"system": {"name": "x", "stage": ["sft"]}, "results": {"all": {}}}',
     "metrics.json: system.stage must be a string or null, got ['sft']; give the metrics.json `speechsum evaluate` "
     "wrote (evaluate the system again if it was edited)"),
    (b'{"system": {"name": "x", "role": {"a": 1}}, "results": {"all": {}}}', "system.role must be a string or null"),
    (b'{"system": {"name": "x"}, "results": {}}', "results.all must be an object of metrics, got None"),
    (b'{"system": {"name": "x"}, "results": {"all": {}, "split": [1]}}',
     "results.split must be an object (one entry per split), got [1]"),
    (b'{"system": {"name": "x"}, "results": {"all": {}, "split": {"test": [1]}}}',
     "results.split.test must be an object of metrics, got [1]"),
    (b'{"system": {"name": "x"}, "results": {"all": {}}, "skipped": "x"}',
     "skipped must be a list of objects (split, line, reason), got 'x'"),
    (b'{"format": "speechsum-eval/2", "system": {"name": "x"}, "results": {"all": {}}}',
     "metrics.json: format 'speechsum-eval/2', not 'speechsum-eval/1', the one this speechsum reads; evaluate the system "
     "again with this version (or report it with the version that wrote it)"),
])
def test_a_broken_metrics_json_is_a_clear_error_naming_it(tmp_path, capsys, content, message):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_bytes(content)
    with pytest.raises(SystemExit) as stop:
        report_main([str(tmp_path / "run"), "--out", str(tmp_path / "r")])
    assert str(stop.value).startswith(f"speechsum report: {tmp_path / 'run' / 'metrics.json'}")
    assert message in str(stop.value) and not (tmp_path / "r").exists()


def test_paired_comparisons_on_the_same_examples(runs, tmp_path):
    paths = build_report([runs], tmp_path / "report", num_resamples=10_000, seed=0)
    markdown = paths["markdown"].read_text()
    table = table_rows(markdown, "## Paired comparisons (fact_judge, same examples)")
    assert table[0] == ["B − A", "split", "n", "Δ", "95 % CI", "p"]
    # Constant per-example differences: Δ = difference of the means, CI [Δ, Δ], p = 1 / 10,001 (only the
    # all-plus / all-minus sign vectors reach |ΣΔ|, and no random draw is one of them)
    assert table[1:] == [
        ["student + KD (kd) − student + SFT (sft)", "test", "40", "+1.500", "[+1.500, +1.500]", "1.0e-04"],
        ["student + KD (kd) − student + SFT (sft)", "test_xling", "40", "-0.500", "[-0.500, -0.500]", "1.0e-04"],
        ["student + DPO (dpo) − student + KD (kd)", "test", "39", "+0.500", "[+0.500, +0.500]", "1.0e-04"],
        ["student + DPO (dpo) − student + KD (kd)", "test_xling", "40", "+1.500", "[+1.500, +1.500]", "1.0e-04"],
        ["student + DPO (dpo) − student + SFT (sft)", "test", "39", "+2.000", "[+2.000, +2.000]", "1.0e-04"],
        ["student + DPO (dpo) − student + SFT (sft)", "test_xling", "40", "+1.000", "[+1.000, +1.000]", "1.0e-04"],
        ["student + DPO (dpo) − cascade (ASR → text LM)", "test", "39", "+1.000", "[+1.000, +1.000]", "1.0e-04"],
        ["student + DPO (dpo) − cascade (ASR → text LM)", "test_xling", "40", "+0.500", "[+0.500, +0.500]",
         "1.0e-04"],
        ["student + DPO (dpo) − text teacher", "test", "39", "-0.500", "[-0.500, -0.500]", "1.0e-04"],
        ["student + DPO (dpo) − text teacher", "test_xling", "40", "-1.000", "[-1.000, -1.000]", "1.0e-04"],
    ]
    assert "Left out" not in markdown  # the backbone lacks predictions.jsonl but is in no comparison
    with open(paths["paired_csv"], newline="") as handle:
        paired = list(csv.DictReader(handle))
    # fact_judge and the two faithfulness scores the predictions carry (repetition: none) × 5 pairs × 2 splits
    assert {r["metric"] for r in paired} == {"fact_judge", "fact_recall", "hallucination"} and len(paired) == 30
    halluc = next(r for r in paired if (r["a"], r["b"], r["metric"], r["split"]) == ("kd", "dpo", "hallucination", "test"))
    assert float(halluc["diff"]) == pytest.approx(-0.2) and halluc["n"] == "39" and halluc["exact"] == "0"
    assert float(halluc["p_value"]) == pytest.approx(1 / 10_001)
    same = next(r for r in paired if (r["a"], r["b"], r["metric"], r["split"]) == ("teacher", "dpo", "fact_recall", "test"))
    assert float(same["diff"]) == pytest.approx(-0.05)
    (runs / "cascade" / "predictions.jsonl").write_bytes(b"")  # an empty file is named too (it vanished silently)
    markdown = build_report([runs], tmp_path / "report3")["markdown"].read_text()
    assert "Left out, no or an empty predictions.jsonl: cascade (ASR → text LM)." in markdown
    (runs / "cascade" / "predictions.jsonl").unlink()
    markdown = build_report([runs], tmp_path / "report2")["markdown"].read_text()
    assert "Left out, no or an empty predictions.jsonl: cascade (ASR → text LM)." in markdown
    assert "− cascade" not in markdown and "− text teacher" in markdown


def test_faithfulness_tables_per_system(runs, tmp_path):
    markdown = build_report([runs], tmp_path / "report")["markdown"].read_text()
    hallucination = table_rows(markdown, "## Per system: hallucination")
    assert "share of predictions naming an unknown entity; mean [95 % bootstrap CI]." in markdown
    assert hallucination[4] == ["student + SFT (sft)", "0.200 [-0.050, 0.450]", "0.200 [-0.050, 0.450]"]
    assert [row[0] for row in table_rows(markdown, "## Per system: repetition")][1:4] == [
        "text teacher", "text backbone", "cascade (ASR → text LM)"]


def test_runs_on_different_examples_are_named_not_dropped(runs, tmp_path):
    rows = [json.loads(line) for line in (runs / "sft" / "predictions.jsonl").read_text().splitlines()]
    renamed = [row | {"id": "other-" + row["id"]} if row["split"] == "test" else row for row in rows]
    (runs / "sft" / "predictions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in renamed))
    markdown = build_report([runs], tmp_path / "report")["markdown"].read_text()
    assert ("Not compared, no example id in common (different test sets?): student + KD (kd) − student + SFT "
            "(sft) on test; student + DPO (dpo) − student + SFT (sft) on test.") in markdown
    compared = [row[:2] for row in table_rows(markdown, "## Paired comparisons (fact_judge")[1:]]
    assert ["student + KD (kd) − student + SFT (sft)", "test_xling"] in compared
    assert ["student + KD (kd) − student + SFT (sft)", "test"] not in compared


@pytest.mark.parametrize("stat_value, message", [
    ({"mean": float("nan"), "low": 1.0, "high": 2.0, "n": 40}, "mean nan, low 1.0, high 2.0: every one must be a "
                                                                 "finite number"),
    ({"mean": 1.0, "low": 1.0, "n": 40}, "expected an object with numbers mean, low, high and a count n"),
    ({"mean": 1.0, "low": 1.0, "high": 1.0, "n": 2.5}, "expected an object with numbers mean, low, high and a count n"),
    ([1, 2], "expected an object with numbers mean, low, high and a count n"),
])
def test_a_bad_statistic_names_file_split_and_metric(runs, tmp_path, stat_value, message):
    path = runs / "kd" / "metrics.json"
    run = json.loads(path.read_text())
    run["results"]["split"]["test"]["fact_judge"] = stat_value
    path.write_text(json.dumps(run))
    with pytest.raises(SystemExit) as stop:
        report_main([str(runs), "--out", str(tmp_path / "r")])
    assert str(stop.value).startswith(f"speechsum report: {path}: results.split.test.fact_judge: {message}")


def test_a_duplicated_prediction_id_is_an_error_naming_the_line(runs, tmp_path):
    """Its line in the file, blank lines counted (the row's place among the rows before: "row 9")."""
    path = runs / "kd" / "predictions.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["", *lines, "", lines[3]]) + "\n")
    with pytest.raises(SystemExit) as stop:
        report_main([str(runs), "--out", str(tmp_path / "r")])
    assert str(stop.value) == (f"speechsum report: {path}:{len(lines) + 3}: id 'test-3' appears twice in split "
                               "'test' (one row per example)")


@pytest.mark.parametrize(("encoding", "name"), [
    ("utf-16", "UTF-16LE"),  # with a BOM: PowerShell 5's > and Out-File; it got Windows-1252 advice for byte ff
    ("utf-16-le", "UTF-16LE"),  # no BOM: the NUL bytes read as UTF-8, and the line was "invalid JSON"
    ("utf-16-be", "UTF-16BE"),
])
def test_a_utf16_predictions_file_is_said_to_be_utf16(runs, tmp_path, encoding, name):
    path = runs / "kd" / "predictions.jsonl"
    path.write_bytes(path.read_text().encode(encoding))
    with pytest.raises(SystemExit) as stop:
        report_main([str(runs), "--out", str(tmp_path / "r")])
    assert str(stop.value) == (f"speechsum report: {path}: {name} text, not UTF-8: save it as UTF-8 (e.g. iconv -f "
                               f"{name} -t UTF-8 {path} > predictions.utf8.jsonl; Windows PowerShell's > writes "
                               "UTF-16, Out-File -Encoding utf8 does not)")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("scores", "message"), [
    ({"fact_judge": "high"}, "scores.fact_judge is 'high': a score is a number, or null when missing"),
    ({"fact_judge": [5.0]}, "scores.fact_judge is [5.0]: a score is a number, or null when missing"),
    ({"fact_judge": True}, "scores.fact_judge is True: a score is a number, or null when missing"),
    ([5.0], "`scores` is [5.0], not an object of metric: score"),
    ({"fact_judge": -float("inf")}, "scores.fact_judge is -inf: a score is finite (null or NaN when missing)"),
])
def test_a_score_that_is_no_number_names_file_line_and_field(runs, tmp_path, scores, message):
    """A string score ended the report with "could not convert string to float: 'high'" (no file), a
    list with a TypeError traceback, a list of scores with an AttributeError traceback; True counted as 1."""
    path = runs / "kd" / "predictions.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = json.dumps(json.loads(lines[1]) | {"scores": scores})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as stop:
        report_main([str(runs), "--out", str(tmp_path / "r")])
    assert str(stop.value) == f"speechsum report: {path}:2: {message}"
    assert not (tmp_path / "r").exists()


def test_paired_units_are_recordings(runs, tmp_path):
    """Two examples per audio file: the paired table and CSV count the recordings, the tests' units."""
    for name in ("sft", "kd"):
        path = runs / name / "predictions.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for number, row in enumerate(rows):
            row["audio"] = f"/data/audio/{row['split']}-{number // 2}.wav"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    paths = build_report([runs], tmp_path / "report", num_resamples=10_000, seed=0)
    table = table_rows(paths["markdown"].read_text(), "## Paired comparisons (fact_judge, same examples)")
    assert table[1] == ["student + KD (kd) − student + SFT (sft)", "test", "40 (20)", "+1.500", "[+1.500, +1.500]",
                        "1.0e-04"]
    assert "examples that share an audio file are not independent" in paths["markdown"].read_text()
    with open(paths["paired_csv"], newline="") as handle:
        paired = {(r["a"], r["b"], r["metric"], r["split"]): r for r in csv.DictReader(handle)}
    assert (paired["sft", "kd", "fact_judge", "test"]["n"], paired["sft", "kd", "fact_judge", "test"]["recordings"]) == (
        "40", "20")
    assert paired["kd", "dpo", "fact_judge", "test"]["recordings"] == "20"  # one side naming the audio is enough
    # neither the cascade's nor DPO's rows name audio: each example its own unit
    assert paired["cascade", "dpo", "fact_judge", "test"]["recordings"] == paired["cascade", "dpo", "fact_judge", "test"]["n"]


def test_examples_evaluate_skipped_are_named_above_the_table(runs, tmp_path):
    """Nothing silently lost: a system evaluated on fewer examples (``--on-bad-example skip``) says so."""
    path = runs / "kd" / "metrics.json"
    result = json.loads(path.read_text())
    result["skipped"] = [{"split": "test", "line": 5, "reason": "x"}, {"split": "test", "line": 9, "reason": "y"},
                         {"split": "test_xling", "line": 2, "reason": "z"}]
    path.write_text(json.dumps(result))
    markdown = (tmp_path / "out" / "report.md")
    build_report([runs], tmp_path / "out")
    text = markdown.read_text()
    assert ("Not scored (skipped under `--on-bad-example skip`; lines and reasons in each system's metrics.json): "
            "kd: 2 on test, 1 on test_xling.\n") in text
    assert text.index("Not scored") < text.index("| system |")
    path.write_text(json.dumps(result | {"skipped": []}))
    build_report([runs], tmp_path / "out")
    assert "Not scored" not in markdown.read_text()


def test_a_system_folder_without_metrics_is_named_not_left_out(runs, tmp_path):
    """kd's `speechsum evaluate` stopped before its metrics.json: the report left kd out silently and
    compared dpo with sft as "the previous stage"."""
    (runs / "kd" / "metrics.json").unlink()
    with pytest.raises(SystemExit) as stop:
        report_main([str(runs), "--out", str(tmp_path / "r")])
    assert str(stop.value) == (f"speechsum report: {runs / 'kd'}: predictions.jsonl but no metrics.json: its "
                               "`speechsum evaluate` did not finish (stopped, or still running); run it again, or "
                               "remove the folder")
    assert not (tmp_path / "r").exists()


def test_one_system_folder_without_metrics_is_said_unfinished(runs, tmp_path):
    """Given the system's own folder, the report said "no metrics.json here (run `speechsum evaluate` first)"
    of a folder whose evaluation had started again and stopped."""
    (runs / "kd" / "metrics.json").unlink()
    with pytest.raises(SystemExit) as stop:
        report_main([str(runs / "sft"), str(runs / "kd"), "--out", str(tmp_path / "r")])
    assert str(stop.value).startswith(f"speechsum report: {runs / 'kd'}: predictions.jsonl but no metrics.json: its "
                                      "`speechsum evaluate` did not finish")


def test_systems_that_answered_other_manifests_are_not_paired(runs, tmp_path):
    """kd's folder left by an earlier `speechsum evaluate` on another test set whose ids overlap:
    its rows were paired with sft's by id, silently."""
    for name, summary in (("sft", "The meeting moved to May."), ("kd", "Another recording altogether.")):
        path = runs / name / "predictions.jsonl"
        rows = [json.loads(line) | {"reference": summary} for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(SystemExit) as stop:
        report_main([str(runs), "--out", str(tmp_path / "r")])
    assert str(stop.value) == (
        f"speechsum report: {runs / 'sft' / 'predictions.jsonl'} and {runs / 'kd' / 'predictions.jsonl'}: id 'test-0' "
        "of split 'test' has another reference in each: the systems answered different test manifests (an earlier "
        "run's system folder in the same --out?); evaluate them on the same manifests")


@pytest.mark.parametrize(("name", "problem"), [("missing", "no such folder"), ("file.json", "a file, not a run folder")])
def test_a_run_dir_that_is_no_folder_is_said_so(tmp_path, name, problem):
    """Before: 'no metrics.json here or one level below (run `speechsum evaluate` first)' for a mistyped path."""
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(SystemExit) as stop:
        report_main([str(tmp_path / name), "--out", str(tmp_path / "r")])
    assert str(stop.value) == (f"speechsum report: {tmp_path / name}: {problem}; give the folder `speechsum evaluate "
                               "--out` wrote, or one system's folder in it")
    assert not (tmp_path / "r").exists()


def test_paired_comparisons_on_part_of_the_examples_say_so(runs, tmp_path):
    # sft answered 30 of the 40 test examples: kd − sft is paired on those 30, named beside its n
    rows = [json.loads(line) for line in (runs / "sft" / "predictions.jsonl").read_text().splitlines()]
    kept = [row for row in rows if not (row["split"] == "test" and int(row["id"].split("-")[1]) >= 30)]
    (runs / "sft" / "predictions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept))
    markdown = build_report([runs], tmp_path / "report")["markdown"].read_text()
    assert ("On the shared examples only (the others are missing or unscored in one of the two systems, so these Δ "
            "differ from the difference of the table's means): student + KD (kd) − student + SFT (sft) on test: 30 "
            "of kd's 40 and sft's 30; student + DPO (dpo) − student + KD (kd) on test: 39 of dpo's 39 and kd's 40; "
            "student + DPO (dpo) − student + SFT (sft) on test: 29 of dpo's 39 and sft's 30; student + DPO (dpo) − "
            "cascade (ASR → text LM) on test: 39 of dpo's 39 and cascade's 40; student + DPO (dpo) − text teacher "
            "on test: 39 of dpo's 39 and teacher's 40.") in markdown
    table = table_rows(markdown, "## Paired comparisons (fact_judge")
    assert table[1][:3] == ["student + KD (kd) − student + SFT (sft)", "test", "30"]
    assert "Means over different numbers of examples" not in markdown  # every metrics.json says n = 40
    result = json.loads((runs / "sft" / "metrics.json").read_text())
    result["results"]["split"]["test"]["fact_judge"]["n"] = 30
    (runs / "sft" / "metrics.json").write_text(json.dumps(result))
    markdown = build_report([runs], tmp_path / "report2")["markdown"].read_text()
    assert ("Means over different numbers of examples (another test set, skipped or unscored examples; the paired "
            "comparisons use the shared ones): test: teacher 40, backbone 40, cascade 40, sft 30, kd 40, dpo 40.\n\n"
            "Cells: mean") in markdown


def test_one_example_shows_no_interval(runs, tmp_path):
    for name in ("sft", "kd"):
        rows = [json.loads(line) for line in (runs / name / "predictions.jsonl").read_text().splitlines()]
        (runs / name / "predictions.jsonl").write_text(json.dumps(rows[0]) + "\n")
    for name, value in (("sft", 3.5), ("kd", 5.0)):  # evaluate writes n = 1 as (v, v, v)
        result = json.loads((runs / name / "metrics.json").read_text())
        result["results"]["split"] = {"test": {"fact_judge": {"mean": value, "low": value, "high": value, "n": 1}}}
        (runs / name / "metrics.json").write_text(json.dumps(result))
    markdown = build_report([runs / "sft", runs / "kd"], tmp_path / "report")["markdown"].read_text()
    assert table_rows(markdown)[1:] == [["student + SFT (sft)", "3.500 (one example, no CI)"],
                                        ["student + KD (kd)", "5.000 (one example, no CI)"]]  # was 3.500 [3.500, 3.500]
    assert table_rows(markdown, "## Paired comparisons (fact_judge")[1] == [
        "student + KD (kd) − student + SFT (sft)", "test", "1", "+1.500", "— (one example)", "1.0000"]


def test_a_system_given_twice_names_its_files(runs, tmp_path):
    # was "several runs share the system name(s) ['sft']", naming no file
    with pytest.raises(SystemExit) as stop:
        report_main([str(runs), str(runs / "sft"), "--out", str(tmp_path / "r")])
    assert stop.value.code == (f"speechsum report: {runs / 'sft' / 'metrics.json'}: given twice (system 'sft'); "
                               "give each run folder once")
    (tmp_path / "other" / "sft").mkdir(parents=True)
    (tmp_path / "other" / "sft" / "metrics.json").write_text((runs / "sft" / "metrics.json").read_text())
    with pytest.raises(ValueError) as err:
        build_report([runs, tmp_path / "other"], tmp_path / "r")
    assert str(err.value) == (f"{runs / 'sft' / 'metrics.json'} and {tmp_path / 'other' / 'sft' / 'metrics.json'}: "
                              "both are system 'sft'; report them separately, or evaluate one again under another "
                              "name (the rows and comparisons are by name)")
    assert not (tmp_path / "r").exists()


def test_a_metric_scored_on_no_split_is_an_error_not_an_empty_report(runs, tmp_path):
    for name in ("sft", "kd"):
        result = json.loads((runs / name / "metrics.json").read_text())
        result["results"]["split"] = {split: {"fact_judge": stat(4.0) | {"n": 0}} for split in ("test", "test_xling")}
        (runs / name / "metrics.json").write_text(json.dumps(result))
    with pytest.raises(ValueError) as err:
        build_report([runs / "sft", runs / "kd"], tmp_path / "r", metric="fact_judge")
    assert str(err.value) == (f"no run has a fact_judge score of any example under results.split ({runs / 'sft'}/"
                              f"metrics.json, {runs / 'kd'}/metrics.json); nothing to compare: evaluate the systems "
                              "again, or pass --metric with a score they have")
    assert not (tmp_path / "r").exists()


def test_a_baseline_without_a_teacher_row_is_named_not_ignored(runs, tmp_path):
    markdown = build_report([runs / "cascade", runs / "sft", runs / "kd"], tmp_path / "r",
                            baseline="cascade")["markdown"].read_text()  # the gap table was left out unsaid
    assert ("No share-of-the-teacher-gap table for baseline 'cascade': no run is a text teacher (system.role "
            "teacher); add its run folder.\n") in markdown and "## Share of the text-teacher gap" not in markdown
    with pytest.raises(ValueError, match=r"baseline 'teacher' is not one of the systems \['cascade', 'sft', 'kd'\]"):
        build_report([runs / "cascade", runs / "sft", runs / "kd"], tmp_path / "r", baseline="teacher")
    with_teacher = build_report([runs / "teacher", runs / "sft"], tmp_path / "r2", baseline="sft")["markdown"]
    assert "No share-of" not in with_teacher.read_text()

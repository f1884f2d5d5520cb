"""benchmarks/pooled_steps.py: the recipe's steps pooled over pipeline runs (hand-computed values)."""

import json
import os

import numpy as np
import pytest

from benchmarks.pooled_steps import (
    main,
    pooled_against,
    pooled_steps,
    student_means,
    student_rows,
    write_scores,
)
from speechsum.evaluation.paired import paired_comparison


def fake_run(root, name, scores):
    """A run folder with evaluate/<student>/predictions.jsonl; ``scores``: {student: [(split, id, value)]}."""
    run = root / name
    for student, rows in scores.items():
        folder = run / "evaluate" / student
        folder.mkdir(parents=True)
        lines = [json.dumps({"id": i, "split": s, "scores": {"fact_judge": v}}) for s, i, v in rows]
        (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    return run


@pytest.fixture
def two_runs(tmp_path):
    one = fake_run(tmp_path, "one", {
        "sft": [("val", "a", 2.0), ("val", "b", 3.0), ("test", "t", 1.0)],
        "kd": [("val", "a", 3.0), ("val", "b", 3.5), ("test", "t", 7.0)],
        "dpo": [("val", "a", 4.0), ("val", "b", 3.0), ("test", "t", 7.0)]})
    two = fake_run(tmp_path, "two", {  # the same ids in another world: joined within the run
        "sft": [("val", "a", 1.0), ("val", "c", 5.0)],
        "kd": [("val", "a", 2.0), ("val", "c", None)],  # a missing score leaves c out of the KD steps
        "dpo": [("val", "a", 1.0), ("val", "c", 6.0)]})
    return one, two


def test_pooled_steps_concatenate_each_runs_paired_differences(two_runs):
    runs = [student_rows(run) for run in two_runs]
    steps = pooled_steps(runs, "val")
    # KD − SFT: run one a +1, b +0.5; run two a +1 (c has no KD score) -> mean 2.5 / 3
    assert steps["kd-sft"].n == 3 and steps["kd-sft"].mean == pytest.approx(2.5 / 3)
    # DPO − KD: +1, −0.5, −1 -> mean −0.5 / 3; DPO − SFT: +2, 0, 0, +1 -> 0.75
    assert steps["dpo-kd"].mean == pytest.approx(-0.5 / 3)
    assert steps["dpo-sft"].n == 4 and steps["dpo-sft"].mean == pytest.approx(0.75)
    expected = paired_comparison(np.array([2.0, 3.0, 1.0, 5.0]), np.array([4.0, 3.0, 1.0, 6.0]))
    assert steps["dpo-sft"] == expected  # the same bootstrap CI and (exact, n ≤ 16) p-value
    assert student_means(runs, "val") == pytest.approx({"sft": 11 / 4, "kd": 8.5 / 3, "dpo": 14 / 4})


def test_scores_csv_gives_the_same_pooled_steps(two_runs, tmp_path):
    saved = []
    for run in two_runs:
        out = tmp_path / "saved" / run.name / "scores.csv"
        assert write_scores(run, out) == (3 if run.name == "one" else 2)
        assert student_rows(out.parent) == student_rows(run)  # the fake rows hold only id, split, the metric
        saved.append(student_rows(out.parent))
    assert pooled_steps(saved, "val") == pooled_steps([student_rows(run) for run in two_runs], "val")


def test_examples_of_one_recording_are_one_unit_in_runs_and_in_scores_csv(tmp_path):
    run = tmp_path / "w"
    for student, values in {"sft": (1.0, 2.0, 3.0), "kd": (2.0, 4.0, 2.0), "dpo": (3.0, 4.0, 4.0)}.items():
        folder = run / "evaluate" / student
        folder.mkdir(parents=True)
        rows = [{"id": f"d{i // 2}-{i}", "split": "val", "audio": f"/data/audio/d{i // 2}.wav", "scores": {"fact_judge": v}}
                for i, v in enumerate(values)]
        (folder / "predictions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "saved" / "scores.csv"
    assert write_scores(run, out) == 3
    assert out.read_text().splitlines()[:2] == ["id,split,recording,sft,kd,dpo", "d0-0,val,d0.wav,1,2,3"]
    steps = pooled_steps([student_rows(run)], "val")
    assert pooled_steps([student_rows(out.parent)], "val") == steps
    # KD − SFT: d = (+1, +2 | −1) from recordings d0 and d1: sums (3, −1); flips |±3 ± 1| ≥ 2 for 4 of 4
    assert (steps["kd-sft"].n, steps["kd-sft"].units, steps["kd-sft"].p_value) == (3, 2, 1.0)
    assert steps["kd-sft"].mean == pytest.approx(2 / 3)


def test_cli_prints_one_row_per_group_and_names_a_missing_run(two_runs, tmp_path, capsys):
    main(["--split", "val", f"both={two_runs[0]},{two_runs[1]}", f"one={two_runs[0]}"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| both | 3 | 2.75 / 2.83 / 3.50 | +0.83")
    assert lines[3].startswith("| one | 2 |")
    with pytest.raises(FileNotFoundError, match="neither scores.csv nor"):
        student_rows(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no test example has both"):
        pooled_steps([student_rows(two_runs[1])], "test")


def test_bad_inputs_name_the_file_and_line(two_runs, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "scores.csv").write_text("id,split,sft,kd\na,val,1,2\n")
    with pytest.raises(ValueError, match=r"scores.csv: line 1: missing column\(s\) dpo"):
        student_rows(bad)
    (bad / "scores.csv").write_text("id,split,sft,kd,dpo\na,val,1,2,3\nb,val,1,two,3\n")
    with pytest.raises(ValueError, match="scores.csv: line 3: kd is not a number"):
        student_rows(bad)
    predictions = two_runs[0] / "evaluate" / "kd" / "predictions.jsonl"
    predictions.write_text(predictions.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"kd/predictions.jsonl:4: invalid JSON"):
        student_rows(two_runs[0])
    predictions.write_text(predictions.read_text().replace("{not json", '{"split": "val"}'))
    with pytest.raises(ValueError, match=r"kd/predictions.jsonl:4: not a prediction row \(needs an object with a string or integer `id`"):
        student_rows(two_runs[0])
    first = predictions.read_text().splitlines()[0]
    predictions.write_text(predictions.read_text().replace('{"split": "val"}', first))
    with pytest.raises(ValueError, match=r"kd/predictions.jsonl:4: id '\w+' appears twice in split 'val'"):
        student_rows(two_runs[0])
    (bad / "scores.csv").write_text("id,split,sft,kd,dpo\na,val,1,2,3\na,val,1,2,3\n")
    with pytest.raises(ValueError, match="scores.csv: row 2: id 'a' appears twice in split 'val'"):
        student_rows(bad)
    (bad / "scores.csv").write_text("id,split,sft,kd,dpo\na,val,1,inf,3\n")
    with pytest.raises(ValueError, match="scores.csv: line 2: kd is inf, not a finite score"):
        student_rows(bad)



def test_against_pairs_each_run_with_the_base_groups_run_of_the_same_world(two_runs, tmp_path, capsys):
    # the variant of run one raises DPO on a by 1 and lowers b by 2; of run two raises c by 3
    one = fake_run(tmp_path, "one_var", {
        "sft": [("val", "a", 2.0), ("val", "b", 3.0)], "kd": [("val", "a", 3.0), ("val", "b", 4.5)],
        "dpo": [("val", "a", 5.0), ("val", "b", 1.0), ("val", "x", 7.0)]})  # x: not in the base run, left out
    two = fake_run(tmp_path, "two_var", {
        "sft": [("val", "a", 1.0), ("val", "c", 5.0)], "kd": [("val", "a", 2.0), ("val", "c", 4.0)],
        "dpo": [("val", "a", 1.0), ("val", "c", 9.0)]})
    base = [student_rows(run) for run in two_runs]
    against = pooled_against([student_rows(one), student_rows(two)], base, "val")
    assert (against["sft"].mean, against["sft"].n, against["sft"].p_value) == (0.0, 4, 1.0)
    # KD: b +1 in run one; c has no KD score in the base run -> (0 + 1 + 0) / 3
    assert against["kd"].n == 3 and against["kd"].mean == pytest.approx(1 / 3)
    assert against["dpo"] == paired_comparison(np.array([4.0, 3.0, 1.0, 6.0]), np.array([5.0, 1.0, 1.0, 9.0]))
    assert against["dpo"].mean == pytest.approx(0.5)
    main(["--split", "val", "--against", "base", f"base={two_runs[0]},{two_runs[1]}", f"var={one},{two}"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[5] == "| runs − base (val) | n (SFT / KD / DPO) | SFT [95 % CI], p | KD [95 % CI], p | DPO [95 % CI], p |"
    dpo = against["dpo"]
    assert lines[7] == ("| var | 4 / 3 / 4 | +0.00 [+0.00, +0.00], 1 | "
                        f"+0.33 [{against['kd'].low:+.2f}, {against['kd'].high:+.2f}], {against['kd'].p_value:.3g} | "
                        f"+0.50 [{dpo.low:+.2f}, {dpo.high:+.2f}], {dpo.p_value:.3g} |")


def test_against_refuses_runs_of_other_worlds_and_bad_groups(two_runs, tmp_path, capsys):
    base = fake_run(tmp_path, "base", {s: [("val", i, 1.0) for i in "abcd"] for s in ("sft", "kd", "dpo")})
    other = fake_run(tmp_path, "other", {s: [("val", i, 2.0) for i in "awxy"] for s in ("sft", "kd", "dpo")})
    with pytest.raises(ValueError, match="run 1 of each group: only 1 of 4 val ids in common"):
        pooled_against([student_rows(other)], [student_rows(base)], "val")
    with pytest.raises(ValueError, match="2 runs against 1"):
        pooled_against([student_rows(base), student_rows(other)], [student_rows(base)], "val")
    for argv, message in (
        (["--against", "base", f"base={base}", f"var={other}"], "var against base: run 1 of each group"),
        (["--against", "nothing", f"base={base}", f"var={other}"], "--against nothing: name one of at least two"),
        (["--against", "base", f"base={base}"], "--against base: name one of at least two groups"),
        ([f"base={base}", f"base={other}"], "two groups share a name"),
        ([f"={base}"], "expected NAME=RUN"),
        ([f"base={tmp_path / 'nowhere'}"], "neither scores.csv nor"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("line", ["b,val,1", "b,val,1,2", "b,val,1,2,3,4"])
def test_a_scores_csv_line_of_another_width_is_named_not_read_as_missing_scores(tmp_path, line):
    # "b,val,1" (a file cut short) read kd and dpo as missing: b silently left the KD and DPO steps
    (tmp_path / "scores.csv").write_text(f"id,split,sft,kd,dpo\na,val,1,2,3\n{line}\n")
    with pytest.raises(ValueError, match="scores.csv: line 3: 5 columns in the header but another number here"):
        student_rows(tmp_path)


def test_one_unit_prints_no_interval_and_worlds_of_other_sizes_pool(tmp_path, capsys):
    one = fake_run(tmp_path, "one", {s: [("val", "a", v)] for s, v in (("sft", 2.0), ("kd", 3.0), ("dpo", 5.0))})
    big = fake_run(tmp_path, "big", {s: [("val", i, v + k) for k, i in enumerate("abc")]
                                     for s, v in (("sft", 1.0), ("kd", 1.0), ("dpo", 4.0))})
    main(["--split", "val", f"one={one}", f"both={one},{big}"])
    lines = capsys.readouterr().out.splitlines()
    # one example: no CI (it printed "[+nan, +nan]"); p = 1 (both signs of one difference reach it)
    assert lines[2] == ("| one | 1 | 2.00 / 3.00 / 5.00 | +1.00 (one example, no CI), 1 | +2.00 (one example, no CI), 1 "
                        "| +3.00 (one example, no CI), 1 |")
    steps = pooled_steps([student_rows(one), student_rows(big)], "val")  # 1 + 3 examples: differences side by side
    assert steps["kd-sft"] == paired_comparison([2.0, 1.0, 2.0, 3.0], [3.0, 1.0, 2.0, 3.0])
    assert (steps["dpo-sft"].mean, steps["dpo-sft"].p_value) == (3.0, 2 / 16)  # d = (3, 3, 3, 3): ±(1,1,1,1) only


def test_integer_ids_read_as_their_scores_csv_reads_them(tmp_path):
    # integer ids sorted apart from the text ids of their scores.csv (other resamples), and next to text ids
    # in one file the sort was a TypeError
    values = {"sft": (1.0, 4.0, 2.0, 3.0), "kd": (2.0, 4.5, 2.0, 5.0), "dpo": (3.0, 4.0, 4.0, 6.0)}
    run = fake_run(tmp_path, "ints", {s: [("val", i, v) for i, v in zip((2, 10, 1, "x"), vs)] for s, vs in values.items()})
    write_scores(run, tmp_path / "saved" / "scores.csv")
    rows = student_rows(run)
    assert [row["id"] for row in rows["sft"]] == ["1", "10", "2", "x"] and rows == student_rows(tmp_path / "saved")
    assert pooled_steps([rows], "val") == pooled_steps([student_rows(tmp_path / "saved")], "val")
    assert pooled_steps([rows], "val")["kd-sft"] == paired_comparison([2.0, 4.0, 1.0, 3.0], [2.0, 4.5, 2.0, 5.0])
    twice = fake_run(tmp_path, "twice", {s: [("val", 1, 1.0), ("val", "1", 2.0)] for s in values})
    with pytest.raises(ValueError, match=r"sft/predictions.jsonl: row 2: id '1' appears twice in split 'val'"):
        student_rows(twice)


def test_a_failure_while_writing_scores_leaves_the_earlier_file_whole(two_runs, tmp_path, monkeypatch):
    out = tmp_path / "saved" / "scores.csv"
    write_scores(two_runs[0], out)
    before = out.read_bytes()
    calls = []

    def relpath_failing_on_the_second_row(path, start=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk gone")
        return os.path.basename(path)

    (two_runs[0] / "evaluate" / "sft" / "predictions.jsonl").write_text(  # give the rows recordings to relate
        "".join(json.dumps({"id": i, "split": "val", "audio": f"/a/{i}.wav", "scores": {"fact_judge": 1.0}}) + "\n"
                for i in "ab"))
    monkeypatch.setattr("benchmarks.pooled_steps.os.path.relpath", relpath_failing_on_the_second_row)
    with pytest.raises(OSError, match="disk gone"):
        write_scores(two_runs[0], out)
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["scores.csv"]  # was cut short

"""The recipe's steps (KD − SFT, DPO − KD, DPO − SFT) pooled over several pipeline runs.

One run samples examples but not training runs; runs of the same settings in other benchmark worlds
(``benchmark.seed``) do both. This pools the paired differences of every run of a group (each run's
examples joined by id, then all runs' differences side by side) and gives the mean, its paired-
bootstrap 95 % CI and the sign-flip p-value (:func:`speechsum.evaluation.paired.paired_comparison`),
both over recordings: a run's examples that share an audio file are one unit, as in ``speechsum report``.

A run is a pipeline run folder (``RUN/evaluate/{sft,kd,dpo}/predictions.jsonl``) or a folder with the
``scores.csv`` that ``--write-scores`` makes of one (``id,split,recording,sft,kd,dpo``: the per-example
metric and the example's audio file relative to the run's audio folder, small enough to keep next to a
run's report in ``benchmarks/results/``; a file without ``recording``, written before 2026-12-06,
makes every example its own unit)::

    python -m benchmarks.pooled_steps --split val default=RUN0,RUN1,RUN2 temp03=RUN3,RUN4,RUN5
    python -m benchmarks.pooled_steps --split val --against default default=RUN0,RUN1,RUN2 temp03=RUN3,RUN4,RUN5
    python -m benchmarks.pooled_steps --write-scores RUN benchmarks/results/pipeline/X/scores.csv

``--against NAME`` also compares each group's students with the same students of group NAME, the
i-th run of one with the i-th run of the other (the same benchmark world), paired by id: a setting's
effect on each stage, pooled over the worlds.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
from pathlib import Path

import numpy as np

from speechsum.evaluation.paired import (
    JoinedScores,
    PairedResult,
    check_prediction_rows,
    join_scores,
    paired_comparison,
    read_prediction_rows,
)
from speechsum.utils.io import write_atomic

STUDENTS = ("sft", "kd", "dpo")
STEPS = (("sft", "kd"), ("kd", "dpo"), ("sft", "dpo"))


def student_rows(run: Path, metric: str = "fact_judge") -> dict[str, list[dict]]:
    """``{student: rows}`` of a run folder or a ``scores.csv`` folder, rows as ``predictions.jsonl``
    holds them (``{id, split, audio, scores: {metric: value}}``; a missing score is None; ids as text), sorted
    by (split, id): one order for both sources, so the bootstrap draws the same resamples."""
    saved = run / "scores.csv" if run.is_dir() else run
    if saved.is_file():
        return _csv_rows(saved, metric)
    rows = {}
    for student in STUDENTS:
        path = run / "evaluate" / student / "predictions.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{run}: neither scores.csv nor {path}")
        # ids as text, as scores.csv holds them: one order and one join for both sources (integer ids sorted
        # apart from their scores.csv, never met them under --against, and beside text ids were a TypeError)
        rows[student] = check_prediction_rows([row | {"id": str(row["id"])} for row in read_prediction_rows(path)],
                                              path)
        rows[student].sort(key=lambda row: (row["split"], row["id"]))
    return rows


def _csv_rows(path: Path, metric: str) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {student: [] for student in STUDENTS}
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [c for c in ("id", "split", *STUDENTS) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: line 1: missing column(s) {', '.join(missing)} (expected id,split,sft,kd,dpo)")
        for number, line in enumerate(reader, start=2):
            if None in line or None in line.values():  # DictReader's fill for too many / too few fields
                raise ValueError(f"{path}: line {number}: {len(reader.fieldnames or [])} columns in the header but "
                                 f"another number here (a file cut short or edited?): one value per column, an empty "
                                 "one for a missing score")
            for student in STUDENTS:
                try:
                    value = float(line[student]) if line[student] else None
                except ValueError as err:
                    raise ValueError(f"{path}: line {number}: {student} is not a number ({err})") from err
                if value is not None and not math.isfinite(value):
                    raise ValueError(f"{path}: line {number}: {student} is {value}, not a finite score")
                row = {"id": line["id"], "split": line["split"], "scores": {metric: value}}
                rows[student].append(row | ({"audio": line["recording"]} if line.get("recording") else {}))
    check_prediction_rows(rows[STUDENTS[0]], path)  # every student has a row per line: one check covers them
    for student_list in rows.values():
        student_list.sort(key=lambda row: (row["split"], row["id"]))
    return rows


def write_scores(run: Path, out: Path, metric: str = "fact_judge") -> int:
    """Write ``run``'s per-example scores as ``scores.csv`` (id, split, recording, sft, kd, dpo; the
    recording relative to the folder all the run's audio files share), all at once (atomically); returns
    the rows."""
    table: dict[tuple[str, str], dict[str, object]] = {}
    for student, rows in student_rows(run, metric).items():
        for row in rows:
            entry = table.setdefault((row["split"], row["id"]), {})
            entry[student] = (row.get("scores") or {}).get(metric)
            entry.setdefault("recording", row.get("audio") or "")
    audio = [str(entry["recording"]) for entry in table.values() if entry["recording"]]
    shared = os.path.commonpath([os.path.dirname(path) for path in audio]) if audio else ""
    buffer = io.StringIO()  # written whole at the end: a failure half-way left a scores.csv cut short
    writer = csv.writer(buffer)
    writer.writerow(["id", "split", "recording", *STUDENTS])
    for (split, example), entry in sorted(table.items()):
        recording = os.path.relpath(str(entry["recording"]), shared) if entry["recording"] else ""
        cells = [entry.get(s) for s in STUDENTS]
        writer.writerow([example, split, recording, *("" if v is None else f"{float(v):.12g}" for v in cells)])
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, buffer.getvalue())
    return len(table)


def side_by_side(pairs: list[JoinedScores], empty: str) -> PairedResult:
    """:func:`paired_comparison` of B − A over several runs' joined scores laid side by side, each
    run's recordings its own units (``empty``: the error when no run has a pair)."""
    if not pairs:
        raise ValueError(empty)
    scores_a, scores_b = np.concatenate([p.a for p in pairs]), np.concatenate([p.b for p in pairs])
    if not scores_a.size:
        raise ValueError(empty)
    recordings = [None if recording is None else (number, recording)  # None: a unit of its own
                  for number, p in enumerate(pairs) for recording in p.recordings]
    return paired_comparison(scores_a, scores_b, groups=recordings)


def pooled_steps(runs: list[dict[str, list[dict]]], split: str, metric: str = "fact_judge") -> dict[str, PairedResult]:
    """``{"kd-sft": …, "dpo-kd": …, "dpo-sft": …}``: B − A over the examples of ``split`` of every run
    (``runs``: :func:`student_rows` of each), each run's pairs joined by :func:`join_scores`, then all
    runs' differences side by side."""
    return {f"{b}-{a}": side_by_side([join_scores(rows[a], rows[b], metric, split) for rows in runs],
                                     f"no {split} example has both {a} and {b} scores in these runs")
            for a, b in STEPS}


def pooled_against(runs: list[dict[str, list[dict]]], base_runs: list[dict[str, list[dict]]], split: str,
                   metric: str = "fact_judge") -> dict[str, PairedResult]:
    """``{student: run − base}``: each student of ``runs[i]`` against the same student of
    ``base_runs[i]`` (the same benchmark world, so the same example ids) over the examples of
    ``split``, joined by id within each pair of runs, then all pairs' differences side by side."""
    if len(runs) != len(base_runs):
        raise ValueError(f"{len(runs)} runs against {len(base_runs)}: give the groups one run per world, in the same order")
    for number, (run, base) in enumerate(zip(runs, base_runs), start=1):
        run_ids, base_ids = split_ids(run, split), split_ids(base, split)
        fewer = min(len(run_ids), len(base_ids))
        if fewer and len(run_ids & base_ids) < fewer / 2:  # other worlds share a few ids by chance
            raise ValueError(f"run {number} of each group: only {len(run_ids & base_ids)} of {fewer} {split} ids in "
                             "common, so not the same benchmark world: list the runs of both groups in the same order")
    return {student: side_by_side([join_scores(base[student], run[student], metric, split)
                                   for run, base in zip(runs, base_runs)],
                                  f"no {split} example has {student} scores in both groups (do the runs share a world?)")
            for student in STUDENTS}


def split_ids(rows: dict[str, list[dict]], split: str) -> set[str]:
    """The example ids of ``split`` that any student of a run (:func:`student_rows`) has a row for."""
    return {row["id"] for student_list in rows.values() for row in student_list if row["split"] == split}


def cell(result: PairedResult) -> str:
    """``+0.14 [+0.03, +0.25], 0.0106``: mean difference, its 95 % CI and the p-value; ``+0.50 (one
    recording, no CI), 1`` when one unit holds every pair (the CI printed as ``[+nan, +nan]``)."""
    if math.isnan(result.low):
        return f"{result.mean:+.2f} (one {'example' if result.n == 1 else 'recording'}, no CI), {result.p_value:.3g}"
    return f"{result.mean:+.2f} [{result.low:+.2f}, {result.high:+.2f}], {result.p_value:.3g}"


def student_means(runs: list[dict[str, list[dict]]], split: str, metric: str = "fact_judge") -> dict[str, float]:
    """Each student's mean over the examples of ``split`` of every run (missing scores left out)."""
    means = {}
    for student in STUDENTS:
        values = np.concatenate([join_scores(rows[student], rows[student], metric, split).a for rows in runs])
        means[student] = float(values.mean()) if values.size else float("nan")
    return means


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="*", metavar="NAME=RUN[,RUN…]",
                        help="a group of runs (pipeline run folders or folders with scores.csv) pooled together")
    parser.add_argument("--split", default="val", help="the split to pool (default: val)")
    parser.add_argument("--metric", default="fact_judge", help="the per-example score (default: fact_judge)")
    parser.add_argument("--against", metavar="NAME",
                        help="also compare every group's students with those of group NAME (run i with run i)")
    parser.add_argument("--write-scores", nargs=2, metavar=("RUN", "OUT_CSV"),
                        help="write RUN's per-example scores to OUT_CSV and exit")
    args = parser.parse_args(argv)
    if args.write_scores:
        try:
            rows = write_scores(Path(args.write_scores[0]), Path(args.write_scores[1]), args.metric)
        except (ValueError, FileNotFoundError) as err:
            parser.error(str(err))
        print(f"{rows} examples -> {args.write_scores[1]}")
        return
    if not args.groups:
        parser.error("give at least one NAME=RUN[,RUN…] group (or --write-scores)")
    names = [group.partition("=")[0] for group in args.groups]
    for group, name in zip(args.groups, names):
        if not name or not group.partition("=")[2]:
            parser.error(f"{group!r}: expected NAME=RUN[,RUN…]")
    if len(set(names)) < len(names):
        parser.error(f"two groups share a name: {', '.join(names)}")
    if args.against is not None and (args.against not in names or len(names) < 2):
        parser.error(f"--against {args.against}: name one of at least two groups (groups: {', '.join(names)})")
    try:
        print_tables(args)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))


def print_tables(args: argparse.Namespace) -> None:
    """The steps table of every group, then (``--against``) every other group against that one."""
    groups = {name: [student_rows(Path(p), args.metric) for p in paths.split(",")]  # each run read once
              for name, _, paths in (group.partition("=") for group in args.groups)}
    print(f"| runs ({args.split}) | n | SFT / KD / DPO | KD − SFT [95 % CI], p | DPO − KD [95 % CI], p | DPO − SFT [95 % CI], p |")
    print("|---|---|---|---|---|---|")
    for name, runs in groups.items():
        steps, means = pooled_steps(runs, args.split, args.metric), student_means(runs, args.split, args.metric)
        print(f"| {name} | {steps['kd-sft'].size()} | {means['sft']:.2f} / {means['kd']:.2f} / {means['dpo']:.2f} | "
              + " | ".join(map(cell, steps.values())) + " |")
    if args.against is None:
        return
    print(f"\n| runs − {args.against} ({args.split}) | n (SFT / KD / DPO) | SFT [95 % CI], p | KD [95 % CI], p | DPO [95 % CI], p |")
    print("|---|---|---|---|---|")
    for name, runs in groups.items():
        if name != args.against:
            try:
                against = pooled_against(runs, groups[args.against], args.split, args.metric)
            except ValueError as err:
                raise ValueError(f"{name} against {args.against}: {err}") from err
            counts = " / ".join(r.size() for r in against.values())
            print(f"| {name} | {counts} | " + " | ".join(map(cell, against.values())) + " |")

if __name__ == "__main__":
    main()

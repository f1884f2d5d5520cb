"""The recipe's steps (KD − SFT, DPO − KD, DPO − SFT) pooled over several pipeline runs.

One run samples examples but not training runs; runs of the same settings in other benchmark worlds
(``benchmark.seed``) do both. This pools the paired differences of every run of a group (each run's
examples joined by id, then all runs' differences side by side) and gives the mean, its paired-
bootstrap 95 % CI and the sign-flip p-value (:func:`speechsum.evaluation.paired.paired_comparison`).

A run is a pipeline run folder (``RUN/evaluate/{sft,kd,dpo}/predictions.jsonl``) or a folder with the
``scores.csv`` that ``--write-scores`` makes of one (``id,split,sft,kd,dpo``: the per-example metric,
small enough to keep next to a run's report in ``benchmarks/results/``)::

    python -m benchmarks.pooled_steps --split val default=RUN0,RUN1,RUN2 temp03=RUN3,RUN4,RUN5
    python -m benchmarks.pooled_steps --write-scores RUN benchmarks/results/pipeline/X/scores.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np

from speechsum.evaluation.paired import PairedResult, paired_comparison

STUDENTS = ("sft", "kd", "dpo")
STEPS = (("sft", "kd"), ("kd", "dpo"), ("sft", "dpo"))


def run_scores(run: Path, metric: str = "fact_judge") -> dict[tuple[str, str], dict[str, float]]:
    """``{(split, id): {student: score}}`` of a run folder or a ``scores.csv`` folder (examples with a
    missing or non-finite score for a student leave that student out of the row)."""
    table: dict[tuple[str, str], dict[str, float]] = {}
    saved = run / "scores.csv" if run.is_dir() else run
    if saved.is_file():
        with saved.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            missing = [c for c in ("id", "split", *STUDENTS) if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{saved}: line 1: missing column(s) {', '.join(missing)} (expected id,split,sft,kd,dpo)")
            for number, row in enumerate(reader, start=2):
                try:
                    scores = {s: float(row[s]) for s in STUDENTS if row.get(s) not in (None, "")}
                except ValueError as err:
                    raise ValueError(f"{saved}: line {number}: a score is not a number ({err})") from err
                table[(row["split"], row["id"])] = scores
        return table
    for student in STUDENTS:
        path = run / "evaluate" / student / "predictions.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{run}: neither scores.csv nor {path}")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                value = (row.get("scores") or {}).get(metric)
                key = (row["split"], row["id"])
            except (json.JSONDecodeError, KeyError, AttributeError) as err:
                raise ValueError(f"{path}: line {number}: not a prediction row with id, split and scores ({err!r})") from err
            if value is not None and math.isfinite(float(value)):
                table.setdefault(key, {})[student] = float(value)
    return table


def write_scores(run: Path, out: Path, metric: str = "fact_judge") -> int:
    """Write ``run``'s per-example scores as ``scores.csv`` (id, split, sft, kd, dpo); returns the rows."""
    table = run_scores(run, metric)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "split", *STUDENTS])
        for (split, example), scores in sorted(table.items()):
            writer.writerow([example, split, *(f"{scores[s]:.12g}" if s in scores else "" for s in STUDENTS)])
    return len(table)


def pooled_steps(runs: list[Path], split: str, metric: str = "fact_judge") -> dict[str, PairedResult]:
    """``{"kd-sft": …, "dpo-kd": …, "dpo-sft": …}``: B − A over the examples of ``split`` of every run
    (each joined within its run; a run with no example of the split adds nothing)."""
    differences: dict[tuple[str, str], tuple[list[float], list[float]]] = {step: ([], []) for step in STEPS}
    for run in runs:
        for (row_split, _), scores in sorted(run_scores(run, metric).items()):  # one order for both sources
            if row_split != split:
                continue
            for a, b in STEPS:
                if a in scores and b in scores:
                    differences[(a, b)][0].append(scores[a])
                    differences[(a, b)][1].append(scores[b])
    results = {}
    for (a, b), (scores_a, scores_b) in differences.items():
        if not scores_a:
            raise ValueError(f"no {split} example has both {a} and {b} scores in {', '.join(map(str, runs))}")
        results[f"{b}-{a}"] = paired_comparison(np.array(scores_a), np.array(scores_b))
    return results


def student_means(runs: list[Path], split: str, metric: str = "fact_judge") -> dict[str, float]:
    """Each student's mean over the examples of ``split`` of every run."""
    values: dict[str, list[float]] = {s: [] for s in STUDENTS}
    for run in runs:
        for (row_split, _), scores in run_scores(run, metric).items():
            if row_split == split:
                for student, value in scores.items():
                    values[student].append(value)
    return {s: float(np.mean(v)) if v else float("nan") for s, v in values.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="*", metavar="NAME=RUN[,RUN…]",
                        help="a group of runs (pipeline run folders or folders with scores.csv) pooled together")
    parser.add_argument("--split", default="val", help="the split to pool (default: val)")
    parser.add_argument("--metric", default="fact_judge", help="the per-example score (default: fact_judge)")
    parser.add_argument("--write-scores", nargs=2, metavar=("RUN", "OUT_CSV"),
                        help="write RUN's per-example scores to OUT_CSV and exit")
    args = parser.parse_args(argv)
    if args.write_scores:
        rows = write_scores(Path(args.write_scores[0]), Path(args.write_scores[1]), args.metric)
        print(f"{rows} examples -> {args.write_scores[1]}")
        return
    if not args.groups:
        parser.error("give at least one NAME=RUN[,RUN…] group (or --write-scores)")
    print(f"| runs ({args.split}) | n | SFT / KD / DPO | KD − SFT [95 % CI], p | DPO − KD [95 % CI], p | DPO − SFT [95 % CI], p |")
    print("|---|---|---|---|---|---|")
    for group in args.groups:
        name, _, paths = group.partition("=")
        if not paths:
            parser.error(f"{group!r}: expected NAME=RUN[,RUN…]")
        runs = [Path(p) for p in paths.split(",")]
        steps, means = pooled_steps(runs, args.split, args.metric), student_means(runs, args.split, args.metric)
        cells = [f"{r.mean:+.2f} [{r.low:+.2f}, {r.high:+.2f}], {r.p_value:.3g}" for r in steps.values()]
        n = steps["kd-sft"].n
        print(f"| {name} | {n} | {means['sft']:.2f} / {means['kd']:.2f} / {means['dpo']:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

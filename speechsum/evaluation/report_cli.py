"""`speechsum report`'s command line: its options and its entry point (the work is :mod:`report`)."""

from __future__ import annotations

import argparse

from speechsum.evaluation.report import build_report
from speechsum.utils.io import check_output_path
from speechsum.utils.repeated_options import OnceParser


def report_parser() -> argparse.ArgumentParser:
    p = OnceParser(
        prog="speechsum report",
        description="Compare evaluated systems in the paper's layout: rows text teacher, text backbone, cascade, "
        "student after each stage (by `stage` in metrics.json: base < sft < kd < dpo); one column per test split; "
        "mean [95% CI]; relative improvement of each stage over the previous; share of the text-teacher gap each "
        "stage closes = (stage - baseline) / (teacher - baseline); paired comparisons on the same examples (each "
        "stage vs the previous, final vs cascade and teacher: mean difference, paired-bootstrap 95% CI, sign-flip "
        "permutation p, both over recordings: examples sharing an audio file are one unit). Writes report.md, report.csv, paired.csv, chart_<metric>.png.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="folders with a metrics.json (a system's run folder) or whose subfolders have one")
    p.add_argument("--out", required=True, metavar="DIR", help="where report.md, report.csv, paired.csv and the chart go")
    p.add_argument("--metric", default=None,
                   help="score to compare: llm_judge, fact_judge, rouge (= rougeL), rouge1, rouge2, rougeLsum, "
                   "bertscore (= bertscore_f1), hallucination, repetition, … (default: llm_judge if every run has "
                   "it, else fact_judge, else rougeL)")
    p.add_argument("--baseline", default=None, metavar="SYSTEM",
                   help="system name the teacher-gap share is measured from (default: the first student row)")
    return p


def report_main(argv: list[str]) -> None:
    args = report_parser().parse_args(argv)
    check_output_path(args.out, "--out", folder=True)
    try:
        paths = build_report(args.run_dirs, args.out, metric=args.metric, baseline=args.baseline)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"speechsum report: {err}") from err
    print(paths["markdown"].read_text(encoding="utf-8"))
    for kind, path in paths.items():
        print(f"{kind}: {path}")

"""The ``metrics.json`` of ``speechsum evaluate`` runs, as the report reads them: loaded and checked,
put in the paper's row order, and what each skipped; and their ``summary.csv`` lines."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

from speechsum.utils.io import text_lines_problem

FORMAT = "speechsum-eval/1"  # what speechsum.evaluation.evaluate writes as metrics.json's `format`
ROLE_ORDER = ("teacher", "backbone", "text", "cascade", "student")
STAGE_ORDER = ("base", "sft", "kd", "dpo")


def load_runs(run_dirs: list[str | Path]) -> list[dict]:
    """``metrics.json`` of every run folder; a folder without one contributes its subfolders'."""
    runs = []
    for run_dir in map(Path, run_dirs):
        files = [run_dir / "metrics.json"] if (run_dir / "metrics.json").is_file() else sorted(run_dir.glob("*/metrics.json"))
        unfinished = [p.parent for p in [run_dir / "predictions.jsonl", *sorted(run_dir.glob("*/predictions.jsonl"))]
                      if p.is_file() and not (p.parent / "metrics.json").is_file()]
        if unfinished and files != [run_dir / "metrics.json"]:  # was left out silently: the next row became "previous"
            raise ValueError(f"{unfinished[0]}: predictions.jsonl but no metrics.json: its `speechsum evaluate` did "
                             "not finish (stopped, or still running); run it again, or remove the folder")
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: " + ("a file, not a run folder" if run_dir.exists() else "no such folder")
                                    + "; give the folder `speechsum evaluate --out` wrote, or one system's folder in it")
        if not files:
            raise FileNotFoundError(f"{run_dir}: no metrics.json here or one level below (run `speechsum evaluate` first)")
        for file in files:
            try:  # utf-8-sig: a byte-order mark an editor added is dropped, as the JSONL readers drop it
                run = json.loads(file.read_text(encoding="utf-8-sig"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{file}:{err.lineno}: invalid JSON ({err.msg})") from err
            except UnicodeDecodeError as err:
                problem = text_lines_problem(file) or f"not UTF-8 text ({err.reason} at byte {err.start})"
                raise ValueError(f"{file}: {problem}") from err  # UTF-16: said so, with how to convert it
            system = run.get("system") if isinstance(run, dict) else None
            if not isinstance(system, dict) or not isinstance(system.get("name"), str) or not isinstance(run.get("results"), dict):
                raise ValueError(f"{file}: not a `speechsum evaluate` metrics.json (needs an object with "
                                 "`system.name` and `results`)")
            if problem := _layout_problem(run):
                raise ValueError(f"{file}: {problem}; give the metrics.json `speechsum evaluate` wrote (evaluate the "
                                 "system again if it was edited)")
            if run.get("format", FORMAT) != FORMAT:  # another version's layout: its numbers would be misread
                raise ValueError(f"{file}: format {run['format']!r}, not {FORMAT!r}, the one this speechsum reads; "
                                 "evaluate the system again with this version (or report it with the version that "
                                 "wrote it)")
            runs.append(run | {"_path": str(file.parent)})
    check_unique_names(runs)
    return runs


def check_unique_names(runs: list[dict]) -> None:
    """A ValueError naming both ``metrics.json`` files of the first system name two runs share: one
    folder given twice (``eval`` and ``eval/sft``) or two systems evaluated under one name."""
    seen: dict[str, Path] = {}
    for run in runs:
        name, file = run["system"]["name"], Path(run["_path"]) / "metrics.json"
        if name not in seen:
            seen[name] = file
        elif seen[name].resolve() == file.resolve():
            raise ValueError(f"{file}: given twice (system {name!r}); give each run folder once")
        else:
            raise ValueError(f"{seen[name]} and {file}: both are system {name!r}; report them separately, or "
                             "evaluate one again under another name (the rows and comparisons are by name)")


def _layout_problem(run: dict) -> str | None:
    """What of a metrics.json's layout the report reads is not as ``speechsum evaluate`` writes it
    (the statistics themselves are checked where they are read); None when all is."""
    for key in ("role", "stage"):
        if not isinstance(run["system"].get(key), str | None):
            return f"system.{key} must be a string or null, got {run['system'][key]!r}"
    groups = run["results"]
    if not isinstance(groups.get("all"), dict):
        return f"results.all must be an object of metrics, got {groups.get('all')!r}"
    for group, members in groups.items():
        if group == "all":
            continue
        if not isinstance(members, dict):
            return f"results.{group} must be an object (one entry per {group}), got {members!r}"
        for member, scores in members.items():
            if not isinstance(scores, dict):
                return f"results.{group}.{member} must be an object of metrics, got {scores!r}"
    if not isinstance(run.get("skipped"), list | None) or any(not isinstance(item, dict) for item in run.get("skipped") or []):
        return f"skipped must be a list of objects (split, line, reason), got {run['skipped']!r}"
    return None


def _sort_key(indexed_run: tuple[int, dict]) -> tuple:
    index, run = indexed_run
    system = run["system"]
    role = system.get("role") or "student"
    role_rank = ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER)
    stage = system.get("stage")
    stage_rank = STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)
    return (role_rank, stage_rank if role == "student" else 0, index)


def order_runs(runs: list[dict]) -> list[dict]:
    """The paper's row order: teacher, backbone, (other text LMs), cascade, students by stage."""
    return [run for _, run in sorted(enumerate(runs), key=_sort_key)]


def skipped_note(runs: list[dict]) -> list[str]:
    """A line naming, per system, how many examples ``speechsum evaluate`` skipped on each split
    (``metrics.json``'s ``skipped``: not scored, so that system's means are over fewer examples)."""
    parts = []
    for run in order_runs(runs):
        splits = Counter(str(item.get("split")) for item in run.get("skipped") or [] if isinstance(item, dict))
        if splits:
            parts.append(f"{run['system']['name']}: " + ", ".join(f"{n} on {split}" for split, n in splits.items()))
    return [f"Not scored (skipped under `--on-bad-example skip`; lines and reasons in each system's metrics.json): "
            f"{'; '.join(parts)}.\n"] if parts else []


def summary_csv(results: dict[str, dict]) -> str:
    """One line per (system, group kind, group, metric): mean, low, high, n (low and high empty for a
    group of one example: they repeated the mean, a certain interval)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["system", "role", "stage", "group_by", "group", "metric", "mean", "low", "high", "n"])
    for name, result in results.items():
        system = result["system"]
        for group_by, groups in result["results"].items():
            groups = {"all": groups} if group_by == "all" else groups
            for group, stats in groups.items():
                for metric, stat in stats.items():
                    no_ci = stat["n"] == 1  # bootstrap_ci's (v, v, v): no interval, as in report.csv
                    writer.writerow([name, system["role"], system.get("stage") or "", group_by, group, metric,
                                     stat["mean"], "" if no_ci else stat["low"], "" if no_ci else stat["high"],
                                     stat["n"]])
    return buffer.getvalue()

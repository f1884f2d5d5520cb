"""`speechsum report`: one comparison of evaluated systems in the paper's table layout.

Rows (in this order): text teacher, text backbone, cascade, then the student after each stage,
ordered by ``system.stage`` in ``metrics.json`` (base < sft < kd < dpo; other stages after them,
in the order given). One column per test split; cells are ``mean [low, high]`` (95 % bootstrap CI).

Two derived tables, per split:

- relative improvement of each student stage over the previous student row:
  ``(x_stage − x_prev) / |x_prev|``;
- share of the text-teacher gap each student stage closes:
  ``(x_stage − x_baseline) / (x_teacher − x_baseline)``, where the baseline is the first student
  row unless ``baseline`` names another system (e.g. the text backbone or the cascade). 0 % = no
  better than the baseline, 100 % = as good as the teacher.

Paired comparisons (:mod:`speechsum.evaluation.paired`), per split, on the examples both systems
answered (``predictions.jsonl`` rows joined by ``id``): each student stage vs the previous one, the
final student vs the first one (when there are three or more), vs the cascade and vs the text
teacher. ``Δ = B − A`` (B the later / final system), a 95 % paired-bootstrap CI and a two-sided
sign-flip permutation p-value (seeded; exact for up to 16 units), both over recordings: examples that share
an audio file are resampled and sign-flipped together. Markdown shows the main metric; the CSV
also the faithfulness metrics.

Per system and split, a table each for fact recall, hallucination rate and repetition rate
(:data:`FAITHFULNESS_METRICS`, those the runs have).

Outputs under ``out``: ``report.md``, ``report.csv`` (one row per system × split × metric),
``paired.csv`` (one row per comparison × split × metric) and ``chart_<metric>.png`` (bars of the
main score per system and split with CI error bars), each written atomically.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from speechsum.evaluation.report_paired import (
    different_examples_note,
    load_predictions,
    paired_comparisons,
    render_paired,
    render_paired_csv,
)
from speechsum.evaluation.runs import load_runs, order_runs, skipped_note
from speechsum.utils.io import write_atomic

SPLIT_ORDER = ("test", "test_unseen", "test_xling")
MAIN_METRIC_PREFERENCE = ("llm_judge", "fact_judge", "rougeL")
METRIC_ALIASES = {"rouge": "rougeL", "bertscore": "bertscore_f1", "judge": "llm_judge"}
FAITHFULNESS_METRICS = ("fact_recall", "hallucination", "repetition")


@dataclass
class Cell:
    mean: float
    low: float
    high: float
    n: int


@dataclass
class Row:
    """One system in the comparison; ``cells`` by split."""

    name: str
    label: str
    role: str
    stage: str | None
    cells: dict[str, Cell]


def row_label(system: dict) -> str:
    role, stage, name = system.get("role") or "student", system.get("stage"), system["name"]
    base = {
        "teacher": "text teacher",
        "backbone": "text backbone",
        "text": "text LM",
        "cascade": "cascade (ASR → text LM)",
    }.get(role)
    if base is None:
        base = f"student + {stage.upper()}" if stage and stage != "base" else "student (no training)"
    return f"{base} ({name})" if name not in base else base


def choose_metric(runs: list[dict], metric: str | None) -> str:
    """The requested metric (aliases: rouge → rougeL, bertscore → bertscore_f1) or the first of
    llm_judge, fact_judge, rougeL that every run has."""
    available = [set(run["results"]["all"]) for run in runs]
    if metric:
        metric = METRIC_ALIASES.get(metric, metric)
        missing = [run["system"]["name"] for run, keys in zip(runs, available) if metric not in keys]
        if missing:
            raise ValueError(f"metric {metric!r} missing in run(s) {missing}; they have {sorted(set.union(*available))}")
        return metric
    for candidate in MAIN_METRIC_PREFERENCE:
        if all(candidate in keys for keys in available):
            return candidate
    raise ValueError(f"no common main metric; pass --metric (available: {sorted(set.intersection(*available))})")


def _cell(stat: object, where: str) -> Cell:
    """A metrics.json statistic ``{mean, low, high, n}`` as a Cell; anything else, a non-finite mean or
    bound, or a mean outside ``[low, high]``, is a ValueError naming ``where``."""
    try:
        mean, low, high = (float(stat[key]) for key in ("mean", "low", "high"))  # type: ignore[index]
        n = stat["n"]  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        n = None
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{where}: expected an object with numbers mean, low, high and a count n, got {stat!r}")
    if n > 0 and not all(map(math.isfinite, (mean, low, high))):  # n = 0: no example, NaN by design
        raise ValueError(f"{where}: mean {mean}, low {low}, high {high}: every one must be a finite number")
    slack = 1e-9 * max(1.0, abs(mean))  # float rounding of a bootstrap of equal values
    if n > 0 and not low - slack <= mean <= high + slack:  # the chart's error bar was a matplotlib traceback
        raise ValueError(f"{where}: mean {mean} is not within its interval [low {low}, high {high}]: a statistic "
                         "of speechsum evaluate has low <= mean <= high (an edited or another tool's metrics.json?); "
                         "evaluate the system again")
    return Cell(mean, low, high, n)


def build_rows(runs: list[dict], metric: str) -> tuple[list[Row], list[str]]:
    rows, splits = [], set()
    for run in order_runs(runs):
        cells = {}
        for split, scores in run["results"].get("split", {}).items():
            if metric in scores:
                cell = _cell(scores[metric], f"{Path(run['_path']) / 'metrics.json'}: results.split.{split}.{metric}")
                if cell.n > 0:
                    cells[split] = cell
        splits |= cells.keys()
        system = run["system"]
        rows.append(Row(system["name"], row_label(system), system.get("role") or "student", system.get("stage"), cells))
    ordered = [s for s in SPLIT_ORDER if s in splits] + sorted(splits - set(SPLIT_ORDER))
    return rows, ordered


def uneven_counts_note(rows: list[Row], splits: list[str]) -> list[str]:
    """A line naming each split whose cells average different numbers of examples (another test set,
    skipped or unscored examples): their means, and the derived tables, compare different examples."""
    parts = []
    for split in splits:
        counts = {row.name: row.cells[split].n for row in rows if split in row.cells}
        if len(set(counts.values())) > 1:
            parts.append(f"{split}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    return [f"Means over different numbers of examples (another test set, skipped or unscored examples; the "
            f"paired comparisons use the shared ones): {'; '.join(parts)}.\n"] if parts else []


def relative_improvements(rows: list[Row], splits: list[str]) -> dict[str, dict[str, float | None]]:
    """Per student row after the first: ``(x − x_prev) / |x_prev|`` per split (None when undefined)."""
    students = [row for row in rows if row.role == "student"]
    result: dict[str, dict[str, float | None]] = {}
    for previous, row in zip(students, students[1:]):
        result[row.name] = {}
        for split in splits:
            a, b = previous.cells.get(split), row.cells.get(split)
            ok = a is not None and b is not None and a.mean != 0
            result[row.name][split] = (b.mean - a.mean) / abs(a.mean) if ok else None
    return result


def gap_closed(rows: list[Row], splits: list[str], baseline: str | None = None) -> tuple[str | None, dict]:
    """Per student row: ``(x − x_base) / (x_teacher − x_base)`` per split; returns (baseline name, table).
    Undefined (None) without a teacher row or when teacher and baseline are equal."""
    teacher = next((row for row in rows if row.role == "teacher"), None)
    students = [row for row in rows if row.role == "student"]
    if baseline is not None:
        base = next((row for row in rows if row.name == baseline), None)
        if base is None:
            raise ValueError(f"baseline {baseline!r} is not one of the systems {[row.name for row in rows]}")
    else:
        base = students[0] if students else None
    if teacher is None or base is None:
        return None, {}
    table: dict[str, dict[str, float | None]] = {}
    for row in students:
        table[row.name] = {}
        for split in splits:
            t, b, x = teacher.cells.get(split), base.cells.get(split), row.cells.get(split)
            ok = t is not None and b is not None and x is not None and t.mean != b.mean
            table[row.name][split] = (x.mean - b.mean) / (t.mean - b.mean) if ok else None
    return base.name, table


def _fmt(cell: Cell | None) -> str:
    if cell is not None and cell.n == 1:  # bootstrap_ci's (v, v, v) read as a certain interval
        return f"{cell.mean:.3f} (one example, no CI)"
    return "—" if cell is None else f"{cell.mean:.3f} [{cell.low:.3f}, {cell.high:.3f}]"


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:+.1f} %"


def render_markdown(rows: list[Row], splits: list[str], metric: str, description: str, improvements: dict,
                    baseline: str | None, gaps: dict, faithfulness: dict[str, tuple[list[Row], str]] | None = None,
                    paired: list[str] | None = None, notes: list[str] | None = None) -> str:
    """The report as Markdown: the main table (``notes`` above it, e.g. :func:`skipped_note`), the two
    derived tables, the paired comparisons (``paired``: lines from :func:`render_paired`), then one
    table per faithfulness metric."""
    header = "| system | " + " | ".join(splits) + " |\n|---|" + "---|" * len(splits) + "\n"
    lines = [f"# speechsum report: {metric}\n", f"{description}\n", *(notes or []), "Cells: mean [95 % bootstrap CI].\n",
             header.rstrip()]
    lines += ["| " + row.label + " | " + " | ".join(_fmt(row.cells.get(s)) for s in splits) + " |" for row in rows]
    labels = {row.name: row.label for row in rows}
    if improvements:
        lines += ["", "## Relative improvement over the previous stage", "", header.rstrip()]
        lines += [f"| {labels[n]} | " + " | ".join(_pct(v[s]) for s in splits) + " |" for n, v in improvements.items()]
    if gaps:
        lines += ["", f"## Share of the text-teacher gap closed (baseline: {labels[baseline]})", "",
                  "(stage − baseline) / (teacher − baseline); 0 % = baseline, 100 % = teacher.", "", header.rstrip()]
        lines += [f"| {labels[n]} | " + " | ".join(_pct(v[s]).replace("+", "") for s in splits) + " |"
                  for n, v in gaps.items()]
    lines += paired or []
    for name, (metric_rows, text) in (faithfulness or {}).items():
        lines += ["", f"## Per system: {name}", "", f"{text}; mean [95 % bootstrap CI].", "", header.rstrip()]
        lines += ["| " + row.label + " | " + " | ".join(_fmt(row.cells.get(s)) for s in splits) + " |"
                  for row in metric_rows]
    return "\n".join(lines) + "\n"


def render_csv(rows: list[Row], splits: list[str], metric: str, improvements: dict, gaps: dict,
               extra: dict[str, list[Row]] | None = None) -> str:
    """One line per system × split of ``metric`` (with the derived columns), then of each ``extra`` metric;
    ``low`` and ``high`` are empty for a cell of one example (no interval; they repeated the mean)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["system", "label", "role", "stage", "split", "metric", "mean", "low", "high", "n",
                     "rel_improvement", "gap_closed"])
    for name, metric_rows in {metric: rows, **(extra or {})}.items():
        for row in metric_rows:
            for split in splits:
                cell = row.cells.get(split)
                if cell is None:
                    continue
                rel = improvements.get(row.name, {}).get(split) if name == metric else None
                gap = gaps.get(row.name, {}).get(split) if name == metric else None
                low, high = ("", "") if cell.n == 1 else (cell.low, cell.high)  # (v, v, v): no interval
                writer.writerow([row.name, row.label, row.role, row.stage or "", split, name, cell.mean, low, high,
                                 cell.n, "" if rel is None else rel, "" if gap is None else gap])
    return buffer.getvalue()


def plot_chart(rows: list[Row], splits: list[str], metric: str) -> bytes:
    """PNG bytes: grouped bars (x: split, one bar per system) with 95 % CI error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure on the Agg canvas: no pyplot state, no GUI, the caller's backend untouched.
    fig = Figure(figsize=(max(6.0, 1.6 * len(splits) * max(1, len(rows)) / 3), 4.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j, s in enumerate(splits) if s in row.cells]
        cells = [row.cells[s] for s in splits if s in row.cells]
        errors = [[max(0.0, c.mean - c.low) for c in cells], [max(0.0, c.high - c.mean) for c in cells]]
        ax.bar(xs, [c.mean for c in cells], width, yerr=errors, capsize=3, label=row.label)
    ax.set_xticks(range(len(splits)), splits)
    ax.set_ylabel(f"{metric} (mean, 95 % CI)")
    ax.set_title(f"speechsum: {metric} per system and test split")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def build_report(run_dirs: list[str | Path], out: str | Path, metric: str | None = None,
                 baseline: str | None = None, num_resamples: int = 10_000, seed: int = 0) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv``, ``paired.csv`` and ``chart_<metric>.png`` under ``out``;
    returns their paths. ``num_resamples`` and ``seed``: the paired bootstrap and permutation test."""
    runs = load_runs(run_dirs)
    metric = choose_metric(runs, metric)
    rows, splits = build_rows(runs, metric)
    if not splits:  # the tables had no column and the CSV no row, yet the report "succeeded"
        files = ", ".join(str(Path(run["_path"]) / "metrics.json") for run in runs)
        raise ValueError(f"no run has a {metric} score of any example under results.split ({files}); nothing to "
                         "compare: evaluate the systems again, or pass --metric with a score they have")
    description = next((run.get("metrics", {}).get(metric) for run in runs if run.get("metrics", {}).get(metric)), "")
    improvements = relative_improvements(rows, splits)
    baseline_name, gaps = gap_closed(rows, splits, baseline)
    no_gap = [f"No share-of-the-teacher-gap table for baseline {baseline!r}: no run is a text teacher "
              "(system.role teacher); add its run folder.\n"] if baseline and all(row.role != "teacher" for row in rows) else []
    faithfulness = {name: build_rows(runs, name)[0] for name in FAITHFULNESS_METRICS
                    if name != metric and any(name in run["results"]["all"] for run in runs)}
    described = {name: (metric_rows, next((run["metrics"][name] for run in runs if run.get("metrics", {}).get(name)),
                                          name)) for name, metric_rows in faithfulness.items()}
    predictions = {run["system"]["name"]: load_predictions(run) for run in runs}
    comparisons, missing, unpaired = paired_comparisons(runs, rows, splits, [metric, *faithfulness], num_resamples,
                                                        seed, predictions)
    labels = {row.name: row.label for row in rows}
    paired = render_paired(comparisons, labels, metric, missing, num_resamples, seed, unpaired)
    out = Path(out)
    paths = {"markdown": out / "report.md", "csv": out / "report.csv", "paired_csv": out / "paired.csv",
             "chart": out / f"chart_{metric}.png"}
    contents = {  # all made before any is written: a failure (the chart's) left a new report.md beside old files
        "markdown": render_markdown(rows, splits, metric, description, improvements, baseline_name, gaps, described,
                                    paired, skipped_note(runs) + uneven_counts_note(rows, splits)
                                    + different_examples_note(predictions, rows, splits, metric) + no_gap),
        "csv": render_csv(rows, splits, metric, improvements, gaps, faithfulness),
        "paired_csv": render_paired_csv(comparisons),
        "chart": plot_chart(rows, splits, metric),
    }
    for name, content in contents.items():
        write_atomic(paths[name], content)
    return paths

"""The paired comparisons of `speechsum report`: which systems are compared, on which examples, and
their Markdown and CSV tables (the statistics are :mod:`speechsum.evaluation.paired`)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from speechsum.evaluation.paired import (
    PairedResult,
    check_same_examples,
    join_scores,
    paired_comparison,
    read_prediction_rows,
)

if TYPE_CHECKING:
    from speechsum.evaluation.report import Row


@dataclass
class Comparison:
    """``b`` against ``a`` (system names) on one split and metric: Δ = b − a; ``scored_a`` and
    ``scored_b``: the examples of the split each system has a score for (the paired ones are their
    intersection, ``result.n``)."""

    a: str
    b: str
    split: str
    metric: str
    result: PairedResult
    scored_a: int = 0
    scored_b: int = 0


def comparison_pairs(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(A, B) pairs: consecutive student stages, then the final student vs the first student (three or
    more students), vs the cascade and vs the text teacher (when those rows exist)."""
    students = [row for row in rows if row.role == "student"]
    pairs = list(zip(students, students[1:]))
    if not students:
        return pairs
    final = students[-1]
    if len(students) >= 3:
        pairs.append((students[0], final))
    for role in ("cascade", "teacher"):
        other = next((row for row in rows if row.role == role), None)
        if other is not None:
            pairs.append((other, final))
    return pairs


def load_predictions(run: dict) -> list[dict] | None:
    """The rows of the run's ``predictions.jsonl`` (next to its ``metrics.json``), None when absent
    or empty (both are named in the report: nothing to compare); checked against the ``metrics.json``
    (:func:`check_predictions_match`)."""
    path = Path(run["_path"]) / "predictions.jsonl"
    rows = (read_prediction_rows(path) or None) if path.is_file() else None
    if rows is not None:
        check_predictions_match(run, rows, path)
    return rows


def check_predictions_match(run: dict, rows: list[dict], path: Path) -> None:
    """A ValueError naming ``path`` unless its rows are the ones the run's ``metrics.json`` was computed
    from: the same system, ``num_examples`` rows, and per split and metric the same count and mean of
    scores. A predictions file of another run, or one cut short, was paired silently beside the other
    run's means. Checked when ``metrics.json`` records ``num_examples`` (``speechsum evaluate`` writes it)."""
    if "num_examples" not in run:
        return
    name, metrics_file = run["system"]["name"], Path(run["_path"]) / "metrics.json"
    fix = (f"the two files are not of one run (a predictions file copied from another run, or one cut short); "
           f"evaluate system {name!r} again, or put back the predictions.jsonl written beside this metrics.json")
    other = next((row["system"] for row in rows if row.get("system", name) != name), None)
    if other is not None:
        raise ValueError(f"{path}: rows of system {other!r}, but {metrics_file} is system {name!r}: {fix}")
    if len(rows) != run["num_examples"]:
        raise ValueError(f"{path}: {len(rows)} rows, but {metrics_file} counts num_examples {run['num_examples']!r}: "
                         f"{fix}")
    for split, stats in (run["results"].get("split") or {}).items():
        for metric, stat in stats.items():
            values = [float(v) for row in rows if row.get("split") == split
                      for v in [(row.get("scores") or {}).get(metric)] if v is not None and math.isfinite(v)]
            if not isinstance(stat, dict) or not isinstance(stat.get("mean"), int | float):
                continue  # a bad statistic is named where the tables read it
            mean = sum(values) / len(values) if values else math.nan
            if len(values) != stat.get("n") or values and not math.isclose(mean, stat["mean"], rel_tol=1e-9,
                                                                             abs_tol=1e-12):
                raise ValueError(f"{path}: split {split!r}: {len(values)} scores of {metric} averaging {mean:.6g}, but "
                                 f"{metrics_file} says n {stat.get('n')!r}, mean {stat['mean']!r} "
                                 f"(results.split.{split}.{metric}): {fix}")


def different_examples_note(predictions: dict[str, list[dict] | None], rows: list[Row], splits: list[str],
                            metric: str) -> list[str]:
    """A line naming each split whose systems scored as many examples of ``metric`` but not the same ones (by
    ``predictions.jsonl`` id; other counts are the uneven-counts note's): the main table and the derived
    tables then compare other test sets, with nothing said but the paired table's "no id in common"."""
    parts = []
    for split in splits:
        scored = {row.name: frozenset(r["id"] for r in predictions.get(row.name) or []
                                      if r["split"] == split and _finite((r.get("scores") or {}).get(metric)))
                  for row in rows if split in row.cells and predictions.get(row.name)}
        counts = {len(ids) for ids in scored.values()}
        if len(set(scored.values())) > 1 and len(counts) == 1:
            shared = frozenset.intersection(*scored.values())
            parts.append(f"{split}: {len(shared)} of the {counts.pop()} example ids are scored in every one of "
                         f"{', '.join(scored)}")
    return [f"Means over different examples (as many in each system, but other ids: another test set? the paired "
            f"comparisons use the shared ones): {'; '.join(parts)}.\n"] if parts else []


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def paired_comparisons(runs: list[dict], rows: list[Row], splits: list[str], metrics: list[str],
                       num_resamples: int = 10_000, seed: int = 0, predictions: dict[str, list[dict] | None] | None = None
                       ) -> tuple[list[Comparison], list[str], list[tuple[str, str, str, str]]]:
    """Every pair of :func:`comparison_pairs` × split × metric with paired examples; returns the
    comparisons, the names of compared systems without ``predictions.jsonl`` (left out), and
    ``(A, B, split, metric)`` for pairs whose scored rows of a split share no example id.
    ``predictions``: each run's :func:`load_predictions` by system name, when read already."""
    if predictions is None:
        predictions = {run["system"]["name"]: load_predictions(run) for run in runs}
    paths = {run["system"]["name"]: Path(run["_path"]) / "predictions.jsonl" for run in runs}
    comparisons, missing, unpaired = [], set(), []
    for a, b in comparison_pairs(rows):
        rows_a, rows_b = predictions[a.name], predictions[b.name]
        if rows_a is None or rows_b is None:
            missing |= {row.name for row, rows_ in ((a, rows_a), (b, rows_b)) if rows_ is None}
            continue
        check_same_examples(rows_a, paths[a.name], rows_b, paths[b.name])
        for metric in metrics:
            for split in splits:
                joined = join_scores(rows_a, rows_b, metric, split)
                if joined.a.size:
                    result = paired_comparison(joined.a, joined.b, num_resamples, seed, groups=joined.recordings)
                    comparisons.append(Comparison(a.name, b.name, split, metric, result,
                                                  _scored(rows_a, metric, split), _scored(rows_b, metric, split)))
                elif all(_scored(rows_, metric, split) for rows_ in (rows_a, rows_b)):
                    unpaired.append((a.name, b.name, split, metric))
    return comparisons, sorted(missing), unpaired


def _scored(rows: list[dict], metric: str, split: str) -> int:
    """How many rows of ``split`` have a finite score of ``metric`` (those :func:`join_scores` can pair)."""
    values = [(row.get("scores") or {}).get(metric) for row in rows if row.get("split") == split]
    return sum(value is not None and math.isfinite(value) for value in values)


def _p(value: float) -> str:
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def render_paired(comparisons: list[Comparison], labels: dict[str, str], metric: str, missing: list[str],
                  num_resamples: int, seed: int, unpaired: list[tuple[str, str, str, str]] = ()) -> list[str]:
    """Markdown lines of the paired-comparison table of ``metric`` (none without comparisons or notes)."""
    shown = [c for c in comparisons if c.metric == metric]
    apart = [f"{labels[b]} − {labels[a]} on {split}" for a, b, split, m in unpaired if m == metric]
    if not shown and not missing and not apart:
        return []
    lines = ["", f"## Paired comparisons ({metric}, same examples)", "",
             f"Δ = B − A over the n examples both systems answered (joined by id within each split); 95 % CI: paired "
             f"bootstrap, {num_resamples:,} resamples (seed {seed}); p: two-sided sign-flip permutation test "
             f"(exact for up to 16 units, else {num_resamples:,} seeded sign vectors). The unit of both is the "
             "recording: examples that share an audio file are not independent, so they are resampled and "
             "sign-flipped together (n (k): n examples from k recordings).", ""]
    if missing:
        lines += [f"Left out, no or an empty predictions.jsonl: {', '.join(labels[name] for name in missing)}.", ""]
    if apart:
        lines += [f"Not compared, no example id in common (different test sets?): {'; '.join(apart)}.", ""]
    subset = [(f"{labels[c.b]} − {labels[c.a]} on {c.split}: {c.result.n} of {c.b}'s {c.scored_b} and "
               f"{c.a}'s {c.scored_a}")
              for c in shown if c.result.n < max(c.scored_a, c.scored_b)]
    if subset:
        lines += ["On the shared examples only (the others are missing or unscored in one of the two systems, so "
                  f"these Δ differ from the difference of the table's means): {'; '.join(subset)}.", ""]
    lines += ["| B − A | split | n | Δ | 95 % CI | p |", "|---|---|---|---|---|---|"]
    for c in shown:
        r = c.result
        interval = f"— (one {'example' if r.n == 1 else 'recording'})" if math.isnan(r.low) else f"[{r.low:+.3f}, {r.high:+.3f}]"
        lines.append(f"| {labels[c.b]} − {labels[c.a]} | {c.split} | {r.size()} | {r.mean:+.3f} | "
                     f"{interval} | {_p(r.p_value)} |")
    return lines


def render_paired_csv(comparisons: list[Comparison]) -> str:
    """One line per comparison × split × metric: ``diff = b − a`` with CI, p-value, n examples from
    ``recordings`` recordings (the tests' units), exact; ``low`` and ``high`` empty when there is no
    interval (one example or one recording: they were written as ``nan``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["a", "b", "split", "metric", "n", "recordings", "diff", "low", "high", "p_value", "exact"])
    for c in comparisons:
        r = c.result
        low, high = ("", "") if math.isnan(r.low) else (r.low, r.high)  # one unit: no interval, not `nan`
        writer.writerow([c.a, c.b, c.split, c.metric, r.n, r.units, r.mean, low, high, r.p_value, int(r.exact)])
    return buffer.getvalue()

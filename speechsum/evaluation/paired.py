"""Paired comparison of two systems scored on the same examples: mean difference, bootstrap CI, p-value.

For per-example differences ``d_i = score_B(i) − score_A(i)`` (i = 1…n, one per example both
systems were scored on):

- **mean difference** ``d̄ = (1/n) Σ d_i``;
- **95 % CI** by paired (percentile) bootstrap: ``num_resamples`` resamples of the n differences
  with replacement (``numpy.random.default_rng(seed)``), the 2.5 % and 97.5 % quantiles of the
  resample means (:func:`speechsum.evaluation.metrics.bootstrap_ci` on ``d``);
- **two-sided p-value** by the paired sign-flip permutation test of H0 "the distribution of
  ``d_i`` is symmetric about 0" (the systems are exchangeable within each example): statistic
  ``T(s) = |Σ s_i d_i|`` over sign vectors ``s ∈ {−1, +1}^n``; observed ``T_obs = |Σ d_i|``.
  Exact when ``n ≤ exact_max_n`` (all ``2^n`` sign vectors): ``p = #{s : T(s) ≥ T_obs} / 2^n``.
  Otherwise Monte Carlo with ``num_permutations`` seeded uniform sign vectors:
  ``p = (1 + #{T(s) ≥ T_obs}) / (1 + num_permutations)`` (never 0; Phipson & Smyth 2010).
  ``≥`` is taken with a tolerance of 1e-9 · max(T_obs, min(1, Σ|d_i|)) so ties in floating point count
  as ties: 1e-9 absolute for differences of everyday size, relative to their size when ``Σ|d_i| < 1``
  (a fixed 1e-9 made every sign vector a tie for differences near 1e-10: p = 1 whatever they were).

**Examples that share a recording are not independent** (the benchmark asks two instructions about
each recording; a student that mishears it errs on both). Given ``groups`` (one key per example,
e.g. its audio file), the unit is the group: with ``D_g = Σ_{i∈g} d_i`` and ``n_g`` examples in
group g (G groups), the mean is still ``Σ D_g / Σ n_g = d̄``; the bootstrap resamples G groups
(``Σ D_g* / Σ n_g*``, :func:`~speechsum.evaluation.metrics.bootstrap_ci` with ``counts``) and the
sign-flip test flips each group's differences together (the test above on the ``D_g``). With every
group of one example both reduce to the per-example versions, draw for draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from speechsum.evaluation.metrics import bootstrap_ci
from speechsum.utils.io import read_numbered_jsonl

EXACT_MAX_N = 16  # 2^16 = 65,536 sign vectors: exact enumeration is cheap up to here
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class PairedResult:
    """``mean`` difference (B − A) with its bootstrap CI ``[low, high]``, the permutation ``p_value``,
    ``n`` paired examples, whether the p-value is ``exact`` (full enumeration), and the number of
    independent ``units`` resampled and sign-flipped (groups of examples; ``n`` without groups)."""

    mean: float
    low: float
    high: float
    p_value: float
    n: int
    exact: bool
    units: int

    def size(self) -> str:
        """``"300"``, or ``"300 (150)"``: n examples from fewer independent units."""
        return str(self.n) if self.units == self.n else f"{self.n} ({self.units})"


def _differences(differences: Sequence[float] | np.ndarray) -> np.ndarray:
    d = np.asarray(differences, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("paired comparison: no paired examples")
    if not np.isfinite(d).all():
        raise ValueError("paired comparison: differences contain NaN or infinity")
    return d


def _at_least(statistics: np.ndarray, observed: float, scale: float) -> np.ndarray:
    """``statistics ≥ observed`` up to float ties; ``scale``: Σ|d_i| (module docstring)."""
    return statistics >= observed - _TOLERANCE * max(observed, min(1.0, scale))


def sign_flip_p_value(differences: Sequence[float] | np.ndarray, num_permutations: int = 10_000, seed: int = 0,
                      exact_max_n: int = EXACT_MAX_N) -> tuple[float, bool]:
    """``(p, exact)``: the two-sided paired sign-flip permutation p-value of the module docstring."""
    d = _differences(differences)
    observed, scale = abs(d.sum()), float(np.abs(d).sum())
    n = d.size
    if n <= exact_max_n:
        codes = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n)  # bit j of row k: flip d_j
        signs = 1.0 - 2.0 * (codes & 1)
        return float(_at_least(np.abs(signs @ d), observed, scale).mean()), True
    if num_permutations < 1:
        raise ValueError(f"num_permutations must be >= 1, got {num_permutations}")
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, 4_000_000 // n)
    for start in range(0, num_permutations, chunk):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(chunk, num_permutations - start), n))
        hits += int(_at_least(np.abs(signs @ d), observed, scale).sum())
    return (1 + hits) / (1 + num_permutations), False


def paired_comparison(scores_a: Sequence[float] | np.ndarray, scores_b: Sequence[float] | np.ndarray,
                      num_resamples: int = 10_000, seed: int = 0, exact_max_n: int = EXACT_MAX_N,
                      groups: Sequence[object] | None = None) -> PairedResult:
    """B − A on the same examples (``scores_a[i]`` and ``scores_b[i]`` belong to example i): mean, 95 %
    paired-bootstrap CI and sign-flip p-value, both seeded with ``seed`` and ``num_resamples`` draws;
    ``groups[i]``: example i's group (its recording), resampled and flipped as one unit (module docstring)."""
    a, b = np.asarray(scores_a, dtype=np.float64).ravel(), np.asarray(scores_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired comparison: {a.size} scores for A but {b.size} for B")
    d = _differences(b - a)
    sums, counts = d, None
    if groups is not None:
        codes = _group_codes(groups, d.size)
        if codes.max() + 1 < d.size:
            sums, counts = np.bincount(codes, weights=d), np.bincount(codes)
    mean, low, high = bootstrap_ci(sums, confidence=0.95, num_resamples=num_resamples, seed=seed, counts=counts)
    if sums.size == 1:  # one unit (one example, or one recording holding every example): no interval
        low = high = math.nan
    p_value, exact = sign_flip_p_value(sums, num_resamples, seed, exact_max_n)
    return PairedResult(mean, low, high, p_value, int(d.size), exact, int(sums.size))


def _group_codes(groups: Sequence[object], n: int) -> np.ndarray:
    """``groups`` as integer codes ``0…G-1`` in order of first appearance; a None or NaN key is its
    own group (a row naming no recording), never merged with the other such rows."""
    keys = list(groups)
    if len(keys) != n:
        raise ValueError(f"paired comparison: {len(keys)} groups for {n} examples")
    index: dict[object, int] = {}
    codes = np.empty(n, dtype=np.int64)
    for position, key in enumerate(keys):
        if key is None or (isinstance(key, float) and math.isnan(key)):
            key = object()  # unique: equal to no other key
        try:
            codes[position] = index.setdefault(key, len(index))
        except TypeError as err:
            raise ValueError(f"paired comparison: group {position} is {key!r}, not a hashable key "
                             "(give one string or number per example)") from err
    return codes


def check_prediction_rows(rows: list, path: str | Path, lines: Sequence[int] | None = None) -> list[dict]:
    """``rows`` (of ``path``, a ``predictions.jsonl``; ``lines``: each row's line in it) unchanged when
    each is an object with ``id`` and ``split``, its ``scores`` (if any) an object of numbers or nulls,
    and no ``(split, id)`` repeats; else a ValueError naming file, line and field (the joins below pair
    examples by id, so a repeated one would silently keep its last row)."""
    seen = set()
    for number, row in enumerate(rows, start=1):
        where = f"{path}:{lines[number - 1]}" if lines is not None else f"{path}: row {number}"
        if not isinstance(row, dict) or not isinstance(row.get("id"), str | int) or not isinstance(row.get("split"), str):
            raise ValueError(f"{where}: not a prediction row (needs an object with a string or "
                             "integer `id` and a string `split`)")
        key = (row["split"], row["id"])
        if key in seen:
            raise ValueError(f"{where}: id {row['id']!r} appears twice in split {row['split']!r} "
                             "(one row per example)")
        seen.add(key)
        scores = row.get("scores")
        if scores is not None and not isinstance(scores, dict):
            raise ValueError(f"{where}: `scores` is {scores!r}, not an object of metric: score")
        for metric, value in (scores or {}).items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"{where}: scores.{metric} is {value!r}: a score is a number, or null when missing")
            if value is not None and math.isinf(value):  # join_scores left it out, unnamed
                raise ValueError(f"{where}: scores.{metric} is {value!r}: a score is finite (null or NaN when missing)")
    return rows


def read_prediction_rows(path: str | Path) -> list[dict]:
    """The rows of a ``predictions.jsonl``, checked by :func:`check_prediction_rows` (errors name its lines)."""
    numbered = read_numbered_jsonl(path)
    return check_prediction_rows([row for _, row in numbered], path, [line for line, _ in numbered])


def check_same_examples(rows_a: list[dict], path_a: str | Path, rows_b: list[dict], path_b: str | Path) -> None:
    """Rows of two ``predictions.jsonl`` that share ``(split, id)`` are one example: a ValueError
    naming both files when their ``instruction`` or ``reference`` differ (systems evaluated on other
    manifests, e.g. an earlier run's folder left in the same ``--out``, would be paired silently)."""
    by_key = {(row["split"], row["id"]): row for row in rows_b}
    for row in rows_a:
        other = by_key.get((row["split"], row["id"]), {})
        for field in ("instruction", "reference"):
            if field in row and field in other and row[field] != other[field]:
                raise ValueError(f"{path_a} and {path_b}: id {row['id']!r} of split {row['split']!r} has another "
                                 f"{field} in each: the systems answered different test manifests (an earlier run's "
                                 "system folder in the same --out?); evaluate them on the same manifests")


class JoinedScores(NamedTuple):
    """Paired scores ``a`` and ``b`` (one entry per example, in A's order) and each example's
    ``recording``: its ``audio`` (examples that share one are one unit of the paired tests), or None
    when neither row names audio (the example is then a unit of its own)."""

    a: np.ndarray
    b: np.ndarray
    recordings: list[str | None]


def join_scores(rows_a: list[dict], rows_b: list[dict], metric: str, split: str) -> JoinedScores:
    """Scores of ``metric`` for the examples of ``split`` both prediction lists hold, joined by ``id``
    (rows as in ``predictions.jsonl``: ``{id, split, audio, scores: {metric: value | None}}``); examples
    where either score is missing (None or NaN) are left out."""
    def by_id(rows: list[dict]) -> dict[str, tuple[float, str | None]]:
        values = {row["id"]: ((row.get("scores") or {}).get(metric), row.get("audio"))
                  for row in rows if row.get("split") == split}
        return {key: (float(v), audio if isinstance(audio, str) and audio else None)
                for key, (v, audio) in values.items() if v is not None and math.isfinite(float(v))}

    a, b = by_id(rows_a), by_id(rows_b)
    shared = [key for key in a if key in b]
    recordings = [a[k][1] or b[k][1] for k in shared]
    return JoinedScores(np.array([a[k][0] for k in shared]), np.array([b[k][0] for k in shared]), recordings)

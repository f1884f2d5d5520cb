"""Paired comparisons: known differences give the expected mean, bootstrap CI and sign-flip p-value."""

from __future__ import annotations

import numpy as np
import pytest

from speechsum.evaluation.paired import join_scores, paired_comparison, sign_flip_p_value


def test_constant_difference_has_a_point_ci_and_the_smallest_p():
    a = np.linspace(1.0, 5.0, 200)
    result = paired_comparison(a, a + 0.5, num_resamples=10_000, seed=0)
    assert (result.mean, result.low, result.high, result.n, result.exact) == pytest.approx((0.5, 0.5, 0.5, 200, False))
    # only the all-plus / all-minus sign vectors reach |Σd| (chance 2^-199): no random draw does
    assert result.p_value == 1 / 10_001


def test_symmetric_differences_have_mean_zero_and_p_one():
    d = np.array([1.0, -1.0, 2.5, -2.5, 0.3, -0.3] * 10)
    result = paired_comparison(np.zeros_like(d), d)
    assert result.mean == pytest.approx(0.0) and result.p_value == 1.0 and not result.exact
    assert result.low < 0 < result.high
    assert sign_flip_p_value(d[:6]) == (1.0, True)  # exact: every |Σ s·d| ≥ 0


def test_exact_p_value_enumerated_by_hand():
    # d = (4, -1, 2, 3), |Σd| = 8. Flipping a subset of magnitude sum S gives |10 − 2S| ≥ 8 iff S ≤ 1 or
    # S ≥ 9: {}, {1}, {4, 2, 3}, {4, 1, 2, 3} → 4 of 16 sign vectors.
    assert sign_flip_p_value([4.0, -1.0, 2.0, 3.0]) == (0.25, True)
    # (1, 1, 1, -1): sums 4, 2, 0, -2, -4 with 1, 4, 6, 4, 1 vectors; |sum| ≥ 2 for 10 of 16
    assert sign_flip_p_value([1.0, 1.0, 1.0, -1.0]) == (0.625, True)
    assert sign_flip_p_value([2.0]) == (1.0, True)  # n = 1: both signs reach |d|


def test_monte_carlo_agrees_with_exact_and_is_seeded():
    d = np.array([0.9, 1.2, -0.4, 0.7, 1.5, 0.1, -0.2, 0.8, 1.1, 0.6])
    exact, is_exact = sign_flip_p_value(d)
    approx, approx_exact = sign_flip_p_value(d, num_permutations=20_000, seed=3, exact_max_n=0)
    assert is_exact and not approx_exact
    # |Σd| = 6.3, Σ|d| = 7.5: negating a set of magnitude sum S gives |7.5 − 2S| ≥ 6.3 iff S ≤ 0.6 or
    # S ≥ 6.9: {}, {.1}, {.2}, {.4}, {.6}, {.1,.2}, {.1,.4}, {.2,.4} and their 8 complements → 16 / 1024
    assert exact == 16 / 1024
    assert approx == pytest.approx(exact, abs=0.005)
    assert sign_flip_p_value(d, seed=3, exact_max_n=0) == sign_flip_p_value(d, seed=3, exact_max_n=0)


def test_bootstrap_ci_of_two_differences():
    # d = (0, 1): resample means 0, 0.5, 1 with chance 1/4, 1/2, 1/4 → 2.5 % / 97.5 % quantiles 0 and 1
    result = paired_comparison([1.0, 1.0], [1.0, 2.0], num_resamples=10_000)
    # p: |±0 ± 1| = 1 for all 4 sign vectors → 1
    assert (result.mean, result.low, result.high, result.p_value) == (0.5, 0.0, 1.0, 1.0)


def test_join_by_id_within_split_skips_missing_scores():
    rows_a = [{"id": "x", "split": "test", "scores": {"m": 1.0}}, {"id": "y", "split": "test", "scores": {"m": 2.0}},
              {"id": "z", "split": "test", "scores": {"m": None}}, {"id": "x", "split": "other", "scores": {"m": 9.0}}]
    rows_b = [{"id": "y", "split": "test", "scores": {"m": 5.0}}, {"id": "x", "split": "test", "scores": {"m": 3.0}},
              {"id": "z", "split": "test", "scores": {"m": 4.0}}, {"id": "w", "split": "test", "scores": {"m": 1.0}}]
    joined = join_scores(rows_a, rows_b, "m", "test")
    assert joined.a.tolist() == [1.0, 2.0] and joined.b.tolist() == [3.0, 5.0]
    assert joined.recordings == [None, None]  # no audio: each example its own unit


def test_join_names_each_example_by_its_recording():
    rows_a = [{"id": "d1-q", "split": "test", "audio": "/a/d1.wav", "scores": {"m": 1.0}},
              {"id": "d1-s", "split": "test", "audio": "/a/d1.wav", "scores": {"m": 2.0}},
              {"id": "d2-q", "split": "test", "audio": "", "scores": {"m": 3.0}}]
    rows_b = [{"id": "d2-q", "split": "test", "audio": "/a/d2.wav", "scores": {"m": 1.0}},
              {"id": "d1-s", "split": "test", "scores": {"m": 1.0}}, {"id": "d1-q", "split": "test", "scores": {"m": 1.0}}]
    assert join_scores(rows_a, rows_b, "m", "test").recordings == ["/a/d1.wav", "/a/d1.wav", "/a/d2.wav"]


def test_examples_sharing_a_recording_are_one_unit():
    # d = (1, 3 | -1 | 2, 2) in recordings r1, r2, r3: sums D = (4, -1, 4), counts (2, 1, 2), mean 7 / 5.
    # Sign flips of the three sums: |±4 ± 1 ± 4| ∈ {9, 7, 1, 1, 1, 1, 7, 9}: 4 of 8 reach 7 → p = 0.5
    # (per example: Σ = 7 − 2F for a flipped subset of sum F; F ≤ 0 or F ≥ 7 for 6 of 32 subsets → 0.1875).
    # Bootstrap over recordings: all three draws r2 (chance 1/27 > 2.5 %) gives -1, draws of r1 and r3
    # only (8/27 > 2.5 %) give 2 → CI [-1, 2].
    a = np.zeros(5)
    d = np.array([1.0, 3.0, -1.0, 2.0, 2.0])
    groups = ["r1", "r1", "r2", "r3", "r3"]
    clustered = paired_comparison(a, d, num_resamples=10_000, groups=groups)
    assert (clustered.mean, clustered.low, clustered.high) == pytest.approx((1.4, -1.0, 2.0))
    assert (clustered.p_value, clustered.exact, clustered.n, clustered.units) == (0.5, True, 5, 3)
    assert clustered.size() == "5 (3)"
    per_example = paired_comparison(a, d, num_resamples=10_000)
    assert (per_example.p_value, per_example.units, per_example.size()) == (0.1875, 5, "5")
    # one example per group is the per-example comparison, draw for draw
    assert paired_comparison(a, d, groups=["r1", "r2", "r3", "r4", "r5"]) == per_example
    with pytest.raises(ValueError, match="4 groups for 5 examples"):
        paired_comparison(a, d, groups=groups[:4])


def test_errors():
    with pytest.raises(ValueError, match="no paired examples"):
        paired_comparison([], [])
    with pytest.raises(ValueError, match="3 scores for A but 2 for B"):
        paired_comparison([1, 2, 3], [1, 2])


def test_groups_without_a_key_stay_apart_and_one_group_has_no_interval():
    a, d = np.zeros(4), np.array([1.0, 2.0, 3.0, 4.0])
    # None / NaN name no recording: each its own unit, as without groups
    for missing in ([None] * 4, [float("nan")] * 4, np.full(4, np.nan)):
        assert paired_comparison(a, d, groups=missing) == paired_comparison(a, d)
    one = paired_comparison(a, d, groups=["r"] * 4)
    assert (one.mean, one.units, one.p_value) == (2.5, 1, 1.0) and np.isnan(one.low) and np.isnan(one.high)
    with pytest.raises(ValueError, match=r"group 0 is \[1\], not a hashable key"):
        paired_comparison(a, d, groups=[[1], [1], [2], [2]])


def test_one_example_has_no_interval_two_have_the_smallest_exact_p():
    # One example is one unit, as one recording is: its bootstrap "CI" [0.5, 0.5] read as certainty
    one = paired_comparison([1.0], [1.5])
    assert (one.mean, one.n, one.units, one.p_value, one.exact) == (0.5, 1, 1, 1.0, True)
    assert np.isnan(one.low) and np.isnan(one.high)
    two = paired_comparison([1.0, 1.0], [1.5, 2.0])
    assert (two.mean, two.low, two.high, two.p_value) == (0.75, 0.5, 1.0, 0.5)  # 2 of the 4 sign vectors reach 1.5


def _enumerated_p(units: list[int]) -> float:
    """The exact sign-flip p of integer differences, by itertools over every sign vector (no floats)."""
    import itertools

    signs = list(itertools.product((-1, 1), repeat=len(units)))
    observed = abs(sum(units))
    return sum(abs(sum(s * u for s, u in zip(vector, units))) >= observed for vector in signs) / len(signs)


@pytest.mark.parametrize("units", [[1] * 5, [3, -1, 2, 4], [1, 1, 1, -1], [5, 0, 0, 2, -1, 3]])
def test_the_p_value_does_not_depend_on_the_scale_of_the_differences(units):
    # a fixed 1e-9 tie tolerance made every sign vector a tie for differences near 1e-10: p = 1.0 each
    expected = _enumerated_p(units)
    assert _enumerated_p([1] * 5) == 2 / 32  # all equal and nonzero: only ±(1, …, 1) reach |Σd|
    for scale in (1e-12, 1e-10, 1e-3, 1.0, 1e6):
        assert sign_flip_p_value(np.array(units) * scale) == (expected, True), scale
    monte_carlo, exact = sign_flip_p_value(np.full(20, 1e-10), num_permutations=1_000, exact_max_n=0)
    assert (monte_carlo, exact) == (1 / 1_001, False)  # 2 of 2^20 vectors reach it: no draw does, + 1 correction


def test_edge_sizes_and_zero_differences():
    zero = paired_comparison([0.3] * 6, [0.3] * 6)
    assert (zero.mean, zero.low, zero.high, zero.p_value, zero.exact) == (0.0, 0.0, 0.0, 1.0, True)
    many = paired_comparison([0.3] * 40, [0.3] * 40, num_resamples=500)
    assert (many.mean, many.low, many.high, many.p_value, many.exact) == (0.0, 0.0, 0.0, 1.0, False)
    two = paired_comparison([0.0, 0.0], [1.0, 1.0])
    assert (two.mean, two.low, two.high, two.p_value) == (1.0, 1.0, 1.0, 2 / 4)
    with pytest.raises(ValueError, match="NaN or infinity"):
        paired_comparison([0.0, float("nan")], [1.0, 1.0])  # refused, not dropped from one side
    # a recording with one example beside one with two: 2 units, D = (1 + 2, 3), p over 4 sign vectors
    grouped = paired_comparison([0, 0, 0], [1, 2, 3], groups=["r1", "r1", "r2"])
    assert (grouped.units, grouped.p_value, grouped.size()) == (2, _enumerated_p([3, 3]), "3 (2)")
    assert paired_comparison([1, 2, 5], [2, 2, 3], seed=7) == paired_comparison([1, 2, 5], [2, 2, 3], seed=7)

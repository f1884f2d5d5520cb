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
    a, b = join_scores(rows_a, rows_b, "m", "test")
    assert a.tolist() == [1.0, 2.0] and b.tolist() == [3.0, 5.0]


def test_errors():
    with pytest.raises(ValueError, match="no paired examples"):
        paired_comparison([], [])
    with pytest.raises(ValueError, match="3 scores for A but 2 for B"):
        paired_comparison([1, 2, 3], [1, 2])

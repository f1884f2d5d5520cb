"""Losses against hand-computed values."""

from __future__ import annotations

import math

import torch

from speechsum.losses import masked_cross_entropy


def test_masked_cross_entropy_matches_hand_computation():
    # Two positions kept, one masked. Row 0: logits [0, ln 3] → p(target=1) = 3/4.
    # Row 1: uniform over 2 → p = 1/2. Masked position has a huge loss that must not count.
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0], [100.0, -100.0]]])
    targets = torch.tensor([[1, 0, 1]])
    mask = torch.tensor([[1, 1, 0]])
    expected = -(math.log(3 / 4) + math.log(1 / 2)) / 2
    assert masked_cross_entropy(logits, targets, mask).item() == torch.tensor(expected).item()


def test_masked_cross_entropy_weighs_tokens_not_sequences():
    logits = torch.zeros(2, 3, 4)  # uniform: every token costs ln 4
    targets = torch.zeros(2, 3, dtype=torch.long)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    torch.testing.assert_close(masked_cross_entropy(logits, targets, mask), torch.tensor(math.log(4.0)))


def test_masked_cross_entropy_with_nothing_kept_is_zero_and_finite_gradients():
    logits = torch.randn(1, 2, 5, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()

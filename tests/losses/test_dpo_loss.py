"""dpo_loss against hand-computed values (both loss types, label smoothing, rewards)."""

from __future__ import annotations

import math

import pytest
import torch

from speechsum.losses import dpo_loss

# Example 0: π_c=-5, π_r=-7, ref_c=ref_r=-6 → log-ratios +1 / -1. Example 1: everything -4 → 0 / 0.
POLICY_C, POLICY_R = torch.tensor([-5.0, -4.0]), torch.tensor([-7.0, -4.0])
REF_C, REF_R = torch.tensor([-6.0, -4.0]), torch.tensor([-6.0, -4.0])


def test_sigmoid_loss_and_rewards():
    # β = 0.5: logits = 0.5 · (1 − (−1)) = 1 → loss = −log σ(1) = log(1 + e^−1); example 1: log 2.
    losses, chosen, rejected = dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.5)
    torch.testing.assert_close(losses, torch.tensor([math.log1p(math.exp(-1.0)), math.log(2.0)]))
    torch.testing.assert_close(chosen, torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(rejected, torch.tensor([-0.5, 0.0]))


def test_sigmoid_loss_with_label_smoothing():
    # ε = 0.1, logits = 1: 0.9 · log(1 + e^−1) + 0.1 · log(1 + e^1) = 0.413261687518...
    losses, _, _ = dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.5, label_smoothing=0.1)
    expected0 = 0.9 * math.log1p(math.exp(-1.0)) + 0.1 * math.log1p(math.exp(1.0))
    torch.testing.assert_close(losses, torch.tensor([expected0, math.log(2.0)]))


def test_ipo_loss():
    # β = 0.5: logits/β = 2, 1/(2β) = 1 → (2 − 1)² = 1; example 1: (0 − 1)² = 1.
    losses, _, _ = dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.5, loss_type="ipo")
    torch.testing.assert_close(losses, torch.tensor([1.0, 1.0]))
    # β = 0.1: raw margin 2 → (2 − 5)² = 9; margin 0 → 25.
    losses, chosen, _ = dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1, loss_type="ipo")
    torch.testing.assert_close(losses, torch.tensor([9.0, 25.0]))
    torch.testing.assert_close(chosen, torch.tensor([0.1, 0.0]))


def test_gradient_pushes_chosen_up_and_rejected_down_and_rewards_are_detached():
    policy_c = torch.tensor([-5.0], requires_grad=True)
    policy_r = torch.tensor([-5.0], requires_grad=True)
    losses, chosen, rejected = dpo_loss(policy_c, policy_r, torch.tensor([-5.0]), torch.tensor([-5.0]))
    losses.sum().backward()
    # d/dπ_c of −log σ(β(π_c − π_r)) at 0 = −β/2
    torch.testing.assert_close(policy_c.grad, torch.tensor([-0.05]))
    torch.testing.assert_close(policy_r.grad, torch.tensor([0.05]))
    assert not chosen.requires_grad and not rejected.requires_grad


def test_unknown_loss_type_is_an_error():
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, loss_type="hinge-ish")

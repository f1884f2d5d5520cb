"""KD losses against hand-computed values (tiny vocabularies)."""

from __future__ import annotations

import math

import pytest
import torch

from speechsum.losses import (
    forward_kl,
    generalized_jsd_loss,
    reverse_kl,
    sampled_token_kd_loss,
    topk_tail_jsd_loss,
    topk_tail_log_probs,
)

LN = math.log
# One position, V = 2: student P_s = [1/2, 1/2], teacher P_t = [3/4, 1/4].
STUDENT = torch.tensor([[[0.0, 0.0]]])
TEACHER = torch.tensor([[[LN(3.0), 0.0]]])
FORWARD = 3 / 4 * LN((3 / 4) / (1 / 2)) + 1 / 4 * LN((1 / 4) / (1 / 2))  # KL(P_t ‖ P_s)
REVERSE = 1 / 2 * LN((1 / 2) / (3 / 4)) + 1 / 2 * LN((1 / 2) / (1 / 4))  # KL(P_s ‖ P_t)


def close(value: torch.Tensor, expected: float) -> None:
    torch.testing.assert_close(value, torch.tensor(expected), rtol=1e-6, atol=1e-7)


def test_kl_helpers_follow_the_stated_convention():
    close(forward_kl(STUDENT, TEACHER), FORWARD)
    close(reverse_kl(STUDENT, TEACHER), REVERSE)
    assert abs(FORWARD - REVERSE) > 1e-3  # the two directions differ here, so a swap would fail


@pytest.mark.parametrize(
    "beta, expected",
    [
        # M = [5/8, 3/8]
        (0.5, 0.5 * (3 / 4 * LN(6 / 5) + 1 / 4 * LN(2 / 3)) + 0.5 * (1 / 2 * LN(4 / 5) + 1 / 2 * LN(4 / 3))),
        # M = 0.25 P_t + 0.75 P_s = [9/16, 7/16]
        (0.25, 0.25 * (3 / 4 * LN(4 / 3) + 1 / 4 * LN(4 / 7)) + 0.75 * (1 / 2 * LN(8 / 9) + 1 / 2 * LN(8 / 7))),
        (0.0, FORWARD),
        (1.0, REVERSE),
    ],
)
def test_generalized_jsd_hand_computed(beta, expected):
    close(generalized_jsd_loss(STUDENT, TEACHER, beta=beta), expected)


def test_beta_end_points_equal_the_kl_helpers_on_random_logits():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 7, generator=generator), torch.randn(2, 3, 7, generator=generator)
    torch.testing.assert_close(generalized_jsd_loss(student, teacher, beta=0.0), forward_kl(student, teacher))
    torch.testing.assert_close(generalized_jsd_loss(student, teacher, beta=1.0), reverse_kl(student, teacher))
    manual = (teacher.softmax(-1) * (teacher.log_softmax(-1) - student.log_softmax(-1))).sum() / 6
    torch.testing.assert_close(forward_kl(student, teacher), manual)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_zero_for_identical_distributions(beta):
    logits = torch.randn(2, 4, 9)
    assert generalized_jsd_loss(logits, logits.clone(), beta=beta).item() == pytest.approx(0.0, abs=1e-6)
    assert generalized_jsd_loss(logits, logits + 3.0, beta=beta).item() == pytest.approx(0.0, abs=1e-6)


def test_masking_and_reductions():
    # Position 0 is STUDENT/TEACHER; position 1 disagrees wildly but is masked with -100.
    student = torch.cat([STUDENT, torch.tensor([[[50.0, -50.0]]])], dim=1)
    teacher = torch.cat([TEACHER, torch.tensor([[[-50.0, 50.0]]])], dim=1)
    labels = torch.tensor([[1, -100]])
    close(forward_kl(student, teacher, labels), FORWARD)
    close(forward_kl(student, teacher, labels, reduction="sum"), FORWARD)
    close(forward_kl(student, teacher, labels, reduction="mean"), FORWARD / 2)  # one position, V = 2
    elementwise = forward_kl(student, teacher, labels, reduction="none")
    assert elementwise.shape == (1, 2, 2) and elementwise[0, 1].abs().sum() == 0
    close(elementwise.sum(), FORWARD)
    nothing = forward_kl(student, teacher, torch.full((1, 2), -100))
    assert nothing.item() == 0.0
    with pytest.raises(ValueError, match="reduction"):
        forward_kl(student, teacher, reduction="avg")
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd_loss(student, teacher, beta=1.5)


def test_temperature_divides_both_logits():
    # T = 2 turns logits [0, 2 ln 3] into [0, ln 3]: the same pair of distributions as above.
    close(forward_kl(STUDENT * 2, TEACHER * 2, temperature=2.0), FORWARD)
    close(reverse_kl(STUDENT * 2, TEACHER * 2, temperature=2.0), REVERSE)
    assert forward_kl(STUDENT, TEACHER, temperature=2.0).item() < FORWARD  # flatter → closer


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_gradients_are_finite_for_extreme_logits(beta):
    student = torch.tensor([[[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4]]], requires_grad=True)
    teacher = torch.tensor([[[-1e4, 1e4, 0.0], [-1e4, 1e4, -1e4]]])
    loss = generalized_jsd_loss(student, teacher, beta=beta)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    student.grad = None
    top_ids = teacher.topk(2, -1).indices
    loss = topk_tail_jsd_loss(student, teacher.log_softmax(-1).gather(-1, top_ids), top_ids, beta=beta)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_topk_tail_equals_full_loss_when_k_is_the_vocabulary(beta):
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(2, 3, 6, generator=generator, requires_grad=True)
    teacher = torch.randn(2, 3, 6, generator=generator)
    labels = torch.tensor([[1, 2, -100], [0, -100, -100]])
    teacher_log_probs = teacher.log_softmax(-1)
    order = torch.randperm(6, generator=generator).expand(2, 3, 6)  # any slot order
    topk = topk_tail_jsd_loss(student, teacher_log_probs.gather(-1, order), order, labels, beta=beta)
    full = generalized_jsd_loss(student, teacher, labels, beta=beta)
    torch.testing.assert_close(topk, full, rtol=1e-5, atol=1e-6)
    (grad_topk,) = torch.autograd.grad(topk, student)
    (grad_full,) = torch.autograd.grad(full, student)
    torch.testing.assert_close(grad_topk, grad_full, rtol=1e-4, atol=1e-6)


def test_topk_tail_hand_computed_with_a_tail_bucket_and_empty_slots():
    # V = 3. Teacher P_t = [1/2, 1/4, 1/4], top-1 = id 0 → restricted [1/2 | tail 1/2].
    # Student P_s = [1/4, 1/4, 1/2] → restricted [1/4 | tail 3/4].
    student = torch.tensor([[[0.0, 0.0, LN(2.0)]]])
    teacher_log_probs = torch.tensor([[[LN(0.5)]]])
    ids = torch.tensor([[[0]]])
    expected_forward = 1 / 2 * LN((1 / 2) / (1 / 4)) + 1 / 2 * LN((1 / 2) / (3 / 4))
    expected_reverse = 1 / 4 * LN((1 / 4) / (1 / 2)) + 3 / 4 * LN((3 / 4) / (1 / 2))
    close(topk_tail_jsd_loss(student, teacher_log_probs, ids, beta=0.0), expected_forward)
    close(topk_tail_jsd_loss(student, teacher_log_probs, ids, beta=1.0), expected_reverse)
    s, t = topk_tail_log_probs(student, teacher_log_probs, ids)
    torch.testing.assert_close(s.exp(), torch.tensor([[[0.25, 0.75]]]))
    torch.testing.assert_close(t.exp(), torch.tensor([[[0.5, 0.5]]]))
    # A second, empty slot (id −1) changes nothing.
    padded_lp = torch.tensor([[[LN(0.5), 0.0]]])
    padded_ids = torch.tensor([[[0, -1]]])
    close(topk_tail_jsd_loss(student, padded_lp, padded_ids, beta=0.0), expected_forward)
    with pytest.raises(ValueError, match="temperature"):
        topk_tail_jsd_loss(student, teacher_log_probs, ids, temperature=2.0)


def test_sampled_token_loss_value_and_gradient():
    # log P_s = [ln 1/2, ln 1/4], log P_t = [ln 1/4, ln 1/2]: rewards [−ln 2, ln 2];
    # loss = −(ln2·ln2 − 2 ln2·ln2)/2 = (ln 2)² / 2; d loss / d log P_s = −reward / 2.
    student = torch.tensor([[LN(0.5), LN(0.25), 0.0]], requires_grad=True)
    teacher = torch.tensor([[LN(0.25), LN(0.5), -30.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss = sampled_token_kd_loss(student, teacher, mask)
    close(loss, LN(2.0) ** 2 / 2)
    loss.backward()
    torch.testing.assert_close(student.grad, torch.tensor([[LN(2.0) / 2, -LN(2.0) / 2, 0.0]]))
    assert sampled_token_kd_loss(student, teacher, torch.zeros(1, 3)).item() == 0.0


def test_sampled_token_gradient_estimates_the_reverse_kl_gradient():
    # Over many samples y ~ P_s, the estimator's gradient averages to ∇ KL(P_s ‖ P_t).
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, generator=generator, requires_grad=True)
    teacher = torch.randn(5, generator=generator).log_softmax(-1)
    (exact,) = torch.autograd.grad(reverse_kl(logits[None, None], teacher[None, None]), logits)
    samples = torch.multinomial(logits.detach().softmax(-1), 200_000, replacement=True, generator=generator)
    student_lp = logits.log_softmax(-1)[samples][None]
    loss = sampled_token_kd_loss(student_lp, teacher[samples][None], torch.ones_like(student_lp))
    (estimate,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0.05)


def test_bf16_logits_are_computed_in_float32():
    student, teacher = STUDENT.bfloat16(), TEACHER.bfloat16()
    loss = forward_kl(student, teacher)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, torch.tensor(FORWARD), rtol=1e-2, atol=1e-3)

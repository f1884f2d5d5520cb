"""Fast loss paths against their plain references: the fused generalized-JSD of the KD step (value
and student gradient vs autograd through the elementwise terms) and the chunked token log-probs of
every cross-entropy (bit for bit vs autograd through a float32 copy of the logits)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.text_lm_speed import autograd_token_log_probs  # the formula before the chunked function
from speechsum.losses import chunks, generalized_jsd_loss, token_log_probs
from speechsum.losses.kd import _jsd_terms, _reduce_kd


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean"])
def test_fused_jsd_matches_autograd_reference(beta, temperature, reduction):
    generator = torch.Generator().manual_seed(0)
    vocab = 300_000 // 15 + 7  # more than one chunk of rows: the chunk loop is exercised
    student = (torch.randn(3, 5, vocab, generator=generator) * 3).requires_grad_()
    teacher = torch.randn(3, 5, vocab, generator=generator) * 3
    labels = torch.randint(0, vocab, (3, 5), generator=generator)
    labels[1, 2:] = -100
    fused = generalized_jsd_loss(student, teacher, labels, beta, temperature, reduction)
    (fused_grad,) = torch.autograd.grad(fused, student)
    terms = _jsd_terms((student / temperature).log_softmax(-1), (teacher / temperature).log_softmax(-1), beta)
    reference = _reduce_kd(terms, labels, reduction)
    (reference_grad,) = torch.autograd.grad(reference, student)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fused_grad, reference_grad, rtol=1e-4, atol=1e-7)  # AVX2's exp/log: 7e-8 apart
    assert fused_grad[1, 2:].abs().sum() == 0  # masked positions get no gradient


def test_fused_jsd_with_minus_infinity_logits():
    student = torch.tensor([[[0.0, -float("inf"), 1.0]]], requires_grad=True)
    teacher = torch.tensor([[[-float("inf"), 0.0, 1.0]]])
    # 0 < beta < 1: the mixture covers both supports, so value and gradient are finite and exact
    loss = generalized_jsd_loss(student, teacher, beta=0.5)
    (grad,) = torch.autograd.grad(loss, student)
    reference = _reduce_kd(_jsd_terms(student.log_softmax(-1), teacher.log_softmax(-1), 0.5), None, "batchmean")
    (reference_grad,) = torch.autograd.grad(reference, student)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad[..., [0, 2]], reference_grad[..., [0, 2]])
    assert grad[0, 0, 1] == 0  # an impossible token gets no gradient
    # beta = 0 / 1 are KL(P_t || P_s) / KL(P_s || P_t): each puts mass where the other has none -> inf
    for beta in (0.0, 1.0):
        assert generalized_jsd_loss(student, teacher, beta=beta).item() == float("inf")
    # a masked row never contributes, whatever its logits
    labels = torch.tensor([[-100]])
    for beta in (0.0, 0.5, 1.0):
        masked = generalized_jsd_loss(student, teacher, labels, beta=beta)
        (masked_grad,) = torch.autograd.grad(masked, student)
        assert masked.item() == 0.0 and (masked_grad == 0).all()


def values_and_grads(function, logits, token_ids, weights):
    logits = logits.detach().requires_grad_()
    values = function(logits[:, :-1], token_ids)  # a slice, as the losses take it: not contiguous
    (grad,) = torch.autograd.grad((values * weights).sum(), logits)
    return values, grad


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_chunked_token_log_probs_equal_autograd_bit_for_bit(dtype, monkeypatch):
    monkeypatch.setattr(chunks, "FUSED_CHUNK", 3 * 97)  # 3 rows per chunk: chunks cross row blocks unevenly
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, 9, 97, generator=generator) * 4).to(dtype)
    logits[0, 2, 5:40] = -float("inf")  # suppressed ids, as decoding and masked heads give
    token_ids = torch.randint(0, 97, (4, 8), generator=generator)
    weights = torch.randn(4, 8, generator=generator)
    weights[1, 3:] = 0.0
    values, grad = values_and_grads(token_log_probs, logits, token_ids, weights)
    reference, reference_grad = values_and_grads(autograd_token_log_probs, logits, token_ids, weights)
    assert values.dtype == torch.float32 and grad.dtype == dtype
    assert torch.equal(values, reference)
    assert torch.equal(grad, reference_grad)
    assert grad[:, -1].abs().sum() == 0 and grad[1, 3:8].abs().sum() == 0


def test_chunked_token_log_probs_hand_computed_and_leave_float32_logits_untouched():
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 3.0, 3.0]], requires_grad=True)
    before = logits.detach().clone()
    values = token_log_probs(logits, torch.tensor([2, 0]))
    log_norm = torch.log(torch.tensor(1.0) + torch.e + torch.e**2)
    torch.testing.assert_close(values, torch.stack([2.0 - log_norm, -torch.log(torch.tensor(3.0))]))
    (grad,) = torch.autograd.grad(values.sum(), logits)
    softmax = before.softmax(-1)
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]) - softmax)
    assert torch.equal(logits.detach(), before)  # the float32 rows are copied before the in-place backward
    with torch.no_grad():  # evaluation: no graph, the same values
        assert torch.equal(token_log_probs(logits, torch.tensor([2, 0])), values.detach())
    one_row = token_log_probs(before[0], torch.tensor(2))  # any leading shape, even none
    assert one_row.shape == () and one_row == values[0]

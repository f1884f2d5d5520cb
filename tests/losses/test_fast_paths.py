"""The fast path of the KD step against its plain reference: the fused generalized-JSD (value and
student gradient vs autograd through the elementwise terms)."""

from __future__ import annotations

import pytest
import torch

from speechsum.losses import _jsd_terms, _reduce_kd, generalized_jsd_loss


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
    torch.testing.assert_close(fused_grad, reference_grad, rtol=1e-4, atol=1e-8)
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

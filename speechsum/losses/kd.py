"""Knowledge-distillation losses (stage 2): the KL family, generalized JSD, top-k + tail, sampled-token.

Conventions for every KD loss here. P_t = teacher, P_s = student distribution over the
vocabulary at one response position, both computed from ``logits / temperature``:
  forward KL  = KL(P_t ‖ P_s) = Σ_v P_t(v) · (log P_t(v) − log P_s(v))   (mode covering)
  reverse KL  = KL(P_s ‖ P_t) = Σ_v P_s(v) · (log P_s(v) − log P_t(v))   (mode seeking)
``labels`` (B, R): positions with ``labels == -100`` carry no loss (None: all positions count).
Reductions of the elementwise terms ``(B, R, V)``:
  "batchmean": sum over kept positions and vocabulary / number of kept positions (1 if none)
  "sum": the total;  "mean": the total / (kept positions · V);  "none": ``(B, R, V)``, 0 where masked.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from speechsum.losses.chunks import rows_per_chunk

IGNORE_INDEX = -100
KD_REDUCTIONS = ("batchmean", "sum", "mean", "none")
TAIL_FLOOR = 1e-6  # least tail mass of a top-k teacher (about float32 resolution of Σ top-k probs)


def _kl_terms(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Elementwise ``p · (log p − log q)`` with ``0 · log 0 = 0`` (no NaN in value or gradient)."""
    p = log_p.exp()
    diff = log_p - log_q
    return p * torch.where(p > 0, diff, torch.zeros_like(diff))


def _reduce_kd(terms: Tensor, labels: Tensor | None, reduction: str) -> Tensor:
    """Apply the label mask and one of :data:`KD_REDUCTIONS` to elementwise terms ``(B, R, V)``
    (masked positions are exactly 0, whatever their terms)."""
    if reduction not in KD_REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; use one of {KD_REDUCTIONS}")
    kept = _kept_positions(terms, labels)
    terms = torch.where(kept.bool().unsqueeze(-1), terms, 0.0)
    if reduction == "none":
        return terms
    return terms.sum() / _reduction_divisor(kept, terms.shape[-1], reduction)


def _reduction_divisor(kept: Tensor, vocab: int, reduction: str) -> Tensor | float:
    """What a masked sum is divided by: 1 (sum), kept positions (batchmean), kept positions × V
    (mean); at least 1, so an all-masked batch gives 0."""
    if reduction == "sum":
        return 1.0
    count = kept.sum() if reduction == "batchmean" else kept.sum() * vocab
    return count.clamp(min=1.0)


def _check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")


def _jsd_terms(student_log_probs: Tensor, teacher_log_probs: Tensor, beta: float) -> Tensor:
    """Elementwise generalized JSD (see :func:`generalized_jsd_loss`) from log-probabilities."""
    _check_beta(beta)
    if beta == 0.0:
        return _kl_terms(teacher_log_probs, student_log_probs)  # forward KL(P_t ‖ P_s)
    if beta == 1.0:
        return _kl_terms(student_log_probs, teacher_log_probs)  # reverse KL(P_s ‖ P_t)
    # log M = log(β·P_t + (1−β)·P_s), computed as a log-sum-exp of the two weighted log-probs.
    mixture = torch.logaddexp(teacher_log_probs + math.log(beta), student_log_probs + math.log1p(-beta))
    return beta * _kl_terms(teacher_log_probs, mixture) + (1.0 - beta) * _kl_terms(student_log_probs, mixture)


def generalized_jsd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    reduction: str = "batchmean",
) -> Tensor:
    """Generalized Jensen–Shannon divergence of GKD (Agarwal et al. 2024, Eq. 1), per position:

        P_s = softmax(student_logits / T),  P_t = softmax(teacher_logits / T)
        M   = β · P_t + (1 − β) · P_s
        JSD(β) = β · KL(P_t ‖ M) + (1 − β) · KL(P_s ‖ M)

    The mixture formula tends to 0 at both ends, so β = 0 and β = 1 name the end points, as in GKD:
    β = 0 is exactly forward KL(P_t ‖ P_s), β = 1 exactly reverse KL(P_s ‖ P_t). β = 0.5 is the
    symmetric JSD (at most log 2 per position). Logits ``(B, R, V)`` (any float dtype; computed in
    float32, in log space: log M is a ``logaddexp``, never a log of a sum of probabilities). See
    the module's conventions for ``labels`` and ``reduction``.
    """
    if reduction in ("batchmean", "sum", "mean") and not teacher_logits.requires_grad:
        _check_beta(beta)
        kept = _kept_positions(student_logits, labels)
        weights = kept / _reduction_divisor(kept, student_logits.shape[-1], reduction)
        return _FusedJSD.apply(student_logits, teacher_logits, weights, beta, temperature)
    student = (student_logits.float() / temperature).log_softmax(-1)
    teacher = (teacher_logits.float() / temperature).log_softmax(-1)
    return _reduce_kd(_jsd_terms(student, teacher, beta), labels, reduction)


def _kept_positions(logits: Tensor, labels: Tensor | None) -> Tensor:
    """``(B, R)`` float32: 1 where a position carries loss (``labels != -100``), else 0."""
    if labels is None:
        return torch.ones(logits.shape[:-1], device=logits.device)
    return (labels != IGNORE_INDEX).float()


class _FusedJSD(torch.autograd.Function):
    """``Σ_{b,r} weights[b,r] · JSD_β(P_s, P_t)[b,r]`` with its gradient for the student only,
    computed in row chunks (each chunk's temporaries stay in cache; no (B, R, V) intermediate
    survives except the gradient). Same terms as :func:`_jsd_terms` (``0 · log 0 = 0``). With
    ``s = log P_s``, ``M = β P_t + (1 − β) P_s`` and ``u`` the student logits, the gradient is

        ∂JSD/∂u = (c / T) · (P_s ⊙ g − P_s · Σ_v P_s g),   c = 1 − β, g = s − log M   (0 < β < 1)
        β = 1 (reverse KL): c = 1, g = s − log P_t;   β = 0 (forward KL): (P_s − P_t) / T,

    computed in the forward pass (only when the student needs a gradient) and scaled by the
    incoming gradient in the backward pass."""

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, weights, beta: float, temperature: float):
        vocab = student_logits.shape[-1]
        student_rows = student_logits.reshape(-1, vocab)
        teacher_rows = teacher_logits.reshape(-1, vocab)
        row_weights = weights.reshape(-1).to(torch.float32)
        need_grad = ctx.needs_input_grad[0]
        grad = torch.empty(student_rows.shape, dtype=torch.float32, device=student_rows.device) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=student_rows.device)
        step = rows_per_chunk(vocab, student_rows.device)
        for start in range(0, student_rows.shape[0], step):
            rows = slice(start, start + step)
            w = row_weights[rows]
            kept = (w > 0).unsqueeze(-1)  # masked rows get exactly zero gradient, even at ±inf logits
            s = (student_rows[rows].float() / temperature).log_softmax(-1)
            t = (teacher_rows[rows].float() / temperature).log_softmax(-1)
            p_s = s.exp()
            if beta == 0.0:  # forward KL(P_t ‖ P_s)
                p_t = t.exp()
                per_row = _guarded_product(p_t, t - s).sum(-1)
                if need_grad:
                    grad[rows] = torch.where(kept, (p_s - p_t).mul_((w / temperature).unsqueeze(-1)), 0.0)
            else:
                if beta == 1.0:  # reverse KL(P_s ‖ P_t)
                    log_m, c = t, 1.0
                else:
                    log_m, c = torch.logaddexp(t + math.log(beta), s + math.log1p(-beta)), 1.0 - beta
                student_part = _guarded_product(p_s, s - log_m)  # P_s ⊙ g
                per_row = student_part.sum(-1)
                if beta != 1.0:
                    per_row = _guarded_product(t.exp(), t - log_m).sum(-1).mul_(beta).add_(per_row, alpha=c)
                if need_grad:  # in place: student_part and p_s are not needed after this
                    row_sum = student_part.sum(-1, keepdim=True)
                    row_grad = student_part.sub_(p_s.mul_(row_sum)).mul_((w * (c / temperature)).unsqueeze(-1))
                    grad[rows] = torch.where(kept, row_grad, 0.0)
            total = total + torch.where(w > 0, per_row * w, torch.zeros_like(per_row)).sum()
        if need_grad:
            ctx.save_for_backward(grad)
            ctx.input_shape, ctx.input_dtype = student_logits.shape, student_logits.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return (grad * grad_output).reshape(ctx.input_shape).to(ctx.input_dtype), None, None, None, None


def _guarded_product(p: Tensor, log_ratio: Tensor) -> Tensor:
    """``p · log_ratio`` with 0 where ``p == 0`` (so ``0 · (−∞)`` is 0, not NaN)."""
    return torch.where(p > 0, p * log_ratio, torch.zeros((), dtype=p.dtype, device=p.device))


def forward_kl(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None,
    temperature: float = 1.0, reduction: str = "batchmean",
) -> Tensor:
    """Forward KL(P_t ‖ P_s) = Σ_v P_t(v) (log P_t(v) − log P_s(v)) per position (= JSD with β = 0)."""
    return generalized_jsd_loss(student_logits, teacher_logits, labels, 0.0, temperature, reduction)


def reverse_kl(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None,
    temperature: float = 1.0, reduction: str = "batchmean",
) -> Tensor:
    """Reverse KL(P_s ‖ P_t) = Σ_v P_s(v) (log P_s(v) − log P_t(v)) per position (= JSD with β = 1)."""
    return generalized_jsd_loss(student_logits, teacher_logits, labels, 1.0, temperature, reduction)


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 − exp(x))`` for ``x ≤ 0``, accurate at both ends; −inf where ``x ≥ 0``."""
    x = x.clamp(max=0.0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def topk_tail_log_probs(
    student_logits: Tensor, teacher_topk_log_probs: Tensor, teacher_topk_ids: Tensor
) -> tuple[Tensor, Tensor]:
    """Both distributions restricted to the teacher's top-k ids plus one tail bucket.

    ``teacher_topk_log_probs`` / ``teacher_topk_ids`` ``(B, R, K)``: the teacher's log-probs
    (full-vocabulary, temperature 1) of its K most likely ids (distinct); an id of −1 marks an
    empty slot. Returns ``(student, teacher)`` log-probs ``(B, R, K + 1)``: slot k < K is id
    ``teacher_topk_ids[..., k]``, slot K the tail = every other id,
        teacher tail = log max(1 − Σ_k P_t(id_k), TAIL_FLOOR),   student tail = log Σ_{v ∉ top-k} P_s(v)
    (the student's as a log-sum-exp over the other ids: exact, no cancellation). When the K ids
    cover the whole vocabulary both tails are empty (log 0). The floor stands for mass the
    teacher's float32 log-probs cannot resolve: without it a student with mass where the
    teacher's top-k sums to 1.0 in float32 would get an infinite reverse KL.
    """
    student = student_logits.float().log_softmax(-1)
    valid = teacher_topk_ids >= 0
    ids = teacher_topk_ids.clamp(min=0)
    student_topk = student.gather(-1, ids).masked_fill(~valid, -math.inf)
    in_topk = torch.zeros_like(student).scatter_add(-1, ids, valid.to(student.dtype)) > 0  # −1 slots add 0
    has_tail = (~in_topk).any(-1, keepdim=True)
    # The log-sum-exp runs on finfo.min instead of −inf so that its gradient stays finite where
    # the tail is empty; those rows then take a constant −inf.
    rest = student.masked_fill(in_topk, torch.finfo(student.dtype).min).logsumexp(-1, keepdim=True)
    student_tail = torch.where(has_tail, rest, torch.full_like(rest, -math.inf))
    teacher_topk = teacher_topk_log_probs.float().masked_fill(~valid, -math.inf)
    teacher_tail = _log1mexp(teacher_topk.logsumexp(-1, keepdim=True)).clamp(min=math.log(TAIL_FLOOR))
    teacher_tail = torch.where(has_tail, teacher_tail, torch.full_like(teacher_tail, -math.inf))
    return torch.cat([student_topk, student_tail], -1), torch.cat([teacher_topk, teacher_tail], -1)


def topk_tail_jsd_loss(
    student_logits: Tensor,
    teacher_topk_log_probs: Tensor,
    teacher_topk_ids: Tensor,
    labels: Tensor | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    reduction: str = "batchmean",
) -> Tensor:
    """Generalized JSD (Eq. 1 of :func:`generalized_jsd_loss`, β = 0 / 1 the forward / reverse KL)
    between the student and a teacher that returned only its top-k log-probs per position
    (e.g. an OpenAI-compatible server's ``logprobs=k``): both distributions are first restricted
    to the teacher's K ids plus one tail bucket holding the remaining mass
    (:func:`topk_tail_log_probs`). With K = V the tail is empty and this equals the full loss.
    By the data-processing inequality the restricted divergence never exceeds the full one.
    "mean" divides by K + 1 slots. ``temperature`` must be 1: a tempered tail cannot be
    recovered from top-k log-probs alone.
    """
    if temperature != 1.0:
        raise ValueError("topk_tail_jsd_loss needs temperature 1 (the teacher's tail mass is known only at T = 1)")
    student, teacher = topk_tail_log_probs(student_logits, teacher_topk_log_probs, teacher_topk_ids)
    return _reduce_kd(_jsd_terms(student, teacher, beta), labels, reduction)


def sampled_token_kd_loss(student_log_probs: Tensor, teacher_log_probs: Tensor, mask: Tensor) -> Tensor:
    """Reverse KL through the sampled tokens only, policy-gradient style (the paper's Eq. 2 flavour).

    ``student_log_probs`` / ``teacher_log_probs`` ``(B, R)``: log P_s(y_j) and log P_t(y_j) of
    the tokens y_j the student sampled (with temperature 1, from P_s itself), ``mask`` (B, R):

        reward_j = log P_t(y_j) − log P_s(y_j)                 (detached: a constant)
        loss     = − Σ_j mask_j · reward_j · log P_s(y_j) / max(1, Σ_j mask_j)

    Since E_{y∼P_s}[∇ log P_s(y)] = 0, E_{y∼P_s}[−reward(y) · ∇ log P_s(y)] = ∇ KL(P_s ‖ P_t): the
    gradient is an unbiased estimate of the reverse-KL gradient at each position (prefixes held
    fixed; the effect of a token on later positions is not credited). The teacher's probability
    of the sampled token acts as the reward, so a teacher that returns only the sampled token's
    log-prob suffices. The loss value is not the KL (log the KL separately).
    """
    student = student_log_probs.float()
    reward = (teacher_log_probs.float() - student).detach()
    mask = mask.to(student.dtype)
    return -(reward * student * mask).sum() / mask.sum().clamp(min=1.0)

"""Token log-probs, cross-entropy and masked means. Shapes: B batch, R response positions, V vocabulary."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from speechsum.losses.chunks import float_chunks


def token_log_probs(logits: Tensor, token_ids: Tensor) -> Tensor:
    """``log softmax(logits)[..., token_ids]``: ``(…, V)`` logits (any float dtype), ``(…)`` ids →
    ``(…)`` float32, as ``logits[id] − logsumexp(logits)`` in float32, computed in row chunks
    (:class:`_FusedTokenLogProbs`): no float32 copy of ``logits`` is made or kept for the backward."""
    return _FusedTokenLogProbs.apply(logits, token_ids)


def masked_cross_entropy(logits: Tensor, target_ids: Tensor, mask: Tensor) -> Tensor:
    """Token-level cross-entropy over the positions where ``mask`` is 1.

    loss = − Σ_{b,j} mask[b,j] · log softmax(logits[b,j])[target_ids[b,j]]  /  max(1, Σ mask)

    ``logits`` (B, R, V), ``target_ids`` (B, R), ``mask`` (B, R). Each response token weighs the
    same, whatever the length of its response. Computed in float32.
    """
    return masked_mean(-token_log_probs(logits, target_ids), mask)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """``Σ mask · values / max(1, Σ mask)``: the mean over the kept positions (0 when none is)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


class _FusedTokenLogProbs(torch.autograd.Function):
    """``log p[id] = x[id] − logsumexp(x)`` per row of float32 ``x = logits``, with the gradient

        ∂ log p[id] / ∂x = onehot(id) − softmax(x),

    each chunk of rows cast to float32 in cache (:data:`speechsum.losses.chunks.FUSED_CHUNK`). The same float32 operations
    as autograd through ``logits.float()`` (``logsumexp`` per row, ``−g · exp(x − lse)``, then ``+ g``
    at ``id``), so values and gradients equal it bit for bit; only ``logits`` and ``lse`` are kept."""

    @staticmethod
    def forward(ctx, logits: Tensor, token_ids: Tensor) -> Tensor:
        ids = token_ids.reshape(-1)
        log_probs = torch.empty(ids.shape, dtype=torch.float32, device=logits.device)
        log_norms = torch.empty_like(log_probs)
        for span, rows in float_chunks(logits):
            log_norms[span] = rows.logsumexp(-1)
            log_probs[span] = rows.gather(-1, ids[span, None]).squeeze(-1)
        ctx.save_for_backward(logits, ids, log_norms)
        return log_probs.sub_(log_norms).reshape(token_ids.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        logits, ids, log_norms = ctx.saved_tensors
        weights = grad_output.reshape(-1, 1).float()
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        grad_rows = grad.view(-1, logits.shape[-1])
        for span, rows in float_chunks(logits):
            rows.sub_(log_norms[span, None]).exp_().mul_(weights[span].neg())
            grad_rows[span] = rows.scatter_add_(-1, ids[span, None], weights[span])
        return grad, None

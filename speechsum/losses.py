"""Losses as pure tensor functions. Shapes: B batch, R response positions, V vocabulary."""

from __future__ import annotations

from torch import Tensor


def masked_cross_entropy(logits: Tensor, target_ids: Tensor, mask: Tensor) -> Tensor:
    """Token-level cross-entropy over the positions where ``mask`` is 1.

    loss = − Σ_{b,j} mask[b,j] · log softmax(logits[b,j])[target_ids[b,j]]  /  max(1, Σ mask)

    ``logits`` (B, R, V), ``target_ids`` (B, R), ``mask`` (B, R). Each response token weighs the
    same, whatever the length of its response. Computed in float32.
    """
    log_probs = logits.float().log_softmax(-1)
    token_log_probs = log_probs.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
    mask = mask.to(token_log_probs.dtype)
    return -(token_log_probs * mask).sum() / mask.sum().clamp(min=1.0)

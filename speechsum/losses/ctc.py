"""CTC loss for speech–text alignment (stage 0)."""

from __future__ import annotations

import torch
from torch import Tensor


def ctc_alignment_loss(
    logits: Tensor, frame_counts: Tensor, targets: list[list[int]], blank: int
) -> tuple[Tensor, Tensor]:
    """CTC loss per target token, for speech–text alignment (stage 0).

    loss = Σ_b −log p_CTC(targets[b] | logits[b, :frame_counts[b]])  /  Σ_b |targets[b]|

    over the feasible rows only; p_CTC sums over every blank-augmented path that collapses to the
    target (Graves et al. 2006). ``logits`` (B, T, C) with blank class ``blank``. A row is
    infeasible when its frames cannot hold its target: ``frame_counts[b] < |targets[b]| +`` (number
    of adjacent repeated tokens), or when its target is empty (nothing to align). Returns ``(loss, number of infeasible rows)``; loss is 0 (with a
    graph) when no row is feasible or no target has tokens. Computed in float32.
    """
    lengths = torch.tensor([len(t) for t in targets], device=logits.device)
    repeats = torch.tensor([sum(a == b for a, b in zip(t, t[1:])) for t in targets], device=logits.device)
    feasible = (frame_counts.to(logits.device) >= lengths + repeats) & (lengths > 0)
    if not bool(feasible.any()):
        return logits.sum() * 0.0, (~feasible).sum()
    rows = feasible.nonzero().squeeze(-1)
    flat_targets = torch.tensor([tok for b in rows.tolist() for tok in targets[b]], device=logits.device)
    if len(rows) < len(logits):  # an index copy of (B', T, C) and its backward: only when rows are left out
        logits = logits[rows]
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B', C)
    total = torch.nn.functional.ctc_loss(
        log_probs, flat_targets, frame_counts[rows], lengths[rows], blank=blank, reduction="sum"
    )
    return total / lengths[rows].sum(), (~feasible).sum()

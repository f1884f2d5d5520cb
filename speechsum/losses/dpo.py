"""The DPO loss (stage 3)."""

from __future__ import annotations

from torch import Tensor


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Direct Preference Optimisation (Rafailov et al. 2023), per example; inputs are ``(B,)``
    sequence log-probs (sums over response tokens) of the chosen (c) and rejected (r) response
    under the policy (π) and the frozen reference (ref).

        logits  = β · ((π_c − ref_c) − (π_r − ref_r))
        sigmoid : loss = −(1 − ε) · log σ(logits) − ε · log σ(−logits)   (ε = label_smoothing,
                  the conservative DPO of noisy preferences; ε = 0 is plain DPO)
        ipo     : loss = (logits / β − 1 / (2β))²                         (Azar et al. 2023)
        rewards : chosen = β · (π_c − ref_c), rejected = β · (π_r − ref_r)  (detached)

    Returns ``(losses, chosen_rewards, rejected_rewards)``, each ``(B,)`` float32; the caller
    takes the mean of ``losses``.
    """
    from torch.nn.functional import logsigmoid

    chosen_logratios = policy_chosen_logps.float() - ref_chosen_logps.float()
    rejected_logratios = policy_rejected_logps.float() - ref_rejected_logps.float()
    logits = beta * (chosen_logratios - rejected_logratios)
    if loss_type == "sigmoid":
        losses = -(1.0 - label_smoothing) * logsigmoid(logits) - label_smoothing * logsigmoid(-logits)
    elif loss_type == "ipo":
        losses = (logits / beta - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"dpo_loss: unknown loss_type {loss_type!r} (use 'sigmoid' or 'ipo')")
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()

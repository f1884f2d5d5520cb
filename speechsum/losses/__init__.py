"""Losses as pure tensor functions, one module per stage's family. Shapes: B batch, R response
positions, V vocabulary.

- :mod:`~speechsum.losses.token`: token log-probs (row chunks, exact), masked cross-entropy and mean;
- :mod:`~speechsum.losses.ctc`: the CTC alignment loss (stage 0);
- :mod:`~speechsum.losses.kd`: the KL family, generalized JSD, top-k + tail, sampled-token (stage 2);
- :mod:`~speechsum.losses.dpo`: DPO and IPO (stage 3);
- :mod:`~speechsum.losses.chunks`: the row chunks the fused losses work in.
"""

from speechsum.losses.ctc import ctc_alignment_loss
from speechsum.losses.dpo import dpo_loss
from speechsum.losses.kd import (
    IGNORE_INDEX,
    KD_REDUCTIONS,
    TAIL_FLOOR,
    forward_kl,
    generalized_jsd_loss,
    reverse_kl,
    sampled_token_kd_loss,
    topk_tail_jsd_loss,
    topk_tail_log_probs,
)
from speechsum.losses.token import masked_cross_entropy, masked_mean, token_log_probs

__all__ = [
    "IGNORE_INDEX",
    "KD_REDUCTIONS",
    "TAIL_FLOOR",
    "ctc_alignment_loss",
    "dpo_loss",
    "forward_kl",
    "generalized_jsd_loss",
    "masked_cross_entropy",
    "masked_mean",
    "reverse_kl",
    "sampled_token_kd_loss",
    "token_log_probs",
    "topk_tail_jsd_loss",
    "topk_tail_log_probs",
]

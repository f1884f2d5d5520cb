"""Copy-ready initialisation for small random-init Phi-architecture LMs.

Transformers learn to copy from their context through *induction heads* (Olsson et al., 2022): a
previous-token head in one layer and a matching head in a later one. A from-scratch model a few
million parameters large needs thousands of steps before those circuits form, so the benchmark's
text LMs, trained for minutes on a CPU, never learned to copy names and numbers from the transcript.
:func:`init_copy_circuits` writes the circuits into the weights before training; training then
refines them like any other weight.

The residual stream (``hidden_size`` = D) is split into blocks of ``k`` dims:

* ``E`` = [0, k): the current token's embedding (token ``t`` → unit vector ``c_t``);
* ``P`` = [k, 2k): the *previous* token's embedding, written by layer 0's previous-token head;
* ``O`` = [2k, 3k): the *predicted* token, read by ``lm_head`` (row ``t`` = ``s · c_t`` on ``O``);
* the rest is left to training.

Heads (every other head and all MLPs keep the model's default random init):

* layer 0, head 0 — previous-token head: query and key are constant biases on the rotary dims,
  ``z_q = a``, ``z_k = a·e^{iθ}`` per rotary pair, so ``score(i, j) = Σ_p a² cos((i − j − 1) θ_p)``
  peaks at ``j = i − 1``; value/output copy ``E → P``;
* layer 1, head 0 — induction head: query ``E`` (current token), key ``P`` (token before the key's
  position) on the non-rotary dims, so position ``j`` wins iff ``token[j − 1] == token[i]``;
  value/output copy the key's own token ``E → O`` (predict the token that followed last time);
* layers ≥ 2, head 0 — copy heads: value/output ``E → O``, query/key random (learned: *where* to
  copy from), so whatever such a head attends to becomes a candidate next token.

Requires ``model_type == "phi"`` (q/k/v biases, partial rotary, LayerNorm) with
``tie_word_embeddings: false`` and ``qk_layernorm: false`` (a q/k LayerNorm would undo the
hand-set query/key scales).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from transformers import PreTrainedModel


def copy_block_size(hidden_size: int, head_dim: int, rotary_dims: int) -> int:
    """``k``: the size of each of the E, P and O blocks, ``min(head_dim - rotary_dims, hidden_size // 3)``
    (the induction head matches E against P on its non-rotary dims)."""
    return min(head_dim - rotary_dims, hidden_size // 3)


def _orthonormal_rows(rows: int, cols: int, generator: torch.Generator) -> Tensor:
    """``(rows, cols)`` with orthonormal rows (rows ≤ cols) or orthonormal columns (rows > cols)."""
    q, _ = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=generator))
    return q[:rows, :cols] if rows <= cols else q[:rows].contiguous()


@torch.no_grad()
def init_copy_circuits(
    model: PreTrainedModel,
    seed: int = 0,
    prev_token_strength: float = 6.0,
    match_strength: float = 4.0,
    output_scale: float = 4.0,
) -> PreTrainedModel:
    """Write the previous-token, induction and copy heads described in the module docstring.

    ``prev_token_strength`` is ``a`` (per rotary pair, before the 1/√head_dim scaling),
    ``match_strength`` multiplies the induction head's query and key, ``output_scale`` is ``s``
    (logit of a copied token ≈ ``s`` × the O-block value). Returns ``model`` (changed in place).
    """
    config = model.config
    if config.model_type != "phi" or config.tie_word_embeddings or config.qk_layernorm:
        raise ValueError(
            "init_copy_circuits needs a Phi-type LM with tie_word_embeddings: false and qk_layernorm: false"
        )
    base = model.get_decoder()
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    rotary = int(head_dim * config.rope_parameters["partial_rotary_factor"])
    k = copy_block_size(hidden, head_dim, rotary)
    if k < 8 or len(base.layers) < 2:
        raise ValueError(f"need >= 2 layers and >= 8 non-rotary dims per head (got {head_dim - rotary})")
    current, previous, predicted = slice(0, k), slice(k, 2 * k), slice(2 * k, 3 * k)  # blocks E, P, O
    generator = torch.Generator().manual_seed(seed)

    tokens = torch.nn.functional.normalize(torch.randn(config.vocab_size, k, generator=generator), dim=-1)
    embed = base.embed_tokens.weight
    embed.zero_()
    embed[:, current] = math.sqrt(k) * tokens  # ~1 per dim, well above the default init's noise
    model.lm_head.weight.zero_()
    model.lm_head.weight[:, predicted] = output_scale * tokens
    if model.lm_head.bias is not None:
        model.lm_head.bias.zero_()

    def head_rows(layer_idx: int) -> tuple[torch.nn.Module, slice]:
        attention = base.layers[layer_idx].self_attn
        return attention, slice(0, head_dim)  # head 0 occupies the first head_dim q/k/v rows

    def copy_values(attention: torch.nn.Module, rows: slice, source: slice, target: slice) -> None:
        """Value = the ``source`` block (on the head's last k dims), output writes it to ``target``."""
        value_dims = slice(rows.stop - k, rows.stop)
        attention.v_proj.weight[rows] = 0.0
        attention.v_proj.bias[rows] = 0.0
        attention.v_proj.weight[value_dims, source] = torch.eye(k)
        attention.dense.weight[:, rows] = 0.0
        # LayerNorm scales a block of ~1-per-dim values to ~sqrt(D / blocks in use) per dim; undo it
        attention.dense.weight[target, value_dims] = math.sqrt(k / hidden) * torch.eye(k)

    # Layer 0, head 0: attend to position i - 1, copy its E block into P.
    attention, rows = head_rows(0)
    for proj in (attention.q_proj, attention.k_proj):
        proj.weight[rows] = 0.0
        proj.bias[rows] = 0.0
    inv_freq = 1.0 / (config.rope_parameters["rope_theta"] ** (torch.arange(0, rotary, 2).float() / rotary))
    half = rotary // 2
    amplitude = prev_token_strength * math.sqrt(math.sqrt(head_dim))  # a² / √head_dim = strength²
    attention.q_proj.bias[:half] = amplitude
    attention.k_proj.bias[:half] = amplitude * torch.cos(inv_freq)
    attention.k_proj.bias[half:rotary] = amplitude * torch.sin(inv_freq)
    copy_values(attention, rows, source=current, target=previous)

    # Layer 1, head 0: query E (this token) matches key P (the key's previous token); copy E → O.
    attention, rows = head_rows(1)
    match_dims = slice(rotary, rotary + k)
    for proj, block in ((attention.q_proj, current), (attention.k_proj, previous)):
        proj.weight[rows] = 0.0
        proj.bias[rows] = 0.0
        # after LayerNorm E and P each hold ~sqrt(D / 2) per unit vector: score ≈ match_strength² · cos
        scale = match_strength * math.sqrt(math.sqrt(head_dim)) / math.sqrt(hidden / 2)
        proj.weight[match_dims, block] = scale * torch.eye(k)
    copy_values(attention, rows, source=current, target=predicted)

    # Layers >= 2, head 0: learned "where", fixed "what" = copy E → O.
    for layer_idx in range(2, len(base.layers)):
        attention, rows = head_rows(layer_idx)
        copy_values(attention, rows, source=current, target=predicted)
    return model

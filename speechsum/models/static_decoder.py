"""One-token decoding steps of a Hugging Face decoder-only LM over a preallocated KV cache.

HF ``generate`` spends most of a step, at small model sizes, in Python: the logits-processor
chain, ``prepare_inputs_for_generation``, mask construction, cache bookkeeping, one ``nn.Module``
call per projection (three for a LoRA-wrapped one). :class:`StaticCacheDecoder` runs the same
arithmetic with a handful of tensor ops per layer: projections with LoRA merged in and q/k/v (and
gate/up) fused into one matmul, rotary tables computed once for every step, keys and values written
into a cache of fixed length ``prompt + max_new_tokens`` and attended through a boolean mask.

The prompt itself (prefill) still goes through the model's own forward, with a ``DynamicCache``
(:meth:`StaticCacheDecoder.from_prefill` copies it in), so audio encoders, placeholder filling and
padding masks stay the model's own code. :func:`unsupported_reason` says why a model cannot use
this path (then the caller falls back to HF ``generate``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache

from speechsum.utils.cpu_bf16 import cpu_has_native_bf16

# decoder layouts this module reimplements: "parallel" = Phi (attention and MLP on one layer
# norm, summed with the residual); "sequential" = Llama-style (pre-norm attention, then pre-norm MLP)
LAYOUTS = {
    "phi": "parallel",
    "llama": "sequential",
    "qwen2": "sequential",
    "mistral": "sequential",
    "phi3": "sequential",
    "phi4_multimodal": "sequential",
}


MERGE_LIMIT_BYTES = 256 * 2**20  # larger decoders step through their own modules (no weight copy)
# a transposed copy costs a pass over the weight per generate call, and pays only at small sizes: a
# large-vocabulary head (150k x 3072 is 1.8 GB in fp32) keeps F.linear on its own weight
TRANSPOSE_LIMIT_BYTES = 16 * 2**20
Projection = Callable[[Tensor], Tensor]


def find_decoder(model: nn.Module) -> nn.Module | None:
    """The module holding the decoder stack (``layers``, ``rotary_emb``, ``embed_tokens``) of a
    causal LM, also inside a multimodal model (``model.language_model``) or a LoRA-injected one."""
    for module in model.modules():
        if isinstance(getattr(module, "layers", None), nn.ModuleList) and hasattr(module, "rotary_emb"):
            return module
    return None


def rope_length_limit(decoder: nn.Module) -> int | None:
    """Positions below which the rotary tables do not depend on the sequence length (None: no
    limit). Length-dependent scalings (longrope, dynamic NTK) switch tables once a position reaches
    the original context, step by step in ``generate``; the static tables are computed once."""
    if getattr(decoder.rotary_emb, "rope_type", "default") in ("default", "linear"):
        return None
    config = decoder.config
    rope = getattr(config, "rope_parameters", None) or {}
    return (getattr(config, "original_max_position_embeddings", None)
            or rope.get("original_max_position_embeddings") or config.max_position_embeddings)


def unsupported_reason(model: nn.Module, max_position: int = 0) -> str | None:
    """None when :class:`StaticCacheDecoder` reproduces ``model``'s decoding up to position id
    ``max_position`` (also a bound on the cache's slots: prompt width + new tokens), else why not. A
    sliding window wider than that is full attention (Phi-4-mini's and Phi-4-multimodal's 262,144)."""
    decoder = find_decoder(model)
    if decoder is None or model.get_output_embeddings() is None:
        return f"{type(model).__name__}: no decoder stack (layers + rotary_emb) and LM head found"
    config = decoder.config
    limit = rope_length_limit(decoder)
    if limit is not None and max_position >= limit:
        return f"{decoder.rotary_emb.rope_type} rotary scaling switches at position {limit}, within this generation"
    if config.model_type not in LAYOUTS:
        return f"model_type {config.model_type!r} has no static-cache step (supported: {sorted(LAYOUTS)})"
    if getattr(config, "qk_layernorm", False):
        return "q/k layer norms are not implemented"
    window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    kinds = set(getattr(config, "layer_types", None) or [])
    if kinds - {"full_attention", "sliding_attention"}:
        return f"layers other than full or sliding-window attention are not implemented ({sorted(kinds)})"
    if window is not None or "sliding_attention" in kinds:  # full attention while every position is in the window
        if window is None or max_position > window:  # HF: key j seen from query i when i - j < window
            return f"sliding-window attention (window {window}) within this generation's {max_position} positions is not implemented"
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "attn_logit_softcapping", None):
        return "logit soft-capping is not implemented"
    for module in model.modules():
        if hasattr(module, "lora_A") and any(getattr(module, "use_dora", {}).values()):
            return "DoRA adapters are not implemented"
        if hasattr(module, "_fsdp_wrapped_module"):
            return "FSDP-wrapped modules (the steps read the weights outside their forward)"
    if any(type(p).__name__ == "DTensor" or hasattr(p, "ds_id") or p.numel() == 0 for p in model.parameters()):
        return "sharded weights (FSDP / DeepSpeed ZeRO-3): the steps read the weights outside their forward"
    return None


def effective_linear(module: nn.Module) -> tuple[Tensor, Tensor | None]:
    """``(weight (out, in), bias (out,) | None)`` that a plain or LoRA-wrapped linear applies: the
    base weight plus every active, unmerged adapter's ``B @ A · scale`` (computed in fp32)."""
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    weight = base.weight
    if hasattr(module, "lora_A") and not module.disable_adapters and not module.merged:
        with torch.autocast(weight.device.type, enabled=False):
            for name in module.active_adapters:
                if name in module.lora_A:
                    weight = weight + module.get_delta_weight(name).to(weight.dtype)
    return weight.detach(), None if base.bias is None else base.bias.detach()


def fused_linear(modules: list[nn.Module]) -> tuple[Tensor, Tensor | None]:
    """One ``(Σ out, in)`` weight (and bias) for linears that read the same input."""
    pairs = [effective_linear(m) for m in modules]
    weight = torch.cat([w for w, _ in pairs]) if len(pairs) > 1 else pairs[0][0]
    if all(b is None for _, b in pairs):
        return weight, None
    biases = [b if b is not None else w.new_zeros(w.shape[0]) for w, b in pairs]
    return weight, torch.cat(biases) if len(biases) > 1 else biases[0]


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast gives matmuls on ``device`` here (None: autocast is off)."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def transposed_if_exact(weight: Tensor, bias: Tensor | None, rows: int) -> Projection:
    """``x (rows, in) ↦ F.linear(x, weight, bias)``, as a GEMM on a contiguous copy of ``weightᵀ``
    when that gives the same bits on a random probe of ``rows`` rows, else ``F.linear`` itself.

    ``F.linear`` hands the GEMM a transposed weight; at decoding sizes (a few rows) the untransposed
    layout runs 1.3-1.7x faster on CPU (benchmarks/RESULTS.md). Whether the library adds the
    products in the same order for both layouts depends on the shapes and the kernel it picks, so
    the copy is used only where the probe shows the same order (then every input gives the same
    result: the tokens stay those of HF ``generate``), and only for weights of at most
    ``TRANSPOSE_LIMIT_BYTES``."""
    if weight.numel() * weight.element_size() > TRANSPOSE_LIMIT_BYTES or reference_bf16_kernel(weight):
        return functools.partial(F.linear, weight=weight, bias=bias)
    transposed = weight.t().contiguous()
    generator = torch.Generator(device=weight.device).manual_seed(0)
    probe = torch.randn(rows, weight.shape[1], generator=generator, device=weight.device).to(weight.dtype)
    fast = functools.partial(torch.mm, mat2=transposed) if bias is None else functools.partial(torch.addmm, bias, mat2=transposed)
    with torch.autocast(weight.device.type, enabled=False):
        same = torch.equal(fast(probe), F.linear(probe, weight, bias))
    return fast if same else functools.partial(F.linear, weight=weight, bias=bias)


def reference_bf16_kernel(weight: Tensor) -> bool:
    """A bf16 weight on a CPU without bf16 instructions: torch's reference GEMM, whose sums for the two
    layouts agree on one probe and not on the next input (an AVX2-only EPYC, 2026-12-08)."""
    return weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and not cpu_has_native_bf16()


def projection(modules: list[nn.Module], merge: bool, cast: torch.dtype | None = None, rows: int = 1) -> Projection:
    """``x (rows, in) ↦`` the linears' outputs side by side ``(rows, Σ out)``. ``merge``: one matmul
    over their LoRA-merged, concatenated weights (a copy of them: fewer, larger ops, for small
    models; transposed where that is exact, :func:`transposed_if_exact`), cast once to ``cast``
    (autocast's matmul dtype: the weights it would cast on every call, so the result is the same);
    else the modules themselves (HF's own computation, no copy of the weights)."""
    if merge:
        weight, bias = fused_linear(modules)
        if cast is not None:
            weight, bias = weight.to(cast), None if bias is None else bias.to(cast)
        return transposed_if_exact(weight, bias, rows)
    if len(modules) == 1:
        return modules[0]
    return lambda x: torch.cat([module(x) for module in modules], dim=-1)


@dataclass
class LayerWeights:
    """One decoder layer's step inputs: norms (HF modules), projections, activation."""

    norm1: nn.Module
    norm2: nn.Module | None  # None for the parallel (Phi) layout
    qkv: Projection
    out: Projection
    up: Projection  # (gate; up) side by side for the sequential layout, fc1 for Phi
    down: Projection
    act: nn.Module


def layer_weights(layer: nn.Module, layout: str, merge: bool, cast: torch.dtype | None = None,
                  rows: int = 1) -> LayerWeights:
    attn, mlp = layer.self_attn, layer.mlp
    qkv = [attn.qkv_proj] if hasattr(attn, "qkv_proj") else [attn.q_proj, attn.k_proj, attn.v_proj]
    out = [attn.dense if layout == "parallel" else attn.o_proj]
    if layout == "parallel":
        up, down, act = [mlp.fc1], [mlp.fc2], mlp.activation_fn
    else:
        up = [mlp.gate_up_proj] if hasattr(mlp, "gate_up_proj") else [mlp.gate_proj, mlp.up_proj]
        down, act = [mlp.down_proj], mlp.act_fn if hasattr(mlp, "act_fn") else mlp.activation_fn
    norm2 = None if layout == "parallel" else layer.post_attention_layernorm
    return LayerWeights(layer.input_layernorm, norm2, *(projection(m, merge, cast, rows) for m in (qkv, out, up, down)), act)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding on the first ``cos.shape[-1]`` channels (all of them, or Phi's partial
    rotary), as the HF models apply it. ``x`` ``(B, H, 1, D)``, ``cos``/``sin`` ``(B, 1, 1, R)``."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    half = x_rot.shape[-1] // 2
    rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    x_rot = (x_rot * cos) + (rotated * sin)
    return torch.cat((x_rot, x_pass), dim=-1) if x_pass.shape[-1] else x_rot


class StaticCacheDecoder:
    """Decoding steps for a batch whose prompt already went through the model (see
    :meth:`from_prefill`). Step ``t`` feeds the token generated at ``t`` at position
    ``first_position + t`` and returns the next-token logits ``(B, V)``."""

    def __init__(self, model: nn.Module, cache: DynamicCache, key_mask: Tensor, first_position: Tensor,
                 max_new_tokens: int, merge: bool | None = None):
        """``cache``: the prefill's cache, ``(B, H_kv, L, D)`` per layer; ``key_mask`` ``(B, L)``:
        prompt positions attended to; ``first_position`` ``(B,)``: position id of the first new token;
        ``merge``: LoRA-merged, fused projection weights (see :func:`projection`; default: when the
        decoder layers' weights are float32 and take at most ``MERGE_LIMIT_BYTES``: a LoRA merged into bf16
        weights rounds apart from HF's separate adapter matmuls, enough to change greedy tokens; before
        2026-12-07 a tiny bf16 composed model's fast path gave other tokens than HF ``generate``)."""
        decoder = find_decoder(model)
        config = decoder.config
        if merge is None:
            weights = list(decoder.layers.parameters())
            merge = (sum(p.numel() * p.element_size() for p in weights) <= MERGE_LIMIT_BYTES
                     and all(p.dtype == torch.float32 for p in weights))
        self.layout = LAYOUTS[config.model_type]
        self.embed = decoder.embed_tokens
        self.final_norm = getattr(decoder, "final_layernorm", None) or decoder.norm
        batch, prompt_len = key_mask.shape
        cast = autocast_dtype(key_mask.device)
        self.head = projection([model.get_output_embeddings()], merge, cast, batch)
        self.layers = [layer_weights(layer, self.layout, merge, cast, batch) for layer in decoder.layers]
        attn = decoder.layers[0].self_attn
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.prompt_len, total = prompt_len, prompt_len + max_new_tokens
        self.keys, self.values = [], []
        for layer in cache.layers:
            keys = layer.keys.new_zeros(batch, self.kv_heads, total, self.head_dim)
            values = layer.values.new_zeros(batch, self.kv_heads, total, self.head_dim)
            keys[:, :, :prompt_len], values[:, :, :prompt_len] = layer.keys, layer.values
            self.keys.append(keys)
            self.values.append(values)
        self.key_mask = torch.ones(batch, 1, 1, total, dtype=torch.bool, device=key_mask.device)
        self.key_mask[:, 0, 0, :prompt_len] = key_mask.bool()
        positions = first_position[:, None] + torch.arange(max_new_tokens, device=key_mask.device)
        probe = self.embed.weight[:1]  # dtype/device of the hidden states the rotary tables match
        cos, sin = decoder.rotary_emb(probe, positions)  # (B, N, R); see rope_length_limit
        self.cos, self.sin = cos[:, None, :, None, :], sin[:, None, :, None, :]  # (B, 1, N, 1, R)

    @torch.no_grad()
    def step(self, tokens: Tensor, t: int) -> Tensor:
        """Logits ``(B, V)`` after feeding ``tokens`` ``(B,)`` as new token ``t`` (0-based)."""
        hidden = self.embed(tokens)  # (B, C)
        cos, sin = self.cos[:, :, t], self.sin[:, :, t]
        slot = self.prompt_len + t
        for i, weights in enumerate(self.layers):
            hidden = self._layer(hidden, weights, self.keys[i], self.values[i], slot, cos, sin)
        return self.head(self.final_norm(hidden))

    def _layer(self, hidden: Tensor, w: LayerWeights, keys: Tensor, values: Tensor, slot: int,
               cos: Tensor, sin: Tensor) -> Tensor:
        batch, q_width, kv_width = hidden.shape[0], self.heads * self.head_dim, self.kv_heads * self.head_dim
        normed = w.norm1(hidden)
        qkv = w.qkv(normed)
        # queries and keys side by side as heads (B, H + H_kv, 1, D): one rotary call for both
        query_key = rotate(qkv[:, : q_width + kv_width].view(batch, self.heads + self.kv_heads, 1, self.head_dim), cos, sin)
        keys[:, :, slot : slot + 1] = query_key[:, self.heads :]
        values[:, :, slot : slot + 1] = qkv[:, q_width + kv_width :].view(batch, self.kv_heads, 1, self.head_dim)
        attended = F.scaled_dot_product_attention(
            query_key[:, : self.heads], keys[:, :, : slot + 1], values[:, :, : slot + 1],
            attn_mask=self.key_mask[..., : slot + 1], scale=self.scaling,
            enable_gqa=self.heads != self.kv_heads,
        )
        attn_out = w.out(attended.reshape(batch, q_width))
        if self.layout == "parallel":  # Phi: attn + mlp(norm1(x)) + x
            mlp_out = w.down(w.act(w.up(normed)))
            return attn_out + mlp_out + hidden
        hidden = hidden + attn_out
        gate, up = w.up(w.norm2(hidden)).chunk(2, dim=-1)
        return hidden + w.down(w.act(gate) * up)

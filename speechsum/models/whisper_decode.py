"""Greedy Whisper decoding without HF ``generate``'s per-token overhead.

What ``WhisperForConditionalGeneration.generate(features, do_sample=False, num_beams=1,
max_new_tokens=n)`` does for an English-only checkpoint without timestamps (transformers 5.x,
``generation_whisper.py``), step by step:

- the decoder prompt is ``[decoder_start_token_id, no_timestamps_token_id]``
  (``<|startoftranscript|> <|notimestamps|>`` for tiny.en), fed in one causal forward;
- every step's logits (float32) get ``-inf`` at ``suppress_tokens``, and at the first generated
  position also at ``begin_suppress_tokens``; the next token is their ``argmax``;
- a row stops after its first EOS; decoding ends when every row has stopped or after
  ``max_new_tokens`` tokens.

Here the decoder layers run on plain tensors: each layer's cross-attention K/V ``(2, N, H, T, hd)``
is computed once per batch, the self-attention K/V go into a preallocated ``(2, N, H, L, hd)``
cache, q/k/v are one fused matmul, the LM head is ``x @ Wᵀ`` with ``Wᵀ`` stored contiguous, and
finished rows leave the batch (their rows of the self- and cross-attention caches are dropped
then, once, so every step attends over the live rows in one batched call). In float32 the tokens equal ``generate``'s (tests/models/test_whisper_decode.py); in
bfloat16 (cross-attention as bf16 matmuls with a float32 softmax) a row may leave them where two
logits tie within bf16 rounding. A window whose greedy tokens
contain a timestamp token (``generate`` would then cut segments and decode again from the last
timestamp) is reported in :attr:`GreedyResult.needs_generate`; the caller re-runs those rows
through ``generate``. Configurations outside this (multilingual checkpoints with language
detection, timestamps, forced decoder ids, no-speech detection, logits processors such as a
repetition penalty) raise :class:`UnsupportedDecoding` at construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F
from transformers import GenerationConfig, WhisperForConditionalGeneration

# generation_config attributes that would add a logits processor or change the prompt, and their inert values
_INERT = {"repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
          "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "sequence_bias": (None,),
          "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "min_length": (None, 0),
          "min_new_tokens": (None, 0), "forced_decoder_ids": (None,), "task": (None,), "language": (None,),
          "lang_to_id": (None, {}), "return_timestamps": (None, False), "no_speech_threshold": (None,),
          "prompt_ids": (None,), "suppress_tokens_at_begin": (None,)}


class UnsupportedDecoding(ValueError):
    """The checkpoint's generation config needs something this loop does not reproduce."""


@dataclass(frozen=True)
class GreedyRules:
    """Prompt, suppression and stop tokens of greedy Whisper decoding."""

    prompt: tuple[int, ...]
    suppress: tuple[int, ...]
    begin_suppress: tuple[int, ...]
    eos: tuple[int, ...]
    timestamp_begin: int  # first timestamp token (no_timestamps_token_id + 1)
    max_positions: int  # the decoder's position table (448)


def greedy_rules(generation_config: GenerationConfig, max_target_positions: int) -> GreedyRules:
    """The rules ``generate`` applies (see the module docstring); raises :class:`UnsupportedDecoding`."""
    config = generation_config
    for name, inert in _INERT.items():
        if getattr(config, name, None) not in inert:
            raise UnsupportedDecoding(f"generation_config.{name}={getattr(config, name)!r}")
    if getattr(config, "is_multilingual", False):
        raise UnsupportedDecoding("multilingual checkpoint (language detection)")
    no_timestamps = getattr(config, "no_timestamps_token_id", None)
    if config.decoder_start_token_id is None or no_timestamps is None or config.eos_token_id is None:
        raise UnsupportedDecoding("generation_config lacks decoder_start/no_timestamps/eos token ids")
    eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    return GreedyRules(prompt=(config.decoder_start_token_id, no_timestamps), suppress=tuple(config.suppress_tokens or ()),
                       begin_suppress=tuple(config.begin_suppress_tokens or ()), eos=tuple(eos),
                       timestamp_begin=no_timestamps + 1, max_positions=max_target_positions)


@dataclass
class GreedyResult:
    """Per row: generated tokens without the prompt and without the final EOS; ``needs_generate``:
    rows that produced a timestamp token (only ``generate`` reproduces what follows)."""

    tokens: list[list[int]]
    needs_generate: list[int]


@dataclass(frozen=True)
class _Layer:
    self_norm: tuple[Tensor, Tensor]
    qkv_weight: Tensor  # (3d, d): q, k, v rows of the self-attention
    qkv_bias: Tensor  # (3d,), zeros for k (Whisper's key projection has no bias)
    self_out: tuple[Tensor, Tensor]
    cross_norm: tuple[Tensor, Tensor]
    cross_q: tuple[Tensor, Tensor]
    cross_kv_weight: Tensor  # (2d, d)
    cross_kv_bias: Tensor  # (2d,)
    cross_out: tuple[Tensor, Tensor]
    ffn_norm: tuple[Tensor, Tensor]
    fc1: tuple[Tensor, Tensor]
    fc2: tuple[Tensor, Tensor]


def _pair(module: torch.nn.Module) -> tuple[Tensor, Tensor]:
    return module.weight.detach(), module.bias.detach()


class WhisperGreedyDecoder:
    """Greedy decoding with ``model``'s decoder (weights shared, in the model's dtype).

    Call with encoder frames ``(N, T, d)`` and ``max_new_tokens`` → :class:`GreedyResult`."""

    def __init__(self, model: WhisperForConditionalGeneration):
        decoder = model.model.decoder
        self.rules = greedy_rules(model.generation_config, model.config.max_target_positions)
        if model.config.activation_function != "gelu" or decoder.embed_scale != 1.0:
            raise UnsupportedDecoding("only exact-gelu decoders without embedding scaling")
        self.heads = model.config.decoder_attention_heads
        self.scaling = decoder.layers[0].self_attn.scaling
        self.eps = decoder.layer_norm.eps
        self.embed = decoder.embed_tokens.weight.detach()
        self.positions = decoder.embed_positions.weight.detach()
        self.head_t = model.proj_out.weight.detach().t().contiguous()  # (d, V): x @ head_t beats F.linear on CPU
        self.final_norm = _pair(decoder.layer_norm)
        self.layers = [self._layer(layer) for layer in decoder.layers]
        vocab = self.head_t.shape[1]
        self.suppress = torch.zeros(vocab, dtype=torch.bool, device=self.head_t.device)
        self.suppress[list(self.rules.suppress)] = True
        self.begin_suppress = self.suppress.clone()
        self.begin_suppress[list(self.rules.begin_suppress)] = True

    @staticmethod
    def _layer(layer: torch.nn.Module) -> _Layer:
        attn, cross = layer.self_attn, layer.encoder_attn
        zeros = torch.zeros_like(attn.q_proj.bias)
        with torch.no_grad():
            return _Layer(
                self_norm=_pair(layer.self_attn_layer_norm),
                qkv_weight=torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach(),
                qkv_bias=torch.cat([attn.q_proj.bias, zeros, attn.v_proj.bias]).detach(),
                self_out=_pair(attn.out_proj), cross_norm=_pair(layer.encoder_attn_layer_norm),
                cross_q=_pair(cross.q_proj),
                cross_kv_weight=torch.cat([cross.k_proj.weight, cross.v_proj.weight]).detach(),
                cross_kv_bias=torch.cat([zeros, cross.v_proj.bias]).detach(),
                cross_out=_pair(cross.out_proj), ffn_norm=_pair(layer.final_layer_norm),
                fc1=_pair(layer.fc1), fc2=_pair(layer.fc2),
            )

    def _heads(self, x: Tensor, n: int) -> Tensor:
        """``(n·t, d)`` → ``(n, H, t, hd)``."""
        return x.view(n, -1, self.heads, x.shape[-1] // self.heads).transpose(1, 2)

    @torch.no_grad()
    def __call__(self, frames: Tensor, max_new_tokens: int) -> GreedyResult:
        """Greedy tokens for encoder ``frames (N, T, d)``."""
        rules = self.rules
        n, t, d = frames.shape
        prompt = len(rules.prompt)
        if max_new_tokens + prompt > rules.max_positions:
            raise ValueError(f"max_new_tokens {max_new_tokens} + {prompt} prompt tokens > {rules.max_positions} positions")
        frames = frames.to(self.head_t.dtype)
        cross = []  # per layer (2, N, H, T, hd): K and V of every row, computed once
        for layer in self.layers:
            kv = torch.addmm(layer.cross_kv_bias, frames.reshape(n * t, d), layer.cross_kv_weight.t())
            cross.append(kv.view(n, t, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).contiguous())
        cache = [torch.empty(2, n, self.heads, prompt + max_new_tokens, d // self.heads, dtype=frames.dtype,
                             device=frames.device) for _ in self.layers]
        rows = list(range(n))  # original row of each live batch row
        tokens: list[list[int]] = [[] for _ in range(n)]
        ids = torch.tensor([rules.prompt] * n, device=frames.device)  # (live, s)
        eos = torch.tensor(rules.eos, device=frames.device)
        position = 0
        for step in range(max_new_tokens):
            hidden = self._forward(ids, position, cache, cross)
            logits = (hidden @ self.head_t).float()  # (live, V)
            logits.masked_fill_(self.begin_suppress if step == 0 else self.suppress, float("-inf"))
            chosen = logits.argmax(dim=-1)
            position += ids.shape[1]
            done = torch.isin(chosen, eos)
            for row, token, stop in zip(rows, chosen.tolist(), done.tolist()):
                if not stop:
                    tokens[row].append(token)
            if bool(done.all()):
                break
            if bool(done.any()):  # drop finished rows from both caches
                keep = (~done).nonzero().squeeze(1)
                rows = [rows[i] for i in keep.tolist()]
                cache = [c.index_select(1, keep) for c in cache]
                cross = [c.index_select(1, keep) for c in cross]
                chosen = chosen.index_select(0, keep)
            ids = chosen[:, None]
        needs = [row for row, seq in enumerate(tokens) if any(tok >= rules.timestamp_begin for tok in seq)]
        return GreedyResult(tokens, needs)

    def _forward(self, ids: Tensor, position: int, cache: list[Tensor], cross: list[Tensor]) -> Tensor:
        """Final-norm hidden state ``(live, d)`` of the last of ``ids (live, s)`` at positions
        ``position …``; writes their self-attention K/V into ``cache`` (each ``(2, live, H, L, hd)``) and
        cross-attends to ``cross`` (each ``(2, live, H, T, hd)``)."""
        n, s = ids.shape
        d = self.embed.shape[1]
        end = position + s
        hidden = (self.embed[ids] + self.positions[position:end]).view(n * s, d)
        for layer, kv, cross_kv in zip(self.layers, cache, cross):
            normed = F.layer_norm(hidden, (d,), *layer.self_norm, self.eps)
            qkv = torch.addmm(layer.qkv_bias, normed, layer.qkv_weight.t())
            q = self._heads((qkv[:, :d] * self.scaling).contiguous(), n)
            kv[0, :, :, position:end] = self._heads(qkv[:, d : 2 * d], n)
            kv[1, :, :, position:end] = self._heads(qkv[:, 2 * d :], n)
            context = F.scaled_dot_product_attention(q, kv[0, :, :, :end], kv[1, :, :, :end], is_causal=s > 1, scale=1.0)
            hidden = hidden + F.linear(context.transpose(1, 2).reshape(n * s, d), *layer.self_out)
            normed = F.layer_norm(hidden, (d,), *layer.cross_norm, self.eps)
            q = self._heads((F.linear(normed, *layer.cross_q) * self.scaling).contiguous(), n)
            context = self._cross(q, cross_kv)
            hidden = hidden + F.linear(context.transpose(1, 2).reshape(n * s, d), *layer.cross_out)
            normed = F.layer_norm(hidden, (d,), *layer.ffn_norm, self.eps)
            hidden = hidden + F.linear(F.gelu(F.linear(normed, *layer.fc1)), *layer.fc2)
        return F.layer_norm(hidden.view(n, s, d)[:, -1], (d,), *self.final_norm, self.eps)

    @staticmethod
    def _cross(q: Tensor, kv: Tensor) -> Tensor:
        """Cross-attention: ``q (n, H, s, hd)``, ``kv (2, n, H, T, hd)`` → ``(n, H, s, hd)``.
        float32: SDPA (as transformers runs it); bfloat16 on CPU: ``softmax(q kᵀ) v`` with bf16
        matmuls and the softmax in float32 (SDPA's CPU kernel is ~6× slower in bf16)."""
        if q.dtype == torch.float32 or q.device.type != "cpu":
            return F.scaled_dot_product_attention(q, kv[0], kv[1], scale=1.0)
        weights = torch.softmax(torch.matmul(q, kv[0].transpose(-1, -2)).float(), dim=-1)
        return torch.matmul(weights.to(q.dtype), kv[1])

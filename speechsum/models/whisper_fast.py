"""Inference-only forward of a frozen Whisper encoder, in float32 or bfloat16 weights.

The same maths as transformers' ``WhisperEncoder`` under a key-padding mask (what
:meth:`speechsum.models.composed.ComposedSpeechLLM._encode_windows_module` runs), with the
per-call overheads taken out:

- weights are copied once, in the chosen dtype (no autocast re-casting every call), and used as
  ``addmm(bias, x, W.t())``;
- q/k/v are one fused ``(3·d, d)`` projection; Whisper's query scaling ``head_dim ** -0.5``
  (1/8 for 64-wide heads, a power of two, hence exact) is folded into the query weights;
- float32 attention is SDPA, as in transformers (the float32 path gives the module's frames);
- bfloat16 attention on CPU is plain bf16 matmuls, ``softmax(q @ kᵀ + mask) @ v`` per row and
  block of 256 queries (SDPA's CPU flash kernel gets *slower* in bf16 than in fp32);
- in bfloat16 the residual stream and the layer norms stay float32; matmul and convolution
  operands and outputs are bfloat16 (fp32 accumulation inside oneDNN, softmax computed in fp32).
  Each matmul's operands follow its weight's dtype, so a layer may be kept in float32.

The snapshot is of the weights at construction: rebuild it when the encoder changes (the
composed backbone keys it on :func:`speechsum.models.feature_cache.weights_version`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers.models.whisper.modeling_whisper import WhisperEncoder, WhisperEncoderLayer

ENCODER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
QUERY_BLOCK = 256  # queries per bf16 attention block on CPU


@dataclass(frozen=True)
class _Layer:
    """One pre-norm encoder layer's weights, ``(out, in)`` like ``nn.Linear`` (used as ``x @ W.t()``)."""

    attn_norm: tuple[Tensor, Tensor]  # float32 layer-norm weight, bias
    qkv_weight: Tensor  # (3d, d), query rows pre-scaled
    qkv_bias: Tensor  # (3d,)
    out_weight: Tensor  # (d, d)
    out_bias: Tensor
    ffn_norm: tuple[Tensor, Tensor]
    fc1_weight: Tensor  # (ffn, d)
    fc1_bias: Tensor
    fc2_weight: Tensor  # (d, ffn)
    fc2_bias: Tensor


def _layer_weights(layer: WhisperEncoderLayer, dtype: torch.dtype) -> _Layer:
    attn = layer.self_attn
    scale = attn.scaling
    k_bias = attn.k_proj.bias if attn.k_proj.bias is not None else torch.zeros_like(attn.q_proj.bias)
    qkv_weight = torch.cat([attn.q_proj.weight * scale, attn.k_proj.weight, attn.v_proj.weight])
    qkv_bias = torch.cat([attn.q_proj.bias * scale, k_bias, attn.v_proj.bias])

    def cast(tensor: Tensor) -> Tensor:
        return tensor.detach().to(dtype).contiguous()

    def norm(module: nn.LayerNorm) -> tuple[Tensor, Tensor]:
        return module.weight.detach().float(), module.bias.detach().float()

    return _Layer(
        attn_norm=norm(layer.self_attn_layer_norm),
        qkv_weight=cast(qkv_weight),
        qkv_bias=cast(qkv_bias),
        out_weight=cast(attn.out_proj.weight),
        out_bias=cast(attn.out_proj.bias),
        ffn_norm=norm(layer.final_layer_norm),
        fc1_weight=cast(layer.fc1.weight),
        fc1_bias=cast(layer.fc1.bias),
        fc2_weight=cast(layer.fc2.weight),
        fc2_bias=cast(layer.fc2.bias),
    )


class FastWhisperEncoder:
    """A frozen snapshot of ``encoder`` for inference in ``dtype`` (float32 or bfloat16).

    Call it like ``_encode_windows``: ``(N, n_mels, T)`` log-mel windows (``T`` at most
    ``2 · max_source_positions``) and each row's valid mel-frame count ``(N,)`` →
    ``(N, ceil(T / 2), d_enc)`` float32 frames after the final layer norm, zero beyond each row's
    ``ceil(mel_frames / 2)`` frames. Not an ``nn.Module`` (its copies must not enter checkpoints);
    always runs without autograd and without dropout.
    """

    def __init__(self, encoder: WhisperEncoder, dtype: torch.dtype = torch.float32):
        if dtype not in ENCODER_DTYPES.values():
            raise ValueError(f"encoder dtype must be float32 or bfloat16, not {dtype}")
        if encoder.config.activation_function != "gelu":
            raise ValueError(f"only exact-gelu Whisper encoders, not {encoder.config.activation_function!r}")
        self.dtype = dtype
        self.heads = encoder.config.encoder_attention_heads
        self.eps = encoder.layer_norm.eps
        with torch.no_grad():
            self.conv1 = (encoder.conv1.weight.detach().to(dtype), encoder.conv1.bias.detach().to(dtype))
            self.conv2 = (encoder.conv2.weight.detach().to(dtype), encoder.conv2.bias.detach().to(dtype))
            self.positions = encoder.embed_positions.weight.detach().float()
            self.layers = [_layer_weights(layer, dtype) for layer in encoder.layers]
            self.final_norm = (encoder.layer_norm.weight.detach().float(), encoder.layer_norm.bias.detach().float())

    def __call__(self, input_features: Tensor, mel_frames: Tensor) -> Tensor:
        with torch.no_grad():  # not inference_mode: trainable projectors take these frames as inputs
            return self._forward(input_features, mel_frames)

    def _forward(self, input_features: Tensor, mel_frames: Tensor) -> Tensor:
        features = input_features.to(self.dtype)
        mel_valid = torch.arange(features.shape[-1], device=features.device) < mel_frames[:, None]
        hidden = F.gelu(F.conv1d(features, *self.conv1, padding=1)) * mel_valid[:, None, :].to(self.dtype)
        hidden = F.gelu(F.conv1d(hidden, *self.conv2, stride=2, padding=1))
        hidden = hidden.transpose(1, 2).float() + self.positions[: hidden.shape[-1]]  # (N, T', d) float32
        n, t, d = hidden.shape
        key_valid = torch.arange(t, device=hidden.device)[None, :] < ((mel_frames + 1) // 2)[:, None]
        key_bias = None  # additive (N, 1, 1, T') mask, only when some row has padding
        if not bool(key_valid.all()):
            # float32 whatever the default dtype (Lightning's 16-true / bf16-true set it): SDPA takes a float32
            # mask with a query of any dtype, not a half one with a float32 query, and fp16 cannot hold bf16's min
            key_bias = torch.zeros(key_valid.shape, device=hidden.device, dtype=torch.float32)
            key_bias = key_bias.masked_fill_(~key_valid, torch.finfo(torch.bfloat16).min)[:, None, None, :]
        hidden = hidden.reshape(n * t, d)
        for layer in self.layers:
            normed = F.layer_norm(hidden, (d,), *layer.attn_norm, self.eps).to(layer.qkv_weight.dtype)
            qkv = torch.addmm(layer.qkv_bias, normed, layer.qkv_weight.t())
            q, k, v = qkv.view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (N, H, T', hd)
            context = self._attention(q, k, v, key_bias).transpose(1, 2).reshape(n * t, d)
            hidden = hidden + torch.addmm(layer.out_bias, context.to(layer.out_weight.dtype), layer.out_weight.t())
            normed = F.layer_norm(hidden, (d,), *layer.ffn_norm, self.eps).to(layer.fc1_weight.dtype)
            inner = F.gelu(torch.addmm(layer.fc1_bias, normed, layer.fc1_weight.t()))
            hidden = hidden + torch.addmm(layer.fc2_bias, inner.to(layer.fc2_weight.dtype), layer.fc2_weight.t())
        hidden = F.layer_norm(hidden, (d,), *self.final_norm, self.eps).view(n, t, d)
        return hidden * key_valid[..., None]

    def _attention(self, q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None) -> Tensor:
        """Softmax attention ``(N, H, T, hd)`` → ``(N, H, T, hd)`` (query scaling already applied).

        float32, or any dtype on an accelerator: SDPA, as transformers runs it. bfloat16 on CPU:
        ``softmax(q @ kᵀ + bias) @ v`` with plain bf16 matmuls (fp32 accumulation; the softmax
        computes in fp32 internally), one row and ``QUERY_BLOCK`` queries at a time so the
        ``(H, block, T)`` scores stay in cache (1.4× faster than whole rows at T = 1500). SDPA's CPU
        flash kernel is slower in bf16 than in fp32 on this project's CPUs."""
        if q.dtype == torch.float32 or q.device.type != "cpu":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias, scale=1.0)
        out = torch.empty_like(q)
        for row in range(q.shape[0]):
            keys = k[row].transpose(-1, -2)  # (H, hd, T)
            for start in range(0, q.shape[2], QUERY_BLOCK):
                stop = start + QUERY_BLOCK
                scores = torch.matmul(q[row, :, start:stop], keys)  # (H, block, T)
                if key_bias is not None:
                    scores.add_(key_bias[row])
                torch.matmul(torch.softmax(scores, dim=-1), v[row], out=out[row, :, start:stop])
        return out

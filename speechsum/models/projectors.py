"""Projectors from speech-encoder frames to LLM input embeddings.

* :class:`FrameStackProjector` — stack ``stack`` frames, 2-layer MLP (Phi-4-multimodal's style).
* :class:`CTCProjector` — the same MLP, then CTC posteriors over the LLM's vocabulary (+ blank);
  each audio token is the posterior-weighted sum of the LLM's own input embeddings (as in
  LegoSLM, Ma et al. 2025), and with CTC compression only frames whose greedy label starts a new
  non-blank run are attended to (Gaido et al. 2021). Trained first by CTC on transcripts
  (:class:`speechsum.stages.align.CTCAlignModule`), it hands the LLM something shaped like the
  transcript's tokens, so a text LLM's copying skills work on audio from the start of SFT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from speechsum.utils.arguments import check_count


def check_sizes(stack: int, hidden_dim: int | None) -> None:
    """A ``ConfigError`` naming the backbone setting for a ``stack`` below 1 (0 divided by zero when
    batches were counted, a negative one failed as a tensor of negative size) or a ``projector_hidden``
    below 1 (0 was taken as the default without a word)."""
    check_count("stack", stack, 1, " (encoder frames per audio token, e.g. 4: 80 ms with Whisper)")
    if hidden_dim is not None:
        check_count("projector_hidden", hidden_dim, 1, " (or null: the default width)")


class FrameStackProjector(nn.Module):
    """Stacks ``stack`` consecutive encoder frames and maps them to the LLM width with a 2-layer MLP.

    ``(B, T, d_enc)`` → zero-pad T to a multiple of ``stack`` → ``(B, T/stack, stack·d_enc)``
    → Linear → GELU → Linear → ``(B, T/stack, d_llm)``. With Whisper (20 ms frames) and stack 4,
    one audio token covers 80 ms, as in Phi-4-multimodal.
    """

    def __init__(self, encoder_dim: int, llm_dim: int, stack: int = 4, hidden_dim: int | None = None):
        super().__init__()
        check_sizes(stack, hidden_dim)
        self.stack = stack
        hidden_dim = hidden_dim or llm_dim
        self.mlp = nn.Sequential(
            nn.Linear(encoder_dim * stack, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, llm_dim)
        )

    def forward(self, frames: Tensor) -> Tensor:
        """``(B, T, d_enc)`` → ``(B, ceil(T / stack), d_llm)``."""
        return self.mlp(self.stacked(frames))

    def stacked(self, frames: Tensor) -> Tensor:
        """``(B, T, d_enc)`` → ``(B, ceil(T / stack), stack·d_enc)``, T zero-padded to a multiple of ``stack``."""
        batch, length, dim = frames.shape
        padded = math.ceil(length / self.stack) * self.stack
        frames = nn.functional.pad(frames, (0, 0, 0, padded - length))
        return frames.reshape(batch, padded // self.stack, dim * self.stack)

    def stacked_clips(self, clips: Sequence[Tensor]) -> Tensor:
        """Each clip's frames ``(T_i, d_enc)`` stacked as :meth:`stacked` stacks them (``T_i``
        zero-padded to a multiple of ``stack``), concatenated: ``(Σ_i ceil(T_i / stack), stack·d_enc)``,
        the rows ``stacked(pad_sequence(clips))[valid]`` without building the padded batch."""
        width = self.mlp[0].in_features  # stack · d_enc
        parts = [nn.functional.pad(clip, (0, 0, 0, -clip.shape[0] % self.stack)).reshape(-1, width) for clip in clips]
        return torch.cat(parts) if parts else self.mlp[0].weight.new_zeros(0, width)

    def clip_rows(self, clips: Sequence[Tensor]) -> Tensor:
        """The outputs at every clip's real positions only, ``(Σ_i ceil(T_i / stack), d_llm)``, clip by
        clip: ``forward(pad_sequence(clips))[valid]`` without computing (or copying) the padding."""
        return self.mlp(self.stacked_clips(clips))


class CTCProjector(nn.Module):
    """Frame-stacking MLP → GELU → Linear → CTC logits over ``vocab_size`` LLM tokens + blank
    (index ``vocab_size``); :meth:`embed` turns them into LLM input embeddings.

    Args:
        encoder_dim: the encoder's width.
        llm_dim: the LLM's width.
        vocab_size: rows of the LLM's input-embedding table.
        stack: encoder frames per audio token (4 → 80 ms with Whisper).
        hidden_dim: MLP width (default: 2 × the LLM width).
    """

    def __init__(self, encoder_dim: int, llm_dim: int, vocab_size: int, stack: int = 4, hidden_dim: int | None = None):
        super().__init__()
        check_sizes(stack, hidden_dim)
        hidden_dim = hidden_dim or 2 * llm_dim
        self.stack = stack
        self.blank = vocab_size
        self.frames = FrameStackProjector(encoder_dim, hidden_dim, stack, hidden_dim)
        self.head = nn.Sequential(nn.GELU(), nn.Linear(hidden_dim, vocab_size + 1))
        self.blank_embedding = nn.Parameter(torch.zeros(llm_dim))

    def logits(self, frames: Tensor) -> Tensor:
        """``(B, T, d_enc)`` → CTC logits ``(B, ceil(T / stack), vocab_size + 1)``."""
        return self.head(self.frames(frames))

    def clip_logits(self, clips: Sequence[Tensor]) -> Tensor:
        """``logits(pad_sequence(clips))[valid]`` ``(Σ_i ceil(T_i / stack), vocab_size + 1)``, clip by
        clip, without computing the padded positions (:meth:`FrameStackProjector.clip_rows`)."""
        return self.head(self.frames.clip_rows(clips))

    def embed(self, logits: Tensor, token_embeddings: Tensor) -> Tensor:
        """Audio embeddings ``softmax(logits) @ [E; e_blank]`` ``(B, T', d_llm)`` for the LLM's input
        embedding table ``E`` ``(vocab_size, d_llm)`` (not trained here) and the learned blank
        embedding ``e_blank``."""
        table = torch.cat([token_embeddings.to(logits.dtype), self.blank_embedding[None].to(logits.dtype)])
        return logits.softmax(-1) @ table


def ctc_keep_mask(labels: Tensor, blank: int) -> Tensor:
    """CTC compression: True where a frame's greedy label is not blank and differs from the
    previous frame's (the first frame of each token run), ``(B, T)`` → ``(B, T)`` bool."""
    previous = torch.nn.functional.pad(labels[:, :-1], (1, 0), value=blank)
    return (labels != blank) & (labels != previous)


def ctc_collapse(labels: Tensor, length: int, blank: int) -> list[int]:
    """Greedy CTC transcript of one clip's first ``length`` labels: merge runs, drop blanks."""
    row = labels[:length]
    return row[ctc_keep_mask(row[None], blank)[0]].tolist()

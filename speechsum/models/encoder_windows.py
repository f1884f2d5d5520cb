"""Encoding clips in encoder windows, grouped into length-sorted batches.

A clip of ``n`` mel frames is cut into windows ``[0, W), [W, 2W), …`` of at most ``W`` frames
(``W = 2 · max_source_positions``, 30 s for Whisper). The windows of a whole batch are sorted by
length and packed into encoder calls of at most ``frame_budget`` padded mel frames, so each call
pads only to its own longest window: a 35-s clip's 5-s tail is not padded to 30 s beside the
full windows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# Padded mel frames per encoder call: 8 full 30-s Whisper windows (bounds the memory of one call).
DEFAULT_FRAME_BUDGET = 8 * 3000


@dataclass(frozen=True)
class Window:
    """``length`` mel frames of clip ``row`` starting at mel frame ``start``."""

    row: int
    start: int
    length: int


def cut_windows(mel_frames: list[int], window: int) -> list[Window]:
    """Every clip's windows in clip order (an empty clip gets one empty window)."""
    return [
        Window(row, start, min(window, n - start))
        for row, n in enumerate(mel_frames)
        for start in range(0, max(n, 1), window)
    ]


def length_batches(lengths: list[int], frame_budget: int = DEFAULT_FRAME_BUDGET) -> list[list[int]]:
    """Indices into ``lengths`` grouped for the encoder: longest first, each group's
    ``len(group) · max(length)`` at most ``frame_budget`` (a group holds at least one window)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for index in order:
        if groups and (len(groups[-1]) + 1) * max(lengths[groups[-1][0]], 1) <= frame_budget:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def encode_in_windows(
    encode: Callable[[Tensor, Tensor], Tensor],
    input_features: Tensor,
    mel_frames: Tensor,
    window: int,
    frame_budget: int = DEFAULT_FRAME_BUDGET,
) -> list[Tensor]:
    """Each clip's real encoder frames ``[(ceil(n_i / 2), d_enc)]`` from ``(B, n_mels, T)``
    features with ``n_i = mel_frames[i]`` valid frames: windows (:func:`cut_windows`) encoded in
    length-sorted groups (:func:`length_batches`) by ``encode(windows (N, n_mels, T_max),
    lengths (N,)) -> (N, ceil(T_max / 2), d_enc)``, each clip's windows' frames concatenated
    (``window`` is even, so the counts add up to ``ceil(n_i / 2)``)."""
    windows = cut_windows(mel_frames.tolist(), window)
    frames: list[Tensor] = [input_features.new_empty(0)] * len(windows)
    for group in length_batches([w.length for w in windows], frame_budget):
        lengths = [windows[i].length for i in group]
        stacked = input_features.new_zeros(len(group), input_features.shape[1], max(max(lengths), 1))
        for slot, i in enumerate(group):
            w = windows[i]
            stacked[slot, :, : w.length] = input_features[w.row, :, w.start : w.start + w.length]
        hidden = encode(stacked, torch.tensor(lengths, device=mel_frames.device))
        for slot, i in enumerate(group):
            frames[i] = hidden[slot, : (lengths[slot] + 1) // 2]
    clips: list[list[Tensor]] = [[] for _ in range(len(mel_frames))]
    for w, hidden in zip(windows, frames):
        clips[w.row].append(hidden)
    return [torch.cat(parts) for parts in clips]

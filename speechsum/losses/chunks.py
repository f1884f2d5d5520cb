"""Row chunks for the fused losses: each chunk's float32 temporaries stay in cache on CPU."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

FUSED_CHUNK = 1 << 18  # vocabulary entries per chunk of rows on CPU (1 MiB of float32: stays in cache)
FUSED_CHUNK_ACCELERATOR = 1 << 26  # on GPUs: 256 MiB of float32 per chunk, few kernel launches


def rows_per_chunk(vocab: int, device: torch.device) -> int:
    """How many rows of ``vocab`` entries one chunk holds on ``device`` (at least 1)."""
    return max(1, (FUSED_CHUNK if device.type == "cpu" else FUSED_CHUNK_ACCELERATOR) // vocab)


def row_blocks(logits: Tensor) -> list[Tensor]:
    """``logits`` ``(…, V)`` as 2-D ``(n, V)`` views of its rows in order, without a copy where the
    last two dims are contiguous (e.g. one block per row of a ``[:, :-1]`` slice of ``(B, L, V)``)."""
    try:
        return [logits.view(-1, logits.shape[-1])]
    except RuntimeError:
        return list(logits.reshape(-1, *logits.shape[-2:]))


def float_chunks(logits: Tensor) -> Iterator[tuple[slice, Tensor]]:
    """``(slice of flat row indices, float32 copy of those rows)`` for chunks of ``logits``' rows."""
    step = rows_per_chunk(logits.shape[-1], logits.device)
    start = 0
    for block in row_blocks(logits):
        for offset in range(0, block.shape[0], step):
            rows = block[offset : offset + step].to(torch.float32, copy=True)
            yield slice(start + offset, start + offset + rows.shape[0]), rows
        start += block.shape[0]

"""The global random generators' states, kept in a checkpoint so a resumed run draws what an
uninterrupted one would have drawn (LoRA dropout, KD's sampled completions). Lightning saves the
loops, optimisers and schedulers but not these: a resumed run drew from ``seed_everything``'s
fresh state and ended with other weights."""

from __future__ import annotations

import random
from typing import Any

import torch

RNG_STATES_KEY = "rng_states"


def collect_rng_states() -> dict[str, Any]:
    """torch (CPU and every CUDA device) and Python ``random`` states, as tensors, lists and ints
    only: a checkpoint holding them still loads with ``torch.load(weights_only=True)``."""
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(state), gauss],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the generators to ``states`` (from :func:`collect_rng_states`); CUDA states only where the
    same number of devices is visible (another layout cannot continue the same draws anyway)."""
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))

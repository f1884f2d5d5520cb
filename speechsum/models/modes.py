"""Eval mode for a while, with every submodule's own mode given back after.

``module.eval()`` then ``module.train(was_training)`` gives *every* submodule the outer module's mode:
a student whose frozen parts were loaded in eval mode (Hugging Face's ``from_pretrained``; Lightning
keeps each module's mode through fit) came out of a generation or DPO's reference pass with them in
train mode, so a frozen base LLM with dropout above 0 trained with dropout on after KD's first rollout
or DPO's first step, and off before. :func:`eval_mode` records each submodule's ``training`` flag and
restores exactly that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode (no dropout); afterwards each submodule has the mode it had before."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training

"""Lightning's "Found N module(s) in eval mode at the start of training" warning, for the modules
that are in eval mode on purpose: the frozen parts of a speechsum model (the audio encoder, the base
LLM under LoRA) keep the mode they were loaded in (Hugging Face's ``from_pretrained`` gives eval
mode), so their dropout is off and their normalisation statistics stay fixed; none of their weights
trains. Every fit stage's log carried the warning, with nothing saying it was expected.

:class:`FrozenEvalModeNotice` says so in one line instead and leaves Lightning's warning out for
exactly that count of modules, the way Lightning's docs give for a false positive (a message filter,
docs/pytorch/stable/advanced/warnings.html). When a module in eval mode holds a weight that trains
(e.g. a fully trained LLM loaded in eval mode: its dropout would be off while it learns), nothing is
said and Lightning warns as before.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter

from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn

LIGHTNING_MESSAGE = "Found {count} module(s) in eval mode at the start of training."


def frozen_eval_modules(module: nn.Module) -> list[str] | None:
    """Names of ``module``'s submodules in eval mode (as Lightning counts them), when none of them
    holds a trainable weight of its own; None when one does (Lightning's warning is then a real case)."""
    in_eval = [(name, sub) for name, sub in module.named_modules() if not sub.training]
    if any(parameter.requires_grad for _, sub in in_eval for parameter in sub.parameters(recurse=False)):
        return None
    return [name for name, _ in in_eval]


def describe(names: list[str]) -> str:
    """The line said instead of Lightning's warning: the count and where the modules are."""
    parts = Counter(".".join(name.split(".")[:2]) for name in names)
    where = ", ".join(f"{part or 'the module itself'}: {count}" for part, count in parts.items())
    return (f"{len(names)} module(s) are in eval mode at the start of training, all in frozen parts ({where}): none "
            "of their weights trains, and they keep the mode they were loaded in (dropout off, normalisation "
            "statistics fixed). This is expected: Lightning's warning about them is left out")


class FrozenEvalModeNotice:
    """Between :meth:`start` (``on_fit_start``) and :meth:`stop` (``on_train_start``, ``teardown``):
    Lightning's warning about exactly the frozen modules in eval mode is left out, said once instead."""

    def __init__(self) -> None:
        self._filter: tuple | None = None

    def start(self, module: nn.Module) -> None:
        """Check ``module``'s modes; when its modules in eval mode are all frozen ones, say so and
        filter Lightning's warning for that count of modules only."""
        self.stop()
        names = frozen_eval_modules(module)
        if not names:
            return
        rank_zero_info(describe(names))
        message = re.escape(LIGHTNING_MESSAGE.format(count=len(names)))
        warnings.filterwarnings("ignore", message=message, category=PossibleUserWarning)
        self._filter = warnings.filters[0]

    def stop(self) -> None:
        """Remove the filter :meth:`start` added (a later fit, in this process, is checked anew)."""
        if self._filter is not None and self._filter in warnings.filters:
            warnings.filters.remove(self._filter)
        self._filter = None

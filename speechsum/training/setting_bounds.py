"""The stage modules' numeric settings and their ranges, in one place: each stage module checks its own
when it is built, and ``speechsum pipeline`` checks every stage's when the run starts
(:mod:`speechsum.pipeline.stage_values`), before the stage that reads them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from speechsum.utils.arguments import check_count, check_number

Bounds = tuple[float, float, bool, bool]  # low, high, low_open, high_open: check_number's arguments

# model.init_args.NAME of every stage module (speechsum.stages.base.SpeechStageModule)
STAGE_NUMBERS: dict[str, Bounds] = {
    "learning_rate": (0.0, math.inf, False, False), "weight_decay": (0.0, math.inf, False, False),
    "min_lr_ratio": (0.0, 1.0, False, False),
}
STAGE_COUNTS: dict[str, int] = {"warmup_steps": 0, "num_val_samples": 0}
# of one stage module only, by its class name (the end of the model's class_path)
CLASS_NUMBERS: dict[str, dict[str, Bounds]] = {
    "DPOModule": {"beta": (0.0, math.inf, True, False), "label_smoothing": (0.0, 0.5, False, True),
                  "rpo_alpha": (0.0, math.inf, False, False)},
    "OnPolicyKDModule": {"lmbda": (0.0, 1.0, False, False), "beta": (0.0, 1.0, False, False),
                         "loss_temperature": (0.0, math.inf, True, False)},
}


def check_settings(settings: Mapping[str, Any], numbers: Mapping[str, Bounds],
                   counts: Mapping[str, int] | None = None) -> None:
    """A ``ConfigError`` naming ``model.init_args.NAME`` for the first of ``settings`` outside its
    bounds (``numbers``: real values, ``counts``: integers of at least the value); names missing
    from ``settings`` are not checked."""
    for name, (low, high, low_open, high_open) in numbers.items():
        if name in settings:
            check_number(f"model.init_args.{name}", settings[name], low, high, low_open, high_open)
    for name, low in (counts or {}).items():
        if name in settings:
            check_count(f"model.init_args.{name}", settings[name], low)

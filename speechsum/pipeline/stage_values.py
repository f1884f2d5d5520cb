"""Values of a training stage's assembled config that can only be a mistake in a pipeline, refused
when the pipeline starts (:mod:`speechsum.pipeline.checks`), not when the stage that reads them starts
after every stage before it. The stage modules refuse most of them when they are built (the same
bounds here); a few they take are refused here only: ``trainer.max_steps`` or ``max_epochs`` 0 (the
stage would train nothing and hand its untrained model on) and a ``learning_rate`` of 0 (likewise)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from speechsum.models.sampling import check_decoding
from speechsum.training.trainer_settings import check_trainer_settings
from speechsum.utils.arguments import check_count, check_number

# model.init_args.KEY of every stage module: (low, high, low_open, high_open)
MODEL_NUMBERS: dict[str, tuple[float, float, bool, bool]] = {
    "learning_rate": (0.0, math.inf, True, False), "weight_decay": (0.0, math.inf, False, False),
    "min_lr_ratio": (0.0, 1.0, False, False),
}
MODEL_COUNTS = {"warmup_steps": 0, "num_val_samples": 0}
# of one stage module only (the class name ends the model's class_path)
CLASS_NUMBERS: dict[str, dict[str, tuple[float, float, bool, bool]]] = {
    "DPOModule": {"beta": (0.0, math.inf, True, False), "label_smoothing": (0.0, 0.5, False, True),
                  "rpo_alpha": (0.0, math.inf, False, False)},
    "OnPolicyKDModule": {"lmbda": (0.0, 1.0, False, False), "beta": (0.0, 1.0, False, False),
                         "loss_temperature": (0.0, math.inf, True, False)},
}
DATA_NUMBERS = {"max_batch_seconds": (0.0, math.inf, True, False)}
DATA_COUNTS = {"max_batch_size": 1, "num_buckets": 1, "num_workers": 0}


def check_steps(name: str, value: Any) -> None:
    """``trainer.max_steps`` / ``max_epochs``: null, -1 (no limit: the other one decides) or at least 1."""
    if value is not None and value != -1:
        check_count(name, value, 1, " (or -1: no limit)")


def check_stage_values(resolved: Mapping) -> None:
    """A :class:`~speechsum.utils.arguments.ConfigError` whose message starts with the dotted key
    (``model.init_args.beta must be …``) for the first value of ``resolved`` (a stage's assembled
    Lightning config as the stage's parser read it: defaults filled in, `5e-4` a number) outside its range."""
    trainer = resolved.get("trainer") or {}
    check_trainer_settings(trainer)
    check_steps("trainer.max_steps", trainer.get("max_steps"))
    check_steps("trainer.max_epochs", trainer.get("max_epochs"))
    model = resolved.get("model") or {}
    settings = model.get("init_args") or {}
    stage_class = str(model.get("class_path", "")).rpartition(".")[2]
    for key, (low, high, low_open, high_open) in {**MODEL_NUMBERS, **CLASS_NUMBERS.get(stage_class, {})}.items():
        if key in settings:
            check_number(f"model.init_args.{key}", settings[key], low, high, low_open, high_open)
    for key, low in MODEL_COUNTS.items():
        if key in settings:
            check_count(f"model.init_args.{key}", settings[key], low)
    if stage_class == "OnPolicyKDModule":
        check_decoding("model.init_args.", settings.get("max_new_tokens", 128), settings.get("temperature", 1.0),
                       settings.get("top_p", 1.0))
    generation = settings.get("generation")
    if isinstance(generation, Mapping):
        check_decoding("model.init_args.generation.", generation.get("max_new_tokens", 128),
                       generation.get("temperature", 1.0), generation.get("top_p", 1.0))
    data = resolved.get("data") or {}
    for key, (low, high, low_open, high_open) in DATA_NUMBERS.items():
        if data.get(key) is not None:
            check_number(f"data.{key}", data[key], low, high, low_open, high_open)
    for key, low in DATA_COUNTS.items():
        if data.get(key) is not None:
            check_count(f"data.{key}", data[key], low, " (or null)" if key == "max_batch_size" else "")

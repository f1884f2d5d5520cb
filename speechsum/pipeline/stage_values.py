"""Values of a training stage's assembled config that can only be a mistake in a pipeline, refused
when the pipeline starts (:mod:`speechsum.pipeline.checks`), not when the stage that reads them starts
after every stage before it. The stage modules refuse most of them when they are built (the bounds of
:mod:`speechsum.training.setting_bounds`); a few they take are refused here only: ``trainer.max_steps`` or ``max_epochs`` 0 (the
stage would train nothing and hand its untrained model on) and a ``learning_rate`` of 0 (likewise)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from speechsum.data.datamodule import check_data_sizes
from speechsum.models.sampling import check_decoding
from speechsum.training.setting_bounds import (
    CLASS_NUMBERS,
    STAGE_COUNTS,
    STAGE_NUMBERS,
    Bounds,
    check_settings,
)
from speechsum.training.trainer_settings import check_cpu_devices, check_seed, check_trainer_settings
from speechsum.utils.arguments import check_count

# the stage modules' own bounds, with a learning rate of 0 refused too (the stage would train nothing)
MODEL_NUMBERS: dict[str, Bounds] = {**STAGE_NUMBERS, "learning_rate": (0.0, math.inf, True, False)}


def check_steps(name: str, value: Any) -> None:
    """``trainer.max_steps`` / ``max_epochs``: -1 (no limit: the other one decides) or at least 1; null for
    ``max_epochs`` (a null ``max_steps`` is refused by :func:`check_trainer_settings`)."""
    if value is not None and value != -1:
        check_count(name, value, 1, " (or -1: no limit)")


def check_stage_values(resolved: Mapping) -> None:
    """A :class:`~speechsum.utils.arguments.ConfigError` whose message starts with the dotted key
    (``model.init_args.beta must be …``) for the first value of ``resolved`` (a stage's assembled
    Lightning config as the stage's parser read it: defaults filled in, `5e-4` a number) outside its range."""
    trainer = resolved.get("trainer") or {}
    check_seed(resolved.get("seed_everything"))
    check_trainer_settings(trainer)
    check_cpu_devices(trainer)  # the pipeline runs its stages on this machine
    check_steps("trainer.max_steps", trainer.get("max_steps"))
    check_steps("trainer.max_epochs", trainer.get("max_epochs"))
    model = resolved.get("model") or {}
    settings = model.get("init_args") or {}
    stage_class = str(model.get("class_path", "")).rpartition(".")[2]
    check_settings(settings, {**MODEL_NUMBERS, **CLASS_NUMBERS.get(stage_class, {})}, STAGE_COUNTS)
    if stage_class == "OnPolicyKDModule":
        check_decoding("model.init_args.", settings.get("max_new_tokens", 128), settings.get("temperature", 1.0),
                       settings.get("top_p", 1.0))
    generation = settings.get("generation")
    if isinstance(generation, Mapping):
        check_decoding("model.init_args.generation.", generation.get("max_new_tokens", 128),
                       generation.get("temperature", 1.0), generation.get("top_p", 1.0))
    check_data_sizes(resolved.get("data") or {})

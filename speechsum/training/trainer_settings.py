"""Trainer settings that Lightning takes and then fails on, refused before a run starts: by
``speechsum fit`` (:mod:`speechsum.lightning_cli`) and by ``speechsum pipeline`` for every stage up front."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from speechsum.utils.arguments import ConfigError, check_count, check_number

if TYPE_CHECKING:  # the pipeline checks settings without importing Lightning
    import lightning as L

SEED_RANGE = (0, 2**32 - 1)  # what Lightning's seed_everything (numpy's legacy seeding) takes


def check_trainer_settings(trainer: Mapping) -> None:
    """Trainer settings that Lightning takes and then fails on: 0 for a step count it divides by (a
    ZeroDivisionError traceback at the first step or validation), and a negative
    ``accumulate_grad_batches``, by which it divides the loss, or ``gradient_clip_val``, by which norm
    clipping scales the gradients: gradient ascent, silently (NaN: Lightning's error blamed a second value);
    a null ``max_steps`` (Lightning's TypeError traceback; null max_epochs is its default)."""
    check_count("trainer.accumulate_grad_batches", trainer.get("accumulate_grad_batches", 1), 1)
    if "max_steps" in trainer and trainer["max_steps"] is None:  # Lightning's TypeError traceback ('<' on None)
        raise ConfigError("trainer.max_steps must be an integer, got null: write -1 for no limit (max_epochs "
                          "decides) or a number of steps")
    if trainer.get("check_val_every_n_epoch") is not None:
        check_count("trainer.check_val_every_n_epoch", trainer["check_val_every_n_epoch"], 1, " (or null)")
    if trainer.get("val_check_interval") is not None:
        check_number("trainer.val_check_interval", trainer["val_check_interval"], 0.0, low_open=True,
                     note=" (batches, or a fraction of the epoch)")
    if trainer.get("gradient_clip_val") is not None:
        check_number("trainer.gradient_clip_val", trainer["gradient_clip_val"], 0.0, note=" (or null: no clipping)")


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every CPU
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def check_cpu_devices(trainer: Mapping) -> None:
    """``trainer.devices`` N on the CPU (``accelerator: cpu``, or ``auto`` without a GPU) is N training
    processes: more than the CPUs there are was taken (``devices: 64`` on 2 cores started 64 processes
    and hung in their setup), where a GPU count past the GPUs there are is Lightning's own error."""
    problem = cpu_devices_problem(trainer.get("devices"), trainer.get("accelerator", "auto"))
    if problem is not None:
        raise ConfigError(f"trainer.devices {problem.replace('{accelerator}', 'accelerator')}")


def cpu_devices_problem(devices: object, accelerator: object) -> str | None:
    """``must be at most N on the CPU (...), got M`` for a count of processes on the CPU past its CPUs, and
    ``must be a count ...`` for what the CPU takes no count from (-1, 0, a list of indices: Lightning's
    TypeError traceback "should be an int > 0"); ``{accelerator}`` in it: the accelerator's setting, as the
    caller names it. None when fine, or not on the CPU. A count given as text (``--trainer.devices 4``,
    which the command line gives as "4") is read as Lightning reads it."""
    if devices is None or devices == "auto":
        return None
    count = int(devices) if isinstance(devices, str) and devices.strip().isdigit() else devices
    if isinstance(count, int) and not isinstance(count, bool) and count == 1:
        return None
    if accelerator == "auto":
        import torch

        if torch.cuda.is_available() or torch.backends.mps.is_available():
            return None
    elif accelerator != "cpu":
        return None
    cpus = usable_cpus()
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return (f"must be a count of processes from 1 to {cpus} on the CPU ({{accelerator}} {accelerator}: one "
                f"process per device; -1, 0 and device indices are for GPUs), got {devices}")
    if count <= cpus:
        return None
    return (f"must be at most {cpus} on the CPU ({{accelerator}} {accelerator}: one process per device, and this "
            f"machine has {cpus} CPUs), got {devices}")


def check_accelerator(trainer: Mapping) -> None:
    """``trainer.accelerator`` gpu, cuda or mps where torch has no such device: Lightning's own words ("No
    supported gpu backend found!") said neither the setting nor what to use instead."""
    accelerator = trainer.get("accelerator")
    if accelerator not in ("gpu", "cuda", "mps"):
        return
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if cuda and accelerator != "mps" or mps and accelerator != "cuda":
        return
    missing = "MPS device (Apple silicon)" if accelerator == "mps" else f"CUDA GPU that torch {torch.__version__} can use"
    raise ConfigError(f"trainer.accelerator must be cpu or auto on this machine, which has no {missing}, got "
                      f"{accelerator}: set it to cpu (with precision 32-true or bf16-mixed; 16-mixed is a GPU's), or "
                      "run on a machine with a GPU")


def check_fit_length(trainer: Mapping) -> None:
    """``trainer.max_steps`` / ``max_epochs`` 0 for ``fit``: Lightning trains nothing and the run ends
    with the untrained (or init_from) weights saved as its checkpoint, as if trained; -1 (no limit) and
    null stay, and other negatives get Lightning's own error."""
    for key in ("max_steps", "max_epochs"):
        value = trainer.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value == 0:
            raise ConfigError(f"trainer.{key} must be at least 1 (or -1: no limit), got 0: fit would train nothing "
                              "and save the untrained model as its checkpoint; to load a model without training, "
                              "run `speechsum validate` with the same config")


def check_seed(seed: object) -> None:
    """``seed_everything``: true (a random seed), false or null (none), or an integer numpy seeds with;
    another was Lightning's ValueError traceback ("-1 is not in bounds, numpy accepts ...")."""
    if isinstance(seed, bool) or seed is None:
        return
    low, high = SEED_RANGE
    if not isinstance(seed, int) or not low <= seed <= high:
        raise ConfigError(f"seed_everything must be an integer from {low} to {high} (what numpy's seeding takes), "
                          f"true for a random seed, or false, got {seed!r}")


def stepping_batches(trainer: L.Trainer) -> int | float:
    """``trainer.estimated_stepping_batches`` (it loads the training data), with an integer
    ``val_check_interval`` above the number of training batches in an epoch refused as a
    :class:`ConfigError` naming both (Lightning's ValueError traceback before, at the first step)."""
    try:
        return trainer.estimated_stepping_batches
    except ValueError as err:
        if "val_check_interval" not in str(err) or not isinstance(trainer.val_check_interval, int):
            raise
        batches = trainer.fit_loop.max_batches
        raise ConfigError(
            f"trainer.val_check_interval ({trainer.val_check_interval}) is more than the {batches} training "
            f"batch(es) of an epoch, so validation would never run: give at most {batches}, a fraction of the "
            "epoch (1.0: at its end), or check_val_every_n_epoch: null to count batches across epochs "
            "(limit_val_batches: 0 turns validation off)") from None

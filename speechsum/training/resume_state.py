"""What ``--ckpt_path`` restores beyond the weights, checked and set right before Lightning restores it:
an epoch that ``max_steps`` cut short is resumed where it stopped, and an optimizer state that cannot
hold this model's trainable weights is refused naming what changed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from speechsum.models.checkpoint import CheckpointError

log = logging.getLogger(__name__)
SETTINGS_KEY = "speechsum_trainer_settings"  # a checkpoint's trainer settings a resume may not see changed silently


def reopen_epoch_cut_short(checkpoint: dict[str, Any]) -> bool:
    """A checkpoint saved when ``trainer.max_steps`` ended ``fit`` mid-epoch is saved in
    ``on_train_epoch_end``, with the epoch counted as processed: Lightning resumed it (a raised
    ``max_steps``) at the next epoch, silently skipping the rest of the epoch's batches (and with
    ``max_epochs: 1`` training nothing, saying ``max_epochs=1`` was reached). The epoch is marked
    unfinished again here, so the resumed run goes on with its next batch, as the uninterrupted run
    did. Returns whether it changed ``checkpoint``."""
    loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    epochs, batches = loop.get("epoch_progress"), loop.get("epoch_loop.batch_progress")
    if not isinstance(epochs, dict) or not isinstance(batches, dict):
        return False
    current = epochs.get("current") or {}
    ended_early = (batches.get("is_last_batch") is False and (batches.get("current") or {}).get("ready", 0) > 0
                   and current.get("started") == current.get("processed") == current.get("completed", -2) + 1)
    if not ended_early:
        return False
    for progress in (epochs["current"], epochs["total"]):
        progress["processed"] -= 1
    return True


def check_optimizer_groups(checkpoint: dict[str, Any], groups: Sequence[int], source: str,
                           learning_rate: float, weight_decay: float) -> None:
    """Refuse an optimizer state whose parameter groups hold other counts of tensors than ``groups``
    (this model's, decayed and not) as a :class:`CheckpointError` naming ``source`` (torch's "loaded state
    dict contains a parameter group that doesn't match the size of optimizer's group" traceback before);
    warn that a changed ``learning_rate`` or ``weight_decay`` is not used: the optimizer's saved
    state (and the schedule's base rates) are restored, as Lightning resumes."""
    states = checkpoint.get("optimizer_states") or []
    saved_groups = states[0].get("param_groups") if states and isinstance(states[0], dict) else None
    if not isinstance(saved_groups, list):
        return
    saved = [len(group.get("params", ())) for group in saved_groups]
    if saved != list(groups):
        raise CheckpointError(
            f"{source}: its optimizer state holds {sum(saved)} trainable tensors {saved}, this model trains "
            f"{sum(groups)} {list(groups)}: the training policy (policy.train_encoder, train_projector, llm, LoRA "
            "targets) changed since it was saved; resume with the policy it was trained with, or start a new run "
            f"from its weights with --model.init_args.init_from {source.removeprefix('ckpt_path ')} (no --ckpt_path)")
    first = saved_groups[0]
    for name, given, kept in (("learning_rate", learning_rate, first.get("initial_lr")),
                              ("weight_decay", weight_decay, first.get("weight_decay"))):
        if isinstance(kept, float | int) and kept != given:
            log.warning("%s: model.init_args.%s is %s in this config, but the resumed run keeps the %s it was "
                        "saved with (the optimizer's and the schedule's state are restored); to train on with %s, "
                        "start a new run with --model.init_args.init_from and no --ckpt_path", source, name, given,
                        kept, given)


def warn_when_nothing_left(checkpoint: dict[str, Any], max_steps: int, source: str) -> None:
    """A resume whose checkpoint already has ``trainer.max_steps`` steps trains nothing and exits 0,
    with Lightning's "max_steps=N reached" only: said as a warning naming the setting to raise."""
    step = checkpoint.get("global_step")
    if isinstance(step, int) and max_steps is not None and 0 <= max_steps <= step:
        log.warning("%s: saved at step %d and trainer.max_steps is %d: nothing is left to train; raise "
                    "--trainer.max_steps to train on from it", source, step, max_steps)


def warn_changed_accumulation(checkpoint: dict[str, Any], accumulate_grad_batches: int, source: str) -> None:
    """A resume whose ``trainer.accumulate_grad_batches`` differs from the checkpoint's (saved under
    :data:`SETTINGS_KEY`; older checkpoints hold none) was accepted without a word, as a changed learning rate
    was: said as a warning naming the setting and both values (the new one is used from the next step)."""
    kept = (checkpoint.get(SETTINGS_KEY) or {}).get("accumulate_grad_batches")
    if isinstance(kept, int) and kept != accumulate_grad_batches:
        log.warning("%s: trainer.accumulate_grad_batches is %d in this config, but the checkpoint was trained with "
                    "%d: from here on each optimizer step sums the gradients of %d batch(es), not %d, so the effective "
                    "batch and the optimizer steps per epoch are not the saved run's; resume with "
                    "--trainer.accumulate_grad_batches %d to train on as it did", source, accumulate_grad_batches,
                    kept, accumulate_grad_batches, kept, kept)

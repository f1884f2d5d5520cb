"""What every stage shares: optimiser + schedule, throughput logging, sample logging, checkpoints."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from speechsum.data.batch import SpeechBatch
from speechsum.data.processor import SpeechProcessor
from speechsum.models.base import SpeechLLM
from speechsum.models.checkpoint import (
    CheckpointError,
    check_rebuilt_weights,
    load_model_weights,
    match_state_dict,
    read_checkpoint_of,
    require_rebuildable,
)
from speechsum.models.generation import GenerationSettings, generate_texts
from speechsum.training.eval_mode import FrozenEvalModeNotice
from speechsum.training.finite_steps import FiniteStepGuard, check_saved_weights
from speechsum.training.resume_state import (
    SETTINGS_KEY,
    check_optimizer_groups,
    reopen_epoch_cut_short,
    warn_changed_accumulation,
    warn_when_nothing_left,
)
from speechsum.training.rng import RNG_STATES_KEY, collect_rng_states, restore_rng_states
from speechsum.training.setting_bounds import STAGE_COUNTS, STAGE_NUMBERS, check_settings
from speechsum.training.trainer_settings import stepping_batches
from speechsum.utils.arguments import masked_credentials
from speechsum.utils.denormals import flush_denormals
from speechsum.utils.distributed import gather_objects
from speechsum.utils.io import write_jsonl

log = logging.getLogger(__name__)
# on_after_batch_transfer below is the module's on purpose (SpeechSumDataModule has none): Lightning says so each run
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule` but")


def built_by_lightning_cli() -> bool:
    """Whether the Lightning CLI is instantiating a module right now. Its hyperparameters are then
    the YAML config (class_path dicts: safe to save whole, and what evaluate/pairs rebuild the model
    from); otherwise they are live objects (the model, a teacher) that must never be deep-copied
    into ``hparams`` nor pickled into a checkpoint.

    Lightning has no public API for this: it reads the private ContextVar
    ``lightning.pytorch.core.mixins.hparams_mixin._given_hyperparameters`` that LightningCLI sets
    (Lightning >= 2.3). If Lightning removes it, this returns False: CLI checkpoints then lack
    their model config and ``speechsum evaluate`` / ``pairs`` need the run's config.yaml.
    """
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:
        return False
    return _given_hyperparameters.get() is not None


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear 0→1 over ``warmup_steps``, then cosine 1→``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class SpeechStageModule(L.LightningModule):
    """Base of the stage modules. Subclasses implement ``training_step`` (and may extend the rest).

    Args:
        model: the speech LLM (a ``SpeechLLM`` subclass, chosen in YAML by ``class_path``).
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to biases and norms).
        warmup_steps: linear warm-up steps before the cosine decay.
        min_lr_ratio: final learning rate as a fraction of the peak.
        init_from: a checkpoint of an earlier stage to start from (weights only).
        num_val_samples: validation examples whose generations are logged each validation.
        generation: decoding for validation samples and predict.
        checkpoint_trainable_only: save only trainable weights (and buffers); the frozen rest is
            rebuilt from the model config, so LoRA checkpoints stay small.
    """

    # init arguments that are live objects outside the CLI (never saved as hyperparameters then)
    object_arguments: ClassVar[tuple[str, ...]] = ("model",)

    def __init__(
        self,
        model: SpeechLLM,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.1,
        init_from: str | None = None,
        num_val_samples: int = 4,
        generation: GenerationSettings | None = None,
        checkpoint_trainable_only: bool = True,
    ):
        super().__init__()
        check_settings({"learning_rate": learning_rate, "weight_decay": weight_decay, "min_lr_ratio": min_lr_ratio,
                        "warmup_steps": warmup_steps, "num_val_samples": num_val_samples}, STAGE_NUMBERS, STAGE_COUNTS)
        if generation is not None:
            generation.check("model.init_args.generation", model.context_length())
        self.save_hyperparameters(ignore=[] if built_by_lightning_cli() else list(self.object_arguments))
        # what loggers write (hparams.yaml, W&B's config): a teacher's base_url without its user:password@
        self._hparams_initial = masked_credentials(self._hparams_initial)
        self.model = model
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.num_val_samples = num_val_samples
        self.generation = generation or GenerationSettings()
        self.checkpoint_trainable_only = checkpoint_trainable_only
        self.strict_loading = not checkpoint_trainable_only
        self._val_samples: list[dict[str, Any]] = []
        self._val_batches_seen = 0  # validation batches of this validation passed to collect_val_samples
        self._reset_window()
        self._init_weights: set[str] = set()  # state-dict keys loaded from init_from, kept in checkpoints
        self._resumed_rng_states: dict[str, Any] | None = None  # set by a resume, used at its first step
        self._eval_mode_notice = FrozenEvalModeNotice()  # Lightning's warning about the frozen parts' eval mode
        self._finite_steps = FiniteStepGuard()  # a NaN/inf loss or gradient stops fit before the optimizer step
        self._train_batch_ids: list[str] = []
        self._padding_batch = False  # this validation/test batch is a DDP rank's padding: log() weighs it 0
        if init_from:
            self.load_weights(init_from)

    @property
    def processor(self) -> SpeechProcessor:
        return self.model.processor

    def required_fields(self, split: str) -> tuple[str, ...]:
        """The manifest fields this stage reads from every example of ``split`` (train, val, test);
        the data module requires them at load, so a line without one is a bad line there."""
        return ()

    def setup(self, stage: str) -> None:
        """Trainer-driven runs (the CLI, notebooks) flush subnormal floats: utils/denormals.py."""
        flush_denormals()

    def on_fit_start(self) -> None:
        """The frozen parts' modules stay in eval mode as loaded: said in one line, not as Lightning's
        warning that they may lead to unexpected behaviour (:mod:`speechsum.training.eval_mode`)."""
        self._eval_mode_notice.start(self)

    def on_train_start(self) -> None:
        self._eval_mode_notice.stop()

    def teardown(self, stage: str) -> None:
        self._eval_mode_notice.stop()

    # -- weights and checkpoints --------------------------------------------------------------
    def load_weights(self, path: str) -> None:
        """Start from an earlier stage's checkpoint (weights only; see
        :func:`speechsum.models.checkpoint.load_model_weights`): trainable weights the checkpoint
        does not have (a new LoRA adapter) keep their fresh init and are logged."""
        checkpoint = read_checkpoint_of("init_from", path)
        require_rebuildable(checkpoint, path)
        state = checkpoint["state_dict"]
        check_rebuilt_weights(self.model, checkpoint, self.hparams.get("model"), f"init_from {path}")
        fresh = load_model_weights(self.model, state, f"init_from {path}", require_trainable=False)
        self._init_weights |= {f"model.{key}" for key in match_state_dict(self.model, state, path)}
        log.info("%s: loaded %d tensors; %d trainable weights start fresh %s", path, len(state), len(fresh), fresh[:3])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """With ``checkpoint_trainable_only``, frozen weights are left out, except those loaded from
        ``init_from``: the model config cannot rebuild them (a projector aligned in an earlier stage
        and frozen in this one would come back random in ``export``, ``evaluate`` and ``serve``).
        Weights holding NaN or infinity are never saved (:func:`~speechsum.training.finite_steps.check_saved_weights`)."""
        if self.checkpoint_trainable_only:
            # remove_duplicate=False: a tied head (lm_head = embed_tokens) is frozen under both names.
            frozen = {
                f"model.{name}"
                for name, p in self.model.named_parameters(remove_duplicate=False)
                if not p.requires_grad
            } - self._init_weights
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}
        check_saved_weights(self._trainer, checkpoint["state_dict"])  # never a checkpoint of NaN weights
        checkpoint[RNG_STATES_KEY] = {**collect_rng_states(), "validation_follows": self._validation_follows()}
        if self._trainer is not None:  # a resume with another value is said (warn_changed_accumulation)
            checkpoint[SETTINGS_KEY] = {"accumulate_grad_batches": self._trainer.accumulate_grad_batches}
        if "hyper_parameters" in checkpoint:  # a teacher base_url's user:password@ not in the file (lightning_cli
            # puts it back from the config given to validate/test/predict)
            checkpoint["hyper_parameters"] = masked_credentials(checkpoint["hyper_parameters"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint of another model config (``--ckpt_path``) is refused naming the file and the
        weights that do not fit (a size-mismatch traceback from ``load_state_dict`` before)."""
        source = f"ckpt_path {self._trainer.ckpt_path}" if self._trainer is not None else "checkpoint"
        match_state_dict(self.model, checkpoint["state_dict"], source)
        trainable = {f"model.{name}" for name, _ in self.model.trainable_parameters()}
        missing = sorted(trainable - checkpoint["state_dict"].keys())
        if missing:
            raise CheckpointError(f"{source}: lacks {len(missing)} trainable weights of this model, e.g. "
                                  f"{missing[:3]}: it was trained with another model config or training policy")
        strategy = type(self._trainer.strategy).__name__ if self._trainer is not None else ""
        if not any(sharded in strategy for sharded in ("FSDP", "DeepSpeed", "ModelParallel")):  # groups of shards
            check_optimizer_groups(checkpoint, [len(group) for group in self._parameter_groups()], source,
                                   self.learning_rate, self.weight_decay)
        if self._trainer is not None and self._trainer.training:
            warn_when_nothing_left(checkpoint, self._trainer.max_steps, source)
            warn_changed_accumulation(checkpoint, self._trainer.accumulate_grad_batches, source)
        if reopen_epoch_cut_short(checkpoint):
            log.info("%s: saved where max_steps ended its epoch early: the epoch goes on with its next batch", source)
        self._resumed_rng_states = checkpoint.get(RNG_STATES_KEY)

    def _continue_random_draws(self) -> None:
        """At the first training batch after ``--ckpt_path``: the global generators continue as in
        the uninterrupted run (dropout, KD's sampled completions): the checkpoint's states, then the
        seeds that run's loaders drew after the save (a validation's; a new epoch's training loader's)."""
        states, self._resumed_rng_states = self._resumed_rng_states, None
        if states is None:
            return
        restore_rng_states(states)
        new_epoch = self.trainer.fit_loop.epoch_loop.batch_progress.current.ready == 0
        for _ in range(int(states.get("validation_follows", False)) + int(new_epoch)):
            torch.empty((), dtype=torch.int64).random_()  # what DataLoader.__iter__ draws

    def _validation_follows(self) -> bool:
        """Whether the checkpoint is saved at the end of a training batch that Lightning follows
        with a validation (its own test), which a resumed run skips."""
        trainer = self._trainer
        if trainer is None or not trainer.training:
            return False
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        if progress.completed == progress.processed:  # not in on_train_batch_end (e.g. at the epoch's end)
            return False
        # Lightning's private test (2.x); without it a resume after a validation is off by one draw
        should_check = getattr(trainer.fit_loop.epoch_loop, "_should_check_val_fx", None)
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        try:
            return bool(should_check is not None and fetcher is not None and should_check(fetcher))
        except Exception:  # another Lightning's private API: resume is off by one draw, never a failed save
            return False

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """After the resumed loader drew its seed, before any hook of the first step; also notes whether
        a validation/test batch is a DDP rank's padding (``SpeechBatch.padding``), which :meth:`log` weighs 0."""
        if self._resumed_rng_states is not None and self.trainer.training:
            self._continue_random_draws()
        self._padding_batch = bool(getattr(batch, "padding", False)) and not self.trainer.training
        return batch

    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._padding_batch = False  # what an epoch's end logs is no padding

    on_test_batch_end = on_validation_batch_end

    # -- optimisation ---------------------------------------------------------------------------
    def on_train_batch_start(self, batch: SpeechBatch, batch_idx: int) -> None:
        self._train_batch_ids = list(getattr(batch, "ids", []))

    def on_before_backward(self, loss: Tensor) -> None:
        self._finite_steps.add_loss(loss, self._train_batch_ids)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """A NaN or infinite loss or gradient ends fit here, before the weights change
        (:mod:`speechsum.training.finite_steps`). Under fp16 mixed precision the gradient scaler
        skips steps with infinite gradients itself: only the losses are checked then."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        self._finite_steps.check(self.trainer, self.model.named_parameters(), check_gradients=scaler is None)

    def _parameter_groups(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        """The trainable weights AdamW decays, and those it does not (biases and norms)."""
        decay, no_decay = [], []
        for name, parameter in self.model.trainable_parameters():
            (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
        return decay, no_decay

    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = self._parameter_groups()
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.learning_rate,
            # one fused kernel over all tensors (CPU and CUDA; ~8x faster than the per-tensor loop on CPU)
            fused=all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in decay + no_decay) or None,
        )
        total = max(1, int(stepping_batches(self.trainer)))
        warmup = min(self.warmup_steps, total)
        schedule = LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total, self.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def log(self, name: str, value: Any, *args: Any, batch_size: int | float | None = None, **kwargs: Any) -> None:
        """Lightning's ``log`` (``log_dict`` calls it), with ``batch_size`` passed on as a float.
        Lightning keeps a batch-weighted mean's summed batch size in an integer tensor, and with
        ``sync_dist`` averages it over the ranks in place, truncating: ranks of 4 and 3 examples
        gave 3, not 3.5, and every synced mean came out 7/6 too large (``val/on_policy`` 1.17). A
        float sum is averaged exactly; single-process values are the same. In a DDP rank's padding batch
        (a repeat that evens out the ranks' steps) it is 0: each example counts once, as in one process."""
        if self._padding_batch:
            batch_size = 0
        super().log(name, value, *args, batch_size=None if batch_size is None else float(batch_size), **kwargs)

    # -- throughput logging ---------------------------------------------------------------------
    def _reset_window(self) -> None:
        self._window: dict[str, Any] = {"tokens": 0, "audio_seconds": 0, "started": time.perf_counter()}

    def on_train_epoch_start(self) -> None:
        self._reset_window()

    def on_train_batch_end(self, outputs: Any, batch: SpeechBatch, batch_idx: int) -> None:
        """Throughput over each logging window (``log_every_n_steps`` batches, data loading
        included). Counts stay on the device between logs; the one ``float()`` per window
        synchronises, so GPU timings are real. ``log_every_n_steps: 0`` is Lightning's "no logging":
        nothing is counted."""
        if not self.trainer.log_every_n_steps:
            return
        window = self._window
        window["tokens"] += batch.prompt_mask.sum()
        if batch.response_mask is not None:
            window["tokens"] += batch.response_mask.sum()
        window["audio_seconds"] += batch.audio_seconds.sum()
        if (batch_idx + 1) % self.trainer.log_every_n_steps:
            return
        tokens, audio_seconds = float(window["tokens"]), float(window["audio_seconds"])
        seconds = max(time.perf_counter() - window["started"], 1e-9)
        self.log_dict(
            {
                "train/tokens_per_s": tokens / seconds,
                "train/audio_s_per_s": audio_seconds / seconds,
                "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"],
            },
            batch_size=len(batch),
        )
        self._reset_window()

    # -- sample generations ---------------------------------------------------------------------
    def generate_text(self, batch: SpeechBatch) -> list[str]:
        return generate_texts(self.model, batch, self.generation).texts

    def collect_val_samples(
        self, batch: SpeechBatch, predictions: Sequence[str] | None = None, references: Sequence[str] | None = None
    ) -> None:
        """Keep the first ``num_val_samples`` validation examples of each validation (none in the
        sanity check) as ``{id, instruction, reference, prediction}``; written and logged at its end.
        ``predictions``: the batch's texts when the step has them (default: generated with
        ``generation``); ``references``: instead of the batch's reference summaries."""
        self._val_batches_seen += 1
        wanted = min(self.num_val_samples - len(self._val_samples), len(batch))
        if wanted <= 0 or self.trainer.sanity_checking:
            return
        predictions = self.generate_text(batch) if predictions is None else predictions
        references = [r or "" for r in batch.references] if references is None else references
        for i in range(wanted):
            self._val_samples.append(
                {"id": batch.ids[i], "instruction": batch.instructions[i], "reference": references[i],
                 "prediction": predictions[i], "batch": self._val_batches_seen - 1}
            )

    def on_validation_epoch_end(self) -> None:
        """Rank 0 writes and logs the first ``num_val_samples`` examples of the whole validation
        set: under DDP every rank's are gathered and taken in the common batch order (rank r's
        batch b is batch ``b · world + r``), the padding's repeats once. Every rank calls the
        collectives here (the gather, ``trainer.log_dir``); rank 0 alone waited in them before."""
        local, self._val_samples, self._val_batches_seen = self._val_samples, [], 0
        ranks = gather_objects(local)
        ordered = sorted((sample["batch"] * len(ranks) + rank, position, sample)
                         for rank, samples in enumerate(ranks) for position, sample in enumerate(samples))
        samples: list[dict[str, Any]] = []
        for *_, sample in ordered:
            if len(samples) < self.num_val_samples and all(s["id"] != sample["id"] for s in samples):
                samples.append({k: v for k, v in sample.items() if k != "batch"})
        if not samples:
            return
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "samples"  # a collective under DDP
        if not self.trainer.is_global_zero:
            return
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                columns = list(samples[0])
                logger.log_text("val/samples", columns=columns, data=[[s[c] for c in columns] for s in samples])
        write_jsonl(folder / f"step{self.global_step:07d}.jsonl", samples)

    def predict_step(self, batch: SpeechBatch, batch_idx: int) -> list[dict[str, Any]]:
        if batch.padding:  # a DDP rank's repeat of another rank's batch, whose rows that rank writes
            return []
        out = generate_texts(self.model, batch, self.generation)  # truncated: cut at max_new_tokens (was unsaid)
        return [{"id": i, "instruction": ins, "reference": ref, "prediction": pred, "truncated": bool(cut)} for i, ins,
                ref, pred, cut in zip(batch.ids, batch.instructions, batch.references, out.texts, out.truncated.tolist())]

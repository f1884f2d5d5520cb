"""Stage 3, DPO: prefer the judge's chosen summary over the rejected one, against a frozen reference
(the KD checkpoint the stage starts from, ``init_from``)."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from peft.tuners.lora import LoraLayer
from torch import Tensor

from speechsum.data.batch import SpeechBatch, SpeechCollator
from speechsum.data.loader import SpeechLoader
from speechsum.losses import dpo_loss
from speechsum.models.base import SpeechLLM
from speechsum.models.checkpoint import NOT_REBUILDABLE
from speechsum.models.modes import eval_mode
from speechsum.models.policy import lora_disabled
from speechsum.stages.base import SpeechStageModule
from speechsum.stages.dpo.reference_logprobs import (
    cache_path,
    compute_reference_logps,
    data_fingerprint,
    encode_audio_once,
    encoder_trains,
    load_table,
    pair_token_logprobs,
    save_table,
    weights_fingerprint,
)
from speechsum.training.setting_bounds import CLASS_NUMBERS, check_settings
from speechsum.utils.arguments import ConfigError
from speechsum.utils.write_errors import UNWRITABLE

log = logging.getLogger(__name__)

ReferenceMode = Literal["precomputed", "frozen_copy", "lora_disabled"]


def fold_lora_into_base(model: SpeechLLM) -> int:
    """Add every LoRA adapter's delta ``B·A·scale`` to its frozen base weight and zero ``B``: the
    model computes the same function, and with adapters off it is now this model, not the base
    LLM without the earlier stage's adapters. Returns the number of layers folded."""
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    with torch.no_grad():
        for layer in layers:
            for name in layer.active_adapters:
                if name not in layer.lora_A:
                    continue
                base = layer.get_base_layer()
                base.weight += layer.get_delta_weight(name).to(base.weight.dtype)
                layer.lora_B[name].weight.zero_()
    return len(layers)


class DPOModule(SpeechStageModule):
    """Direct Preference Optimisation on (audio, instruction, chosen, rejected) pairs.

    Loss: :func:`speechsum.losses.dpo_loss` on sequence log-probs (sums over response tokens),
    plus ``rpo_alpha`` × token-mean cross-entropy on the chosen response (RPO). Both responses
    share one audio encoding and, with ``share_prompt``, one prompt forward.

    Args:
        beta: DPO temperature β (strength of the pull towards the reference).
        loss_type: "sigmoid" (DPO) or "ipo".
        label_smoothing: ε of conservative DPO (sigmoid only): the share of flipped labels assumed.
        rpo_alpha: weight of the SFT term on chosen responses (0: off).
        reference: the frozen reference = the model as built (after ``init_from``):
            "precomputed" — its log-probs over the train/val pairs are computed once before
            training and cached on disk, so each step is one policy forward (default);
            "frozen_copy" — a frozen copy (frozen weights are shared, only trainable ones copied);
            "lora_disabled" — the policy with LoRA off and the other trainable weights (projector)
            swapped back to their initial values; the adapters of ``init_from`` are folded into the
            base weights at start, so a checkpoint of this mode must be rebuilt from its config.
        reference_cache_dir: folder of precomputed reference log-probs (default:
            ``<trainer.default_root_dir>/reference_logps``).
        share_prompt: run each pair's prompt once and both responses on its cache
            (:func:`~speechsum.stages.dpo.reference_logprobs.shared_prefix_pair_logprobs`; the same
            log-probs) instead of ``[chosen; rejected]`` as 2B full rows. None: on a CPU only, where
            the step is compute-bound (1.35–1.47× faster at the benchmark's sizes); on a GPU a
            ~0.5B student with 30-s clips is launch-bound and the second LM call made the step
            slower (H200, batch 16: 0.94 → 1.25 s), so there it takes ``True``.
        **kwargs: the shared stage options (``SpeechStageModule``): learning rate, init_from, …
    """

    def __init__(
        self,
        model: SpeechLLM,
        beta: float = 0.1,
        loss_type: Literal["sigmoid", "ipo"] = "sigmoid",
        label_smoothing: float = 0.0,
        rpo_alpha: float = 0.0,
        reference: ReferenceMode = "precomputed",
        reference_cache_dir: str | None = None,
        share_prompt: bool | None = None,
        **kwargs,
    ):
        super().__init__(model, **kwargs)
        if loss_type not in ("sigmoid", "ipo"):
            raise ConfigError(f"model.init_args.loss_type must be 'sigmoid' or 'ipo', got {loss_type!r}")
        if reference not in ("precomputed", "frozen_copy", "lora_disabled"):
            raise ConfigError(f"model.init_args.reference must be precomputed, frozen_copy or lora_disabled, "
                              f"got {reference!r}")
        check_settings({"beta": beta, "label_smoothing": label_smoothing, "rpo_alpha": rpo_alpha},
                       CLASS_NUMBERS["DPOModule"])
        if loss_type == "ipo" and label_smoothing:  # the IPO loss has no labels to smooth: it was ignored silently
            raise ConfigError(f"model.init_args.label_smoothing ({label_smoothing}) is for loss_type: sigmoid; the ipo "
                              "loss has no labels to smooth: set label_smoothing: 0 or loss_type: sigmoid")
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing
        self.rpo_alpha = rpo_alpha
        self.reference = reference
        self.reference_cache_dir = reference_cache_dir
        self.share_prompt = share_prompt
        self.reference_table: dict[str, tuple[float, float]] = {}
        self.reference_cache_files: list[Path] = []
        self._reference_model: SpeechLLM | None = None
        self._initial_extras: dict[str, Tensor] = {}
        if reference == "lora_disabled":
            if not fold_lora_into_base(self.model):
                raise ConfigError("model.init_args.reference: lora_disabled needs a LoRA policy (policy.llm: lora)")
            self._initial_extras = {
                n: p.detach().clone() for n, p in self.model.trainable_parameters() if "lora_" not in n
            }
        elif reference == "frozen_copy":
            frozen = {id(p): p for p in self.model.parameters() if not p.requires_grad}
            reference_model = copy.deepcopy(self.model, memo=frozen).requires_grad_(False).eval()
            object.__setattr__(self, "_reference_model", reference_model)  # not a submodule: never saved
        self.reference_id = weights_fingerprint(self.model)  # identity of the reference weights

    def required_fields(self, split: str) -> tuple[str, ...]:
        return ("chosen", "rejected")

    @property
    def shares_prompt(self) -> bool:
        """``share_prompt``, or where it is None: whether the module is on a CPU."""
        return self.device.type == "cpu" if self.share_prompt is None else self.share_prompt

    def _apply(self, fn, *args, **kwargs):
        """``.to``/``.cuda``/``.double`` reach the frozen-copy reference too: its frozen weights are the
        policy's (converted in place, or replaced when the conversion cannot be in place), its trainable
        copies and buffers are its own."""
        super()._apply(fn, *args, **kwargs)
        if self._reference_model is not None:
            self._reference_model._apply(fn, *args, **kwargs)
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.reference == "lora_disabled" and self.checkpoint_trainable_only:
            checkpoint[NOT_REBUILDABLE] = (
                "DPO with reference: lora_disabled folded its init_from checkpoint's LoRA into the frozen base "
                "weights, which a trainable-only checkpoint does not hold; resume it with `speechsum fit "
                "--ckpt_path` (init_from is folded again), or train with checkpoint_trainable_only: false"
            )

    # -- the reference ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _as_reference(self) -> Iterator[SpeechLLM]:
        """The module that computes reference log-probs, in eval mode, gradients off."""
        model = self.model
        if self.reference == "frozen_copy":
            with torch.no_grad():
                yield self._reference_model
            return
        trainable = dict(model.trainable_parameters())
        saved = {name: trainable[name].data for name in self._initial_extras}
        with eval_mode(model):
            try:
                for name, initial in self._initial_extras.items():
                    trainable[name].data = initial.to(saved[name].device)
                with torch.no_grad(), lora_disabled(model) if self.reference == "lora_disabled" else contextlib.nullcontext():
                    yield model
            finally:
                for name, data in saved.items():
                    trainable[name].data = data

    def reference_logps(self, batch: SpeechBatch, audio: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Reference sequence log-probs ``(B,)`` of chosen and rejected. ``audio``: the batch's
        encoded audio, reused when the encoder is frozen (then it is the reference's too)."""
        if self.reference == "precomputed":
            missing = [i for i in batch.ids if i not in self.reference_table]
            if missing:
                raise KeyError(
                    f"no precomputed reference log-probs for {missing[:3]}: they are computed in the "
                    "trainer's setup (fit/validate/test) for that stage's manifests"
                )
            values = torch.tensor([self.reference_table[i] for i in batch.ids], device=self.device)
            return values[:, 0], values[:, 1]
        with self._as_reference() as reference:
            shared = audio if audio is not None and not encoder_trains(self.model) else None
            chosen, _, rejected, _ = pair_token_logprobs(reference, batch, shared, self.shares_prompt)
            return chosen.sum(-1), rejected.sum(-1)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"]}.get(stage, [])
        if self.reference == "precomputed" and splits:
            self.prepare_reference_table(self.trainer.datamodule, splits)

    def prepare_reference_table(self, datamodule, splits: list[str]) -> None:
        """Load, or compute once and cache, the reference log-probs of every pair of ``splits``.

        Runs before a checkpoint's weights are restored (Lightning's ``setup``), and refuses to
        compute from weights that are no longer the reference's."""
        cache_dir = Path(self.reference_cache_dir or Path(self.trainer.default_root_dir) / "reference_logps")
        precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
        for split in splits:
            dataset = datamodule.datasets.get(split)
            if dataset is None:
                continue
            settings = f"{precision}|{dataset.max_audio_seconds}|{dataset.too_long_audio}|{self.model.input_settings()}"
            path = cache_path(cache_dir, self.reference_id, data_fingerprint(dataset), settings)
            table = load_table(path)
            if table is not None and {e.id for e in dataset.examples} <= table.keys():
                log.info("%s: reference log-probs loaded from %s", split, path)
            else:
                table = self._compute_table(datamodule, dataset, split)
                if self._trainer is None or self.trainer.is_global_zero:
                    self._save_table(path, table, split)
            clash = sorted(i for i in table.keys() & self.reference_table.keys() if table[i] != self.reference_table[i])
            if clash:  # one table, keyed by id: the later split's values would silently replace the earlier's
                raise ValueError(f"{split}: example id(s) {clash[:3]} are also ids of another split with other "
                                 "pairs or audio (DPO's reference log-probs are looked up by id): give every "
                                 "split's examples distinct ids")
            self.reference_table.update(table)
            self.reference_cache_files.append(path)

    def _save_table(self, path: Path, table: dict[str, tuple[float, float]], split: str) -> None:
        """Cache ``table`` at ``path``; a folder this process cannot write (read-only, another user's) keeps it
        in memory only, with a warning (it was an error after every pair had been scored)."""
        try:
            save_table(path, table, {"reference_id": self.reference_id, "split": split})
        except OSError as err:
            if err.errno not in UNWRITABLE:
                raise
            log.warning("%s: reference log-probs of %d pairs not cached: cannot write %s (%s); they are used from "
                        "memory and computed again next run: make reference_cache_dir writable", split, len(table),
                        err.filename or path, err.strerror)
            return
        log.info("%s: reference log-probs of %d pairs cached in %s", split, len(table), path)

    def _compute_table(self, datamodule, dataset, split: str) -> dict[str, tuple[float, float]]:
        if weights_fingerprint(self.model) != self.reference_id:
            raise RuntimeError(
                f"reference log-probs for {split} are not cached and the model's weights are no longer "
                "the reference's; rerun from the start (or set reference: frozen_copy)"
            )
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        self.model.to(device)
        size = datamodule.max_batch_size or 8
        loader = SpeechLoader(  # an example whose audio fails is skipped or raised as in training
            dataset, batch_size=size, shuffle=False,
            collate_fn=SpeechCollator(self.processor, preference=True, on_too_long=dataset.on_bad_example),
        )
        plugin = self.trainer.precision_plugin if self._trainer is not None else None

        def sequence_logps(batch: SpeechBatch) -> tuple[Tensor, Tensor]:
            batch = move_data_to_device(batch, device)
            autocast = plugin.forward_context() if plugin is not None else contextlib.nullcontext()
            with autocast, self._as_reference() as reference:  # the trainer's precision, as in training
                chosen, _, rejected, _ = pair_token_logprobs(reference, batch, encode_audio_once(reference, batch.audio),
                                                             self.shares_prompt)
            return chosen.sum(-1), rejected.sum(-1)

        return compute_reference_logps(sequence_logps, loader, len(loader), desc=f"reference log-probs ({split})")

    # -- steps ------------------------------------------------------------------------------------
    def preference_step(self, batch: SpeechBatch, prefix: str) -> Tensor:
        audio = encode_audio_once(self.model, batch.audio)
        chosen_tokens, chosen_mask, rejected_tokens, _ = pair_token_logprobs(self.model, batch, audio, self.shares_prompt)
        chosen, rejected = chosen_tokens.sum(-1), rejected_tokens.sum(-1)
        ref_chosen, ref_rejected = self.reference_logps(batch, audio)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen, rejected, ref_chosen, ref_rejected, self.beta, self.loss_type, self.label_smoothing
        )
        loss = losses.mean()
        metrics = {f"{prefix}/dpo_loss": loss.detach()}
        if self.rpo_alpha:
            nll = -chosen_tokens.sum() / chosen_mask.sum().clamp(min=1)  # token-mean CE on chosen
            loss = loss + self.rpo_alpha * nll
            metrics[f"{prefix}/nll_chosen"] = nll.detach()
        self.log(f"{prefix}/loss", loss.detach(), prog_bar=True, batch_size=len(batch), sync_dist=prefix != "train")
        metrics.update(
            {
                f"{prefix}/rewards/chosen": chosen_rewards.mean(),
                f"{prefix}/rewards/rejected": rejected_rewards.mean(),
                f"{prefix}/rewards/margin": (chosen_rewards - rejected_rewards).mean(),
                f"{prefix}/rewards/accuracy": (chosen_rewards > rejected_rewards).float().mean(),
                f"{prefix}/logps/chosen": chosen.detach().mean(),
                f"{prefix}/logps/rejected": rejected.detach().mean(),
            }
        )
        self.log_dict(metrics, batch_size=len(batch), sync_dist=prefix != "train")
        return loss

    def training_step(self, batch: SpeechBatch, batch_idx: int) -> Tensor:
        return self.preference_step(batch, "train")

    def validation_step(self, batch: SpeechBatch, batch_idx: int) -> None:
        self.preference_step(batch, "val")
        self.collect_val_samples(batch)

    def test_step(self, batch: SpeechBatch, batch_idx: int) -> None:
        self.preference_step(batch, "test")

"""Which parameters train: the paper's default is a frozen encoder, trainable projector, LoRA LLM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from speechsum.utils.arguments import ConfigError, check_choice, check_count, check_number


@dataclass
class TrainingPolicy:
    """Trainable parts of a SpeechLLM.

    Args:
        train_encoder: train the audio encoder (the paper keeps it frozen).
        train_projector: train the audio→LLM projector.
        llm: "lora" (adapters on a frozen LLM, as in the paper), "full" or "frozen".
        lora_r: LoRA rank.
        lora_alpha: LoRA scale numerator (scale = alpha/r).
        lora_dropout: dropout on the LoRA adapters' input.
        lora_target_modules: module names or "all-linear" (every linear layer of the LLM but its head).
        gradient_checkpointing: recompute LLM activations in the backward pass to save memory.
    """

    train_encoder: bool = False
    train_projector: bool = True
    llm: Literal["lora", "full", "frozen"] = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = field(default="all-linear")
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        """Settings that cannot work, refused naming them: peft's errors for ``lora_r: 0`` or
        ``lora_dropout: 1.5`` named no setting, ``lora_alpha: 0`` scaled the adapters to nothing (the
        LLM trained nothing) and a negative dropout was no dropout, without a word; an ``llm`` mode
        other than the three (the Python API) was ``frozen``."""
        check_choice("policy.llm", self.llm, ("lora", "full", "frozen"))
        if self.llm != "lora":
            return
        check_count("policy.lora_r", self.lora_r, 1)
        check_number("policy.lora_alpha", self.lora_alpha, 0.0, low_open=True, note=" (the adapters' scale is alpha/r)")
        check_number("policy.lora_dropout", self.lora_dropout, 0.0, 1.0, high_open=True)
        targets = self.lora_target_modules
        if not (targets.strip() if isinstance(targets, str) else targets):
            raise ConfigError(f"policy.lora_target_modules is empty ({targets!r}): give module names (e.g. [q_proj, "
                              "v_proj]) or 'all-linear'")


@dataclass
class ModuleGroups:
    """The parts of a backbone a policy acts on."""

    encoder: nn.Module
    projector: list[nn.Module]
    llm: nn.Module


def apply_training_policy(model: nn.Module, groups: ModuleGroups, policy: TrainingPolicy) -> None:
    """Freeze ``model``, then unfreeze (or add LoRA to) what ``policy`` trains. In place."""
    model.requires_grad_(False)
    groups.encoder.requires_grad_(policy.train_encoder)
    for module in groups.projector:
        module.requires_grad_(policy.train_projector)
    if policy.llm == "full":
        groups.llm.requires_grad_(True)
    elif policy.llm == "lora":
        config = LoraConfig(
            r=policy.lora_r,
            lora_alpha=policy.lora_alpha,
            lora_dropout=policy.lora_dropout,
            target_modules=policy.lora_target_modules,
        )
        check_lora_targets(policy.lora_target_modules, groups)
        inject_adapter_in_model(config, groups.llm)
        for name, parameter in groups.llm.named_parameters():
            parameter.requires_grad_("lora_" in name)
    if policy.gradient_checkpointing:
        groups.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(groups.llm, "config"):
            groups.llm.config.use_cache = False
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            # Weights loaded in bf16 still train in fp32 (under bf16-mixed autocast): AdamW steps
            # below bf16's resolution would otherwise be lost.
            parameter.data = parameter.data.float()
    for module in [groups.encoder, *groups.projector]:
        module.register_forward_pre_hook(cast_inputs_to_own_dtype, with_kwargs=True)


def check_lora_targets(targets: str | list[str], groups: ModuleGroups) -> None:
    """Every name of a ``lora_target_modules`` list must name a module of the LLM (peft's match: the
    name, or a dotted path ending in it); peft refused a list only when none matched, so a misspelt
    one among others (``[q_proj, v_prj]``) trained fewer adapters without a word. A string ("all-linear",
    a regex) is peft's to check."""
    if isinstance(targets, str):
        return
    names = [name for name, _ in groups.llm.named_modules()]
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if not unmatched:
        return
    linear = sorted({n.rpartition(".")[2] for n, m in groups.llm.named_modules() if isinstance(m, nn.Linear)})
    encoder = [t for t in unmatched if any(n == t or n.endswith("." + t) for n, _ in groups.encoder.named_modules())]
    note = (f" ({', '.join(encoder)} only in the audio encoder: LoRA goes on the LLM; policy.train_encoder trains the "
            "encoder)") if encoder else ""
    raise ConfigError(f"policy.lora_target_modules: {', '.join(map(repr, unmatched))} match(es) no module of the "
                      f"LLM{note}; its linear layers are {', '.join(linear)}: give some of those, or 'all-linear'")


def cast_inputs_to_own_dtype(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """Forward pre-hook: floating-point inputs in ``module``'s weight dtype when autocast is off.

    A model loaded in bf16 trains its projector (and encoder, when trained) in fp32; bf16-mixed
    autocast bridges the dtypes in training, but inference without autocast (``summarize``,
    ``serve``, ``evaluate`` at 32-true, an export loaded back) fed bf16 encoder frames to the fp32
    projector (Qwen2-Audio) or fp32 features to the bf16 encoder (Phi-4-MM) and failed. Under
    autocast, or with one dtype throughout, nothing changes."""
    weight = next(module.parameters(), None)
    if weight is None or torch.is_autocast_enabled(weight.device.type):
        return None

    def cast(value: object) -> object:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != weight.dtype:
            return value.to(weight.dtype)
        return value

    return tuple(cast(value) for value in args), {key: cast(value) for key, value in kwargs.items()}


@contextlib.contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """Run ``model`` with its LoRA adapters off: the LLM's base weights (everything else,
    projector included, stays as it is). Raises if ``model`` has no LoRA adapters."""
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if not layers:
        raise ValueError("lora_disabled: the model has no LoRA adapters (its policy is not llm: lora)")
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Random-init under a fixed seed (restoring the global RNG after), so a tiny random model is
    the same model every time it is built, e.g. when a checkpoint holding only trainable weights
    is resumed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield

"""Where each backbone's parts go in an exported Hugging Face directory, and the LoRA tensors
moved between speechsum's injected adapters and PEFT's saved adapter format.

- :func:`layout_of`: per backbone, the Hugging Face model written as a ``from_pretrained``
  directory (``hf_dir``), the processor/tokenizer saved beside it, and the ``init_args`` that
  rebuild the :class:`~speechsum.models.base.SpeechLLM` from the exported files.
- :func:`clean_state_dict`: that model's weights without LoRA wrapping, adapters merged or not.
- :func:`adapter_tensors` / :func:`load_adapter_tensors`: LoRA weights in PEFT's file naming
  (``base_model.model.<module>.lora_A.weight``), so ``PeftModel.from_pretrained`` and vLLM's
  ``--lora-modules`` read them, and back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from peft.tuners.lora import LoraLayer
from torch import Tensor, nn
from transformers import WhisperFeatureExtractor

from speechsum.models.base import SpeechLLM
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.phi4mm import Phi4MultimodalSpeechLLM
from speechsum.models.qwen2_audio import Qwen2AudioSpeechLLM
from speechsum.models.text_llm import TextLLM

ADAPTER_NAME = "default"  # the adapter name inject_adapter_in_model gives (TrainingPolicy)
PEFT_PREFIX = "base_model.model."  # how PeftModel names the wrapped model's weights on disk


@dataclass
class Layout:
    """One backbone's exported files.

    ``hf_model`` is saved with ``save_pretrained`` into ``hf_dir`` (relative to the export
    directory) next to ``save_processor``'s files; ``init_args`` replace the model config's
    (paths relative to the export directory); ``extra`` are modules saved as whole state dicts
    (``{name: (module, file relative to the export directory)}``) and loaded back strictly.
    """

    hf_model: nn.Module
    hf_dir: str
    save_processor: Callable[[Path], None]
    init_args: dict
    restore: Callable[[Path], None] = lambda folder: None  # after loading: what init_args cannot carry
    extra: dict[str, tuple[nn.Module, str]] = field(default_factory=dict)
    path_args: tuple[str, ...] = ()  # init_args that are paths inside the export directory


def layout_of(model: SpeechLLM) -> Layout:
    """The export layout of ``model``; an unknown backbone is refused, naming the known ones."""
    if isinstance(model, ComposedSpeechLLM):
        processor = model.processor
        encoder_config = {k: v for k, v in model.encoder.config.to_diff_dict().items() if k not in _NOT_INIT_KEYS}

        def save_composed(folder: Path) -> None:  # encoder/ loads with WhisperEncoder.from_pretrained
            processor.tokenizer.save_pretrained(str(folder / "llm"))
            processor.feature_extractor.save_pretrained(str(folder / "encoder"))
            model.encoder.config.save_pretrained(str(folder / "encoder"))

        return Layout(
            model.llm, "llm", save_composed,
            {"llm": "llm", "tokenizer": "llm", "encoder": encoder_config, "dtype": None, "feature_cache": None},
            extra={"encoder": (model.encoder, "encoder/model.safetensors"),
                   "projector": (model.projector, "projector.safetensors")},
            path_args=("llm", "tokenizer"),
            restore=lambda folder: setattr(processor, "feature_extractor",
                                           WhisperFeatureExtractor.from_pretrained(str(folder / "encoder"))),
        )
    if isinstance(model, TextLLM):
        return Layout(model.llm, ".", lambda folder: model.processor.tokenizer.save_pretrained(str(folder)),
                      {"llm": ".", "tokenizer": None, "dtype": None, "copy_init": False}, path_args=("llm",))
    if isinstance(model, Phi4MultimodalSpeechLLM):
        return Layout(model.hf, ".", lambda folder: save_phi4_processor(model, folder),
                      {"model": ".", "dtype": None, "revision": None, "speech_lora": None}, path_args=("model",),
                      extra=_trained_audio_parts(model))
    if isinstance(model, Qwen2AudioSpeechLLM):
        return Layout(model.hf, ".", lambda folder: model.processor.processor.save_pretrained(str(folder)),
                      {"model": ".", "dtype": None}, path_args=("model",), extra=_trained_audio_parts(model))
    raise ValueError(
        f"cannot export a {type(model).__name__}: export knows ComposedSpeechLLM, TextLLM, Phi4MultimodalSpeechLLM "
        "and Qwen2AudioSpeechLLM"
    )


def _trained_audio_parts(model: SpeechLLM) -> dict[str, tuple[nn.Module, str]]:
    """A native backbone's trained projector (and encoder, when it trains), also saved on their own:
    they train in fp32 when the model is loaded in bf16/fp16, and ``from_pretrained`` loads every
    weight of ``model.safetensors`` in the config's dtype, which rounded them on the way back."""
    groups = model.module_groups()
    parts = {f"projector.{i}": module for i, module in enumerate(groups.projector)}
    if any(parameter.requires_grad for parameter in groups.encoder.parameters()):
        parts["encoder"] = groups.encoder
    return {name: (module, f"speechsum_trained/{name}.safetensors") for name, module in parts.items()
            if any(parameter.requires_grad for parameter in module.parameters())}


_NOT_INIT_KEYS = {"architectures", "transformers_version", "model_type", "torch_dtype", "dtype", "_name_or_path"}


def save_phi4_processor(model: SpeechLLM, folder: Path) -> None:
    """Phi-4-MM's feature extractor, tokenizer (with its chat template) and processor config. The
    image processor (which needs torchvision) is not written: speech-only, as speechsum runs it."""
    processor = model.processor.processor
    processor.audio_processor.save_pretrained(str(folder))
    tokenizer = processor.tokenizer
    if tokenizer.chat_template is None and processor.chat_template:
        tokenizer.chat_template = processor.chat_template
    tokenizer.save_pretrained(str(folder))


def lora_layers(module: nn.Module) -> dict[str, LoraLayer]:
    """``{module path: LoRA layer}`` under ``module``."""
    return {name: m for name, m in module.named_modules() if isinstance(m, LoraLayer)}


def clean_state_dict(module: nn.Module, merge: bool) -> dict[str, Tensor]:
    """``module``'s weights as the plain model (no ``base_layer`` / ``lora_*`` keys): each LoRA
    layer's base weight, plus its adapter's delta ``B·A·(alpha/r)`` when ``merge``."""
    state = {}
    layers = lora_layers(module)
    for key, value in module.state_dict().items():
        if ".lora_" in key:
            continue
        stem, _, leaf = key.rpartition(".")
        if stem.endswith(".base_layer"):
            owner = stem.removesuffix(".base_layer")
            if merge and leaf == "weight":
                delta = layers[owner].get_delta_weight(ADAPTER_NAME)
                value = (value.float() + delta.float()).to(value.dtype)
            key = f"{owner}.{leaf}"
        state[key] = value.detach().clone().contiguous()
    return state


def adapter_tensors(module: nn.Module) -> dict[str, Tensor]:
    """LoRA weights of ``module`` named as PEFT saves them for a model rooted at ``module``."""
    out = {}
    for key, value in module.state_dict().items():
        if ".lora_" in key:
            out[PEFT_PREFIX + key.replace(f".{ADAPTER_NAME}.", ".").replace(f".{ADAPTER_NAME}", "")] = (
                value.detach().clone().contiguous()
            )
    return out


def load_adapter_tensors(module: nn.Module, tensors: dict[str, Tensor], source: str) -> None:
    """Load :func:`adapter_tensors` output back into ``module``'s injected adapters; every LoRA
    weight must be present and every saved one used."""
    own = {key for key in module.state_dict() if ".lora_" in key}
    renamed = {}
    for key, value in tensors.items():
        inner = key.removeprefix(PEFT_PREFIX)
        inner = re.sub(r"\.(lora_[A-Za-z_]+?)\.(weight|bias)$", rf".\1.{ADAPTER_NAME}.\2", inner)
        inner = re.sub(r"\.(lora_magnitude_vector)$", rf".\1.{ADAPTER_NAME}.weight", inner)
        renamed[inner] = value
    unexpected, missing = sorted(renamed.keys() - own), sorted(own - renamed.keys())
    if unexpected or missing:
        raise ValueError(
            f"{source}: adapter does not fit the model (unexpected {unexpected[:3]}, missing {missing[:3]}); "
            "was it exported from this backbone?"
        )
    module.load_state_dict(renamed, strict=False)


def adapter_config(module: nn.Module) -> dict:
    """PEFT ``LoraConfig`` fields of ``module``'s adapters: rank, alpha, dropout and the exact
    module paths as a ``target_modules`` regex (so PEFT adds adapters nowhere else)."""
    layers = lora_layers(module)
    first = next(iter(layers.values()))
    dropout = first.lora_dropout[ADAPTER_NAME]
    return {
        "r": first.r[ADAPTER_NAME],
        "lora_alpha": first.lora_alpha[ADAPTER_NAME],
        "lora_dropout": float(getattr(dropout, "p", 0.0)),
        "target_modules": "^(" + "|".join(re.escape(name) for name in sorted(layers)) + ")$",
    }

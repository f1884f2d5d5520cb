"""The one way a stage checkpoint (``.ckpt``) is read and a ``SpeechLLM`` rebuilt from it.

- :func:`read_checkpoint`: ``torch.load(weights_only=True)`` only; a checkpoint that needs the
  full unpickler (arbitrary objects, i.e. code it could run) is refused with an error naming it.
- The model config is the ``{"class_path": …, "init_args": …}`` dict of the speech LLM: the
  checkpoint's saved hyperparameters (``hyper_parameters["model"]``, as LightningCLI saved it)
  or a stage config YAML's ``model.init_args.model`` (:func:`model_config_from_yaml`);
  :func:`instantiate_speech_llm` builds it with jsonargparse, as the CLI does.
- Class paths written before the package layout of issue 14 are rewritten by
  :data:`LEGACY_MODULES`.
- :func:`load_model_weights`: a (trainable-only) checkpoint's ``model.*`` weights into a model,
  matched across LoRA wrapping.
"""

from __future__ import annotations

import json
import os
import pickle
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import torch

from speechsum.models import import_backbones
from speechsum.models.base import SpeechLLM
from speechsum.utils.config_keys import unknown_key_note
from speechsum.utils.io import read_yaml

# Old module (or class path) → new, for class paths recorded before the re-layout (issue 14).
# Kept for one release: checkpoints and configs saved since then use the new paths.
LEGACY_MODULES: dict[str, str] = {
    "speechsum.teachers": "speechsum.stages.kd.teachers",
    "speechsum.teacher_callback": "speechsum.stages.kd.scoring_callback",
    "speechsum.reference_logprobs": "speechsum.stages.dpo.reference_logprobs",
    "speechsum.stages.kd": "speechsum.stages.kd.module",
    "speechsum.stages.dpo": "speechsum.stages.dpo.module",
    "speechsum.models.processor": "speechsum.data.processor",
    "speechsum.callbacks": "speechsum.training.callbacks",
    "speechsum.loggers": "speechsum.training.loggers",
    "speechsum.strategies": "speechsum.training.strategies",
    "speechsum.judges": "speechsum.judges.pairwise",
    "speechsum.evaluation.rubric_judge": "speechsum.judges.rubric",
    "speechsum.benchmark.fact_judge": "speechsum.judges.fact",
    "speechsum.remote": "speechsum.utils.remote",
    "speechsum.evaluation.files": "speechsum.utils.io",
    "speechsum.evaluation.text_analysis": "speechsum.utils.text_analysis",
    "speechsum.synth": "speechsum.synth.run",
    "speechsum.synth_prompts": "speechsum.synth.prompts",
    "speechsum.serve": "speechsum.serving.cli",
    "speechsum.pipeline": "speechsum.pipeline.cli",
    "speechsum.pipeline_config": "speechsum.pipeline.config",
    "speechsum.pipeline_runner": "speechsum.pipeline.runner",
    "speechsum.pipeline_stages": "speechsum.pipeline.stages",
    "speechsum.stages.base.GenerationSettings": "speechsum.models.generation.GenerationSettings",
}
CLASS_PATH_KEYS = ("class_path", "_class_path")
# Set (to the reason) by a stage whose checkpoint cannot be rebuilt from its model config and its
# saved weights: frozen weights changed in training and were not saved (see DPOModule).
NOT_REBUILDABLE = "speechsum_not_rebuildable"



class CheckpointError(ValueError):
    """A checkpoint that cannot be used (unreadable, not a stage checkpoint, weights that do not fit
    the model); the message names the file and what to do."""


class UnbuildableModelConfig(CheckpointError):
    """A model config jsonargparse cannot build (unknown class or option); callers add what to do."""


def current_class_path(class_path: str) -> str:
    """``class_path`` under today's layout: a whole class path in :data:`LEGACY_MODULES`, else its
    module (everything before the last dot) looked up there; anything else is returned unchanged."""
    if class_path in LEGACY_MODULES:
        return LEGACY_MODULES[class_path]
    module, _, name = class_path.rpartition(".")
    return f"{LEGACY_MODULES[module]}.{name}" if module in LEGACY_MODULES else class_path


def current_class_paths(config: Any) -> Any:
    """A copy of ``config`` (nested dicts/lists) with every ``class_path`` / ``_class_path`` value
    passed through :func:`current_class_path`."""
    if isinstance(config, dict):
        return {
            key: current_class_path(value) if key in CLASS_PATH_KEYS and isinstance(value, str)
            else current_class_paths(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [current_class_paths(item) for item in config]
    return config


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict, loaded on the CPU with ``weights_only=True``: tensors, containers and
    plain values only. Anything else (a pickled object) is refused, never unpickled. ``mmap``:
    tensors stay on disk until read (a cheap look at what a large checkpoint holds)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError:
        raise  # a missing file or a folder: the OS's message names it
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a file that is not a checkpoint
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        refused = [line for line in lines if "GLOBAL" in line or "Unsupported global" in line]
        if isinstance(err, pickle.UnpicklingError) and refused:
            reason = refused[0].split(" Please use")[0]  # torch's advice is to allow-list the object: not here
            raise CheckpointError(
                f"{path}: refused: the checkpoint holds objects beyond tensors and plain values, which only "
                f"the full pickle loader (able to run code) could read; re-save it with weights and configs only "
                f"({reason})"
            ) from None
        # torch's first line on a file that is no checkpoint advises weights_only=False (running its code): not here
        advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
        detail = next((line for line in lines if not line.startswith(advice)), lines[0] if lines else repr(err))
        cut = isinstance(err, EOFError) or "central directory" in detail  # the zip's index is at its end
        if cut:  # torch's next sentences ("This is an internal miniz error. If you are seeing this error, …") say no more
            detail = detail.split(". ")[0]
        if isinstance(err, EOFError) and os.path.isfile(path) and os.path.getsize(path) == 0:
            detail = "the file is empty"
        cause = ": the file ends early (a save or copy interrupted, a full disk?); copy it again or" if cut else ";"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {detail}){cause} give "
                              "the `.ckpt` a stage wrote, e.g. RUN/sft/checkpoints/last.ckpt") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a stage checkpoint (no `state_dict` mapping)")
    return checkpoint


def read_checkpoint_of(option: str, path: str) -> dict[str, Any]:
    """:func:`read_checkpoint` of the file a setting (``init_from``) names, its errors naming that setting: a
    missing file or a folder, and one cut short or no checkpoint (its message named the file alone)."""
    try:
        return read_checkpoint(path)
    except OSError as err:
        example = checkpoint_in(path) if os.path.isdir(path) else "RUN/align/checkpoints/last.ckpt"
        raise CheckpointError(f"{option} {path}: {err.strerror or err}; give the .ckpt of an earlier stage, e.g. "
                              f"{example}") from None
    except CheckpointError as err:
        raise CheckpointError(f"{option} {err}") from None


def check_training_checkpoint(path: str, named: str | None = None) -> None:
    """Raise :class:`~speechsum.models.checkpoint.CheckpointError` when ``path`` is not a readable
    Lightning training checkpoint, naming it as the user gave it (``named``, e.g. ``last → FILE``)."""
    named = named or path
    if os.path.isdir(path):  # was "[Errno 21] Is a directory"
        raise CheckpointError(f"ckpt_path {named} is a folder: give a checkpoint file, e.g. {checkpoint_in(path)}")
    try:
        checkpoint = read_checkpoint(path, mmap=True)
    except (OSError, ValueError):
        try:
            checkpoint = read_checkpoint(path)  # without mmap: torch's message then says what is wrong
        except (OSError, ValueError) as err:
            raise CheckpointError(f"ckpt_path {named}: {err}") from err
    if "pytorch-lightning_version" not in checkpoint:
        raise CheckpointError(f"ckpt_path {named}: not a Lightning training checkpoint (no trainer state to "
                              "resume); to start from its weights set model.init_args.init_from")


def checkpoint_in(folder: str | Path) -> str:
    """A checkpoint file of ``folder`` (a run or checkpoints folder) to name instead of it: its
    ``last.ckpt`` first, else the path one would have, with a note that there is none."""
    folder = Path(folder)
    found = sorted([*folder.glob("*.ckpt"), *folder.glob("checkpoints/*.ckpt")], key=lambda f: f.name != "last.ckpt")
    return str(found[0]) if found else f"{folder}/checkpoints/last.ckpt (there is no .ckpt in it)"


def require_rebuildable(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint marked :data:`NOT_REBUILDABLE`: a model rebuilt from it would be wrong."""
    reason = checkpoint.get(NOT_REBUILDABLE)
    if reason:
        raise CheckpointError(f"{path}: cannot be rebuilt from its model config and saved weights: {reason}")


def model_config_from_yaml(path: str | Path) -> dict:
    """``model.init_args.model`` of a stage config YAML (or a run's saved ``config.yaml``)."""
    config = read_yaml(path) or {}
    try:
        model_config = config["model"]["init_args"]["model"]
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: no model.init_args.model (a speechsum stage config is expected)") from err
    if not isinstance(model_config, dict):
        raise CheckpointError(f"{path}: model.init_args.model must be a mapping with class_path, got {model_config!r}")
    return model_config


def model_config_from_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> dict:
    """``hyper_parameters["model"]`` (saved when the stage was built by the Lightning CLI)."""
    hparams = checkpoint.get("hyper_parameters")
    model_config = hparams.get("model") if isinstance(hparams, dict) else None  # a list was an AttributeError
    if not isinstance(model_config, dict):
        raise CheckpointError(f"{path}: the checkpoint does not record its model config; pass the config.yaml it was "
                              "trained with (--config)")
    return json.loads(json.dumps(model_config, default=str))  # plain JSON values, as a YAML gives


def model_config_problem(message: str, model_config: dict, source: str | Path | None) -> str:
    """One line for jsonargparse's refusal ``message`` of the model config ``model_config`` (read from
    the stage YAML ``source``, None: a checkpoint or export): no ``class_path``, or the setting it names
    (a misspelt one, a value of the wrong type, a class that does not exist) and its ``FILE:LINE``."""
    where = f"{source}: " if source else ""
    if not isinstance(model_config.get("class_path"), str):
        return (f"{where}model.init_args.model has no class_path: add the backbone's class, e.g. class_path: "
                "speechsum.models.composed.ComposedSpeechLLM")
    if "does not correspond to a subclass" in message:  # jsonargparse: "expected another type, got {…}"
        return (f"{where}model.init_args.model: {model_config['class_path']} is not a speechsum backbone (a SpeechLLM): "
                "give one, e.g. class_path: speechsum.models.composed.ComposedSpeechLLM")
    note = unknown_key_note(message, [str(source)] if source else [], []).strip()
    return f"{where}the model config does not build: {note or ' '.join(message.split())}"


def instantiate_speech_llm(model_config: dict, source: str | Path | None = None) -> SpeechLLM:
    """A ``SpeechLLM`` from ``{"class_path": …, "init_args": …}`` with jsonargparse, as the CLI
    builds it (nested dataclasses such as the training policy typed the same way); ``source``: the
    stage YAML it was read from, named with the line of a setting it refuses."""
    from jsonargparse import ArgumentParser

    import_backbones()
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(SpeechLLM, "model", fail_untyped=False)
    try:
        config = parser.parse_object({"model": current_class_paths(model_config)})
    except ArgumentError as err:  # was a traceback ending in a dump of the whole config
        raise UnbuildableModelConfig(model_config_problem(str(err), model_config, source)) from None
    try:
        return parser.instantiate_classes(config).model
    except ValueError as err:  # jsonargparse buries the constructor's own error in a dump of the config
        if err.__cause__ is None:
            raise
        missing = missing_folders(model_config.get("init_args") or {})
        if missing:
            raise CheckpointError(
                f"the model config names folders that do not exist: {', '.join(missing)} (moved or deleted since "
                "training?); put them back, or pass --config with a stage config naming their new place "
                f"({type(err.__cause__).__name__}: {err.__cause__})"
            ) from None
        raise CheckpointError(f"{model_config.get('class_path')}: {err.__cause__}") from err.__cause__


def missing_folders(init_args: dict) -> list[str]:
    """``key=value`` of each init arg that is written as a local path (``/``, ``./``, ``../``, ``~``)
    and names nothing on disk."""
    return [f"{key}={value}" for key, value in init_args.items()
            if isinstance(value, str) and value.startswith(("/", "./", "../", "~"))
            and not Path(value).expanduser().exists()]


def plain(config: Any) -> Any:
    """``config`` as plain dicts (a jsonargparse Namespace's ``as_dict``)."""
    return config.as_dict() if hasattr(config, "as_dict") else config


def rebuilt_config_changes(saved: Any, current: Any) -> list[str]:
    """``KEY: SAVED -> CURRENT`` for each setting that builds a backbone's weights from scratch (a config dict
    of ``llm``/``encoder``/…, ``init_seed``) and differs between a checkpoint's saved model config and the
    model config now: frozen weights a checkpoint does not hold are rebuilt from these. A key one of them lacks
    (a checkpoint of an older speechsum) is not compared."""
    saved, current = plain(saved), plain(current)
    if not (isinstance(saved, dict) and isinstance(current, dict)):
        return []
    before, now = plain(saved.get("init_args")) or {}, plain(current.get("init_args")) or {}
    def same(old: Any, new: Any) -> bool:  # a field set on the command line is text until the model is built
        return old == new or isinstance(new, str) and not isinstance(old, str) and str(old) == new

    changes = []
    for key in sorted(before.keys() & now.keys() - {"policy"}):
        old, new = before[key], now[key]
        if isinstance(old, dict) and isinstance(new, dict):
            changes += [f"{key}.{field}: {old.get(field)} -> {new.get(field)}" for field in sorted(old.keys() | new.keys())
                        if not same(old.get(field), new.get(field))]
        elif (key == "init_seed" or isinstance(old, dict) or isinstance(new, dict)) and not same(old, new):
            changes.append(f"{key}: {old} -> {new}")
    return changes


def check_rebuilt_weights(model: SpeechLLM, checkpoint: dict[str, Any], model_config: Any, source: str) -> None:
    """Refuse a checkpoint that lacks frozen weights of ``model`` (saved trainable-only) where the settings
    that rebuild them differ from its own (:func:`rebuilt_config_changes`): its trained weights (LoRA, projector)
    would start on other frozen ones (a random LM of another vocab_size), silently."""
    changes = rebuilt_config_changes((checkpoint.get("hyper_parameters") or {}).get("model"), model_config)
    loaded = match_state_dict(model, checkpoint["state_dict"], source)
    rebuilt = [name for name, param in model.named_parameters() if not param.requires_grad and name not in loaded]
    if changes and rebuilt:
        changed = [name for name in rebuilt if name.split(".")[0] in {change.split(".")[0] for change in changes}]
        raise CheckpointError(f"{source}: its model was built with other settings than this one's ({'; '.join(changes[:4])}), "
                              f"and it does not hold the {len(rebuilt)} frozen weights they build (e.g. "
                              f"{(changed or rebuilt)[0]}): "
                              "its trained weights would start on other ones; give the model the settings it was "
                              "trained with")


def match_state_dict(model: SpeechLLM, state_dict: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """A stage checkpoint's ``model.*`` weights under ``model``'s own names (``q_proj.weight`` of a
    fully fine-tuned checkpoint fills ``q_proj.base_layer.weight`` of a LoRA-wrapped model); a weight
    the model has no place for is a ValueError naming ``source``."""
    own = model.state_dict()
    matched = {}
    for key, value in state_dict.items():
        key = key.removeprefix("model.") if key.startswith("model.") else f"<not model.*> {key}"
        if key not in own and ".base_layer" not in key:
            stem, _, leaf = key.rpartition(".")
            key = f"{stem}.base_layer.{leaf}" if f"{stem}.base_layer.{leaf}" in own else key
        matched[key] = value
    unexpected = sorted(matched.keys() - own.keys())
    adapters = [key for key in unexpected if ".lora_" in key]
    if adapters and not any(".lora_" in key for key in own):
        raise CheckpointError(f"{source}: holds LoRA adapters ({len(adapters)} weights, e.g. {adapters[0]}) and this "
                              "model has none: it was trained with policy llm: lora; give this model the same policy "
                              "(llm: lora and the lora_r, lora_alpha and LoRA targets it was trained with) to start "
                              "from it")
    if unexpected:
        parts = sorted({key.split(".")[0] for key in unexpected})
        raise CheckpointError(f"{source}: has weights this model lacks ({len(unexpected)} under {', '.join(parts)}, e.g. "
                              f"{unexpected[:3]}): it was trained with another model config (backbone, projector, "
                              "LoRA targets); build the model from the config it was trained with")
    reshaped = [f"{key} {tuple(value.shape)} vs the model's {tuple(own[key].shape)}"
                for key, value in matched.items() if tuple(value.shape) != tuple(own[key].shape)]
    if reshaped:
        raise CheckpointError(f"{source}: {len(reshaped)} weights have other shapes than this model's, e.g. {reshaped[:2]}: "
                         "it was trained with another model config (LoRA rank, sizes); rebuild the model from the "
                         "config it was trained with")
    return matched


def load_model_weights(
    model: SpeechLLM, state_dict: dict[str, torch.Tensor], source: str, require_trainable: bool = True
) -> list[str]:
    """Load a stage checkpoint's ``model.*`` weights into ``model`` non-strictly (checkpoints may
    hold trainable weights only); returns the trainable weights it did not have.

    Keys are matched across LoRA wrapping (``q_proj.weight`` of a fully fine-tuned checkpoint
    fills ``q_proj.base_layer.weight``). A checkpoint weight the model has no place for is an
    error; so is a missing trainable weight when ``require_trainable`` (else it keeps its fresh
    init, e.g. a new LoRA adapter).
    """
    matched = match_state_dict(model, state_dict, source)
    fresh = sorted({name for name, _ in model.trainable_parameters()} - matched.keys())
    if fresh and require_trainable:
        raise CheckpointError(f"{source}: lacks {len(fresh)} trainable weights of this model, e.g. {fresh[:3]}")
    model.load_state_dict(matched, strict=False)
    return fresh


def load_speech_llm(path: str | Path, config: str | Path | None = None) -> tuple[SpeechLLM, dict[str, Any]]:
    """The model of checkpoint ``path`` with its weights, and the checkpoint's hyperparameters
    (legacy class paths updated). Built from ``config`` (a stage YAML) when given, else from
    the checkpoint's own hyperparameters; every trainable weight must come from the checkpoint."""
    checkpoint = read_checkpoint(path)
    require_rebuildable(checkpoint, path)
    saved = checkpoint.get("hyper_parameters")
    hparams = current_class_paths(saved if isinstance(saved, dict) else {})
    if config is not None:
        model_config, built_from = model_config_from_yaml(config), f"the model built from {config}"
    else:
        model_config, built_from = model_config_from_checkpoint(checkpoint, path), "its saved model config"
    try:
        model = instantiate_speech_llm(model_config, config)
    except UnbuildableModelConfig as err:
        advice = "" if config else "; pass the config.yaml it was trained with (--config)"
        raise UnbuildableModelConfig(f"{path}: {err}{advice}") from None
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    try:
        load_model_weights(model, checkpoint["state_dict"], str(path))
    except ValueError as err:
        raise CheckpointError(f"{err} ({built_from}: is it the config this checkpoint was trained with?)") from None
    return model, hparams

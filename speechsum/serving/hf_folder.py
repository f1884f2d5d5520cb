"""A causal-LM folder for ``speechsum serve --model DIR``, loaded and checked before it is served.

transformers loads what it can: a folder of another kind of model (a BERT encoder, a Whisper
speech-to-text model) came up as a causal LM with random weights where the folder has none (BERT's
LM head) or as an encoder-decoder model's decoder alone (Whisper's), and a tokenizer with more
ids than the model has embeddings failed every request holding such an id (a 500; on CUDA a
device-side assert). So are a config.json with fewer layers than the weights (the extra ones were
dropped) and weights the model has no place for (:mod:`speechsum.models.weight_keys`). Each is
refused at start, naming the folder and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from speechsum.models.model_folder import pretrained_with_report
from speechsum.models.weight_keys import DIFFERENT, SHOWN, layer_count_problem, unexpected_problem
from speechsum.models.weight_keys import names as _names

EXPORT_FILE = "speechsum_export.json"  # what `speechsum export` writes beside the model (serving/export.py)


def load_served_lm(path: Path, dtype: torch.dtype | str) -> torch.nn.Module:
    """``AutoModelForCausalLM.from_pretrained(path)``, refused when weights would be random or dropped."""
    model, info = pretrained_with_report(AutoModelForCausalLM, path, check_keys=False, dtype=dtype)
    loaded = type(model).__name__
    layers = layer_count_problem(model, info)  # before the missing weights: the layers config.json adds
    if layers:
        raise ValueError(f"--model {path}: {layers}. {DIFFERENT}")
    saved = getattr(model.config, "architectures", None) or []
    missing, dropped = sorted(info.get("missing_keys") or []), sorted(info.get("unexpected_keys") or [])
    what = f"its config.json names {', '.join(saved)}" if saved else "its config.json names no architecture"
    if missing:
        raise ValueError(f"--model {path}: {len(missing)} weights of {loaded} are not in the folder ({_names(missing)}): "
                         f"served, they would be random. {what[0].upper()}{what[1:]}; give a causal language model's folder (or copy the "
                         "weight files again if some are missing)")
    # as saved (the causal-LM class resets it): not a vision-language model's text part (Qwen3.5's), which works alone
    if json.loads((path / "config.json").read_text(encoding="utf-8")).get("is_encoder_decoder") is True:
        raise ValueError(f"--model {path}: {what}, an encoder-decoder model: loaded as {loaded}, it is the decoder "
                         f"alone, without the encoder its answers depend on ({len(dropped)} weights left out: "
                         f"{_names(dropped)}). Give a causal language model's folder (AutoModelForCausalLM)")
    dropped_weights = unexpected_problem(model, info, path)  # before 2026-12-07 dropped with a log line
    if dropped_weights:
        raise ValueError(f"--model {path}: {dropped_weights}. {DIFFERENT}")
    adapter = exported_adapter(path)
    if adapter is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter)  # not merged: the student's LoRA as trained


def exported_adapter(path: Path) -> Path | None:
    """The LoRA adapter folder of a text LM that ``speechsum export`` wrote without ``--merge-lora``: its
    top-level weights are the base model's (before 2026-12-07 served as they are, without the student's
    LoRA: another model's answers); None for any other folder."""
    manifest = path / EXPORT_FILE
    if not manifest.is_file():
        return None
    adapter = json.loads(manifest.read_text(encoding="utf-8")).get("adapter")
    return path / adapter if isinstance(adapter, str) else None


def check_vocabulary(model: torch.nn.Module, tokenizer, path: Path) -> None:
    """Every id the tokenizer can give has an embedding in the model."""
    rows, ids = model.get_input_embeddings().num_embeddings, len(tokenizer)
    if ids > rows:
        beyond = tokenizer.convert_ids_to_tokens(list(range(rows, min(ids, rows + SHOWN))))
        raise ValueError(f"--model {path}: the tokenizer has {ids} tokens but the model only {rows} embeddings "
                         f"(config.json vocab_size): ids {rows}-{ids - 1} ({', '.join(map(str, beyond))}"
                         f"{', …' if ids - rows > SHOWN else ''}) would fail every request holding one. The tokenizer "
                         "and the weights are of different models: give the folder whose tokenizer these weights "
                         "were trained with")


def checkpoints_hint(folder: Path) -> str:
    """What to give instead of ``folder`` when it holds stage checkpoints (a run folder, a stage's folder):
    `` (it holds stage checkpoints, newest first: RUN/dpo/checkpoints/last.ckpt, …): give one``; else ""."""
    patterns = ("*.ckpt", "checkpoints/last.ckpt", "*/checkpoints/last.ckpt")
    found = sorted({path for pattern in patterns for path in folder.glob(pattern) if path.is_file()},
                   key=lambda path: path.stat().st_mtime, reverse=True)
    if not found:
        return ""
    return f" (it holds stage checkpoints, newest first: {_names([str(path) for path in found])}): give one"

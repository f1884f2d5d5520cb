"""``speechsum export CKPT --out DIR``: a trained stage checkpoint as a Hugging Face directory.

    speechsum export runs/tiny/dpo/checkpoints/last.ckpt --out student/ [--merge-lora] [--config YAML]

What the directory holds (``speechsum_export.json`` records which layout and how to rebuild):

- Phi-4-MM, Qwen2-Audio, text LMs: the model (``config.json``, ``model.safetensors``,
  ``generation_config.json`` stopping at the end-of-turn token, never emitting the audio
  placeholder) and its processor/tokenizer at
  the top, so ``Phi4MultimodalForCausalLM`` / ``Qwen2AudioForConditionalGeneration`` /
  ``AutoModelForCausalLM.from_pretrained(DIR)`` and vLLM load it; ``speechsum_trained/`` holds the
  trained projector (and encoder) again at full precision for :func:`load_exported`.
- composed (Whisper encoder + projector + LM): ``llm/`` (the LM and tokenizer, a normal causal-LM
  directory), ``encoder/`` (``WhisperEncoder.from_pretrained`` + its feature extractor),
  ``projector.safetensors``.
- LoRA: merged into the weights with ``--merge-lora``; else the base weights plus a PEFT adapter
  in ``<model dir>/adapter/`` (``PeftModel.from_pretrained`` / ``vllm --lora-modules``).
- ``README.md``: a model card with the training stages and evaluation metrics found near the
  checkpoint (:mod:`speechsum.serving.model_card`).

Every backbone loads back with :func:`load_exported` (``speechsum.serving.export.load_exported(DIR)``),
the same model as the checkpoint (log-probs and greedy output).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers import GenerationConfig

from speechsum.models.base import SpeechLLM
from speechsum.models.checkpoint import (
    UnbuildableModelConfig,
    instantiate_speech_llm,
    load_speech_llm,
    model_config_from_checkpoint,
    model_config_from_yaml,
)
from speechsum.models.model_folder import check_model_folder
from speechsum.serving.hf_folder import EXPORT_FILE, checkpoints_hint
from speechsum.serving.hf_layout import (
    adapter_config,
    adapter_tensors,
    clean_state_dict,
    layout_of,
    load_adapter_tensors,
    lora_layers,
)
from speechsum.serving.model_card import render_model_card
from speechsum.utils.arguments import user_path
from speechsum.utils.io import check_input_file, check_replaceable_folder, linked_out, write_dir_atomically
from speechsum.utils.project_configs import project_config
from speechsum.utils.repeated_options import OnceParser

LOG = logging.getLogger(__name__)

EXPORT_FORMAT = 1
ADAPTER_DIR = "adapter"


def _policy(init_args: dict, lora_kept: bool) -> dict:
    """The training policy to rebuild with: the saved one, its LLM frozen unless the adapter is kept."""
    policy = dict(init_args.get("policy") or {})
    if policy.get("llm", "lora") == "lora" and not lora_kept:
        policy["llm"] = "frozen"
    return policy


def exported_generation_config(model: SpeechLLM) -> GenerationConfig:
    """What the exported ``generation_config.json`` holds: the stopping, padding and suppressed
    audio placeholder of :meth:`SpeechLLM.greedy_config`, so HF ``generate`` on the exported model
    decodes the tokens speechsum's ``generate`` does (not its length or greedy/sampling choice)."""
    greedy = model.greedy_config(max_new_tokens=1)
    return GenerationConfig(eos_token_id=greedy.eos_token_id, pad_token_id=greedy.pad_token_id,
                            suppress_tokens=greedy.suppress_tokens)


def export_model(
    model: SpeechLLM, model_config: dict, out: str | Path, merge_lora: bool = False, card: str = ""
) -> Path:
    """Write ``model`` (built from ``model_config``) to ``out`` (where it points, when a symbolic link:
    :func:`~speechsum.utils.io.linked_out`) atomically; returns the folder written."""
    out = linked_out(out, "--out")
    model = model.eval()
    layout = layout_of(model)
    has_lora = bool(lora_layers(layout.hf_model))
    keep_adapter = has_lora and not merge_lora
    init_args = {**model_config.get("init_args", {}), **layout.init_args}
    init_args["policy"] = _policy(init_args, keep_adapter)
    manifest = {
        "format": EXPORT_FORMAT,
        "model": {"class_path": model_config["class_path"], "init_args": init_args},
        "path_args": list(layout.path_args),
        "hf_dir": layout.hf_dir,
        "adapter": f"{layout.hf_dir}/{ADAPTER_DIR}" if keep_adapter else None,
        "lora_merged": has_lora and merge_lora,
        "extra": {name: file for name, (_, file) in sorted(layout.extra.items())},
    }

    def write(folder: Path) -> None:
        hf_folder = folder / layout.hf_dir
        hf_folder.mkdir(parents=True, exist_ok=True)
        hf_model = layout.hf_model
        saved_generation = hf_model.generation_config
        hf_model.generation_config = exported_generation_config(model)
        try:
            hf_model.save_pretrained(str(hf_folder), state_dict=clean_state_dict(hf_model, merge=merge_lora))
        finally:
            hf_model.generation_config = saved_generation
        layout.save_processor(folder)
        if keep_adapter:
            from peft import LoraConfig

            adapter_folder = hf_folder / ADAPTER_DIR
            LoraConfig(**adapter_config(hf_model)).save_pretrained(str(adapter_folder))
            save_file(adapter_tensors(hf_model), str(adapter_folder / "adapter_model.safetensors"))
        for module, file in layout.extra.values():
            state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
            (folder / file).parent.mkdir(parents=True, exist_ok=True)
            save_file(state, str(folder / file), metadata={"format": "pt"})
        (folder / EXPORT_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (folder / "README.md").write_text(card, encoding="utf-8")

    write_dir_atomically(out, write)
    return Path(out)


def export_checkpoint(
    ckpt: str | Path, out: str | Path, merge_lora: bool = False, config: str | Path | None = None
) -> Path:
    """``speechsum export``: the checkpoint's model (:func:`load_speech_llm`) written by
    :func:`export_model` with a model card built from the run around ``ckpt``."""
    if Path(ckpt).is_dir():
        what = "an exported folder already (it loads as it is: summarize/serve --model DIR)" if is_exported(ckpt) \
            else "a folder"
        hint = checkpoints_hint(Path(ckpt)) or ", e.g. RUN/sft/checkpoints/last.ckpt"
        raise ValueError(f"{ckpt} is {what}; export takes a stage checkpoint file{hint}")
    model, hparams = load_speech_llm(ckpt, config)
    if config is not None:
        model_config = model_config_from_yaml(config)
    else:
        model_config = model_config_from_checkpoint({"hyper_parameters": hparams}, ckpt)
    if merge_lora and not lora_layers(layout_of(model).hf_model):  # the card said "LoRA: merged into the weights"
        LOG.warning("speechsum export: %s has no LoRA adapters: --merge-lora has nothing to merge (the weights are "
                    "exported as they are)", ckpt)
        merge_lora = False
    card = render_model_card(Path(ckpt), hparams, model_config, merge_lora)
    return export_model(model, model_config, out, merge_lora=merge_lora, card=card)


def is_exported(path: str | Path) -> bool:
    """True when ``path`` is a directory written by ``speechsum export``."""
    return (Path(path) / EXPORT_FILE).is_file()


def read_export_manifest(folder: Path) -> tuple[dict, dict]:
    """``speechsum_export.json`` of ``folder`` and the model config in it (path arguments made
    absolute), checked: a list there was an AttributeError, a missing ``llm/`` advised ``--config``."""
    where = folder / EXPORT_FILE
    manifest = json.loads(where.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(manifest).__name__}; export the checkpoint again")
    if manifest.get("format") != EXPORT_FORMAT:
        found = manifest.get("format")
        newer = isinstance(found, int) and not isinstance(found, bool) and found > EXPORT_FORMAT
        advice = ("written by a newer speechsum: upgrade speechsum to load it, or export the checkpoint again with "
                  "this one" if newer else "export the checkpoint again with this speechsum")
        raise ValueError(f"{where}: export format {found!r}, and this speechsum reads format {EXPORT_FORMAT}; {advice}")
    model, path_args, extra = manifest.get("model"), manifest.get("path_args"), manifest.get("extra")
    if not (isinstance(model, dict) and isinstance(model.get("init_args"), dict) and isinstance(path_args, list)
            and isinstance(extra, dict) and isinstance(manifest.get("adapter"), str | None)):
        raise ValueError(f"{where}: not what `speechsum export` writes (model.init_args, path_args, extra, adapter); "
                         "export the checkpoint again")
    config = json.loads(json.dumps(model))
    parts = [config["init_args"][key] for key in path_args if isinstance(config["init_args"].get(key), str)]
    parts += [*extra.values(), *([manifest["adapter"]] if manifest["adapter"] else [])]
    # the files in them that are read too (before 2026-12-07 "No such file or directory: …/adapter_model.safetensors",
    # "Unrecognized model in …/llm. Should have a `model_type` key in its config.json")
    inside = [(manifest.get("hf_dir"), "config.json"), (manifest["adapter"], "adapter_model.safetensors")]
    parts += [(Path(where) / name).as_posix() for where, name in inside if isinstance(where, str) and (folder / where).is_dir()]
    missing = [part for part in dict.fromkeys(map(str, parts)) if not (folder / part).exists()]
    if missing:
        raise ValueError(f"{folder}: an incomplete export, {', '.join(missing)} missing (a copy cut short?); export the "
                         "checkpoint again, or copy the whole folder")
    for key in path_args:
        if isinstance(config["init_args"].get(key), str):
            config["init_args"][key] = str((folder / config["init_args"][key]).resolve())
    return manifest, config


def load_exported(path: str | Path) -> SpeechLLM:
    """The :class:`SpeechLLM` of an exported directory, in eval mode: the same model (weights,
    prompt format, stop tokens) as the checkpoint it was exported from."""
    folder = Path(path)
    if not is_exported(folder):
        raise ValueError(f"{folder}: no {EXPORT_FILE}; not a directory written by `speechsum export`"
                         f"{checkpoints_hint(folder)}")
    check_model_folder(folder, recursive=True)
    manifest, config = read_export_manifest(folder)
    try:
        model = instantiate_speech_llm(config)
    except UnbuildableModelConfig as err:
        raise ValueError(f"{folder / EXPORT_FILE}: {err}; export the checkpoint again with this speechsum") from None
    layout = layout_of(model)
    for name, file in manifest["extra"].items():
        layout.extra[name][0].load_state_dict(load_file(str(folder / file)))
    if manifest["adapter"]:
        adapter = folder / manifest["adapter"] / "adapter_model.safetensors"
        load_adapter_tensors(layout.hf_model, load_file(str(adapter)), str(adapter))
    layout.restore(folder)
    return model.eval()


def load_model(path: str | Path, config: str | Path | None = None) -> SpeechLLM:
    """An exported directory (:func:`load_exported`) or a stage checkpoint (:func:`load_speech_llm`)."""
    if Path(path).is_dir():
        if config is not None:
            raise ValueError(f"{path}: --config applies to checkpoints; an exported directory carries its own")
        return load_exported(path)
    return load_speech_llm(path, config)[0].eval()


def build_parser() -> argparse.ArgumentParser:
    parser = OnceParser(
        prog="speechsum export",
        description="Write a stage checkpoint as a Hugging Face directory: weights, processor/tokenizer, "
        "generation config, model card (README.md). Phi-4-MM, Qwen2-Audio and text LMs load back with their "
        "own from_pretrained (and serve with vLLM); every backbone, the composed one included, loads back with "
        "speechsum.serving.export.load_exported(DIR).",
    )
    parser.add_argument("ckpt", type=user_path, help="stage checkpoint (.ckpt), e.g. runs/tiny/dpo/checkpoints/last.ckpt")
    parser.add_argument("--out", required=True, type=user_path, help="directory to write: new, empty, or an earlier export (replaced "
                        "atomically); a folder holding anything else is refused")
    parser.add_argument("--merge-lora", action="store_true",
                        help="merge LoRA adapters into the weights (default: base weights + a PEFT adapter in "
                        "<model dir>/adapter)")
    parser.add_argument("--config", default=None, type=project_config, metavar="YAML",
                        help="stage config to rebuild the model from (default: the checkpoint's saved hyperparameters)")
    return parser


def check_out_dir(out: str | Path) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty folder that no export wrote (no
    ``speechsum_export.json``): replacing it would delete whatever the user keeps there."""
    check_replaceable_folder(out, "--out", EXPORT_FILE, "export")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_out_dir(linked_out(args.out, "--out"))
        if not Path(args.ckpt).is_dir():  # a folder gets its own advice from export_checkpoint
            check_input_file(args.ckpt, "CKPT")
        if args.config:
            check_input_file(args.config, "--config")
        out = export_checkpoint(args.ckpt, args.out, merge_lora=args.merge_lora, config=args.config)
    except (OSError, ValueError) as err:
        raise SystemExit(f"speechsum export: {err}") from None
    print(f"exported {args.ckpt} -> {out}")

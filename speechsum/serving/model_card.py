"""The model card (``README.md``) of an exported student: its backbone, the training stages of the
run around the checkpoint and their evaluation metrics.

A pipeline run keeps ``<run>/<stage>/checkpoints/last.ckpt`` and the evaluation in
``<run>/evaluate/<system>/metrics.json`` (``<run>/baselines/...`` for the text LMs) and
``<run>/report.md``; the card looks for those from the checkpoint's folder up to the run folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

STAGES = ("align", "sft", "kd", "dpo")  # pipeline stage folders, in training order
SEARCH_LEVELS = 3  # ckpt folder, checkpoints/, <stage>/, <run>/


def run_folder(ckpt: Path) -> Path:
    """``<run>`` for ``<run>/<stage>/checkpoints/x.ckpt``; else the checkpoint's folder."""
    parent = ckpt.resolve().parent
    if parent.name == "checkpoints":
        return parent.parent.parent
    return parent


def find_metrics(ckpt: Path) -> list[tuple[Path, dict]]:
    """``metrics.json`` files of ``speechsum evaluate`` near ``ckpt`` (its folder and up to
    :data:`SEARCH_LEVELS` parents, each with its ``evaluate/`` and ``baselines/``); unreadable
    ones are skipped with a warning."""
    folders = [ckpt.resolve().parent, *list(ckpt.resolve().parents)[1:SEARCH_LEVELS + 1]]
    found: dict[Path, dict] = {}
    for folder in folders:
        for pattern in ("metrics.json", "*/metrics.json", "evaluate/*/metrics.json", "baselines/*/metrics.json"):
            for path in sorted(folder.glob(pattern)):
                if path in found:
                    continue
                try:
                    found[path] = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as err:
                    log.warning("%s: not used in the model card (%s)", path, err)
    return [(path, data) for path, data in found.items() if isinstance(data, dict) and "results" in data]


def stages_of_run(ckpt: Path) -> list[str]:
    """Training stages with a checkpoint in the run (in training order) up to the checkpoint's own
    stage: a later stage of the run did not train this student."""
    run = run_folder(ckpt)
    stages = [stage for stage in STAGES if list((run / stage / "checkpoints").glob("*.ckpt"))]
    own = ckpt.resolve().parent.parent.name
    return stages[: stages.index(own) + 1] if own in stages else stages


def training_data(ckpt: Path) -> list[str]:
    """The training data named by the stage's ``config.yaml`` (beside the checkpoint or one folder
    up, as ``speechsum fit`` and the pipeline write it): ``train_manifest`` and ``hf_dataset``."""
    for folder in (ckpt.resolve().parent, ckpt.resolve().parent.parent):
        path = folder / "config.yaml"
        if not path.is_file():
            continue
        try:
            data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("data") or {}
        except (OSError, yaml.YAMLError, AttributeError) as err:
            log.warning("%s: not used in the model card (%s)", path, err)
            return []
        data = data.get("init_args", data) if isinstance(data, dict) else {}
        return [f"{key}: `{data[key]}`" for key in ("train_manifest", "hf_dataset") if data.get(key)]
    return []


def base_models(model_config: dict) -> list[str]:
    """The pretrained models the backbone was built on (``model``, ``llm``, ``encoder``,
    ``tokenizer`` given as hub ids or folders); a random-init config dict names none."""
    init_args = model_config.get("init_args") or {}
    return [f"{key}: `{init_args[key]}`" for key in ("model", "llm", "encoder", "tokenizer")
            if isinstance(init_args.get(key), str)]


def metrics_table(entries: list[tuple[Path, dict]]) -> list[str]:
    """A markdown table: one row per system, the mean (95 % CI) of each metric over all examples."""
    names = sorted({metric for _, data in entries for metric in data["results"].get("all", {})})
    if not names:
        return []
    lines = ["| system | role | stage | n | " + " | ".join(names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for _, data in entries:
        system, overall = data.get("system", {}), data["results"].get("all", {})
        cells = []
        for name in names:
            stat = overall.get(name)
            cells.append(f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]" if stat else "")
        lines.append(f"| {system.get('name', '?')} | {system.get('role') or 'student'} | {system.get('stage') or ''} | "
                     f"{data.get('num_examples', '')} | " + " | ".join(cells) + " |")
    return lines


def render_model_card(ckpt: Path, hparams: dict, model_config: dict, merge_lora: bool) -> str:
    """``README.md`` text for the export of ``ckpt``."""
    backbone = model_config.get("class_path", "?").rsplit(".", 1)[-1]
    stage_class = str(hparams.get("_class_path", "?")).rsplit(".", 1)[-1]
    lines = [
        "---", "library_name: transformers", "tags: [speechsum, speech-summarization]", "---", "",
        f"# speechsum student ({backbone})", "",
        "A speech LLM that summarises speech, trained with speechsum (SFT → on-policy KD → DPO, "
        "Ling et al., arXiv 2509.19631).", "",
        f"- backbone: `{model_config.get('class_path', '?')}`",
        f"- base: {', '.join(base_models(model_config)) or 'random-init (a config dict, no pretrained weights)'}",
        f"- exported from: `{ckpt.name}` (stage module `{stage_class}`)",
        f"- LoRA: {'merged into the weights' if merge_lora else 'kept as a PEFT adapter (adapter/) where the model has one'}",
    ]
    data = training_data(ckpt)
    if data:
        lines.append(f"- training data of this stage: {', '.join(data)}")
    stages = stages_of_run(ckpt)
    if stages:
        lines.append(f"- training stages of this student: {' → '.join(stages)}")
    lines += ["", "## Use", "", "```python", "from speechsum.serving.export import load_exported",
              "model = load_exported('THIS_DIR')  # a speechsum SpeechLLM", "```", "",
              "```bash", "speechsum summarize meeting.wav --model THIS_DIR", "```", ""]
    if backbone in ("Phi4MultimodalSpeechLLM", "Qwen2AudioSpeechLLM", "TextLLM"):
        lines += ["The model files are a plain Hugging Face directory: its `from_pretrained` (and "
                  "`vllm serve THIS_DIR`, with `--enable-lora --lora-modules student=THIS_DIR/adapter` when an "
                  "adapter is kept) load it.", ""]
    entries = find_metrics(ckpt)
    table = metrics_table(entries)
    lines += ["## Evaluation", ""]
    if table:
        lines += [f"From `speechsum evaluate` ({len(entries)} `metrics.json` found near the checkpoint):", "", *table, ""]
    else:
        lines += ["No `metrics.json` was found near the checkpoint (run `speechsum evaluate`).", ""]
    report = run_folder(ckpt) / "report.md"
    if report.is_file():
        lines += ["## Report of the run", "", report.read_text(encoding="utf-8").strip(), ""]
    return "\n".join(lines)

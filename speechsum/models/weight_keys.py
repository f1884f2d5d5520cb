"""What transformers' loading report says of a model folder's weights, as a refusal naming the folder.

``from_pretrained`` loads what fits and only logs the rest: a ``config.json`` with fewer layers
(``num_hidden_layers``) than the weights dropped the extra layers, one with more left them random,
and weights the model has no place for (an edited config, another model's files) were dropped. Each
is named here with what differs; transformers' own ignore lists (``rotary_emb.inv_freq``, a
vision-language model's other towers) are already out of its report.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from speechsum.models.checkpoint import CheckpointError

SHOWN = 3  # weight names shown in a message
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
DIFFERENT = ("config.json and the weights are of different models (an edited config.json, another model's files?); "
             "copy the folder again or give the config.json saved with these weights")


def names(keys: list[str]) -> str:
    """The first :data:`SHOWN` names, then "…" if there are more."""
    return ", ".join(keys[:SHOWN]) + (", …" if len(keys) > SHOWN else "")


def _in_list(model: nn.Module, key: str) -> tuple[str, nn.ModuleList, int] | None:
    """``(list path, list, index)`` when ``key`` names a weight of a numbered block (``model.layers.3.…``)."""
    parts, module = key.split("."), model
    for i, part in enumerate(parts[:-1]):
        if isinstance(module, nn.ModuleList) and part.isdigit():
            return ".".join(parts[:i]), module, int(part)
        module = module._modules.get(part)
        if module is None:
            return None
    return None


def _owned(model: nn.Module, key: str) -> bool:
    """Whether ``key`` lies among the model's own modules: past the end of one of its numbered lists, or a
    weight of a module it has (not a part it lacks whole, e.g. a vision tower of a vision-language model)."""
    parts, module = key.split("."), model
    for part in parts[:-1]:
        if isinstance(module, nn.ModuleList) and part.isdigit() and int(part) >= len(module):
            return True
        module = module._modules.get(part)
        if module is None:
            return False
    return True


def _blocks(path: str, first: int, last: int) -> str:
    """``model.layers.2`` or ``model.layers.2-5``."""
    return f"{path}.{first}" if first == last else f"{path}.{first}-{last}"


def _layers(count: int) -> str:
    return f"{count} layer" if count == 1 else f"{count} layers"


def _layers_field(model: nn.Module, count: int) -> str:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return next((name for name in LAYER_FIELDS if getattr(config, name, None) == count), "its layer count")


def layer_count_problem(model: nn.Module, report: dict) -> str | None:
    """What differs when the weights hold other numbers of layers than ``config.json`` gives (extra layers in
    the report's unexpected keys, whole layers in its missing ones); None when they agree."""
    unexpected = [found for key in report.get("unexpected_keys") or [] if (found := _in_list(model, key))]
    beyond = [(path, blocks, index) for path, blocks, index in unexpected if index >= len(blocks)]
    if beyond:
        path, blocks, _ = beyond[0]
        held = 1 + max(index for other, _, index in beyond if other == path)
        return (f"its config.json gives {_layers(len(blocks))} ({_layers_field(model, len(blocks))}) but its weights "
                f"hold {held}: {_blocks(path, len(blocks), held - 1)} would be left out")
    missing = set(report.get("missing_keys") or [])
    for path, blocks in ((p, m) for p, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 1):
        whole = [i for i, block in enumerate(blocks)
                 if (keys := {f"{path}.{i}.{name}" for name, _ in block.named_parameters()}) and keys <= missing]
        if whole and whole == list(range(whole[0], len(blocks))) and whole[0] > 0:
            return (f"its config.json gives {_layers(len(blocks))} ({_layers_field(model, len(blocks))}) but its "
                    f"weights hold {whole[0]}: {_blocks(path, whole[0], len(blocks) - 1)} would be random")
    return None


def unexpected_problem(model: nn.Module, report: dict, folder: Path) -> str | None:
    """What is said of weights the model has no place for (dropped as it loads); None when there are none.
    A composite model's folder (``text_config`` beside a ``vision_config``…, loaded as its text model) may
    hold parts the model lacks whole; weights among the model's own modules are named for any folder."""
    dropped = sorted(report.get("unexpected_keys") or [])
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if any(key.endswith("_config") and isinstance(value, dict) for key, value in config.items()):
        dropped = [key for key in dropped if _owned(model, key)]
    if not dropped:
        return None
    return (f"{len(dropped)} weights in the folder have no place in {type(model).__name__} as its config.json "
            f"builds it ({names(dropped)}): loaded, they would be dropped")


def check_loaded_weights(model: nn.Module, report: dict, folder: str | Path) -> None:
    """Raise :class:`CheckpointError` naming ``folder`` when its weights and ``config.json`` differ in layers, in
    weights the model lacks (random) or in weights it has no place for (dropped)."""
    problem = layer_count_problem(model, report)
    missing = sorted(report.get("missing_keys") or [])
    if problem is None and missing:
        problem = (f"{len(missing)} weights of {type(model).__name__} are not in the folder ({names(missing)}): "
                   "loaded, they would be random")
    problem = problem or unexpected_problem(model, report, Path(folder))
    if problem:
        raise CheckpointError(f"{folder}: {problem}. {DIFFERENT}")

"""Backbone config dicts stacked over several ``--config`` files merge as every other section does.

jsonargparse merges a later ``--config`` into the earlier ones key by key, except a setting typed
``dict`` (a backbone's ``llm``, ``encoder`` or native ``model`` config), which the later file replaces
whole: ``encoder: {encoder_layers: 1}`` stacked on ``configs/model/composed_tiny.yaml`` dropped its
``d_model`` and every other field, silently building Whisper's default encoder.
:func:`with_stacked_dicts_merged` passes such a setting once more, merged, right after the last file
that sets it (an option given later on the command line still wins)."""

from __future__ import annotations

import copy
import json
from typing import Any

BACKBONE = ("model", "init_args", "model", "init_args")  # where a backbone's own settings are


def _config_file(args: list[str], index: int) -> str | None:
    """The file ``args[index]`` names as a ``--config`` / ``-c`` (in any spelling), else None."""
    arg = args[index]
    if arg in ("--config", "-c"):
        return args[index + 1] if index + 1 < len(args) else None
    if arg.startswith(("--config=", "-c=")):
        return arg.split("=", 1)[1]
    return None


def _backbone_settings(path: str) -> tuple[str | None, dict[str, Any]]:
    """(the backbone's ``class_path`` or None, its ``init_args``) in the YAML file at ``path``."""
    import yaml

    try:
        with open(path, encoding="utf-8") as file:
            node: Any = yaml.safe_load(file)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None, {}  # reported by the CLI itself
    class_path = None
    for key in BACKBONE:
        if not isinstance(node, dict):
            return None, {}
        if key == "init_args":
            class_path = node.get("class_path", class_path)
        node = node.get(key)
    return class_path, node if isinstance(node, dict) else {}


def deep_merge(base: Any, override: Any) -> Any:
    """``override`` merged into a copy of ``base``: mappings key by key, anything else replaced; a
    mapping naming another ``class_path`` than ``base``'s replaces it whole (its settings are another
    class's). The pipeline's overrides and stacked backbone dicts merge by it."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    if "class_path" in override and override["class_path"] != base.get("class_path"):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


def with_stacked_dicts_merged(args: list[str]) -> list[str]:
    """``args`` with ``--model.init_args.model.init_args.KEY=JSON`` after the last ``--config`` of two
    or more that set the backbone setting KEY to a mapping: the mappings merged in order. A file that
    names another backbone ``class_path`` starts afresh (its settings are not the earlier one's)."""
    merged: dict[str, dict] = {}
    stacked: dict[str, int] = {}  # KEY → index in args after which to insert
    counts: dict[str, int] = {}
    backbone = None
    for index in range(len(args)):
        path = _config_file(args, index)
        if path is None:
            continue
        class_path, settings = _backbone_settings(path)
        if class_path is not None and class_path != backbone:
            merged, counts, backbone = {}, {}, class_path
        for key, value in settings.items():
            if isinstance(value, dict) and "class_path" not in value:
                merged[key] = deep_merge(merged.get(key, {}), value)
                counts[key] = counts.get(key, 0) + 1
                if counts[key] > 1:
                    stacked[key] = index + (1 if args[index] in ("--config", "-c") else 0)
            else:
                merged.pop(key, None)
                counts.pop(key, None)
    out = list(args)
    for key, after in sorted(stacked.items(), key=lambda item: -item[1]):
        if counts.get(key, 0) > 1:
            out.insert(after + 1, f"--{'.'.join(BACKBONE)}.{key}={json.dumps(merged[key])}")
    return out

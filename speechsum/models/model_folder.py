"""A local Hugging Face model folder checked before transformers loads it: a ``*.json`` or
``*.safetensors`` file cut short (an export or a copy interrupted, a full disk) is named with what
to do. transformers' own errors named no file (``JSONDecodeError: Expecting property name … line
176``, ``SafetensorError: incomplete metadata, file not fully covered``) or, for a broken
``generation_config.json``, none at all: the model loaded with default generation settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from speechsum.models.checkpoint import CheckpointError

REDO = "it was cut short or corrupted (an export or copy interrupted, a full disk?); export or copy the folder again"


def check_model_folder(spec: str | Path, recursive: bool = False) -> None:
    """Raise :class:`CheckpointError` naming the first ``*.json`` / ``*.safetensors`` file in folder
    ``spec`` (and its subfolders when ``recursive``: a ``speechsum export`` folder) that does not read
    whole; anything that is not a local folder (a hub id) is left to transformers."""
    folder = Path(spec)
    if not folder.is_dir():
        return
    files = folder.rglob if recursive else folder.glob
    for path in sorted(files("*.json")):
        check_json_file(path)
    for path in sorted(files("*.index.json")):
        if not path.with_name(path.name.removesuffix(".index.json")).is_file():  # transformers reads that one first
            check_shards(path)
    for path in sorted(files("*.safetensors")):
        check_safetensors_file(path)


def check_feature_extractor_file(spec: str | Path) -> None:
    """Refuse a local Whisper folder ``spec`` without ``preprocessor_config.json`` (its feature
    extractor's settings) before its weights load; transformers' error came after them, in four
    sentences about the hub. A hub id is left to transformers."""
    folder = Path(spec)
    if folder.is_dir() and not (folder / "preprocessor_config.json").is_file():
        raise CheckpointError(f"{folder}: no preprocessor_config.json (the Whisper feature extractor's settings) "
                              "beside its config.json: copy the folder again, or write it with "
                              "WhisperFeatureExtractor.from_pretrained(<the model's hub id>).save_pretrained(folder)")


def check_json_file(path: Path) -> None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}): {REDO}") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}): "
                              f"{REDO}") from None


def check_shards(index: Path) -> None:
    """The shards a sharded model's index (``model.safetensors.index.json``) names are all in its folder:
    transformers' error named one missing file and no cause (``No such file or directory: …-00002-of-00007…``)."""
    weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    shards = sorted({name for name in weight_map.values() if isinstance(name, str)}) if isinstance(weight_map, dict) else []
    missing = [name for name in shards if not (index.parent / name).is_file()]
    if missing:
        raise CheckpointError(f"{index}: {len(missing)} of the {len(shards)} weight files it names "
                              f"{'is' if len(missing) == 1 else 'are'} not in the folder ({', '.join(missing[:3])}"
                              f"{', …' if len(missing) > 3 else ''}): a download or copy left unfinished? Copy or "
                              "download the whole folder again")


def check_safetensors_file(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - SafetensorError derives from Exception only
        raise CheckpointError(f"{path}: not a whole safetensors file ({err}): {REDO}") from None


def padding_problem(config_file: Path) -> str:
    """What ``config_file`` says that no embedding table can build: its (text) ``pad_token_id`` outside
    the ``vocab_size`` ids (torch: "Padding_idx must be within num_embeddings")."""
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    for fields in (config, config.get("text_config") or {}):
        vocab, pad = fields.get("vocab_size"), fields.get("pad_token_id")
        if isinstance(vocab, int) and isinstance(pad, int) and not -vocab <= pad < vocab:
            return f"its pad_token_id {pad} is outside the {vocab} ids its vocab_size gives"
    return "its pad_token_id is outside the ids its vocab_size gives"


def pretrained_with_report(model_class: Any, spec: str | Path, check_keys: bool = True,
                           **kwargs: Any) -> tuple[Any, dict]:
    """``model_class.from_pretrained(spec, **kwargs)`` and transformers' loading report (missing, unexpected
    keys). With ``check_keys``, weights the model lacks or has no place for (other numbers of layers than
    config.json gives, too) are refused (:func:`speechsum.models.weight_keys.check_loaded_weights`); before
    2026-12-07 they loaded random or dropped, transformers only logging it. Weights of another shape than the folder's ``config.json`` gives are a :class:`CheckpointError`
    naming the first: transformers' ``RuntimeError`` ("You set `ignore_mismatched_sizes` to `False`, thus
    raising an error. For details look at the above report!") named neither the folder nor the weight."""
    try:
        model, report = model_class.from_pretrained(spec, output_loading_info=True, ignore_mismatched_sizes=True,
                                                    **kwargs)
    except AssertionError as err:  # torch's nn.Embedding, building a table too small for the config's pad id
        if "Padding_idx must be within num_embeddings" not in str(err):
            raise
        raise CheckpointError(f"{spec}: {padding_problem(Path(spec) / 'config.json')}: config.json is not this "
                              "model's (edited, or of another model); copy the folder again or give the config.json "
                              "saved with these weights") from None
    mismatched = sorted(report.get("mismatched_keys") or [])
    if mismatched:
        key, saved_shape, config_shape = mismatched[0]
        raise CheckpointError(f"{spec}: {len(mismatched)} weights in the folder do not have the shape its config.json "
                              f"gives ({key}: {tuple(saved_shape)} in the weight files, {tuple(config_shape)} from "
                              "config.json): config.json and the weights are of different models; copy the folder "
                              "again or give the config.json saved with these weights")
    if check_keys:
        from speechsum.models.weight_keys import check_loaded_weights

        check_loaded_weights(model, report, spec)
    return model, report

"""The data settings that name each split's manifest: read as paths (``~`` the home folder, an empty
setting refused), and manifests of two splits that are one file: ``val_manifest`` (or ``test_manifest``)
set to the ``train_manifest`` validated (tested) a model on the examples it trains on, without a word."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from speechsum.utils.arguments import ConfigError
from speechsum.utils.io import same_file

log = logging.getLogger(__name__)

HELD_OUT = ("val", "test")  # splits whose scores mean something only on examples not trained on


def warn_shared_manifests(data: Mapping) -> list[str]:
    """Log (and return) a warning for each held-out split whose manifest in the data settings ``data``
    (``train_manifest``, ``val_manifest``, ...) is the train manifest's file."""
    train = data.get("train_manifest")
    notes = [f"data.{split}_manifest is the train manifest's file ({data[f'{split}_manifest']}): the {split} scores "
             "are measured on the examples the model trains on; give a held-out manifest"
             for split in HELD_OUT
             if same_file(train, data.get(f"{split}_manifest")) and os.path.exists(train)]  # a missing one: reported where read
    for note in notes:
        log.warning(note)
    return notes


def manifest_paths(manifests: Mapping[str, str | None]) -> dict[str, str | None]:
    """Split → manifest path of the ``data.SPLIT_manifest`` settings, a leading ``~`` expanded to the home
    folder (a YAML value is no shell word: ``~/data/train.jsonl`` was "not found, relative to the working
    folder", as ``hf_dataset`` and the command-line path options expand it). An empty setting is a
    ``ConfigError`` (it was read as the working folder: "manifest . is a directory")."""
    paths = {}
    for split, path in manifests.items():
        if isinstance(path, str) and not path.strip():
            raise ConfigError(f"data.{split}_manifest is empty ({path!r}): give the path of the {split} split's JSONL "
                              "manifest, or null (leave it out) for no such split")
        paths[split] = os.path.expanduser(path) if isinstance(path, str) else path
    return paths

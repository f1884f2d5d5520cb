"""The data settings that name each split's manifest: read as paths (``~`` the home folder, an empty
setting refused), and manifests of two splits that are one file, or name one recording: ``val_manifest``
(or ``test_manifest``) set to the ``train_manifest``, or naming audio files its lines name (``hf_splits``
mapping ``val`` to the dataset's train split), validated (tested) a model on what it trains on, without a word."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

from speechsum.data.hf_dataset import DEFAULT_SPLITS
from speechsum.data.manifest import Example
from speechsum.utils.arguments import ConfigError
from speechsum.utils.io import same_file

log = logging.getLogger(__name__)

HELD_OUT = ("val", "test")  # splits whose scores mean something only on examples not trained on


def warn_shared_manifests(data: Mapping) -> list[str]:
    """Log (and return) a warning for each held-out split whose manifest in the data settings ``data``
    (``train_manifest``, ``val_manifest``, ...) is the train manifest's file, or that ``hf_splits`` maps to the
    dataset split train reads."""
    paths = {split: expanded(data.get(f"{split}_manifest")) for split in ("train", *HELD_OUT)}  # as manifest_paths
    train = paths["train"]
    notes = [f"data.{split}_manifest is the train manifest's file ({data[f'{split}_manifest']}): the {split} scores "
             "are measured on the examples the model trains on; give a held-out manifest"
             for split in HELD_OUT
             if same_file(train, paths[split]) and os.path.exists(train)]  # a missing one: reported where read
    notes += _shared_hf_splits(data)
    for note in notes:
        log.warning(note)
    return notes


def _shared_hf_splits(data: Mapping) -> list[str]:
    """The notes for each held-out split that ``hf_dataset`` serves from the split it trains on
    (``hf_splits: {train: train, val: train}``), where neither has a manifest."""
    splits = DEFAULT_SPLITS if data.get("hf_splits") is None else data["hf_splits"]
    if not data.get("hf_dataset") or data.get("train_manifest") or not isinstance(splits, Mapping):
        return []
    return [f"data.hf_splits maps {split} to the dataset's split {splits[split]!r}, which train reads too: the {split} "
            f"scores are measured on the examples the model trains on; map {split} to a held-out split"
            for split in HELD_OUT if not data.get(f"{split}_manifest") and splits.get(split) is not None
            and splits.get(split) == splits.get("train")]


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
        paths[split] = expanded(path)
    return paths


def expanded(path: object) -> object:
    """A ``data.SPLIT_manifest`` setting as the data module reads it: a leading ``~`` expanded to the home folder
    (a path); another value (None, a wrong type reported where it is checked) as given."""
    return os.path.expanduser(path) if isinstance(path, str) else path


def _file_key(path: str) -> object:
    """What names one file however it is reached (a link, another path): its device and inode."""
    try:
        status = os.stat(path)
    except OSError:  # gone since it loaded: reported where it is read
        return os.path.realpath(path)
    return status.st_dev, status.st_ino


def warn_shared_audio(examples: Mapping[str, Sequence[Example]], manifests: Mapping[str, str | None],
                      said: set[str]) -> list[str]:
    """Log (and return) a warning for each held-out split of ``examples`` (split → examples loaded),
    loaded beside ``train`` and not in ``said`` (added to it), some of whose lines name an audio file
    that a train line names too (by any path or link): its scores are measured on recordings the model
    trains on (the same call with another instruction). Not for a held-out manifest that is the train file
    (``manifests``: :func:`warn_shared_manifests` says so), nor for dataset rows (no file to compare)."""
    def lines(split: str) -> list[Example]:
        return [e for e in examples.get(split, ()) if e.origin is not None and e.origin.split is None]

    held_out = [split for split in HELD_OUT if split in examples and split not in said and "train" in examples
                and not same_file(manifests.get("train"), manifests.get(split))]
    trained = {}
    for example in lines("train") if held_out else ():
        trained.setdefault(_file_key(example.audio), example)
    notes = []
    for split in held_out:
        said.add(split)
        shared = [(e, trained[key]) for e in lines(split) if (key := _file_key(e.audio)) in trained]
        if shared:
            (example, train), count = shared[0], len({e.audio for e, _ in shared})
            notes.append(f"data.{split}_manifest: {len(shared)} of its {len(examples[split])} examples name an audio file "
                         f"that data.train_manifest names too ({count} file(s); e.g. line {example.origin.line}: "
                         f"{example.audio}, also train line {train.origin.line}): the {split} scores are measured on "
                         "recordings the model trains on; hold out whole recordings")
    for note in notes:
        log.warning(note)
    return notes

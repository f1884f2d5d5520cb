"""An exported folder that is incomplete or whose ``speechsum_export.json`` is not what export
writes: one line naming the folder and saying to export again (was an AttributeError traceback,
or "pass --config", which an exported folder does not take)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from speechsum.serving.export import EXPORT_FILE, export_checkpoint, load_exported
from tests.serving.export_fixtures import trained_student


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    _, ckpt = trained_student("composed_tiny", folder / "run")
    return export_checkpoint(ckpt, folder / "export")


def broken_copy(exported: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    edit(copy)
    return copy


def edit_manifest(change):
    def edit(copy: Path) -> None:
        manifest = json.loads((copy / EXPORT_FILE).read_text())
        (copy / EXPORT_FILE).write_text(json.dumps(change(manifest)))
    return edit


def set_class_path(manifest: dict) -> dict:
    manifest["model"]["class_path"] = "nope.Nope"
    return manifest


CASES = [
    (lambda copy: shutil.rmtree(copy / "llm"), "{copy}: an incomplete export, llm, llm/adapter missing (a copy cut "
     "short?); export the checkpoint again, or copy the whole folder"),
    (lambda copy: (copy / "projector.safetensors").unlink(), "{copy}: an incomplete export, projector.safetensors "
     "missing (a copy cut short?); export the checkpoint again, or copy the whole folder"),
    # before: "Unrecognized model in …/llm. Should have a `model_type` key in its config.json", and "No such file or
    # directory: …/adapter_model.safetensors", saying nothing of what to do
    (lambda copy: (copy / "llm" / "config.json").unlink(), "{copy}: an incomplete export, llm/config.json missing (a "
     "copy cut short?); export the checkpoint again, or copy the whole folder"),
    (lambda copy: (copy / "llm" / "adapter" / "adapter_model.safetensors").unlink(), "{copy}: an incomplete export, "
     "llm/adapter/adapter_model.safetensors missing (a copy cut short?); export the checkpoint again, or copy the "
     "whole folder"),
    (edit_manifest(lambda manifest: [manifest]), "{copy}/speechsum_export.json: expected a JSON object, got list; "
     "export the checkpoint again"),
    (edit_manifest(lambda manifest: {**manifest, "extra": None}), "{copy}/speechsum_export.json: not what `speechsum "
     "export` writes (model.init_args, path_args, extra, adapter); export the checkpoint again"),
    (edit_manifest(set_class_path), "{copy}/speechsum_export.json: the model config does not build: class_path "
     "'nope.Nope': no such class; export the checkpoint again with this speechsum"),
    # before: "{copy}: export format 2; this speechsum reads 1", saying nothing of what to do
    (edit_manifest(lambda manifest: {**manifest, "format": 2}), "{copy}/speechsum_export.json: export format 2, and "
     "this speechsum reads format 1; written by a newer speechsum: upgrade speechsum to load it, or export the "
     "checkpoint again with this one"),
    (edit_manifest(lambda manifest: {**manifest, "format": None}), "{copy}/speechsum_export.json: export format None, "
     "and this speechsum reads format 1; export the checkpoint again with this speechsum"),
]


@pytest.mark.parametrize("edit, message", CASES, ids=["no llm", "no projector", "no llm config", "no adapter weights", "a list", "no extra", "unknown class",
                                             "newer format", "no format"])
def test_a_broken_export_is_one_line_saying_to_export_again(exported, tmp_path, edit, message):
    copy = broken_copy(exported, tmp_path, edit)
    with pytest.raises(ValueError) as caught:
        load_exported(copy)
    assert str(caught.value) == message.format(copy=copy)

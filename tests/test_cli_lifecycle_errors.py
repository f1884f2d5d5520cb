"""Run-lifecycle mistakes of ``speechsum fit|validate|test|predict`` end with one line naming the file
or setting and what to do, before any model is built where that can be known, and leave nothing
half-written: a ``--config`` file that is not there, a model section missing or with no class, a run
folder where nothing can be created, a manifest that cannot be read, a full disk while writing."""

from __future__ import annotations

import errno
import os

import pytest
import yaml

from speechsum.cli import main, missing_config_text
from speechsum.data.manifest import ManifestError, load_manifest
from speechsum.utils.io import write_jsonl
from speechsum.utils.write_errors import write_failure_text
from tests.helpers import failed_command, run_config

STAGES = ("speechsum.stages.sft.SFTModule, OnPolicyKDModule or DPOModule (see configs/sft_tiny.yaml, configs/kd.yaml, "
          "configs/dpo.yaml)")


def test_a_config_file_that_is_not_there_is_one_line(tmp_path, capsys, monkeypatch):
    """jsonargparse printed its ~70-line usage before 'File does not exist'."""
    monkeypatch.chdir(tmp_path)
    for given, message in ((str(tmp_path / "nope.yaml"), f"--config {tmp_path / 'nope.yaml'}: no such file (from "
                            f"{tmp_path}): give the path of a YAML file, e.g. configs/sft_tiny.yaml"),
                           (str(tmp_path), f"--config {tmp_path} is a folder: give a YAML file, e.g. configs/sft_tiny.yaml")):
        with pytest.raises(SystemExit) as info:
            main(["fit", "--config", given])
        assert info.value.code == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert missing_config_text("{trainer: {max_steps: 2}}") is None  # YAML given inline: jsonargparse's
    assert missing_config_text("trainer: {max_steps: 2}") is None


def test_a_model_section_missing_or_without_a_class_says_what_to_add(tmp_path, toy_data, capsys):
    config = yaml.safe_load(run_config(tmp_path, toy_data).read_text())
    del config["model"]
    (tmp_path / "no_model.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "null_class.yaml").write_text("model:\n  class_path: null\n")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(tmp_path / "no_model.yaml")])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"error: the following arguments are required: fit.model\n  fit.model: no model in the config: add a model: "
        f"section whose class_path is a stage: {STAGES}\n")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(tmp_path / "config.yaml"), "--config", str(tmp_path / "null_class.yaml")])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"\n  model.class_path: empty (null): give the class to build, a stage: {STAGES}: in "
        f"{tmp_path / 'null_class.yaml'}:2\n")


@pytest.mark.parametrize(("section", "option"), [
    ("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n      init_args:\n"
     "        dirpath: /proc/speechsum-run/checkpoints\n", "trainer.callbacks ModelCheckpoint.dirpath"),
    ("trainer:\n  logger:\n    - class_path: lightning.pytorch.loggers.CSVLogger\n      init_args:\n"
     "        save_dir: /proc/speechsum-run/checkpoints\n", "trainer.logger CSVLogger.save_dir"),
], ids=["checkpoint-dirpath", "logger-save-dir"])
def test_a_run_folder_where_nothing_can_be_created_is_refused_before_training(tmp_path, toy_data, capsys, section,
                                                                                option):
    """The checkpoint folder failed at the first save, after an epoch of training; the logger's with
    '[Errno 2] No such file or directory: PATH', naming no setting (/proc here: root writes anywhere else)."""
    config = run_config(tmp_path, toy_data, max_steps=1, limit_val_batches=0)
    (tmp_path / "place.yaml").write_text(section)
    code, err = failed_command(["fit", "--config", str(config), "--config", str(tmp_path / "place.yaml")], capsys)
    assert code == 2, err
    assert err.endswith(f"speechsum fit: error: {option} /proc/speechsum-run/checkpoints: cannot create a file in "
                        "/proc (No such file or directory); give a path in a folder you can write\n"
                        "(set SPEECHSUM_TRACEBACK=1 for the traceback)\n")
    assert not (tmp_path / "run").exists()


def test_a_manifest_that_cannot_be_read_is_named():
    """An I/O error reading the manifest itself (permissions, a failing disk; /proc/self/mem gives
    EIO at offset 0) was a traceback from inside the reader."""
    with pytest.raises(ManifestError) as info:
        load_manifest("/proc/self/mem")
    assert str(info.value) == ("/proc/self/mem:0: cannot be read (Input/output error): check that the file is readable "
                               "(permissions, disk), or give another manifest")


def no_space(row: dict, encoding: str = "utf-8") -> str:
    """The JSONL writer's line maker, on a full disk."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_names_the_output_and_leaves_no_temporary(tmp_path, monkeypatch):
    from speechsum.utils import io

    monkeypatch.setattr(io, "json_line", no_space)
    with pytest.raises(OSError) as info:
        write_jsonl(tmp_path / "predictions.jsonl", [{"id": "a"}])
    assert info.value.filename == str(tmp_path / "predictions.jsonl")
    assert list(tmp_path.iterdir()) == []
    assert write_failure_text(info.value, "rerun the same command") == (
        f"{tmp_path / 'predictions.jsonl'}: cannot write: No space left on device (outputs are written whole or not at "
        "all: nothing half-written was left); free space on that disk (rerun the same command)")
    assert write_failure_text(ValueError("other"), "rerun") is None


def test_predict_on_a_full_disk_is_one_line_and_writes_nothing(tmp_path, toy_data, monkeypatch, capsys):
    from speechsum.utils import io

    config = run_config(tmp_path, toy_data, limit_predict_batches=1)
    monkeypatch.setattr(io, "json_line", no_space)
    code, err = failed_command(["predict", "--config", str(config)], capsys)
    output = tmp_path / "run" / "predictions.jsonl"
    assert code == 1, err
    assert err.endswith(f"speechsum predict: error: {output}: cannot write: No space left on device (outputs are "
                        "written whole or not at all: nothing half-written was left); free space on that disk (rerun "
                        "the same command)\n(set SPEECHSUM_TRACEBACK=1 for the traceback)\n")
    assert not output.exists() and not list(output.parent.glob(".predictions.jsonl*"))


@pytest.mark.parametrize(("config", "line", "key"), [
    ("trainer/ddp.yaml", 6, "trainer.strategy.clas_path"), ("model/qwen2_audio_tiny.yaml", 3, "model.clas_path")])
def test_a_misspelt_class_path_key_is_named_with_its_line(tmp_path, capsys, config, line, key):
    """jsonargparse's report ended "model: expected , got {'clas_path': ...}", naming neither the key nor the line."""
    from tests.conftest import CONFIGS

    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / config).read_text().replace("class_path:", "clas_path:", 1))
    stack = [CONFIGS / "trainer" / "cpu.yaml", CONFIGS / "model" / "composed_tiny.yaml", bad]
    code, err = failed_command(["fit", *(arg for path in stack for arg in ("--config", str(path))), "--print_config"],
                               capsys)
    assert code == 2
    assert err.endswith(f"\n  {key} (did you mean 'class_path'?): not a key of a class setting (class_path, "
                        f"init_args): in {bad}:{line}\n")

"""An output path no writer can use (under a file, a folder where a file goes, a file where a
folder goes) is refused by every command before its work starts, naming the option and the file in
the way; before, ``evaluate`` generated every prediction of its first system and then failed with
``[Errno 20] Not a directory``, and ``synth --out FOLDER`` paid for every LLM call first."""

from __future__ import annotations

import re
import time

import pytest

from speechsum.cli import main
from speechsum.utils.io import check_output_path


def test_check_output_path(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    check_output_path(tmp_path / "new" / "deeper" / "out.jsonl", "--out")  # created when written
    check_output_path(tmp_path / "folder", "--out", folder=True)
    check_output_path(tmp_path / "file", "--out")  # an earlier output, replaced
    for path, folder, error, message in (
        (tmp_path / "file" / "x" / "out.jsonl", False, NotADirectoryError,
         f"--out {tmp_path}/file/x/out.jsonl: {tmp_path}/file is a file, not a folder"),
        (tmp_path / "file", True, NotADirectoryError, f"--out {tmp_path}/file is a file: give a folder"),
        (tmp_path / "folder", False, IsADirectoryError, f"--out {tmp_path}/folder is a folder: give a file path"),
    ):
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            check_output_path(path, "--out", folder=folder)


@pytest.fixture
def blocker(tmp_path, toy_data):
    (tmp_path / "file").write_text("x")
    return tmp_path / "file"


def commands(tmp_path, toy_data):
    blocked = tmp_path / "file" / "out"
    ckpt = tmp_path / "none.ckpt"
    ckpt.write_bytes(b"")  # never read: the output is refused first
    return [
        (["evaluate", "--system", f"student:s:{ckpt}", "--manifest", str(toy_data["test"]), "--out", str(blocked)],
         f"--out {blocked}: {tmp_path}/file is a file, not a folder"),
        (["report", str(tmp_path), "--out", str(blocked)], f"--out {blocked}: {tmp_path}/file is a file, not a folder"),
        (["benchmark", "build", "--out", str(blocked), "--size", "tiny"],
         f"--out {blocked}: {tmp_path}/file is a file, not a folder"),
        (["toydata", "--out", str(blocked)], f"--out {blocked}: {tmp_path}/file is a file, not a folder"),
        (["pairs", "--ckpt", str(ckpt), "--config", str(ckpt), "--manifest", str(toy_data["test"]),
          "--out", str(tmp_path)], f"--out {tmp_path} is a folder: give a file path"),
        (["pairs", "--ckpt", str(ckpt), "--config", str(ckpt), "--manifest", str(toy_data["test"]),
          "--out", str(blocked / "p.jsonl")], f"--out {blocked}/p.jsonl: {tmp_path}/file is a file, not a folder"),
        (["synth", "--manifest", str(toy_data["test"]), "--model", "m", "--out", str(tmp_path)],
         f"--out {tmp_path} is a folder: give a file path"),
        (["export", str(ckpt), "--out", str(blocked)], f"--out {blocked}: {tmp_path}/file is a file, not a folder"),
    ]


@pytest.mark.parametrize("index", range(8))
def test_every_command_refuses_an_unusable_output_first(tmp_path, toy_data, blocker, capsys, index):
    argv, message = commands(tmp_path, toy_data)[index]
    started = time.monotonic()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err + str(info.value.code)
    assert message in err and "Errno" not in err and "Traceback" not in err, err
    assert time.monotonic() - started < 30  # no model was built, nothing generated
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(("stage", "callback", "key", "blocked", "message"), [
    ("predict", "PredictionWriter", "output_path", "file/predictions.jsonl",
     "trainer.callbacks PredictionWriter.output_path {path}: {tmp}/file is a file, not a folder"),
    ("predict", "PredictionWriter", "output_path", "folder",
     "trainer.callbacks PredictionWriter.output_path {path} is a folder: give a file path"),
    ("fit", "ExportHFModel", "out_dir", "file/model",
     "trainer.callbacks ExportHFModel.out_dir {path}: {tmp}/file is a file, not a folder"),
    ("fit", "ExportHFModel", "out_dir", "model", "trainer.callbacks ExportHFModel: ComposedSpeechLLM has no "
     "save_pretrained(out_dir) to export with"),
    # e.g. the run's own folder: replacing it at the end of fit deleted its checkpoints
    ("fit", "ExportHFModel", "out_dir", "kept", "trainer.callbacks ExportHFModel.out_dir {path} is a folder that holds "
     "other files (no config.json: not an earlier exported model, which would be replaced): give a new or empty folder"),
    # the run's folder before its first run (nothing there yet): fit trained, then the export deleted its checkpoints
    ("fit", "ExportHFModel", "out_dir", "run", "trainer.callbacks ExportHFModel.out_dir {path}: the run writes to it "
     "(ModelCheckpoint.dirpath {path}/checkpoints), and the export replaces that folder whole at the end of fit, "
     "which would delete what the run wrote there; give a folder of its own, e.g. {path}/model"),
])
def test_a_callbacks_unusable_output_is_refused_before_the_run(tmp_path, toy_data, blocker, capsys, stage, callback,
                                                                 key, blocked, message):
    """`speechsum predict` generated every prediction, then ended in a FileExistsError traceback
    (and `fit` trained, then failed to export)."""
    import yaml

    from tests.helpers import run_config

    (tmp_path / "folder").mkdir()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("keep me")
    config_path = run_config(tmp_path, toy_data, max_steps=1, limit_val_batches=0)
    config = yaml.safe_load(config_path.read_text())
    config["trainer"]["callbacks"].append({"class_path": f"speechsum.training.callbacks.{callback}",
                                           "init_args": {key: str(tmp_path / blocked)}})
    config_path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as info:
        main([stage, "--config", str(config_path)])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert f"speechsum {stage}: error: {message.format(path=tmp_path / blocked, tmp=tmp_path)}" in err
    assert "Traceback" not in err and blocker.read_text() == "x"
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


@pytest.mark.parametrize(("argv", "option"), [
    (["evaluate", "--system", "student:s:none.ckpt", "--manifest", "m.jsonl", "--out", "/proc/speechsum-eval"], "--out"),
    (["pipeline", "--preset", "tiny", "--run-dir", "/proc/speechsum-run"], "--run-dir"),
    (["toydata", "--out", "/proc/speechsum-toy/data"], "--out"),
])
def test_an_output_folder_where_nothing_can_be_created_is_refused_first(capsys, argv, option):
    """A folder in a read-only place (/proc here: root writes anywhere else) failed with a bare
    '[Errno 2] No such file or directory' naming no option, evaluate's after its first system ran."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {option} {argv[-1]}: cannot create a file in /proc (No such file or directory); give a path in a " \
           "folder you can write\n" in err


def test_lightnings_own_leafspec_deprecation_is_left_out_and_the_same_warning_elsewhere_is_not():
    """torch ≥ 2.10 warns about Lightning 2.6's own pytree code on every Trainer call: hidden by
    message, category and raising module only (speechsum.cli.hide_upstream_notices)."""
    import warnings

    from speechsum.cli import hide_upstream_notices

    message = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()` instead."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hide_upstream_notices()
        for module in ("lightning.pytorch.utilities._pytree", "my_project.trees"):
            warnings.warn_explicit(message, FutureWarning, "x.py", 1, module=module)
        warnings.warn_explicit("another FutureWarning", FutureWarning, "x.py", 2,
                               module="lightning.pytorch.utilities._pytree")
    assert [(str(w.message)[:40], w.lineno) for w in caught] == [(message[:40], 1), ("another FutureWarning", 2)]

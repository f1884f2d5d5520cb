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

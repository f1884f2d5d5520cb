"""`speechsum serve --model` given a folder that holds no model: one line saying what is missing
(transformers said "Should have a `model_type` key in its config.json" of a config.json that is not there)."""

from __future__ import annotations

import pytest

from speechsum.serving.cli import main


def test_a_folder_without_a_model_is_named(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("hello\n")
    with pytest.raises(SystemExit) as stop:
        main(["--model", str(tmp_path / "run"), "--port", "0"])
    assert str(stop.value.code) == (f"speechsum serve: --model {tmp_path / 'run'}: no config.json: not a saved HF "
                                    "model + tokenizer, nor a folder written by `speechsum export`")

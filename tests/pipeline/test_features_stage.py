"""The pipeline's `features` stage: what it asks `speechsum evaluate --encode-only` to encode, and
when it encodes nothing (the command itself: tests/evaluation/test_encode.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from speechsum.pipeline.config import load_pipeline_config, preset_path, set_path
from speechsum.pipeline.table import PIPELINE


def features_ctx(tmp_path: Path, config: dict, commands: list) -> SimpleNamespace:
    (tmp_path / "data").mkdir(exist_ok=True)
    for split in ("test", "test_unseen"):
        (tmp_path / "data" / f"{split}.jsonl").write_text(json.dumps({"id": split, "audio": "a.wav"}) + "\n")
    return SimpleNamespace(run_dir=tmp_path, stage="features", note=print, run=commands.append, wandb=False,
                           config=config)


def test_the_features_stage_encodes_the_student_evaluations_test_subsets_with_the_sft_students_encoder(tmp_path):
    """The default preset: `speechsum evaluate --encode-only` on the subsets the student evaluations
    read (same files, same batch size and extra args), the student built from SFT's resolved config."""
    config = load_pipeline_config(preset_path("default"))
    commands = []
    assert PIPELINE["features"].run(features_ctx(tmp_path, config, commands)) == [tmp_path / "features" / "features.json"]
    [command] = commands
    student = tmp_path / "features" / "sft_config.yaml"
    assert command[command.index("evaluate"):] == [
        "evaluate", "--encode-only", "--out", str(tmp_path / "features"), "--batch-size", "8",
        "--manifest", f"test={tmp_path / 'features' / 'manifests' / 'test.jsonl'}",
        "--manifest", f"test_unseen={tmp_path / 'features' / 'manifests' / 'test_unseen.jsonl'}",
        "--system", f"student:features:{student}", "--asr-dtype", "bfloat16"]
    backbone = yaml.safe_load(student.read_text())["model"]["init_args"]["model"]["init_args"]
    assert (backbone["feature_cache"], backbone["encoder_dtype"]) == (str(tmp_path / "feature_cache"), "bfloat16")


@pytest.mark.parametrize(("key", "value"), [("feature_cache", None), ("policy.train_encoder", True)])
def test_the_features_stage_encodes_nothing_for_a_student_that_reads_no_feature_cache(tmp_path, capsys, key, value):
    config = load_pipeline_config(preset_path("default"))
    set_path(config, f"stages.sft.overrides.model.init_args.model.init_args.{key}", value)
    commands = []
    assert PIPELINE["features"].run(features_ctx(tmp_path, config, commands)) == [] and commands == []
    assert "the sft student reads no feature cache" in capsys.readouterr().out

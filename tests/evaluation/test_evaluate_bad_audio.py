"""`speechsum evaluate` on a manifest with audio corrupt past its header: stops naming the line, or
under ``--on-bad-example skip`` scores the others and lists the skipped one in metrics.json."""

from __future__ import annotations

import json

import pytest

from speechsum.data.manifest import ManifestError
from speechsum.evaluation.cli import evaluate_main
from speechsum.utils.io import read_jsonl
from tests.conftest import CONFIGS
from tests.data.test_corrupt_audio import ADVICE, FOUND, corrupt_flac, read_error
from tests.eval_fixtures import write_eval_set


def test_skipped_examples_are_listed_not_scored(tmp_path):
    manifests = write_eval_set(tmp_path / "data")
    bad = corrupt_flac(tmp_path / "data" / "audio" / "bad.flac")
    lines = read_jsonl(manifests["test"])
    lines.append({**lines[0], "id": "bad", "audio": "audio/bad.flac"})
    manifests["test"].write_text("".join(json.dumps(line) + "\n" for line in lines))
    common = ["--system", f"student:base:{CONFIGS / 'model' / 'composed_tiny.yaml'}", "--manifest", str(manifests["test"]),
              "--out", str(tmp_path / "out"), "--max-new-tokens", "2", "--metrics", "fact_judge",
              "--accelerator", "cpu", "--bootstrap-resamples", "20"]
    with pytest.raises(ManifestError) as info:
        evaluate_main(common)
    assert str(info.value) == f"{manifests['test']}:5: field 'audio': {read_error(bad)} {ADVICE}"

    evaluate_main([*common, "--on-bad-example", "skip"])
    rows = read_jsonl(tmp_path / "out" / "base" / "predictions.jsonl")
    assert [r["id"] for r in rows] == [f"test-{i}" for i in range(4)]
    metrics = json.loads((tmp_path / "out" / "base" / "metrics.json").read_text())
    assert metrics["num_examples"] == 4
    assert metrics["skipped"] == [{"split": "test", "line": 5, "reason": f"field 'audio': {read_error(bad)} {FOUND}"}]

"""`speechsum evaluate` on a manifest with audio corrupt past its header: stops naming the line, or
under ``--on-bad-example skip`` scores the others and lists the skipped one in metrics.json."""

from __future__ import annotations

import json

import pytest

from speechsum.data.manifest import ManifestError, load_manifest
from speechsum.evaluation.cli import evaluate_main
from speechsum.evaluation.evaluate import cascade_manifest
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


class _EchoASR:
    def transcribe(self, waveforms, sample_rate, progress):
        return [f"asr {len(w)}" for w in waveforms]


def test_the_cascade_copy_keeps_to_the_lines_loaded_under_skip(tmp_path):
    """Under ``--on-bad-example skip`` the cascade's ASR copy is built from the lines that loaded:
    a line that is no JSON object (skipped at load) or whose audio fails when read is left out,
    not a ValueError/KeyError from re-reading the whole manifest."""
    manifests = write_eval_set(tmp_path / "data")
    corrupt_flac(tmp_path / "data" / "audio" / "bad.flac")
    lines = [json.dumps(line) for line in read_jsonl(manifests["test"])]
    lines[1:1] = ["{not json", json.dumps(["a list"]), json.dumps({"audio": "audio/test-0.wav"})]
    lines.append(json.dumps({**json.loads(lines[0]), "id": "bad", "audio": "audio/bad.flac"}))
    manifests["test"].write_text("".join(line + "\n" for line in lines))
    examples, skipped = load_manifest(manifests["test"], require_summary=True, on_bad_example="skip")
    assert [s.line for s in skipped] == [2, 3, 4]

    out, cascaded, unread = cascade_manifest(manifests["test"], tmp_path / "asr.jsonl", _EchoASR(), examples, "skip")
    assert [e.id for e in cascaded] == [f"test-{i}" for i in range(4)]
    assert [s.line for s in unread] == [8]
    copy = read_jsonl(out)
    assert [r["id"] for r in copy] == [e.id for e in cascaded]
    assert all(r["transcript"].startswith("asr ") and r["meta"]["reference_transcript"] for r in copy)


def test_the_prediction_log_does_not_say_0_skipped_after_lines_were_skipped(tmp_path, caplog):
    """Before: 'skipped 1 bad line(s), kept 4', then 'predict: 4 examples from ... (0 skipped)' for the
    same manifest (its lines, checked once, are handed to the prediction's data module)."""
    from tests.eval_fixtures import save_tiny_text_lm

    manifests = write_eval_set(tmp_path / "data")
    lines = read_jsonl(manifests["test"])
    lines.append({**lines[0], "id": "gone", "audio": "audio/gone.wav"})
    manifests["test"].write_text("".join(json.dumps(line) + "\n" for line in lines))
    model = save_tiny_text_lm(tmp_path / "lm", seed=1)
    caplog.set_level("INFO")
    evaluate_main(["--system", f"text:t:{model}", "--manifest", str(manifests["test"]), "--out", str(tmp_path / "out"),
                   "--max-new-tokens", "2", "--metrics", "rouge", "--accelerator", "cpu", "--bootstrap-resamples", "20",
                   "--on-bad-example", "skip"])
    messages = [record.getMessage() for record in caplog.records]
    assert f"{manifests['test']}: skipped 1 bad line(s), kept 4" in messages
    assert f"predict: 4 examples from {manifests['test']} (checked when first loaded: what it skipped is logged there)" \
        in messages
    assert not [message for message in messages if "(0 skipped)" in message]

"""`speechsum evaluate --encode-only`: the student's frozen-encoder frames of every test clip are written
to its feature cache, batched as the evaluation batches them, so an evaluation afterwards reads them
(none encoded again) and predicts exactly what it predicts encoding them itself."""

from __future__ import annotations

import json

import pytest
import yaml

from speechsum.evaluation.cli import evaluate_main
from speechsum.utils.io import read_jsonl
from tests.conftest import CONFIGS
from tests.eval_fixtures import write_eval_set


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """The tiny composed student (frozen encoder) with a feature cache, and a test set of 6 examples in
    two splits: 3 recordings (test-3 says what test-0 says; test_unseen-0 and -1 what test-0 and -1 say)."""
    root = tmp_path_factory.mktemp("encode")
    manifests = write_eval_set(root / "data")
    config = yaml.safe_load((CONFIGS / "model" / "composed_tiny.yaml").read_text())
    config["model"]["init_args"]["model"]["init_args"]["feature_cache"] = str(root / "cache")
    path = root / "student.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return {"root": root, "config": path, "cache": root / "cache", "manifests": manifests}


def run(student, out: str, *extra: str) -> None:
    manifests = [arg for split, path in student["manifests"].items() for arg in ("--manifest", f"{split}={path}")]
    evaluate_main(["--out", str(student["root"] / out), *manifests, "--batch-size", "3", "--max-new-tokens", "8",
                   "--metrics", "rouge", *extra])


def cached_files(student) -> dict:
    return {path: path.stat().st_mtime_ns for path in student["cache"].rglob("*.npy")}


def test_encode_only_fills_the_cache_and_the_evaluation_reads_it_with_the_same_predictions(student):
    system = ["--system", f"student:sft:{student['config']}"]
    run(student, "encoding_itself", *system)  # empty cache: the evaluation encodes every clip
    encoded_by_evaluation = cached_files(student)
    assert len(encoded_by_evaluation) == 3
    for path in encoded_by_evaluation:
        path.unlink()

    run(student, "features", *system, "--encode-only")
    summary = json.loads((student["root"] / "features" / "features.json").read_text())
    assert summary == [{"system": "sft", "cache": str(student["cache"]), "seconds": summary[0]["seconds"], "splits": {
        "test": {"examples": 4, "clips_encoded": 3, "clips_cached": 1},  # batches of 3: test-3 read
        "test_unseen": {"examples": 2, "clips_encoded": 0, "clips_cached": 2}}}]
    assert not (student["root"] / "features" / "sft").exists()  # nothing generated or scored
    written = cached_files(student)
    assert set(written) == set(encoded_by_evaluation)

    run(student, "reading_the_cache", *system)
    assert cached_files(student) == written  # read, none encoded and written again
    before = read_jsonl(student["root"] / "encoding_itself" / "sft" / "predictions.jsonl")
    after = read_jsonl(student["root"] / "reading_the_cache" / "sft" / "predictions.jsonl")
    assert [row["prediction"] for row in after] == [row["prediction"] for row in before]

    run(student, "features_again", *system, "--encode-only")
    again = json.loads((student["root"] / "features_again" / "features.json").read_text())
    assert again[0]["splits"]["test"] == {"examples": 4, "clips_encoded": 0, "clips_cached": 4}


def test_encode_only_refuses_other_systems_and_says_why_a_student_without_a_cache_encodes_nothing(student, tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")  # a text LM folder, as far as the up-front check reads
    with pytest.raises(SystemExit, match=r"--encode-only takes student systems only .*not teacher \(text\)"):
        run(student, "refused", "--encode-only", "--system", f"text:teacher:{tmp_path}")
    run(student, "no_cache", "--encode-only", "--system", f"student:plain:{CONFIGS / 'model' / 'composed_tiny.yaml'}")
    assert "plain: nothing encoded: it has no feature cache (model.init_args.feature_cache)" in capsys.readouterr().out
    summary = json.loads((student["root"] / "no_cache" / "features.json").read_text())
    assert summary == [{"system": "plain", "skipped": "it has no feature cache (model.init_args.feature_cache)"}]


def test_encode_only_into_a_cache_it_cannot_write_is_an_error_naming_it(student, tmp_path, monkeypatch):
    """An evaluation reads such a cache and encodes what it lacks (a warning); encoding ahead into it would store
    nothing, and said "clips_encoded: 3" (before 2026-12-07 the first miss failed with a bare Permission denied)."""
    import errno

    from speechsum.models import feature_cache as feature_cache_module

    config = yaml.safe_load(student["config"].read_text())
    config["model"]["init_args"]["model"]["init_args"]["feature_cache"] = str(tmp_path / "cache")
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    def refused(target):  # as the file system refuses a new file in the cache's folder (root writes anywhere)
        raise PermissionError(errno.EACCES, "Permission denied", str(target.parent))

    monkeypatch.setattr(feature_cache_module, "atomic_path", refused)
    with pytest.raises(PermissionError) as info:
        run(student, "features_refused", "--system", f"student:sft:{path}", "--encode-only")
    assert str(info.value).startswith(f"sft: feature cache {tmp_path / 'cache'}: cannot write to it (Permission denied: "
                                      f"{tmp_path / 'cache'}/")
    assert str(info.value).endswith("), so encoding ahead stores nothing; make it writable or set "
                                    "model.init_args.feature_cache to a folder that is")
    assert not (tmp_path / "cache").exists()

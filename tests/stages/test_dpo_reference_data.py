"""The DPO reference's precomputed log-probs follow the audio, not only the manifest's bytes: a clip
replaced at the same path is recomputed, never served stale; a Hugging Face split (no manifest file)
gets its own cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.stages.dpo.module import DPOModule
from tests.stages.test_dpo import as_kd_checkpoint, tiny_model

datasets = pytest.importorskip("datasets")


def pairs_manifest(folder: Path, count: int = 3) -> Path:
    """``count`` preference pairs over 16-kHz noise clips written with soundfile."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        sf.write(folder / f"clip{i}.wav", 0.1 * rng.standard_normal(8_000 + 1_600 * i), 16_000, subtype="PCM_16")
        rows.append({"id": f"p{i}", "audio": f"clip{i}.wav", "instruction": "Sum up.",
                     "chosen": "A call about rent.", "rejected": "A call about rent rent rent."})
    manifest = folder / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def reference_table(module: DPOModule, **data) -> tuple[dict, Path]:
    datamodule = SpeechSumDataModule(require_summary=False, preference=True, max_batch_size=4, **data)
    datamodule.processor = module.processor
    datamodule.setup("validate")
    module.reference_table, module.reference_cache_files = {}, []
    module.prepare_reference_table(datamodule, ["val"])
    return dict(module.reference_table), module.reference_cache_files[0]


def test_a_clip_replaced_at_the_same_path_is_recomputed(tmp_path: Path):
    manifest = pairs_manifest(tmp_path)
    module = DPOModule(as_kd_checkpoint(tiny_model()), reference="precomputed", reference_cache_dir=str(tmp_path / "c"))
    before, first_file = reference_table(module, val_manifest=str(manifest))
    assert reference_table(module, val_manifest=str(manifest)) == (before, first_file)  # unchanged: a hit
    clip = tmp_path / "clip1.wav"
    stamp = clip.stat()
    sf.write(clip, 0.3 * np.sin(np.arange(9_600) / 5.0), 16_000, subtype="PCM_16")  # same length, new sound
    os.utime(clip, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    after, second_file = reference_table(module, val_manifest=str(manifest))
    assert second_file != first_file
    assert after["p0"] == before["p0"] and after["p2"] == before["p2"]
    assert after["p1"] != before["p1"]  # the new audio's log-probs, not the old clip's


def test_a_hugging_face_split_gets_reference_logprobs(tmp_path: Path):
    """No manifest file to hash (``manifests['val']`` is None): was a TypeError in setup."""
    manifest = pairs_manifest(tmp_path)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:
        row["audio"] = str(tmp_path / row["audio"])
    table = datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]}).cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"validation": table}).save_to_disk(str(tmp_path / "ds"))
    module = DPOModule(as_kd_checkpoint(tiny_model()), reference="precomputed", reference_cache_dir=str(tmp_path / "c"))
    from_manifest, manifest_file = reference_table(module, val_manifest=str(manifest))
    from_dataset, dataset_file = reference_table(module, hf_dataset=str(tmp_path / "ds"))
    assert dataset_file != manifest_file and dataset_file.is_file()
    assert reference_table(module, hf_dataset=str(tmp_path / "ds"))[1] == dataset_file  # a rerun hits
    assert from_dataset.keys() == from_manifest.keys()
    for key, (chosen, rejected) in from_manifest.items():
        assert from_dataset[key] == pytest.approx((chosen, rejected), abs=1e-4)


def test_the_fingerprint_follows_the_examples_not_where_the_manifest_lies(tmp_path: Path):
    """A copy of the manifest under another name (or with a blank line inserted: other line numbers)
    holds the same examples and audio: the same cache key; another summary or a touched clip: another."""
    from dataclasses import replace

    from speechsum.data.dataset import SpeechSumDataset
    from speechsum.data.manifest import load_manifest
    from speechsum.stages.dpo.reference_logprobs import data_fingerprint

    manifest = pairs_manifest(tmp_path)
    copy = tmp_path / "copy.jsonl"
    copy.write_text("\n" + manifest.read_text())

    def fingerprint(path: Path, **change) -> str:
        examples = [replace(e, **change) for e in load_manifest(path, require_summary=False, require_preference=True)[0]]
        return data_fingerprint(SpeechSumDataset(examples, 16_000))

    assert fingerprint(copy) == fingerprint(manifest)
    assert fingerprint(manifest, chosen="Another summary.") != fingerprint(manifest)
    before = fingerprint(manifest)
    os.utime(tmp_path / "clip0.wav", ns=(1, 1))
    assert fingerprint(manifest) != before


def test_an_id_shared_by_train_and_val_with_other_pairs_is_refused(tmp_path: Path):
    """The reference table is keyed by id: val's values replaced train's, so training used val's."""
    train = pairs_manifest(tmp_path)
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    rows[1]["chosen"] = "Another summary entirely."
    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps(r) + "\n" for r in rows))
    module = DPOModule(as_kd_checkpoint(tiny_model()), reference="precomputed", reference_cache_dir=str(tmp_path / "c"))
    datamodule = SpeechSumDataModule(require_summary=False, preference=True, max_batch_size=4,
                                     train_manifest=str(train), val_manifest=str(val))
    datamodule.processor = module.processor
    datamodule.setup("fit")
    with pytest.raises(ValueError, match=r"val: example id\(s\) \['p1'\]"):
        module.prepare_reference_table(datamodule, ["train", "val"])


def test_a_reference_cache_folder_that_cannot_be_written_keeps_the_table_in_memory(tmp_path: Path, monkeypatch,
                                                                                  caplog):
    """A read-only (or another user's) reference_cache_dir: the stage ended with "Permission denied" after every
    pair had been scored (as root nothing is refused: the file system's refusal is simulated)."""
    import errno
    import logging

    from speechsum.stages.dpo import reference_logprobs

    manifest = pairs_manifest(tmp_path)
    module = DPOModule(as_kd_checkpoint(tiny_model()), reference="precomputed", reference_cache_dir=str(tmp_path / "c"))
    expected, path = reference_table(module, val_manifest=str(manifest))
    path.unlink()

    def refused(target):
        raise PermissionError(errno.EACCES, "Permission denied", str(target.parent))

    monkeypatch.setattr(reference_logprobs, "atomic_path", refused)
    with caplog.at_level(logging.WARNING, logger="speechsum.stages.dpo.module"):
        assert reference_table(module, val_manifest=str(manifest)) == (expected, path)
    assert not path.exists()
    assert [r.getMessage() for r in caplog.records if r.name == "speechsum.stages.dpo.module"] == [
        f"val: reference log-probs of 3 pairs not cached: cannot write {tmp_path / 'c'} (Permission denied); they are "
        "used from memory and computed again next run: make reference_cache_dir writable"]

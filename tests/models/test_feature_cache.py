"""Frozen-encoder feature cache and precomputed audio (tiny random composed backbone)."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from speechsum.data.batch import SpeechCollator
from speechsum.data.manifest import Example
from speechsum.models import feature_cache as feature_cache_module
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.feature_cache import EncoderFeatureCache, audio_content_key
from speechsum.models.policy import TrainingPolicy
from speechsum.utils.temp_owner import HOST_TAG
from tests.conftest import tiny_backbone_args
from tests.utils.test_temp_owner import dead_pid


def build(cache_dir=None, train_encoder=False) -> ComposedSpeechLLM:
    args = tiny_backbone_args()
    args["policy"] = TrainingPolicy(**{**args["policy"], "lora_dropout": 0.0, "train_encoder": train_encoder})
    return ComposedSpeechLLM(**args, feature_cache=str(cache_dir) if cache_dir else None)


def items(seconds=(0.7, 1.3, 2.0), seed=0):
    rng = np.random.default_rng(seed)
    return [
        (
            Example(id=f"c{i}", audio="-", instruction="Summarise.", duration=s, summary="Short words." * (i + 1)),
            (0.1 * rng.standard_normal(int(16_000 * s))).astype(np.float32),
        )
        for i, s in enumerate(seconds)
    ]


def logprobs(model, batch):
    return model.response_logprobs(batch, batch.response_ids, batch.response_mask)


def cached_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_content_key_is_waveform_and_rate():
    wave = np.linspace(-1, 1, 1000, dtype=np.float32)
    assert audio_content_key(wave, 16000) == audio_content_key(wave.astype(np.float64), 16000)
    assert audio_content_key(wave, 16000) != audio_content_key(wave, 8000)
    assert audio_content_key(wave, 16000) != audio_content_key(wave[:-1], 16000)


@pytest.mark.parametrize("below", ["", "sub/dir"])
def test_a_cache_folder_that_is_a_file_is_refused_when_the_model_is_built(tmp_path, below):
    """It was '[Errno 20] Not a directory: FILE/<encoder id>' at the first batch, naming no setting."""
    (tmp_path / "cache").write_text("not a folder")
    root = tmp_path / "cache" / below if below else tmp_path / "cache"
    with pytest.raises(NotADirectoryError) as info:
        ComposedSpeechLLM(**{**tiny_backbone_args(), "policy": None, "feature_cache": str(root)})
    assert str(info.value) == (f"feature_cache {root}: {tmp_path / 'cache'} is a file, not a folder: give a folder for "
                               "the cache (or null for none)")
    assert EncoderFeatureCache(tmp_path / "new" / "cache").root == tmp_path / "new" / "cache"  # made when written


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_cache_folder_behind_a_broken_link_is_refused_when_the_model_is_built(tmp_path, below):
    """A link to a disk that is not mounted was a bare '[Errno 17] File exists' at the first batch."""
    os.symlink(tmp_path / "unmounted" / "cache", tmp_path / "cache")
    root = tmp_path / "cache" / below if below else tmp_path / "cache"
    with pytest.raises(NotADirectoryError) as info:
        ComposedSpeechLLM(**{**tiny_backbone_args(), "policy": None, "feature_cache": str(root)})
    assert str(info.value) == (f"feature_cache {root}: {tmp_path / 'cache'} is a broken symbolic link (to "
                               f"{tmp_path / 'unmounted' / 'cache'}): mount or create its target, or give another folder")


def test_hits_misses_and_same_outputs_as_without_cache(tmp_path):
    model = build(tmp_path)
    batch = SpeechCollator(model.processor)(items())
    cache = model.feature_cache
    first = logprobs(model, batch)
    assert (cache.hits, cache.misses, cache.writes) == (0, 3, 3)
    second = logprobs(model, batch)
    assert (cache.hits, cache.misses, cache.writes) == (3, 3, 3)
    encoder_id = model.encoder_id()
    expected = [f"{encoder_id}/{key}.npy" for key in batch.audio["content_keys"]]
    assert cached_files(tmp_path) == sorted(expected)  # nothing else: no temporary files
    stored = np.load(tmp_path / expected[2])
    assert stored.dtype == np.float16 and stored.shape == (100, 32)  # ceil(200 mel frames / 2), d_enc
    model.feature_cache = None
    uncached = logprobs(model, batch)
    torch.testing.assert_close(first, second, atol=0, rtol=0)  # a hit gives what the miss gave
    torch.testing.assert_close(first, uncached, atol=2e-3, rtol=1e-3)  # fp16 storage


def test_a_clip_seen_in_another_batch_hits(tmp_path):
    model = build(tmp_path)
    collate = SpeechCollator(model.processor)
    logprobs(model, collate(items()[:2]))
    logprobs(model, collate([items()[1], items()[2], items()[1]]))  # one hit, one miss, a repeat
    assert (model.feature_cache.hits, model.feature_cache.misses) == (1, 3)


def test_changed_encoder_weights_invalidate(tmp_path):
    model = build(tmp_path)
    batch = SpeechCollator(model.processor)(items())
    before = logprobs(model, batch)
    old_id = model.encoder_id()
    with torch.no_grad():
        model.encoder.conv1.weight.add_(0.5)
    assert model.encoder_id() != old_id
    after = logprobs(model, batch)
    assert model.feature_cache.misses == 6 and model.feature_cache.hits == 0
    assert not torch.allclose(before, after)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([old_id, model.encoder_id()])
    model.feature_cache = None
    torch.testing.assert_close(after, logprobs(model, batch), atol=2e-3, rtol=1e-3)


def test_writes_are_atomic_and_bad_files_are_recomputed(tmp_path, monkeypatch):
    cache = EncoderFeatureCache(tmp_path)
    frames = torch.randn(5, 4)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(feature_cache_module.np, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.put("enc", "key", frames)
    assert cached_files(tmp_path) == []  # no partial file, no temporary left behind
    monkeypatch.undo()
    cache.put("enc", "key", frames)
    cache.path("enc", "key").write_bytes(cache.path("enc", "key").read_bytes()[:40])  # truncated by a crash
    assert cache.get("enc", "key") is None
    out = cache.frames("enc", ["key"], lambda rows: [frames], torch.device("cpu"))
    assert cache.misses == 1 and cache.writes == 2
    torch.testing.assert_close(out[0], frames.half().float())
    assert np.load(cache.path("enc", "key")).shape == (5, 4)


def test_disabled_while_the_encoder_trains(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="speechsum.models.composed"):
        model = build(tmp_path, train_encoder=True)
    assert "is not used: the encoder trains" in caplog.text
    batch = SpeechCollator(model.processor)(items())
    logprobs(model, batch).sum().backward()
    assert cached_files(tmp_path) == [] and model.feature_cache.misses == 0
    assert model.encoder.conv1.weight.grad is not None
    assert model.precompute_audio(batch.audio) is batch.audio  # gradients must reach the encoder


@pytest.mark.parametrize("use_cache", [False, True])
def test_precomputed_audio_gives_the_same_logprobs_also_repeated(tmp_path, use_cache):
    model = build(tmp_path if use_cache else None)
    batch = SpeechCollator(model.processor)(items())
    reference = logprobs(model, batch)
    precomputed = replace(batch, audio=model.precompute_audio(batch.audio))
    assert precomputed.audio["encoder_frames"].shape == (3, 100, 32)
    assert precomputed.audio["encoder_lengths"].tolist() == [35, 65, 100]

    def fail(*args, **kwargs):
        raise AssertionError("the encoder ran again")

    model._encode_windows = fail  # every later use must skip the encoder
    torch.testing.assert_close(logprobs(model, precomputed), reference, atol=1e-6, rtol=1e-6)
    doubled = precomputed.repeat_interleave(2)
    torch.testing.assert_close(logprobs(model, doubled), reference.repeat_interleave(2, dim=0), atol=1e-6, rtol=1e-6)
    ids, mask = model.generate(precomputed, max_new_tokens=5)
    del model._encode_windows
    expected_ids, expected_mask = model.generate(batch, max_new_tokens=5)
    assert torch.equal(ids, expected_ids) and torch.equal(mask, expected_mask)


@pytest.mark.parametrize("damage", ["empty", "cut_in_header", "cut_in_data", "npz", "not_npy", "wrong_width", "one_dim",
                                    "nan_inside"])
def test_an_empty_cut_short_or_misshapen_file_is_a_miss_and_rewritten(tmp_path, damage):
    """np.load raised EOFError on a 0-byte file (a raw traceback ended training); a file whose bytes were damaged
    into a NaN (fp16 0xFFFF) was read as frames, and its NaN reached the loss and the weights."""
    cache = EncoderFeatureCache(tmp_path)
    frames = torch.randn(5, 4)
    cache.put("enc", "key", frames)
    path = cache.path("enc", "key")
    whole = path.read_bytes()
    if damage in ("npz", "wrong_width", "one_dim"):
        bad = {"npz": np.zeros((5, 4), np.float16), "wrong_width": np.zeros((5, 3), np.float16),
               "one_dim": np.zeros(20, np.float16)}[damage]
        with open(path, "wb") as file:
            (np.savez if damage == "npz" else np.save)(file, bad)
    else:
        path.write_bytes({"empty": b"", "cut_in_header": whole[:40], "cut_in_data": whole[:-3],
                          "not_npy": b"hello world" * 8, "nan_inside": whole[:-8] + b"\xff\xff" + whole[-6:]}[damage])
    out = cache.frames("enc", ["key"], lambda rows: [frames], torch.device("cpu"), width=4)
    assert (cache.hits, cache.misses, cache.writes) == (0, 1, 2)
    torch.testing.assert_close(out[0], frames.half().float())
    assert cache.get("enc", "key", width=4).shape == (5, 4)


def test_a_miss_under_a_mixed_precision_step_writes_the_frames_a_float32_run_writes(tmp_path):
    """configs/sft.yaml trains in bf16-mixed: a cache miss under its autocast was a TypeError ("Got unsupported
    ScalarType BFloat16", the log-mel's bf16 matmul), and the encoder's frames, keyed by encoder_dtype, would have
    been bf16 autocast's, which a float32 stage reading them (KD, DPO, evaluation) took for its own."""
    mixed, full = build(tmp_path / "mixed"), build(tmp_path / "float32")
    batch = SpeechCollator(mixed.processor)(items())  # log-mel features left to a miss (the cache's processor)
    assert "input_features" not in batch.audio
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logprobs(mixed, batch)
    logprobs(full, batch)
    assert mixed.encoder_id() == full.encoder_id()
    names = cached_files(tmp_path / "float32")
    assert cached_files(tmp_path / "mixed") == names and len(names) == 3
    for name in names:
        np.testing.assert_array_equal(np.load(tmp_path / "mixed" / name), np.load(tmp_path / "float32" / name))


def test_a_cache_that_cannot_be_written_is_read_and_what_it_lacks_is_encoded(tmp_path, monkeypatch, caplog):
    """A shared cache on a read-only mount, or another user's folder (as root nothing is refused: the file system's
    refusal is simulated): the first miss was "[Errno 13] Permission denied" and ended the stage."""
    import errno

    from speechsum.utils import io as io_module

    filled = build(tmp_path)
    logprobs(filled, SpeechCollator(filled.processor)(items((0.7, 1.3))))
    before = cached_files(tmp_path)

    def refused(*args, dir=None, **kwargs):  # noqa: A002 (mkstemp's own keyword)
        raise PermissionError(errno.EACCES, "Permission denied", dir)

    monkeypatch.setattr(io_module.tempfile, "mkstemp", refused)
    model = build(tmp_path)
    batch = SpeechCollator(model.processor)(items())
    with caplog.at_level(logging.WARNING, logger="speechsum.models.feature_cache"):
        first = logprobs(model, batch)
        torch.testing.assert_close(logprobs(model, batch), first, atol=0, rtol=0)
    cache = model.feature_cache
    assert (cache.hits, cache.misses, cache.writes) == (4, 2, 0)  # the new clip is encoded each time, not stored
    assert cached_files(tmp_path) == before
    folder = tmp_path / model.encoder_id()
    assert [r.getMessage() for r in caplog.records] == [
        f"feature cache {tmp_path}: cannot write to it (Permission denied: {folder}): clips it holds are read from it, "
        "the others are encoded and not stored; make it writable or set feature_cache to a folder that is (or null)"]
    model.feature_cache = None
    torch.testing.assert_close(first, logprobs(model, batch), atol=2e-3, rtol=1e-3)


def test_a_miss_from_a_batch_a_bf16_true_trainer_cast_is_encoded(tmp_path):
    """precision: bf16-true casts every float tensor of the batch to bfloat16, the clips left for the log-mel of a
    cache miss too: "TypeError: Got unsupported ScalarType BFloat16" at the first miss."""
    model = build(tmp_path)
    batch = SpeechCollator(model.processor)(items())
    batch.audio["waveforms"] = batch.audio["waveforms"].to(torch.bfloat16)  # as the trainer's precision plugin does
    assert torch.isfinite(logprobs(model, batch)).all()
    assert (model.feature_cache.hits, model.feature_cache.misses, model.feature_cache.writes) == (0, 3, 3)


def test_a_killed_writers_temporary_file_is_removed_by_the_next_run_and_a_live_ones_kept(tmp_path):
    """A standalone fit killed while it wrote a cached clip left '.KEY.npy.PID.HOST-XXXX.tmp' beside the cache's
    files for good (only the pipeline cleaned its run folder); the next use of the folder removes it."""
    cache = EncoderFeatureCache(tmp_path)
    folder = tmp_path / "enc"
    folder.mkdir()
    killed = folder / f".{'a' * 64}.npy.{dead_pid()}.{HOST_TAG}-k2x9.tmp"
    live = folder / f".{'b' * 64}.npy.{os.getpid()}.{HOST_TAG}-live.tmp"  # a writer still at work (this process)
    for path in (killed, live):
        path.write_bytes(b"\x93NUMPY half")
    frames = torch.ones(3, 4)
    assert cache.frames("enc", ["c" * 64], lambda rows: [frames], torch.device("cpu"))[0].tolist() == frames.tolist()
    assert sorted(path.name for path in folder.iterdir()) == [live.name, f"{'c' * 64}.npy"]


def test_a_cached_file_of_another_frame_count_is_a_miss_not_a_failed_step(tmp_path, caplog):
    """A file of the right width but another length (another clip's frames, a copy from another cache) was read
    as the clip's, and the step failed: 'ValueError: 51 audio placeholders but 225 audio frames', naming no file."""
    model = build(tmp_path)
    batch = SpeechCollator(model.processor)(items())
    first = logprobs(model, batch)
    folder = tmp_path / model.encoder_id()
    keys = batch.audio["content_keys"]
    np.save(folder / f"{keys[0]}.npy", np.zeros((300, 32), np.float16))
    with caplog.at_level(logging.WARNING, logger="speechsum.models.feature_cache"):
        torch.testing.assert_close(logprobs(model, batch), first, atol=0, rtol=0)
    assert [r.getMessage() for r in caplog.records] == [
        f"feature cache: {folder / keys[0]}.npy holds float16 (300, 32), not (35, 32) float16; recomputing it"]
    assert np.load(folder / f"{keys[0]}.npy").shape == (35, 32)  # rewritten: ceil(70 mel frames / 2)


@pytest.mark.parametrize("blocking", ["encoder_folder_a_file", "entry_a_folder", "entry_a_fifo"])
def test_a_cache_entry_that_is_no_file_or_folder_of_its_kind_is_named(tmp_path, blocking):
    """A file where an encoder's folder goes was a bare FileExistsError at the first miss, a folder where a clip's
    file goes an IsADirectoryError of a temporary name, and a FIFO there hung the step (written in place, waiting
    for a reader)."""
    cache = EncoderFeatureCache(tmp_path)
    entry = cache.path("enc", "key")
    if blocking == "encoder_folder_a_file":
        entry.parent.write_text("x")
    else:
        entry.parent.mkdir()
        entry.mkdir() if blocking == "entry_a_folder" else os.mkfifo(entry)
    with pytest.raises(OSError) as info:
        cache.frames("enc", ["key"], lambda rows: [torch.ones(2, 4)], torch.device("cpu"), width=4)
    assert str(info.value) == {
        "encoder_folder_a_file": f"feature cache {tmp_path}: {entry.parent} is a file where the folder of this "
                                 "encoder's frames goes: move or remove it (the cache holds one folder per encoder)",
        "entry_a_folder": f"feature cache {tmp_path}: {entry} is a folder, not a cached clip's frames: remove it",
        "entry_a_fifo": f"feature cache {tmp_path}: {entry} is a FIFO, socket or device, not a cached clip's "
                        "frames: remove it"}[blocking]

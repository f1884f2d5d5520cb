"""The frozen encoder's inference snapshot (FastWhisperEncoder), length-sorted window batches and
the ``encoder_dtype`` option (tiny random composed backbone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from speechsum.data.batch import SpeechCollator
from speechsum.data.manifest import Example
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.encoder_windows import Window, cut_windows, length_batches
from speechsum.models.policy import TrainingPolicy
from speechsum.models.whisper_fast import FastWhisperEncoder
from tests.conftest import tiny_backbone_args


def build(encoder_dtype: str = "float32", cache_dir=None, **policy) -> ComposedSpeechLLM:
    args = tiny_backbone_args()
    args["policy"] = TrainingPolicy(**{**args["policy"], "lora_dropout": 0.0, **policy})
    return ComposedSpeechLLM(**args, encoder_dtype=encoder_dtype, feature_cache=str(cache_dir) if cache_dir else None).eval()


def audio(model: ComposedSpeechLLM, seconds=(3.0, 35.0, 0.7, 12.0), seed=0) -> dict:
    rng = np.random.default_rng(seed)
    items = [
        (Example(id=f"c{i}", audio="-", instruction="Summarise.", duration=s, summary="Words."),
         (0.1 * rng.standard_normal(int(16_000 * s))).astype(np.float32))
        for i, s in enumerate(seconds)
    ]
    return SpeechCollator(model.processor)(items).audio


def padded_windows(model: ComposedSpeechLLM) -> tuple[torch.Tensor, torch.Tensor]:
    features = audio(model)["input_features"][:, :, :1200]
    return features, torch.tensor([1200, 1000, 70, 1199])  # full, padded, short, odd


def test_cut_windows_and_length_batches():
    assert cut_windows([7000, 0, 3000], 3000) == [
        Window(0, 0, 3000), Window(0, 3000, 3000), Window(0, 6000, 1000), Window(1, 0, 0), Window(2, 0, 3000),
    ]
    lengths = [3000, 500, 3000, 2900, 100]
    groups = length_batches(lengths, frame_budget=6000)
    assert groups == [[0, 2], [3, 1], [4]]  # longest first; each group's rows × its longest ≤ budget
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert length_batches([5000], frame_budget=3000) == [[0]]  # an over-budget window still gets a call


def test_float32_snapshot_gives_the_module_frames():
    model = build("float32")
    features, mel_frames = padded_windows(model)
    with torch.no_grad():
        slow = model._encode_windows_module(features, mel_frames)
    fast = FastWhisperEncoder(model.encoder, torch.float32)(features, mel_frames)
    assert fast.shape == slow.shape and fast.dtype == torch.float32
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert fast[2, 35:].abs().max() == 0  # zero beyond the row's ceil(70 / 2) frames


def test_bfloat16_snapshot_is_close_to_float32():
    model = build("float32")
    features, mel_frames = padded_windows(model)
    exact = FastWhisperEncoder(model.encoder, torch.float32)(features, mel_frames)
    approx = FastWhisperEncoder(model.encoder, torch.bfloat16)(features, mel_frames)
    assert approx.dtype == torch.float32
    valid = exact.abs().sum(-1) > 0
    cosine = F.cosine_similarity(approx[valid], exact[valid], dim=-1)
    assert cosine.min() > 0.99
    assert (approx - exact).abs().mean() < 0.05
    assert approx[~valid].abs().max() == 0


def test_frozen_frames_match_the_module_path_window_by_window():
    model = build("float32")
    batch = audio(model)
    with torch.no_grad():
        fast = model.clip_frames(batch)  # frozen: snapshot, length-sorted windows
        model.encoder.requires_grad_(True)  # trainable: the module
        slow = model.encoder_frames(batch["input_features"], batch["mel_frames"])
    assert [f.shape[0] for f in fast] == [150, 1750, 35, 600]
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_snapshot_follows_weight_changes():
    model = build("float32")
    first = model.fast_encoder()
    assert model.fast_encoder() is first
    with torch.no_grad():
        model.encoder.layers[0].fc1.weight.mul_(2)
    assert model.fast_encoder() is not first


def test_precision_is_part_of_the_cache_key(tmp_path):
    fp32 = build("float32", cache_dir=tmp_path)
    bf16 = build("bfloat16", cache_dir=tmp_path)  # same seed: the same weights
    assert fp32.encoder_id() != bf16.encoder_id()
    batch = audio(fp32, seconds=(1.0, 2.0))
    with torch.no_grad():
        fp32.clip_frames(batch)
        bf16.clip_frames(batch)
        fp32.clip_frames(batch)
    assert (fp32.feature_cache.hits, fp32.feature_cache.misses) == (2, 2)
    assert (bf16.feature_cache.hits, bf16.feature_cache.misses) == (0, 2)  # fp32 frames are not reused
    assert len(list(tmp_path.iterdir())) == 2


def test_bad_encoder_dtype_is_refused():
    with pytest.raises(ValueError, match="encoder_dtype"):
        build("float16")

"""Clips real data holds that a normal one does not (digital silence, DC offset, a full-scale square
wave, one sample, 10 ms, just over the 30-s window) read from files through the composed backbone in
one batch, and through the feature cache, including a clip changed on disk after it was cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechsum.data.audio import load_audio
from speechsum.data.batch import SpeechCollator
from speechsum.data.manifest import Example
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.policy import TrainingPolicy
from tests.conftest import tiny_backbone_args

RATE = 16_000
SQUARE = np.sign(np.sin(2 * np.pi * 100 * (np.arange(RATE) + 0.5) / RATE))
# name -> (samples at RATE, file subtype): the file is written, then read back as a stage reads it
CLIPS = {
    "silence": (np.zeros(RATE), "PCM_16"),
    "dc": (np.full(RATE, 0.5), "PCM_16"),
    "square": (SQUARE, "PCM_16"),  # every sample at full scale
    "one_sample": (np.array([0.5]), "PCM_16"),
    "ten_ms": (0.1 * np.random.default_rng(0).standard_normal(160), "FLOAT"),
    "window_and_a_frame": (0.1 * np.random.default_rng(1).standard_normal(30 * RATE + 160), "PCM_16"),
}
MEL_FRAMES = [100, 100, 100, 1, 1, 3001]  # the last: a 30-s window and a window of one frame


def build(cache: Path | None = None) -> ComposedSpeechLLM:
    args = tiny_backbone_args()
    args["policy"] = TrainingPolicy(**{**args["policy"], "lora_dropout": 0.0})
    return ComposedSpeechLLM(**args, feature_cache=str(cache) if cache else None).eval()


def read(folder: Path, names=tuple(CLIPS)) -> list[tuple[Example, np.ndarray]]:
    items = []
    for name in names:
        path = folder / f"{name}.wav"
        if not path.exists():
            sf.write(path, CLIPS[name][0], RATE, subtype=CLIPS[name][1])
        waveform = load_audio(str(path), RATE)
        items.append((Example(id=name, audio=str(path), instruction="Sum up.", duration=len(waveform) / RATE,
                              summary="A short call."), waveform))
    return items


@pytest.fixture(scope="module")
def model() -> ComposedSpeechLLM:
    return build()


@torch.no_grad()
def test_odd_clips_batched_give_what_each_gives_alone(model, tmp_path: Path):
    collate = SpeechCollator(model.processor)
    items = read(tmp_path)
    batch = collate(items)
    assert batch.audio["mel_frames"].tolist() == MEL_FRAMES
    assert torch.isfinite(batch.audio["input_features"]).all()
    together = model.response_logprobs(batch, batch.response_ids, batch.response_mask)
    ids, _ = model.generate(batch, max_new_tokens=3)
    assert torch.isfinite(together).all()
    for row, item in enumerate(items):
        alone = collate([item])
        single = model.response_logprobs(alone, alone.response_ids, alone.response_mask)
        torch.testing.assert_close(together[row, : single.shape[1]], single[0], atol=1e-5, rtol=1e-4)
        alone_ids, alone_mask = model.generate(alone, max_new_tokens=3)
        kept = int(alone_mask.sum())
        assert ids[row, :kept].tolist() == alone_ids[0, :kept].tolist(), item[0].id


@torch.no_grad()
def test_the_cache_serves_odd_clips_and_never_a_clip_changed_on_disk(tmp_path: Path):
    """The key is the waveform read now (and its rate), not the path: a file rewritten after its
    frames were cached is a miss, and two files with the same sound share one entry."""
    model = build(tmp_path / "cache")
    collate = SpeechCollator(model.processor)
    names = ("silence", "dc", "square", "one_sample", "ten_ms")

    def run():
        batch = collate(read(tmp_path, names))
        return model.response_logprobs(batch, batch.response_ids, batch.response_mask)

    first = run()
    cache = model.feature_cache
    assert (cache.hits, cache.misses) == (0, 5)
    torch.testing.assert_close(run(), first, atol=0, rtol=0)
    assert (cache.hits, cache.misses) == (5, 5)
    sf.write(tmp_path / "dc.wav", np.full(RATE, -0.25), RATE, subtype="PCM_16")  # same path and length
    changed = run()
    assert (cache.hits, cache.misses) == (9, 6)
    assert not torch.allclose(changed[1], first[1]) and torch.equal(changed[0], first[0])
    model.feature_cache = None
    torch.testing.assert_close(run(), changed, atol=2e-3, rtol=1e-3)

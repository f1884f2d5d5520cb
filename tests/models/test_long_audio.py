"""Audio longer than the encoder's 30 s window in the composed backbone (tiny random encoder)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechsum.data.batch import SpeechCollator
from speechsum.data.manifest import Example
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.policy import TrainingPolicy
from tests.conftest import tiny_backbone_args

SECONDS = (70.0, 4.0, 35.0)


@pytest.fixture(scope="module")
def model():
    args = tiny_backbone_args()
    args["policy"] = TrainingPolicy(**{**args["policy"], "lora_dropout": 0.0})
    return ComposedSpeechLLM(**args).eval()


def items(seconds=SECONDS, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (
            Example(id=f"long{i}", audio="-", instruction="Summarise.", duration=s, summary="A short summary."),
            (0.1 * rng.standard_normal(int(16_000 * s))).astype(np.float32),
        )
        for i, s in enumerate(seconds)
    ]


def test_processor_has_no_30s_limit_and_counts_placeholders(model):
    assert model.processor.max_audio_seconds is None
    batch = SpeechCollator(model.processor)(items())
    assert batch.audio["mel_frames"].tolist() == [7000, 400, 3500]  # not truncated at 3000
    placeholders = (batch.prompt_ids == model.audio_token_id).sum(1).tolist()
    assert placeholders == [875, 50, 438]  # ceil(ceil(frames / 2) / 4)
    with torch.no_grad():
        assert model.encode_audio(batch.audio)[0].shape[0] == sum(placeholders)


def test_long_clip_is_the_concatenation_of_its_windows(model):
    audio = SpeechCollator(model.processor)(items(seconds=(70.0,))).audio
    features = audio["input_features"]
    with torch.no_grad():
        frames = model.clip_frames(audio)[0]
        windows = [
            model._encode_windows(features[:, :, start:stop], torch.tensor([stop - start]))[0]
            for start, stop in ((0, 3000), (3000, 6000), (6000, 7000))
        ]
    assert frames.shape == (3500, 32)
    torch.testing.assert_close(frames, torch.cat(windows), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(windows[0][:500], windows[2][:500])  # windows differ: no frame was reused


def test_long_clips_do_not_depend_on_the_batch(model):
    collate = SpeechCollator(model.processor)
    batch = collate(items())
    together = model.response_logprobs(batch, batch.response_ids, batch.response_mask)
    for row, item in enumerate(items()):
        alone = collate([item])
        single = model.response_logprobs(alone, alone.response_ids, alone.response_mask)
        torch.testing.assert_close(together[row, : single.shape[1]], single[0], atol=1e-5, rtol=1e-4)

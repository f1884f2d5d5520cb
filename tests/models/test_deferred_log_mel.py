"""Log-mel features left to the model when its frozen encoder's frames come from a feature cache
(``ComposedProcessor.defer_log_mel``): the same frames and log-probs as features computed at
collation, and no log-mel at all for a clip the cache holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechsum.data.batch import SpeechCollator
from speechsum.models.composed_processor import log_mel_frames, stft_ready
from tests.models.test_feature_cache import build, cached_files, items, logprobs


def cached_bytes(root):
    return {name: (root / name).read_bytes() for name in cached_files(root)}


@pytest.mark.parametrize("num_samples", [0, 1, 159, 160, 200, 201, 202, 399, 400, 401, 16_000, 16_001, 480_123])
def test_frame_count_is_the_extractors(num_samples):
    model = build()
    extractor = model.processor.feature_extractor
    waveform = stft_ready(np.ones(num_samples, dtype=np.float32), extractor.n_fft)
    features = extractor(waveform, sampling_rate=16_000, padding="longest", truncation=False, return_tensors="np")
    assert log_mel_frames(num_samples, extractor.n_fft, extractor.hop_length) == features["input_features"].shape[-1]


def test_only_a_cached_frozen_encoder_defers(tmp_path):
    assert build(tmp_path).processor.defer_log_mel
    assert not build().processor.defer_log_mel  # no cache: features at collation (in data-loader workers)
    assert not build(tmp_path, train_encoder=True).processor.defer_log_mel


@pytest.mark.parametrize("seconds", [(0.7, 1.3, 2.0), (0.00625, 0.0125, 31.0)])  # 100 and 200 samples; 2 windows
def test_deferred_features_give_the_same_batch_frames_and_logprobs(tmp_path, seconds):
    model, eager_model = build(tmp_path / "deferred"), build(tmp_path / "eager")
    deferred = SpeechCollator(model.processor)(items(seconds))
    assert set(deferred.audio) == {"waveforms", "num_samples", "mel_frames", "content_keys"}
    eager_model.processor.defer_log_mel = False
    eager = SpeechCollator(eager_model.processor)(items(seconds))
    assert "waveforms" not in eager.audio
    assert torch.equal(deferred.prompt_ids, eager.prompt_ids) and torch.equal(deferred.audio["mel_frames"],
                                                                              eager.audio["mel_frames"])
    assert deferred.audio["content_keys"] == eager.audio["content_keys"]
    assert torch.equal(model.processor.input_features(deferred.audio), eager.audio["input_features"])
    assert torch.equal(model.processor.input_features(deferred.audio, [2, 0]), eager.audio["input_features"][[2, 0]])

    cold = logprobs(model, deferred)  # misses: frames computed from the deferred features, then cached
    assert (model.feature_cache.misses, model.feature_cache.writes) == (3, 3)
    torch.testing.assert_close(cold, logprobs(eager_model, eager), atol=0, rtol=0)
    torch.testing.assert_close(logprobs(model, deferred), cold, atol=0, rtol=0)  # hits
    assert (tmp_path / "deferred").is_dir() and cached_bytes(tmp_path / "deferred") == cached_bytes(tmp_path / "eager")


def test_a_cached_clip_needs_no_log_mel(tmp_path, monkeypatch):
    model = build(tmp_path)
    batch = SpeechCollator(model.processor)(items())
    first = logprobs(model, batch)

    def no_log_mel(*args):
        raise AssertionError("log-mel computed for a cached clip")

    monkeypatch.setattr(model.processor, "log_mel", no_log_mel)
    torch.testing.assert_close(logprobs(model, batch), first, atol=0, rtol=0)
    assert model.feature_cache.hits == 3
    repeated = batch.repeat_interleave(2)  # as generation lays out samples
    torch.testing.assert_close(logprobs(model, repeated), first.repeat_interleave(2, dim=0), atol=0, rtol=0)


def test_one_new_clip_computes_only_its_own_features(tmp_path, monkeypatch):
    model = build(tmp_path)
    logprobs(model, SpeechCollator(model.processor)(items(seconds=(0.7, 1.3))))
    batch = SpeechCollator(model.processor)(items(seconds=(0.7, 1.3, 2.0)))
    computed = []
    log_mel = model.processor.log_mel
    monkeypatch.setattr(model.processor, "log_mel", lambda waveforms, *rest: computed.append(len(waveforms)) or log_mel(waveforms, *rest))
    logprobs(model, batch)
    assert computed == [1]


def test_an_audio_dict_without_features_or_clips_is_refused(tmp_path):
    model = build(tmp_path)
    batch = SpeechCollator(model.processor)(items())
    audio = {key: value for key, value in batch.audio.items() if key != "waveforms"}
    with pytest.raises(ValueError, match="neither `input_features` nor `waveforms`"):
        model.processor.input_features(audio)

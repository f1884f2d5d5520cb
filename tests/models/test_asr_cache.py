"""WhisperTranscriber's transcript cache, de-duplication and length-ordered batches, on a stub model
(no Whisper: the stub "transcribes" a window as its length in samples)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from speechsum.models.asr import WhisperTranscriber, audio_sha256, model_identity
from speechsum.utils.remote import JsonlCache, cache_key


class StubWhisper:
    """Feature extractor, model and tokenizer in one: a window of n samples decodes to "n"."""

    sampling_rate = 100

    def __init__(self):
        self.batches: list[list[int]] = []

    def __call__(self, pieces, sampling_rate, return_tensors):
        return SimpleNamespace(input_features=torch.tensor([[len(p)] for p in pieces]))

    def generate(self, features, **kwargs):
        self.batches.append(features[:, 0].tolist())
        return features

    def batch_decode(self, ids, skip_special_tokens):
        return [f" {int(row[0])} " for row in ids]


def stub_transcriber(cache=None, max_new_tokens: int = 200, dtype: str = "float32") -> WhisperTranscriber:
    stub = StubWhisper()
    transcriber = WhisperTranscriber.__new__(WhisperTranscriber)
    transcriber.model = transcriber.feature_extractor = transcriber.tokenizer = stub
    transcriber.batch_size, transcriber.max_new_tokens, transcriber.device = 2, max_new_tokens, "cpu"
    transcriber.identity, transcriber.dtype = "stub-model", dtype
    transcriber.decoder, transcriber.greedy, transcriber.fast_encoder = "generate", None, None
    transcriber.cache = None if cache is None else JsonlCache(cache)
    transcriber.cache_hits = 0
    return transcriber


def clip(seconds: float, value: float = 0.1) -> np.ndarray:
    return np.full(int(seconds * StubWhisper.sampling_rate), value, dtype=np.float32)


def test_batches_in_order_of_length_and_answers_in_input_order():
    transcriber = stub_transcriber()
    texts = transcriber.transcribe([clip(3), clip(20), clip(5), clip(12)], sample_rate=100)
    assert texts == ["300", "2000", "500", "1200"]
    assert transcriber.model.batches == [[2000, 1200], [500, 300]]


def test_long_clips_are_windowed_and_joined():
    transcriber = stub_transcriber()
    waveform = clip(75)
    waveform[2700:2720] = 0.0  # a pause: the first cut falls here (see test_long_audio_is_cut_in_silences)
    assert transcriber.transcribe([waveform], sample_rate=100) == ["2700 2500 2300"]


def test_equal_audio_is_transcribed_once():
    transcriber = stub_transcriber()
    assert transcriber.transcribe([clip(4), clip(4), clip(6), clip(4)], sample_rate=100) == ["400", "400", "600", "400"]
    assert transcriber.model.batches == [[600, 400]]


def test_cache_serves_reruns_and_other_instances(tmp_path):
    path = tmp_path / "asr.jsonl"
    first = stub_transcriber(path)
    assert first.transcribe([clip(3), clip(5)], sample_rate=100) == ["300", "500"]
    assert first.cache_hits == 0 and len(first.model.batches) == 1
    first.cache.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    key = cache_key("whisper-asr", 1, "stub-model", first.settings, audio_sha256(clip(3)))
    assert lines[0] == {"key": key, "value": {"text": "300", "model": "stub-model", "seconds": 3.0}}

    again = stub_transcriber(path)  # a rerun (another process): everything from disk
    assert again.transcribe([clip(5), clip(3)], sample_rate=100) == ["500", "300"]
    assert again.cache_hits == 2 and again.model.batches == []
    assert again.transcribe([clip(3), clip(7)], sample_rate=100) == ["300", "700"]  # another split: only the new clip
    assert again.model.batches == [[700]] and again.cache_hits == 3
    assert len(path.read_text().splitlines()) == 3  # append-only: one line per new transcript


@pytest.mark.parametrize("change", ["max_new_tokens", "dtype", "model", "audio"])
def test_cache_key_changes_with_model_settings_and_audio(tmp_path, change):
    path = tmp_path / "asr.jsonl"
    stub_transcriber(path).transcribe([clip(3)], sample_rate=100)
    other = stub_transcriber(path, max_new_tokens=100 if change == "max_new_tokens" else 200,
                             dtype="bfloat16" if change == "dtype" else "float32")
    if change == "model":
        other.identity = "another-model"
    audio = clip(3, value=0.2 if change == "audio" else 0.1)
    other.transcribe([audio], sample_rate=100)
    assert other.cache_hits == 0 and other.model.batches == [[300]]


def test_model_identity_hashes_weights_not_paths(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"weights")
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / "README.md").write_text(name)  # not part of the identity
    assert model_identity(tmp_path / "a") == model_identity(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"other weights")
    assert model_identity(tmp_path / "a") != model_identity(tmp_path / "b")
    (tmp_path / "c").mkdir()
    with pytest.raises(FileNotFoundError, match="no weight files"):
        model_identity(tmp_path / "c")


def test_an_unknown_precision_or_decoder_is_refused_before_loading():
    with pytest.raises(ValueError, match="dtype must be float32 or bfloat16, got 'float16'"):
        WhisperTranscriber("/nonexistent", dtype="float16")
    with pytest.raises(ValueError, match="decoder must be loop or generate, got 'beam'"):
        WhisperTranscriber("/nonexistent", decoder="beam")

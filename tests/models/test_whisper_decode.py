"""The greedy Whisper loop (speechsum.models.whisper_decode) against HF generate, with the bundled
Whisper tiny.en on real benchmark audio (English and Spanish/German clips of a tiny build)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from speechsum.benchmark.build import build_benchmark
from speechsum.data.audio import load_audio
from speechsum.data.manifest import load_manifest
from speechsum.models.asr import WhisperTranscriber, split_at_silences
from speechsum.models.whisper_ct2 import bundled_whisper_dir
from speechsum.models.whisper_decode import UnsupportedDecoding, WhisperGreedyDecoder, greedy_rules

MAX_NEW_TOKENS = 48  # English windows end earlier, the xling ones run into the cap


@pytest.fixture(scope="module")
def whisper_dir():
    return bundled_whisper_dir()


@pytest.fixture(scope="module")
def windows(tmp_path_factory) -> list[np.ndarray]:
    """≤30 s windows of one English (test) and one Spanish/German (test_xling) clip, and a ≤6 s
    window of the English one (short transcripts end long before the longer ones)."""
    out = tmp_path_factory.mktemp("bench") / "tiny"
    build_benchmark(out, size="tiny", world="compact", workers=1, progress=False,
                    documents={"train": 1, "val": 1, "test": 1, "test_unseen": 1, "test_xling": 1})
    pieces = []
    for split in ("test", "test_xling"):
        examples, _ = load_manifest(out / f"{split}.jsonl", require_summary=False, require_transcript=True)
        waveform = load_audio(examples[0].audio, 16_000)
        pieces += split_at_silences(waveform, 16_000)
    return pieces + split_at_silences(waveform, 16_000, window_seconds=6.0)[:1]


@pytest.fixture(scope="module")
def fp32(whisper_dir) -> WhisperTranscriber:
    return WhisperTranscriber(whisper_dir, max_new_tokens=MAX_NEW_TOKENS)


def _generate_tokens(transcriber: WhisperTranscriber, pieces: list[np.ndarray]) -> list[list[int]]:
    with torch.no_grad():
        ids = transcriber._generate(pieces)
    eos = transcriber.model.generation_config.eos_token_id
    return [[token for token in row if token != eos] for row in ids.tolist()]


def test_rules_of_tiny_en(fp32):
    rules = fp32.greedy.rules
    assert rules.prompt == (50257, 50362)  # <|startoftranscript|> <|notimestamps|>
    assert rules.begin_suppress == (220, 50256) and rules.eos == (50256,)
    assert len(rules.suppress) == 90 and 50257 in rules.suppress and rules.timestamp_begin == 50363


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_loop_gives_generates_tokens(whisper_dir, fp32, windows, dtype):
    """float32: the same tokens. bfloat16 (logits 0.125 apart near 20): a row may leave generate's
    tokens only where generate's own top-2 logits, on its own prefix, are within two bf16 steps."""
    transcriber = fp32 if dtype == "float32" else WhisperTranscriber(whisper_dir, max_new_tokens=MAX_NEW_TOKENS,
                                                                     dtype=dtype)
    with torch.no_grad():  # the decoder on transformers' own encoder frames, as generate computes them
        features = transcriber.feature_extractor(windows, sampling_rate=16_000, return_tensors="pt").input_features
        frames = transcriber.model.model.encoder(features.to(getattr(torch, dtype))).last_hidden_state
    result = transcriber.greedy(frames, MAX_NEW_TOKENS)
    expected = _generate_tokens(transcriber, windows)
    assert result.needs_generate == []
    lengths = sorted(len(tokens) for tokens in expected)
    assert lengths[0] < MAX_NEW_TOKENS == lengths[-1]  # rows stop at EOS and at the cap, at different steps
    if dtype == "float32":
        assert result.tokens == expected
        return
    for row, (ours, theirs) in enumerate(zip(result.tokens, expected)):
        if ours != theirs:
            step = next(i for i, (a, b) in enumerate(zip([*ours, -1], [*theirs, -1])) if a != b)
            prefix = torch.tensor([[*transcriber.greedy.rules.prompt, *theirs[:step]]])
            with torch.no_grad():
                logits = transcriber.model(encoder_outputs=(frames[row : row + 1],), decoder_input_ids=prefix).logits
            top2 = logits[0, -1].float().topk(2).values
            assert float(top2[0] - top2[1]) <= 0.25, (row, step, top2)
    assert result.tokens[0] == expected[0]  # the English 30 s window


def test_transcripts_equal_generates_and_share_its_cache_keys(whisper_dir, fp32, windows):
    baseline = WhisperTranscriber(whisper_dir, max_new_tokens=MAX_NEW_TOKENS, decoder="generate")
    assert fp32.transcribe(windows) == baseline.transcribe(windows)
    assert fp32.cache_key(windows[0]) == baseline.cache_key(windows[0])
    bf16 = WhisperTranscriber(whisper_dir, max_new_tokens=MAX_NEW_TOKENS, dtype="bfloat16")
    bf16_generate = WhisperTranscriber(whisper_dir, max_new_tokens=MAX_NEW_TOKENS, dtype="bfloat16", decoder="generate")
    assert len({fp32.cache_key(windows[0]), bf16.cache_key(windows[0]), bf16_generate.cache_key(windows[0])}) == 3


def test_rows_with_timestamp_tokens_are_redone_by_generate(fp32, windows):
    expected = fp32.tokenizer.batch_decode(fp32._generate(windows[:2]), skip_special_tokens=True)
    rules = fp32.greedy.rules
    fp32.greedy.rules = dataclasses.replace(rules, timestamp_begin=0)  # every token "is a timestamp"
    try:
        assert fp32._decode_loop(windows[:2]) == expected
    finally:
        fp32.greedy.rules = rules


def test_rows_that_finish_early_leave_the_batch_without_changing_the_others(fp32, windows):
    """Windows of different lengths end their transcripts at different steps: a finished row's
    self- and cross-attention caches are dropped, and every row still gets its own-batch tokens."""
    batch = sorted(windows, key=len, reverse=True)[:3]
    alone = [fp32._decode_loop([window]) for window in batch]
    assert len({len(text[0].split()) for text in alone}) > 1  # they do finish at different steps
    assert fp32._decode_loop(batch) == [text[0] for text in alone]


def test_unsupported_generation_configs_fall_back_to_generate(whisper_dir, fp32, tmp_path):
    for name, value in [("repetition_penalty", 1.2), ("return_timestamps", True), ("is_multilingual", True)]:
        config = fp32.model.generation_config.to_dict() | {name: value}
        with pytest.raises(UnsupportedDecoding, match=name.replace("is_", "")):
            greedy_rules(type(fp32.model.generation_config).from_dict(config), 448)
    copy = tmp_path / "whisper"
    shutil.copytree(whisper_dir, copy)
    config = fp32.model.generation_config
    config.repetition_penalty = 1.2
    try:
        config.save_pretrained(copy)
    finally:
        config.repetition_penalty = 1.0
    with pytest.warns(UserWarning, match="decoding with HF generate"):
        fallback = WhisperTranscriber(copy)
    assert fallback.decoder == "generate" and fallback.greedy is None
    with pytest.raises(UnsupportedDecoding):
        WhisperGreedyDecoder(fallback.model)


@pytest.mark.parametrize("max_new_tokens", [0, 447])
def test_a_transcript_longer_than_the_decoder_is_refused_before_any_audio(whisper_dir, max_new_tokens):
    with pytest.raises(ValueError, match=r"max_new_tokens must be 1 to 446 .*448 positions"):
        WhisperTranscriber(whisper_dir, max_new_tokens=max_new_tokens)

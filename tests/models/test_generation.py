"""generate_texts: the settings reach ``SpeechLLM.generate``; texts, truncation and token counts."""

from __future__ import annotations

import math

import pytest
import torch

from speechsum.models.base import mask_after_stop
from speechsum.models.generation import GenerationSettings, generate_texts
from speechsum.utils.arguments import ConfigError
from tests.serving.export_fixtures import batch_for, waveforms


def test_generate_texts_decodes_and_flags_rows_cut_at_max_new_tokens(tiny_composed):
    processor = tiny_composed.processor
    stop, pad = processor.end_token_id, processor.pad_id
    words = processor.tokenizer("ab", add_special_tokens=False)["input_ids"]
    assert len(words) == 2  # the byte tokenizer: one token per character
    ids = torch.tensor([[*words, stop, pad], [*words, *words][:4], [stop, pad, pad, pad]])
    calls = []

    def generate(batch, **kwargs):
        calls.append(kwargs)
        return ids, mask_after_stop(ids, processor.stop_token_ids)

    tiny_composed.generate = generate
    settings = GenerationSettings(max_new_tokens=4, do_sample=True, temperature=0.7, top_p=0.9)
    out = generate_texts(tiny_composed, batch=None, settings=settings, num_return_sequences=3)
    assert calls == [{"max_new_tokens": 4, "do_sample": True, "temperature": 0.7, "top_p": 0.9,
                      "num_return_sequences": 3}]
    assert out.truncated.tolist() == [False, True, False]
    assert out.num_tokens.tolist() == [len(words) + 1, 4, 1]
    assert out.texts == ["ab", "abab", ""]


@pytest.mark.parametrize(("settings", "message"), [
    ({"max_new_tokens": 0}, "generate(): max_new_tokens must be at least 1, got 0"),
    ({"max_new_tokens": 3.5}, "generate(): max_new_tokens must be an integer of at least 1, got 3.5"),
    ({"max_new_tokens": 10**9}, "generate(): max_new_tokens must be at most the LM's context of 2048 positions (the "
                                "prompt and the completion share it), got 1000000000; lower it"),
    ({"num_return_sequences": 0}, "generate(): num_return_sequences must be at least 1, got 0"),
    ({"num_return_sequences": -2}, "generate(): num_return_sequences must be at least 1, got -2"),
    ({"do_sample": "no"}, "generate(): do_sample must be True or False, got 'no'"),
    ({"do_sample": True, "temperature": 0.0}, "generate(): temperature must be a number above 0, got 0.0"),
    ({"do_sample": True, "temperature": math.inf}, "generate(): temperature must be a number above 0, got inf"),
    ({"do_sample": True, "top_p": 1.5}, "generate(): top_p must be a number above 0 and at most 1, got 1.5"),
    ({"do_sample": True, "top_p": math.nan}, "generate(): top_p must be a number above 0 and at most 1, got nan"),
])
def test_generate_refuses_settings_no_decoding_can_use_naming_the_argument(tiny_composed, settings, message):
    """Before: 0 or -2 samples gave one per example, top_p 1.5 / NaN and do_sample="no" ran as
    something else, temperature inf sampled uniformly, 3.5 failed inside torch and 10**9 tokens
    tried to allocate a 384 GB cache."""
    batch = batch_for(tiny_composed, waveforms()[:1])
    with pytest.raises(ConfigError) as info:
        tiny_composed.generate(batch, **{"max_new_tokens": 2, **settings})
    assert str(info.value) == message


def test_greedy_generate_ignores_the_sampling_settings(tiny_composed):
    """temperature 0 (how OpenAI-style callers ask for greedy) and any top_p are fine without sampling."""
    batch = batch_for(tiny_composed, waveforms()[:1])
    ids, _ = tiny_composed.generate(batch, max_new_tokens=3)
    same, _ = tiny_composed.generate(batch, max_new_tokens=3, temperature=0.0, top_p=0.0)
    assert torch.equal(ids, same)


@pytest.mark.parametrize("temperature", [1e-6, 1e-40, 1e-300])
def test_sampling_below_the_greedy_temperature_gives_the_greedy_tokens(tiny_composed, temperature):
    """Before: logits divided by 1e-40 overflowed float32 to ±inf and the argmax over the inf scores
    drew the first ids (0, 1, 0, …), not the likeliest; serve already decoded these greedily."""
    batch = batch_for(tiny_composed, waveforms()[:2])
    greedy, _ = tiny_composed.generate(batch, max_new_tokens=6)
    torch.manual_seed(0)
    sampled, _ = tiny_composed.generate(batch, max_new_tokens=6, do_sample=True, temperature=temperature, top_p=0.9)
    assert torch.equal(sampled, greedy)


def test_a_prompt_longer_than_the_context_is_refused(tiny_composed):
    """Before: generate read positions past the LM's context without a word (only the collators, when
    asked, and summarize/serve checked it)."""
    batch = batch_for(tiny_composed, waveforms()[:2], instruction="word " * 3000)
    longest = batch.prompt_mask.sum(1).argmax()  # the 1.0-s clip, example 1
    positions = int(batch.prompt_mask.sum(1)[longest])
    with pytest.raises(ValueError) as info:
        tiny_composed.generate(batch, max_new_tokens=2)
    assert str(info.value) == (f"generate(): the prompt of example {int(longest)} takes {positions} positions, more than the LM's "
                               "context of 2048; shorten its audio, instruction or transcript")

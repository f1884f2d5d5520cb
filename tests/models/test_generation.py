"""generate_texts: the settings reach ``SpeechLLM.generate``; texts, truncation and token counts."""

from __future__ import annotations

import torch

from speechsum.models.base import mask_after_stop
from speechsum.models.generation import GenerationSettings, generate_texts


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

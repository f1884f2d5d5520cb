"""``speechsum serve``'s sampling at its edges, through the official openai client on loopback: a
temperature whose scaled logits overflow float32 decodes greedily, sampled requests draw exactly what
HF's own temperature warper drew, and a model without any stop token generates to max_tokens."""

from __future__ import annotations

import openai
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from speechsum.models.tokenizer import build_byte_tokenizer
from speechsum.serving.hf_backend import HFBackend
from speechsum.utils.remote import openai_client
from tests.servers import serve_in_thread
from tests.serving.tiny_lm import MODEL


@pytest.fixture(scope="module")
def extreme_url(model_dir):
    """The tiny Llama with its final norm scaled by 1e36: logits near 1e35, within float32."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        model.model.norm.weight.mul_(1e36)
    with serve_in_thread(HFBackend.from_objects(model, build_byte_tokenizer(), MODEL)) as url:
        yield url


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_a_temperature_that_overflows_the_scaled_logits_decodes_greedily(extreme_url, top_p):
    """Logits near 1e35 divided by 2e-5 overflow to +inf: before, generate's softmax over them was NaN and
    its multinomial draw raised (a 500); now such a row decodes greedily (the limit T -> 0)."""
    client = openai_client(extreme_url)
    greedy = client.completions.create(model=MODEL, prompt="ab", max_tokens=5, temperature=0).choices[0].text
    sampled = client.completions.create(model=MODEL, prompt="ab", max_tokens=5, temperature=2e-5, top_p=top_p,
                                        seed=1, n=2)
    assert greedy and [c.text for c in sampled.choices] == [greedy, greedy]


def test_sampled_tokens_are_those_of_generates_own_temperature(backend, model_dir):
    """The temperature is applied as a processor now: the same draws as generate's own warper (seeded)."""
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir).eval(), build_byte_tokenizer()
    ids = tokenizer("Notes:").input_ids
    with serve_in_thread(backend) as url:
        reply = openai_client(url).completions.create(model=MODEL, prompt="Notes:", max_tokens=12, temperature=0.7,
                                                      top_p=0.9, seed=3)
    torch.manual_seed(3)
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=True,
                         temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=12, eos_token_id=backend.stop_ids,
                         pad_token_id=tokenizer.pad_token_id)
    new = out[0, len(ids):].tolist()
    ended = [i for i, token in enumerate(new) if token in backend.stop_ids]
    expected = tokenizer.decode(new[: ended[0]] if ended else new)
    assert reply.choices[0].text == expected and len(expected) > 3


def test_a_model_without_any_stop_token_generates_to_max_tokens():
    """A tokenizer with no eos / pad and no chat end token, a model without eos ids: before, every generation
    was a 500 (``IndexError`` picking a pad id among no stop ids); now each answer runs to max_tokens."""
    vocab = {chr(i): i - 32 for i in range(32, 127)}
    words = Tokenizer(models.WordLevel(vocab, unk_token="?"))
    words.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=96, eos_token_id=None,
                         pad_token_id=None, bos_token_id=None)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    backend = HFBackend.from_objects(model, tokenizer, MODEL)
    assert backend.stop_ids == []
    with serve_in_thread(backend) as url:
        client = openai_client(url)
        for kwargs in ({"temperature": 0}, {"temperature": 0.8, "seed": 1, "n": 2}):
            reply = client.completions.create(model=MODEL, prompt="ab", max_tokens=5, logprobs=0, **kwargs)
            assert all(c.finish_reason == "length" and len(c.logprobs.tokens) == 5 for c in reply.choices)


@pytest.mark.parametrize("temperature", [0, 0.8])
def test_a_model_whose_logits_overflow_is_a_500_with_the_reason_in_the_log(model_dir, temperature, caplog):
    """An fp16 model whose activations overflow (final norm scaled by 1e5) has NaN logits: before, a greedy
    answer was token 0 over and over with a 200, a sampled one a 500 logged as multinomial's "probability
    tensor contains either inf, nan"; now both are a 500 whose log line says what overflowed and what to do."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        model.model.norm.weight.mul_(1e5)
    with serve_in_thread(HFBackend.from_objects(model.half(), build_byte_tokenizer(), MODEL)) as url:
        with pytest.raises(openai.InternalServerError):
            openai_client(url).completions.create(model=MODEL, prompt="ab", max_tokens=4, temperature=temperature, seed=1)
    assert "are not finite (NaN or inf): its weights or activations overflowed their dtype" in caplog.text

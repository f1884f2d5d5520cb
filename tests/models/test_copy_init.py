"""The copy-ready init: its circuits work before any training step."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PhiConfig, PhiForCausalLM

from speechsum.models.copy_init import copy_block_size, init_copy_circuits
from speechsum.models.text_llm import TextLLM


def tiny_phi(hidden: int = 96, heads: int = 2, tie: bool = False) -> PhiForCausalLM:
    config = PhiConfig(
        vocab_size=512, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=3,
        num_attention_heads=heads, tie_word_embeddings=tie, bos_token_id=None, eos_token_id=None,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    )
    torch.manual_seed(0)
    model = PhiForCausalLM(config)
    model.config._attn_implementation = "eager"  # attention weights are returned
    return model


def test_block_size_fits_the_non_rotary_dims_and_the_stream():
    assert copy_block_size(hidden_size=128, head_dim=64, rotary_dims=16) == 42  # 128 // 3
    assert copy_block_size(hidden_size=256, head_dim=64, rotary_dims=16) == 48  # 64 - 16


def test_untrained_model_copies_a_repeated_random_sequence():
    model = init_copy_circuits(tiny_phi())
    sequence = torch.randint(4, 512, (2, 60), generator=torch.Generator().manual_seed(1))
    tokens = torch.cat([sequence, sequence], dim=1)  # the second half repeats the first
    with torch.no_grad():
        out = model(tokens, output_attentions=True)
    positions = torch.arange(1, 120)
    previous_token_attention = out.attentions[0][:, 0, positions, positions - 1]
    assert previous_token_attention.min() > 0.99
    predicted = out.logits.argmax(-1)[:, 60:-1]  # position 60 + i predicts token i + 1 of the repeat
    assert (predicted == tokens[:, 61:]).float().mean() > 0.9


def test_default_init_does_not_copy():
    model = tiny_phi()
    sequence = torch.randint(4, 512, (2, 60), generator=torch.Generator().manual_seed(1))
    tokens = torch.cat([sequence, sequence], dim=1)
    with torch.no_grad():
        predicted = model(tokens).logits.argmax(-1)[:, 60:-1]
    assert (predicted == tokens[:, 61:]).float().mean() < 0.1


def test_rejects_models_without_the_needed_parts():
    with pytest.raises(ValueError, match="Phi-type"):
        init_copy_circuits(tiny_phi(tie=True))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2))
    with pytest.raises(ValueError, match="Phi-type"):
        init_copy_circuits(llama)
    with pytest.raises(ValueError, match="config dict"):
        TextLLM(llm="some/hub-model", copy_init=True)


def test_text_llm_applies_it_to_a_config_dict():
    spec = {"model_type": "phi", "hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 2,
            "num_attention_heads": 2, "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}}
    plain, copying = TextLLM(llm=spec), TextLLM(llm=spec, copy_init=True)
    bias = "model.layers.0.self_attn.q_proj.bias"
    assert not torch.equal(plain.llm.state_dict()[bias], copying.llm.state_dict()[bias])
    assert copying.llm.state_dict()[bias][:4].abs().min() > 1.0  # the previous-token head's query

"""The tiny random Llama (byte tokenizer, ChatML template) that the ``speechsum serve`` tests serve."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from speechsum.models.tokenizer import build_byte_tokenizer

MODEL = "tiny-teacher"
CONTEXT = 96


def save_tiny_lm(path: Path) -> Path:
    """A 2-layer Llama with ``CONTEXT`` positions and its tokenizer saved in ``path`` (seeded)."""
    tokenizer = build_byte_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path

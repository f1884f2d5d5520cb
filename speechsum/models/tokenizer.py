"""A byte-level tokenizer built in-process: tiny random test models need one with no download."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

AUDIO_TOKEN = "<|audio|>"  # audio placeholder of the composed backbone; in the benchmark BPE from the start

BYTE_TOKENIZER_SPECIALS = ("<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>")


def build_byte_tokenizer(extra_special_tokens: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A deterministic byte-level tokenizer: ids 0–255 are bytes, then special tokens in order.

    Specials: ``<|endoftext|>`` (eos), ``<|pad|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (ChatML
    turns, with a ChatML chat template), then ``extra_special_tokens`` (e.g. audio placeholders).
    It round-trips any UTF-8 text, so every string encodes and decodes exactly.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: index for index, char in enumerate(sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    specials = list(BYTE_TOKENIZER_SPECIALS) + [t for t in extra_special_tokens if t not in BYTE_TOKENIZER_SPECIALS]
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer

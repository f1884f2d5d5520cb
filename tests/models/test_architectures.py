"""The composed backbone (Whisper encoder + any HF causal LM) over the LM architectures users bring,
tiny and random: it builds (tied and untied embeddings), ``generate`` gives HF ``generate``'s
tokens (the fast path where it is implemented, a logged fallback elsewhere), and the logits each
token was chosen from equal the training forward's (``response_logits``), CTC-compressed prompts
and sliding windows included."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList

from speechsum.data.batch import SpeechCollator
from speechsum.models import decode as decode_module
from speechsum.models.base import SpeechLLM, mask_after_stop
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.decode import fast_path_reason
from speechsum.models.policy import TrainingPolicy
from speechsum.models.tokenizer import build_byte_tokenizer
from tests.conftest import tiny_backbone_args
from tests.models.test_composed import examples
from tests.models.test_decode import assert_same, both_paths, perturb_lora

SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "max_position_embeddings": 512}
WINDOW = 8  # sliding windows far shorter than the prompts, so that they matter
# model_type -> (config fields, whether the static-cache fast path decodes it)
ARCHITECTURES = {
    "llama": ({**SIZES, "num_key_value_heads": 2, "attention_bias": True}, True),
    "qwen2": ({**SIZES, "num_key_value_heads": 2}, True),
    "qwen2_sliding": ({**SIZES, "model_type": "qwen2", "num_key_value_heads": 2, "use_sliding_window": True,
                       "sliding_window": WINDOW, "max_window_layers": 1}, False),
    "qwen3": ({**SIZES, "num_key_value_heads": 2, "head_dim": 16}, False),
    "mistral": ({**SIZES, "num_key_value_heads": 2, "sliding_window": None}, True),
    "mistral_sliding": ({**SIZES, "model_type": "mistral", "num_key_value_heads": 2, "sliding_window": WINDOW}, False),
    "mistral_wide_window": ({**SIZES, "model_type": "mistral", "num_key_value_heads": 2, "sliding_window": 4096}, True),
    "gemma": ({**SIZES, "num_key_value_heads": 1, "head_dim": 16}, False),
    "gemma2": ({**SIZES, "num_key_value_heads": 2, "head_dim": 16, "sliding_window": WINDOW}, False),
    "gemma3_text": ({**SIZES, "num_key_value_heads": 2, "head_dim": 16, "sliding_window": WINDOW}, False),
    "phi": (SIZES, True),
    "phi3": ({**SIZES, "num_key_value_heads": 2}, True),  # its config's default pad id (32000) is beyond the table
    "phi3_wide_window": ({**SIZES, "model_type": "phi3", "num_key_value_heads": 2, "sliding_window": 262144}, True),  # Phi-4-mini's
    "gpt2": ({"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512}, False),  # learned absolute positions
    "gpt_neox": (SIZES, False),
    "opt": ({"hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "word_embed_proj_dim": 64, "max_position_embeddings": 512}, False),
    "falcon_alibi": ({"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "alibi": True}, False),
    "stablelm": ({**SIZES, "num_key_value_heads": 2}, False),
    "granite": ({**SIZES, "num_key_value_heads": 2, "embedding_multiplier": 3.0, "logits_scaling": 2.0,
                 "residual_multiplier": 0.5, "attention_multiplier": 0.1}, False),
    "olmo2": ({**SIZES, "num_key_value_heads": 2}, False),
    "smollm3": ({**SIZES, "num_key_value_heads": 2}, False),  # default pad id 128004
}


def composed_with(name: str, tied: bool = False, tokenizer: str | None = None) -> ComposedSpeechLLM:
    """The tiny composed backbone with a CTC projector (compressed-away audio positions: masked
    holes inside the prompt) around the named LM, LoRA adapters perturbed off zero."""
    fields, _ = ARCHITECTURES[name]
    fields = dict(fields)
    args = tiny_backbone_args()
    args["policy"] = TrainingPolicy(**{**args["policy"], "lora_dropout": 0.0})
    args["llm"] = {"model_type": fields.pop("model_type", name), **fields, "vocab_size": 272,
                   "tie_word_embeddings": tied}
    torch.manual_seed(0)
    model = ComposedSpeechLLM(**args, projector="ctc", tokenizer=tokenizer)
    perturb_lora(model)
    with torch.no_grad():
        model.projector.head[1].bias[-1] += 0.5  # more blank frames: compression drops a good share
    return model.eval()


def audio_batch(model: SpeechLLM):
    return SpeechCollator(model.processor)(examples(seconds=(0.7, 2.0, 1.3, 0.4)))


class ScoreRecorder(LogitsProcessor):
    """Keeps the scores every decoding step chose its token from."""

    def __init__(self):
        self.scores: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.scores.append(scores.clone())
        return scores


def assert_generation_logits_equal_the_forward(model: SpeechLLM, batch, max_new_tokens: int = 10) -> None:
    """The logits generation chose each token from (fast path or HF generate, whichever
    ``generate`` takes) equal the training forward's on the generated sequence."""
    recorder = ScoreRecorder()
    with torch.no_grad():
        ids = model._decode(batch, model.greedy_config(max_new_tokens), LogitsProcessorList([recorder]))
        mask = mask_after_stop(ids, model.processor.stop_token_ids)
        reference = model.response_logits(batch, ids, mask).float()
    scores = torch.stack(recorder.scores, 1)
    compared = torch.isfinite(scores) & mask.bool()[..., None]  # not the suppressed audio id, not after a stop
    assert compared.sum() > 0
    torch.testing.assert_close(scores[compared], reference[compared], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_decodes_like_hf_generate_and_scores_like_its_forward(name, tied, caplog):
    model = composed_with(name, tied)
    lm = model.causal_lm()
    head = lm.get_output_embeddings()
    assert (getattr(head, "base_layer", head).weight is lm.get_input_embeddings().weight) == tied
    batch = audio_batch(model)
    kept = model.embed_prompt(batch.audio, batch.prompt_ids, batch.prompt_mask)[1]
    assert int((kept == 0).sum()) > int((batch.prompt_mask == 0).sum())  # holes inside the prompts
    decode_module._fallbacks_logged.clear()
    with caplog.at_level(logging.INFO, logger="speechsum.models.decode"):
        reason = fast_path_reason(lm, int(batch.prompt_mask.sum(1).max()) + 12)  # as generate asks
        assert_same(*both_paths(model, batch, max_new_tokens=12))
    fast = ARCHITECTURES[name][1]
    assert (reason is None) == fast, reason
    if not fast:
        assert "decoding with HF generate" in caplog.text and reason in caplog.text
    assert_same(*both_paths(model, batch, max_new_tokens=10, do_sample=True, temperature=0.8, top_p=0.9,
                            num_return_sequences=2, seed=3))
    assert_generation_logits_equal_the_forward(model, batch)


def test_a_random_init_lm_stops_at_the_tokenizers_tokens_only():
    """A config dict's class defaults (Llama's eos id 2, a byte here) do not become stop tokens;
    ids beyond a small table (Phi-3's pad id 32000) do not break the build."""
    tokenizer = build_byte_tokenizer()
    for name in ("llama", "phi3"):
        model = composed_with(name)
        end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert sorted(model.processor.stop_token_ids) == sorted({tokenizer.eos_token_id, end_of_turn})
        assert model.llm.config.eos_token_id == tokenizer.eos_token_id


def test_tokenizer_without_pad_token_decodes_and_without_chat_template_is_refused_when_built(tmp_path):
    tokenizer = build_byte_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path / "no_pad")
    model = composed_with("qwen2", tokenizer=str(tmp_path / "no_pad"))
    assert AutoTokenizer.from_pretrained(tmp_path / "no_pad").pad_token is None
    assert model.processor.pad_id == model.processor.end_token_id
    batch = audio_batch(model)
    assert_same(*both_paths(model, batch, max_new_tokens=8))
    assert_generation_logits_equal_the_forward(model, batch, max_new_tokens=8)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path / "no_template")
    with pytest.raises(ValueError, match="ComposedSpeechLLM's tokenizer has no chat template"):
        composed_with("qwen2", tokenizer=str(tmp_path / "no_template"))

"""SpeechLLM.generate at its edges, on the fast path and the HF ``generate`` fallback: temperatures whose
scaled logits overflow float32 (fp32 and bf16 models), integer / numpy / huge temperatures, an answer that
may pass the LM's context, a batch without rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from speechsum.models.generation import GenerationSettings, generate_texts
from speechsum.models.text_llm import TextLLM
from tests.conftest import tiny_backbone_args
from tests.models.test_decode import PHI_LLM, batch_for, composed, text_batch


@pytest.fixture(scope="module")
def text_lm() -> TextLLM:
    torch.manual_seed(0)
    return TextLLM(llm=tiny_backbone_args()["llm"]).eval()


def both_paths(model: TextLLM, batch, seed: int = 0, **kwargs) -> list[torch.Tensor]:
    """New tokens through HF generate, then through the fast path, from the same RNG state."""
    outputs = []
    for fast in (False, True):
        model.fast_decoding = fast
        torch.manual_seed(seed)
        outputs.append(model.generate(batch, **kwargs)[0])
    model.fast_decoding = True
    return outputs


@pytest.mark.parametrize(("dtype", "scale", "temperature"), [
    (torch.float32, 1e36, 2e-5), (torch.bfloat16, 1e36, 2e-5), (torch.float16, 1e3, 1e-3)])
@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_a_temperature_that_overflows_the_scaled_logits_decodes_greedily(text_lm, dtype, scale, temperature, top_p):
    """Logits near 1e35 (a final norm scaled by 1e36) divided by 2e-5 overflow float32 (and bf16, of the
    same range) to +inf; before, the argmax over several +inf scores drew the first of them (with top_p
    the NaNs of the filter: id 0), not the likeliest. Now such a row decodes greedily, the limit T -> 0.
    fp16 logits (at most 65,504) divided by 1e-3 fit float32, where they are scaled: sampled = greedy too."""
    model = TextLLM(llm=tiny_backbone_args()["llm"]).eval()
    model.load_state_dict(text_lm.state_dict())
    with torch.no_grad():
        model.llm.model.norm.weight.mul_(scale)
    model.to(dtype)
    batch = text_batch(model.llm.config.vocab_size)
    greedy = both_paths(model, batch, max_new_tokens=6)
    assert torch.equal(greedy[0], greedy[1])
    for sampled in both_paths(model, batch, max_new_tokens=6, do_sample=True, temperature=temperature, top_p=top_p):
        assert torch.equal(sampled, greedy[0])


@pytest.mark.parametrize("temperature", [2, np.float32(0.75)])
def test_an_integer_or_numpy_temperature_samples_as_its_float(text_lm, temperature):
    """``check_generate`` takes any real number, but HF's ``TemperatureLogitsWarper`` refused an int or a
    numpy float32 (``ValueError: `temperature` (=2) has to be a strictly positive float``) from inside
    ``generate``: now it draws what the same float draws."""
    batch = text_batch(text_lm.llm.config.vocab_size)
    expected = both_paths(text_lm, batch, seed=4, max_new_tokens=6, do_sample=True, temperature=float(temperature))
    got = both_paths(text_lm, batch, seed=4, max_new_tokens=6, do_sample=True, temperature=temperature)
    assert all(torch.equal(tokens, expected[0]) for tokens in expected + got)  # both paths, both types


def test_an_answer_that_may_pass_the_context_is_warned_about_once_with_the_same_tokens(caplog):
    """A prompt of 14 positions and max_new_tokens 19 in a context of 32: before, the fast path went on past
    the context without a word (HF generate only printed its own reminder); now a warning names the example
    and the max_new_tokens that fits (once), and the tokens are those HF generate gives. 18 fits: no warning."""
    torch.manual_seed(0)
    model = TextLLM(llm={**tiny_backbone_args()["llm"], "max_position_embeddings": 32}).eval()
    batch = text_batch(model.llm.config.vocab_size, lengths=(9, 14, 5, 11))
    with caplog.at_level("WARNING", logger="speechsum.models.base"):
        fitting = both_paths(model, batch, max_new_tokens=18)
        assert not caplog.records
        hf, fast = both_paths(model, batch, max_new_tokens=19)
        both_paths(model, batch, max_new_tokens=19)
    assert torch.equal(hf, fast) and torch.equal(fast[:, :18], fitting[1])
    assert [r.getMessage() for r in caplog.records] == [
        "generate(): the prompt of example '1' takes 14 positions, and max_new_tokens=19 may take its answer past the LM's "
        "context of 32 (its later tokens come from positions the LM never trained on); lower max_new_tokens to 18 or "
        "shorten the prompt (logged once)"]


@pytest.mark.parametrize("temperature", [1e4, 1e39, 1e300])
def test_a_huge_temperature_samples_near_uniformly_and_never_the_suppressed_placeholder(text_lm, temperature):
    """A finite temperature above float32's range is +inf there, and -inf (the suppressed audio placeholder) / inf
    was NaN: before, every token of every row was the placeholder. Now such a temperature is the limit T -> inf
    (uniform over the ids not suppressed), and 1e4 stays near-uniform; both paths draw the same tokens."""
    batch = text_batch(text_lm.llm.config.vocab_size)
    hf, fast = both_paths(text_lm, batch, seed=2, max_new_tokens=8, do_sample=True, temperature=temperature, top_p=0.95)
    assert torch.equal(hf, fast) and not (fast == text_lm.audio_token_id).any()
    assert len(set(fast.flatten().tolist())) > 16  # 32 draws from ~270 ids: not one id over and over


def test_a_batch_without_rows_generates_no_rows(text_lm):
    """Before: a batch of 0 rows (e.g. every example of a hand-made batch skipped) failed in generate with
    ``RuntimeError: max(): Expected reduction dim to be specified``; now it returns (0, 0) ids and mask."""
    batch = text_batch(text_lm.llm.config.vocab_size, lengths=(5,))
    empty = dataclasses.replace(batch, ids=[], audio_seconds=batch.audio_seconds[:0], prompt_ids=batch.prompt_ids[:0],
                                prompt_mask=batch.prompt_mask[:0], instructions=[], transcripts=[], references=[])
    for kwargs in ({}, {"do_sample": True, "temperature": 0.7}, {"num_return_sequences": 2}):
        for ids in both_paths(text_lm, empty, max_new_tokens=4, **kwargs):
            assert ids.shape == (0, 0) and ids.dtype == torch.long
    out = generate_texts(text_lm, empty, GenerationSettings(max_new_tokens=4))
    assert out.texts == [] and out.mask.shape == (0, 0) and out.truncated.shape == (0,)


@pytest.mark.parametrize("llm", [None, PHI_LLM])
def test_a_bf16_lm_with_lora_decodes_the_tokens_of_hf_generate(llm):
    """Before: the fast path merged the LoRA adapters into the bf16 weights, which rounds apart from HF's
    separate adapter matmuls: greedy tokens of the tiny composed model differed from HF generate's (10 of
    80), sampled ones of its Phi variant. Now only float32 weights are merged; bf16 ones step through
    their own modules, with HF's tokens."""
    torch.manual_seed(0)
    model = composed(llm, projector="ctc" if llm else "mlp").eval().to(torch.bfloat16)
    batch = batch_for("composed", model)
    hf, fast = both_paths(model, batch, max_new_tokens=20)
    assert torch.equal(hf, fast)
    hf, fast = both_paths(model, batch, seed=3, max_new_tokens=20, do_sample=True, top_p=0.9)
    assert torch.equal(hf, fast)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("sampling", [{}, {"do_sample": True, "temperature": 0.7, "top_p": 0.9}])
def test_logits_that_overflow_their_dtype_are_a_clear_error(text_lm, fast, sampling):
    """An fp16 LM whose activations overflow (final norm scaled by 1e5) gives NaN logits: before, the argmax over
    them was id 0 on every step of every row, without a word; now generate raises naming the rows and the dtype."""
    model = TextLLM(llm=tiny_backbone_args()["llm"]).eval()
    model.load_state_dict(text_lm.state_dict())
    with torch.no_grad():
        model.llm.model.norm.weight.mul_(1e5)
    model.to(torch.float16).fast_decoding = fast
    with pytest.raises(ValueError) as info:
        model.generate(text_batch(model.llm.config.vocab_size), max_new_tokens=4, **sampling)
    assert str(info.value) == (
        "generate(): the LM's logits for rows [0, 1, 2, 3] at new token 0 are not finite (NaN or inf): its weights or "
        "activations overflowed their dtype (float16 ends at 65,504); load the LM in bfloat16 or float32 (dtype), or "
        "check its weights")

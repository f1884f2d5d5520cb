"""The static-cache decode path (models/decode.py, models/static_decoder.py) against HF generate:
same greedy and sampled tokens, same stop handling and shapes, exact sampling distribution,
step logits equal to a forward pass; explicit fallback for what it does not implement."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LogitsProcessorList

from speechsum.data.batch import SpeechBatch, SpeechCollator
from speechsum.models import decode as decode_module
from speechsum.models import static_decoder
from speechsum.models.base import SpeechLLM, sequence_positions
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.decode import Prompt, decode, drop_compressed_audio, fast_path_reason, left_packed_order
from speechsum.models.policy import TrainingPolicy
from speechsum.models.sampling import NucleusFilter, sampling_processors
from speechsum.models.static_decoder import StaticCacheDecoder
from speechsum.models.text_llm import TextLLM
from tests.conftest import tiny_backbone_args
from tests.models.test_composed import examples
from tests.models.test_native_backbones import build_backbone, make_items

PHI_LLM = {  # the benchmark student's LLM layout (configs/benchmark/text_lm.yaml), smaller
    "model_type": "phi", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 2, "max_position_embeddings": 512, "tie_word_embeddings": False, "vocab_size": 300,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
}


def perturb_lora(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero LoRA B matrices (they start at 0), so the merged adapter weights matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))


def composed(llm: dict | None = None, projector: str = "mlp") -> ComposedSpeechLLM:
    args = tiny_backbone_args()
    args["policy"] = TrainingPolicy(**args["policy"])
    if llm is not None:
        args["llm"] = llm
    model = ComposedSpeechLLM(**{**args, "projector": projector})
    perturb_lora(model)
    return model


def text_batch(vocab: int, lengths=(9, 14, 5, 11), seed: int = 0) -> SpeechBatch:
    """Left-padded random prompts (ids 3…vocab-2) for a text LM."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.randint(3, vocab - 1, (n,), generator=generator)
        mask[row, width - n :] = 1
    n = len(lengths)
    return SpeechBatch(ids=[str(i) for i in range(n)], audio={}, audio_seconds=torch.zeros(n), prompt_ids=ids,
                       prompt_mask=mask, instructions=[""] * n, transcripts=[""] * n, references=[None] * n)


def both_paths(model: SpeechLLM, batch: SpeechBatch, seed: int = 0, **kwargs) -> tuple:
    """``generate`` through HF generate and through the fast path, from the same RNG state."""
    outputs = []
    for fast in (False, True):
        model.fast_decoding = fast
        torch.manual_seed(seed)
        outputs.append(model.generate(batch, **kwargs))
    model.fast_decoding = True
    return tuple(outputs)


def assert_same(hf: tuple, ours: tuple) -> None:
    assert ours[0].shape == hf[0].shape and ours[1].shape == hf[1].shape
    assert torch.equal(ours[0], hf[0]) and torch.equal(ours[1], hf[1])


@pytest.fixture(scope="module")
def models() -> dict[str, SpeechLLM]:
    torch.manual_seed(0)
    return {
        "composed_mlp": composed(),
        "composed_ctc_phi": composed(PHI_LLM, projector="ctc"),
        "text_llama": TextLLM(llm=tiny_backbone_args()["llm"]),
        "text_phi": TextLLM(llm=PHI_LLM),
    }


def batch_for(name: str, model: SpeechLLM) -> SpeechBatch:
    if name.startswith("text"):
        return text_batch(model.llm.config.vocab_size)
    return SpeechCollator(model.processor)(examples(seconds=(0.7, 2.0, 1.3, 0.4)))


@pytest.mark.parametrize("name", ["composed_mlp", "composed_ctc_phi", "text_llama", "text_phi"])
def test_greedy_and_sampled_tokens_equal_hf_generate(models, name):
    model = models[name]
    assert fast_path_reason(model.causal_lm()) is None
    batch = batch_for(name, model)
    if name == "composed_ctc_phi":  # CTC compression masks audio positions out of attention and positions
        assert model.ctc_compress and not bool(model.embed_prompt(batch.audio, batch.prompt_ids,
                                                                  batch.prompt_mask)[1].all())
    assert_same(*both_paths(model, batch, max_new_tokens=24))
    assert_same(*both_paths(model, batch, max_new_tokens=20, do_sample=True, seed=3))
    assert_same(*both_paths(model, batch, max_new_tokens=12, do_sample=True, temperature=0.7, top_p=0.9,
                            num_return_sequences=3, seed=5))


def test_large_decoders_step_through_their_own_modules_with_the_same_tokens(models, monkeypatch):
    monkeypatch.setattr(static_decoder, "MERGE_LIMIT_BYTES", 0)  # no merged / fused weight copies
    model = models["composed_ctc_phi"]
    batch = batch_for("composed_ctc_phi", model)
    assert_same(*both_paths(model, batch, max_new_tokens=16))
    assert_same(*both_paths(model, batch, max_new_tokens=12, do_sample=True, top_p=0.9, seed=2))


def test_sharded_weights_fall_back():
    lm = models_llama()
    assert fast_path_reason(lm) is None
    next(lm.parameters()).ds_id = 0  # how DeepSpeed ZeRO-3 marks a partitioned parameter
    assert "sharded weights" in fast_path_reason(lm)


def models_llama() -> torch.nn.Module:
    config = AutoConfig.for_model("llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, vocab_size=40)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("sampling", [{}, {"do_sample": True, "temperature": 0.8, "top_p": 0.9}])
def test_stop_tokens_pad_rows_and_end_the_loop_like_hf(models, monkeypatch, sampling):
    model = models["composed_ctc_phi"]
    batch = batch_for("composed_ctc_phi", model)
    torch.manual_seed(0)
    free, _ = model.generate(batch, max_new_tokens=16, **sampling)
    stops = model.processor.extra_stop_token_ids
    seen = []  # what the nucleus filter scores, per fast-path step
    nucleus_call = NucleusFilter.__call__
    monkeypatch.setattr(NucleusFilter, "__call__", lambda self, ids, scores: seen.append(scores.clone())
                        or nucleus_call(self, ids, scores))
    # stop at row 0's 3rd token and row 1's 6th: rows end at different steps, the rest may run on
    model.processor.extra_stop_token_ids = (int(free[0, 2]), int(free[1, 5]))
    try:
        hf, ours = both_paths(model, batch, max_new_tokens=16, seed=0, **sampling)
    finally:
        model.processor.extra_stop_token_ids = stops
    assert_same(hf, ours)
    assert ours[1][0].sum() <= 3 and ours[1][1].sum() <= 6
    assert (ours[0][0, ours[1][0].sum():] == model.processor.pad_id).all()
    if sampling:  # after its stop token a row's processors see one finite score (its token is pad anyway)
        fast_steps = seen[len(seen) // 2:]
        finite = torch.stack([torch.isfinite(step).sum(-1) for step in fast_steps])  # (steps, rows)
        assert (finite[3:, 0] == 1).all() and (finite[:3, 0] > 1).all()
        assert (finite[6:, 1] == 1).all()


@pytest.mark.parametrize("backbone", ["phi4mm_tiny", "qwen2_audio_tiny"])
def test_native_backbones_decode_like_hf_generate(backbone):
    """Prefill through the native model (audio encoder, placeholder filling), steps through its
    decoder (Phi-4-MM: fused qkv / gate_up projections; Qwen2-Audio: its Qwen2 language model)."""
    torch.manual_seed(0)
    model = build_backbone(backbone)
    perturb_lora(model)
    batch = SpeechCollator(model.processor)(make_items())
    assert fast_path_reason(model.causal_lm()) is None
    assert_same(*both_paths(model, batch, max_new_tokens=16))
    assert_same(*both_paths(model, batch, max_new_tokens=12, do_sample=True, num_return_sequences=2, seed=1))


def record_steps(monkeypatch) -> list[torch.Tensor]:
    """The logits of every :meth:`StaticCacheDecoder.step` from now on, in order."""
    recorded: list[torch.Tensor] = []
    step = StaticCacheDecoder.step

    def recording_step(self, tokens, t):
        recorded.append(step(self, tokens, t))
        return recorded[-1]

    monkeypatch.setattr(StaticCacheDecoder, "step", recording_step)
    return recorded


def test_step_logits_equal_a_forward_over_the_generated_sequence(models, monkeypatch):
    model = models["composed_ctc_phi"]
    batch = batch_for("composed_ctc_phi", model)
    recorded = record_steps(monkeypatch)
    model.eval()
    ids, mask = model.generate(batch, max_new_tokens=16, do_sample=True)
    n = len(recorded)
    assert n == ids.shape[1] - 1  # step t feeds token t and predicts token t + 1
    steps = torch.stack(recorded, dim=1).log_softmax(-1)  # (B, n, V); the first token came from the prefill
    reference = model.response_logits(batch, ids, mask)[:, 1:].log_softmax(-1)
    valid = mask[:, 1:].bool()  # after a stop token the row's logits are not used
    assert valid.sum() > 0.8 * valid.numel()
    torch.testing.assert_close(steps[valid], reference[valid], atol=1e-5, rtol=1e-5)
    ours = steps.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]
    torch.testing.assert_close(ours, model.response_logprobs(batch, ids, mask)[:, 1:], atol=1e-5, rtol=1e-5)


def test_weights_cast_once_under_autocast_give_the_logits_of_casting_on_every_call(models, monkeypatch):
    """Under bf16 autocast the merged weights are cast to bf16 once per decoder instead of by
    autocast on every matmul: the same bf16 values, so the same logits bit for bit."""
    model = models["text_phi"]
    batch = batch_for("text_phi", model)
    recorded = record_steps(monkeypatch)
    runs = []
    for cast_once in (True, False):
        if not cast_once:
            monkeypatch.setattr(static_decoder, "autocast_dtype", lambda device: None)
        recorded.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ids, _ = model.generate(batch, max_new_tokens=10)
        runs.append((ids, torch.stack(recorded)))
    (ids_once, logits_once), (ids_each, logits_each) = runs
    assert logits_once.dtype == torch.bfloat16 and logits_once.shape[0] == 9
    assert torch.equal(ids_once, ids_each) and torch.equal(logits_once, logits_each)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.8, 0.9)])
def test_sampled_token_frequencies_match_the_softmax(temperature, top_p):
    torch.manual_seed(0)
    lm = models_llama()
    with torch.no_grad():
        lm.lm_head.weight.mul_(20)  # a peaked distribution, so top-p cuts a real tail
    rows = 40_000
    prompt = torch.tensor([[5, 9, 2, 7]]).expand(rows, -1)
    mask = torch.ones_like(prompt)

    with torch.no_grad():
        logits = lm(input_ids=prompt[:1]).logits[0, -1].float() / temperature
    probs = logits.softmax(-1)
    if top_p < 1.0:  # the nucleus: smallest set of most likely ids with mass >= top_p, renormalised
        order = probs.argsort(descending=True)
        keep = order[: int((probs[order].cumsum(0) < top_p).sum()) + 1]
        probs = torch.zeros_like(probs).index_fill(0, keep, 1.0) * probs
        probs /= probs.sum()
    processors = LogitsProcessorList(sampling_processors(temperature, top_p))
    tokens = decode(lm, Prompt(mask, ids=prompt), 1, stop_ids=[0], pad_id=0, logits_processor=processors)[:, 0]
    counts = torch.bincount(tokens, minlength=40).double()
    assert counts[probs == 0].sum() == 0  # nothing outside the nucleus
    expected = probs.double() * rows
    bins = expected >= 5
    chi2 = float(((counts[bins] - expected[bins]) ** 2 / expected[bins]).sum())
    dof = int(bins.sum()) - 1
    assert chi2 < dof + 5 * (2 * dof) ** 0.5, (chi2, dof)  # ~5 sigma of the chi-square distribution


def test_unsupported_models_fall_back_to_hf_generate_with_a_logged_reason(caplog):
    torch.manual_seed(0)
    model = TextLLM(llm={"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2, "vocab_size": 272})
    batch = text_batch(272)
    with caplog.at_level(logging.INFO, logger="speechsum.models.decode"):
        decode_module._fallbacks_logged.clear()
        hf, ours = both_paths(model, batch, max_new_tokens=8)
    assert "decoding with HF generate" in caplog.text and "gpt2" in caplog.text.lower()
    assert_same(hf, ours)


def test_attended_only_drops_masked_positions_and_keeps_order():
    mask = torch.tensor([[0, 1, 0, 1, 1], [1, 1, 0, 1, 1], [0, 0, 0, 0, 1]])
    embeds = torch.arange(15.0).view(3, 5, 1)
    short = Prompt(mask, embeds=embeds).attended_only()
    assert short.mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]]
    kept = short.embeds[..., 0] * short.mask
    assert kept.tolist() == [[0, 1, 3, 4], [5, 6, 8, 9], [0, 0, 0, 14]]
    ids = torch.tensor([[0, 0, 7, 8], [0, 5, 6, 7]])
    assert Prompt(torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]]), ids=ids).attended_only().ids.tolist() == [[0, 7, 8],
                                                                                                  [5, 6, 7]]
    native = Prompt(mask, ids=ids, extra={"input_features": torch.zeros(1)})  # the model fills placeholders
    assert native.attended_only() is native


def test_left_packed_order_moves_kept_positions_to_the_end_in_order():
    keep = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 0, 1, 1], [0, 0, 1, 0, 1]], dtype=torch.bool)
    order = left_packed_order(keep)  # width 4, the most any row keeps; shorter rows begin with dropped ones
    assert order.tolist() == [[4, 0, 2, 3], [0, 1, 3, 4], [1, 3, 2, 4]]
    assert torch.gather(keep, 1, order).tolist() == [[False, True, True, True], [True] * 4, [False, False, True, True]]
    assert left_packed_order(torch.ones(2, 3, dtype=torch.bool)) is None


def test_training_forward_drops_compressed_audio_with_the_same_logits_and_gradients(models):
    """With ``logits_to_keep`` the CTC student's forward drops the compressed-away audio positions
    (``drop_compressed_audio``); the full forward keeps them masked. Same logits and gradients."""
    model = models["composed_ctc_phi"].eval()
    batch = batch_for("composed_ctc_phi", model)
    response = torch.randint(3, 290, (len(batch), 6), generator=torch.Generator().manual_seed(1))
    response_mask = torch.ones_like(response)
    response_mask[0, 4:] = 0  # a shorter response: right padding stays where it is
    ids = torch.cat([batch.prompt_ids, response], 1)
    mask = torch.cat([batch.prompt_mask, response_mask], 1)
    embeds, kept = model.embed_prompt(batch.audio, ids, mask)
    short, short_mask = drop_compressed_audio(embeds, kept, ids == model.audio_token_id)
    assert short.shape[1] < ids.shape[1] and torch.equal(short_mask[:, -7:], kept[:, -7:])
    widths = []  # what the LM itself reads: the packed forward must hand it the shorter sequence
    hook = model.llm.register_forward_pre_hook(lambda _, args, kwargs: widths.append(kwargs["inputs_embeds"].shape[1]),
                                               with_kwargs=True)
    results = []
    for packed in (True, False):
        model.zero_grad()
        logits = model(batch.audio, ids, mask, sequence_positions(mask), **({"logits_to_keep": 7} if packed else {}))
        logits = logits[:, -7:]
        logits.float().log_softmax(-1)[:, :-1].gather(-1, response[..., None]).mul(response_mask[..., None]).sum().backward()
        results.append((logits.detach(), [p.grad.clone() for _, p in model.trainable_parameters() if p.grad is not None]))
    hook.remove()
    assert widths == [short.shape[1], ids.shape[1]]
    real = torch.cat([batch.prompt_mask[:, -1:], response_mask], 1).bool()
    torch.testing.assert_close(results[0][0][real], results[1][0][real], rtol=1e-5, atol=1e-5)
    assert len(results[0][1]) == len(results[1][1]) > 0
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_ctc_embeds_only_kept_frames_with_the_same_logprobs_and_gradients(models, monkeypatch):
    model = models["composed_ctc_phi"].eval()  # no LoRA dropout between the two forwards
    batch = batch_for("composed_ctc_phi", model)
    tokens, keep = model.encode_audio(batch.audio)
    model.ctc_compress = False
    try:
        every_frame, _ = model.encode_audio(batch.audio)
    finally:
        model.ctc_compress = True
    assert 0 < int(keep.sum()) < keep.numel()
    torch.testing.assert_close(tokens[keep], every_frame[keep], rtol=0, atol=0)
    assert not tokens[~keep].any()
    response = torch.randint(3, 290, (len(batch), 6), generator=torch.Generator().manual_seed(0))
    results = []
    for embeddings in (tokens, every_frame):  # the dropped frames' embeddings change nothing
        monkeypatch.setattr(model, "encode_audio", lambda audio, e=embeddings: (e.detach().requires_grad_(), keep))
        model.zero_grad()
        logprobs = model.response_logprobs(batch, response, torch.ones_like(response))
        logprobs.sum().backward()
        results.append((logprobs.detach(), [p.grad.clone() for _, p in model.trainable_parameters() if p.grad is not None]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_length_dependent_rope_decodes_below_its_switch_and_falls_back_across_it(caplog):
    """Phi-3-style longrope switches its tables when a position reaches the original context (24
    here): below it the static tables give generate's logits; a generation crossing it falls back."""
    head_dim = 16
    llm = {"model_type": "phi3", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 272, "max_position_embeddings": 64,
           "original_max_position_embeddings": 24, "pad_token_id": 0,
           "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                               "short_factor": [1.0] * (head_dim // 4), "long_factor": [3.0] * (head_dim // 4)}}
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**llm)).eval()
    batch = text_batch(272, lengths=(9, 14, 5, 11))
    assert fast_path_reason(lm, 14 + 9) is None
    out = lm.generate(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, max_new_tokens=9, do_sample=False,
                      eos_token_id=[271], pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    recorded = []
    step = StaticCacheDecoder.step
    try:
        StaticCacheDecoder.step = lambda self, tokens, t: recorded.append(step(self, tokens, t)) or recorded[-1]
        ours = decode(lm, Prompt(batch.prompt_mask, ids=batch.prompt_ids), 9, stop_ids=[271], pad_id=0)
    finally:
        StaticCacheDecoder.step = step
    assert torch.equal(ours, out.sequences[:, batch.prompt_ids.shape[1]:])
    torch.testing.assert_close(torch.stack(recorded, 1), torch.stack(out.logits[1:], 1), atol=1e-6, rtol=1e-5)
    model = TextLLM(llm=llm)
    with caplog.at_level(logging.INFO, logger="speechsum.models.decode"):
        assert_same(*both_paths(model, batch, max_new_tokens=16))  # 14 + 16 > 24: HF generate
    assert "longrope rotary scaling switches at position 24" in caplog.text

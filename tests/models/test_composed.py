"""The composed backbone (Whisper-style encoder + projector + HF causal LM) on a tiny random model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from speechsum.data.batch import SpeechCollator
from speechsum.data.manifest import Example
from speechsum.losses import masked_cross_entropy
from speechsum.models.base import mask_after_stop, sequence_positions
from speechsum.models.composed import whisper_output_frames
from speechsum.models.policy import lora_disabled
from speechsum.models.projectors import CTCProjector, FrameStackProjector


def examples(seconds=(0.7, 1.3, 2.0), seed=0):
    rng = np.random.default_rng(seed)
    return [
        (
            Example(id=f"ex{i}", audio="-", instruction="Summarise the call.", duration=s, summary="Two words." * (i + 1)),
            (0.1 * rng.standard_normal(int(16_000 * s))).astype(np.float32),
        )
        for i, s in enumerate(seconds)
    ]


def test_helpers_match_hand_computed_values():
    assert [whisper_output_frames(t) for t in (1, 2, 3, 100, 101)] == [1, 1, 2, 50, 51]
    ids = torch.tensor([[5, 9, 7, 9, 9], [5, 5, 5, 5, 5]])
    assert mask_after_stop(ids, [9]).tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert sequence_positions(torch.tensor([[0, 0, 1, 1, 1]])).tolist() == [[0, 0, 0, 1, 2]]


def test_projector_stacks_frames():
    projector = FrameStackProjector(encoder_dim=3, llm_dim=5, stack=4)
    assert projector(torch.randn(2, 9, 3)).shape == (2, 3, 5)


@pytest.mark.parametrize("kind", ["mlp", "ctc"])
def test_projectors_compute_each_clips_real_positions_only(kind):
    torch.manual_seed(0)
    projector = FrameStackProjector(6, 5, stack=4) if kind == "mlp" else CTCProjector(6, 5, vocab_size=11, stack=4)
    clips = [torch.randn(10, 6), torch.randn(3, 6), torch.randn(0, 6), torch.randn(8, 6)]  # 3, 1, 0, 2 positions
    frames = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)  # (4, 10, 6): the last position zero-padded
    valid = torch.tensor([[True] * 3, [True, False, False], [False] * 3, [True, True, False]])
    padded = projector(frames) if kind == "mlp" else projector.logits(frames)
    rows = projector.clip_rows(clips) if kind == "mlp" else projector.clip_logits(clips)
    assert rows.shape == (6, padded.shape[-1])
    torch.testing.assert_close(rows, padded[valid], rtol=1e-6, atol=1e-7)
    stacked = projector.frames if kind == "ctc" else projector  # the rows themselves: the padded batch's, bit for bit
    assert torch.equal(stacked.stacked_clips(clips), stacked.stacked(frames)[valid])
    assert stacked.stacked_clips([]).shape == (0, 24)


def test_prompt_has_one_audio_token_per_projected_frame(tiny_composed):
    batch = SpeechCollator(tiny_composed.processor)(examples())
    mel_frames = batch.audio["mel_frames"].tolist()
    assert mel_frames == [70, 130, 200]  # 10 ms hop, per clip
    assert batch.audio["input_features"].shape == (3, 80, 200)  # padded to the longest clip, not 30 s
    audio_tokens = (batch.prompt_ids == tiny_composed.audio_token_id).sum(1).tolist()
    assert audio_tokens == [9, 17, 25]  # ceil(ceil(frames / 2) / 4)


def test_training_step_trains_projector_and_lora_only(tiny_composed):
    model = tiny_composed
    trainable = {name for name, _ in model.trainable_parameters()}
    assert trainable and all(n.startswith("projector.") or "lora_" in n for n in trainable)
    assert any(n.startswith("projector.") for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = SpeechCollator(model.processor)(examples())
    optimizer = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=1e-2)
    logits = model.response_logits(batch, batch.response_ids, batch.response_mask)
    loss = masked_cross_entropy(logits, batch.response_ids, batch.response_mask)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable


def test_logprobs_do_not_depend_on_batch_composition(tiny_composed):
    collate = SpeechCollator(tiny_composed.processor)
    items = examples()
    batch = collate(items)
    together = tiny_composed.response_logprobs(batch, batch.response_ids, batch.response_mask)
    for row, item in enumerate(items):
        alone_batch = collate([item])
        alone = tiny_composed.response_logprobs(alone_batch, alone_batch.response_ids, alone_batch.response_mask)
        torch.testing.assert_close(together[row, : alone.shape[1]], alone[0], atol=1e-5, rtol=1e-4)


def test_batched_generation_equals_one_by_one_and_stops(tiny_composed):
    collate = SpeechCollator(tiny_composed.processor)
    items = examples()
    ids, mask = tiny_composed.generate(collate(items), max_new_tokens=6)
    assert ids.shape[0] == 3 and ids.shape[1] <= 6
    for row, item in enumerate(items):
        alone_ids, alone_mask = tiny_composed.generate(collate([item]), max_new_tokens=6)
        n = int(alone_mask.sum())
        assert ids[row, :n].tolist() == alone_ids[0, :n].tolist()
    assert tiny_composed.audio_token_id not in ids.tolist()


def test_clips_of_a_few_samples_encode_and_leave_the_others_alone(tiny_composed):
    # the log-mel STFT reflects 200 samples at each edge: shorter clips are padded with zeros to 201
    collate = SpeechCollator(tiny_composed.processor)
    normal = examples(seconds=(0.7,))[0]
    tiny = [(replace(normal[0], id=f"short{n}"), np.full(n, 0.1, np.float32)) for n in (1, 28, 200, 201)]
    batch = collate([*tiny, normal])
    assert batch.audio["mel_frames"].tolist() == [1, 1, 1, 1, 70]  # one 10-ms frame each (hop 160 samples)
    ids, mask = tiny_composed.generate(batch, max_new_tokens=4)
    alone_ids, alone_mask = tiny_composed.generate(collate([normal]), max_new_tokens=4)
    assert ids[4, : int(alone_mask.sum())].tolist() == alone_ids[0, : int(alone_mask.sum())].tolist()
    assert batch.audio["content_keys"][0] != batch.audio["content_keys"][1]  # keys of the clips as given


def test_sampling_returns_several_sequences(tiny_composed):
    torch.manual_seed(0)
    ids, mask = tiny_composed.generate(
        SpeechCollator(tiny_composed.processor)(examples()), max_new_tokens=4, do_sample=True,
        temperature=1.0, top_p=0.9, num_return_sequences=2,
    )
    assert ids.shape[0] == 6 and mask.shape == ids.shape


def test_lora_disabled_gives_the_base_model(tiny_composed):
    tiny_composed.eval()  # no LoRA dropout
    batch = SpeechCollator(tiny_composed.processor)(examples((1.0,)))
    for name, parameter in tiny_composed.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter)  # LoRA B starts at 0: make the adapter do something
    with torch.no_grad():
        adapted = tiny_composed.response_logprobs(batch, batch.response_ids, batch.response_mask)
        with lora_disabled(tiny_composed):
            base = tiny_composed.response_logprobs(batch, batch.response_ids, batch.response_mask)
        again = tiny_composed.response_logprobs(batch, batch.response_ids, batch.response_mask)
    assert not torch.allclose(adapted, base)
    torch.testing.assert_close(adapted, again)
    assert all(p.requires_grad for n, p in tiny_composed.named_parameters() if "lora_" in n)


def test_response_text_round_trips_through_the_tokenizer(tiny_composed):
    processor = tiny_composed.processor
    texts = ["Ünïcode ok — 5 € and 日本.", "Short."]
    ids, mask = processor.encode_responses(texts)
    assert ids[0, int(mask[0].sum()) - 1].item() == processor.end_token_id
    assert processor.decode_responses(ids, mask) == texts


@pytest.mark.parametrize("llm_mode", ["full", "frozen"])
def test_other_training_policies(llm_mode):
    from speechsum.models.composed import ComposedSpeechLLM
    from speechsum.models.policy import TrainingPolicy
    from tests.conftest import tiny_backbone_args

    args = tiny_backbone_args()
    args["policy"] = TrainingPolicy(llm=llm_mode, train_encoder=True, gradient_checkpointing=True)
    model = ComposedSpeechLLM(**args)
    names = {n for n, _ in model.trainable_parameters()}
    assert any(n.startswith("encoder.") for n in names)
    assert any(n.startswith("llm.") for n in names) == (llm_mode == "full")
    assert not any("lora_" in n for n in names)
    assert model.llm.is_gradient_checkpointing


@pytest.mark.parametrize(("settings", "message"), [
    ({"lora_r": 0}, "policy.lora_r must be at least 1, got 0"),  # peft's "`r` should be a positive integer"
    ({"lora_alpha": 0}, "policy.lora_alpha must be a number above 0 (the adapters' scale is alpha/r), got 0"),  # no-op
    ({"lora_dropout": -0.1}, "policy.lora_dropout must be a number at least 0 and below 1, got -0.1"),  # no dropout
    ({"lora_target_modules": []}, "policy.lora_target_modules is empty ([]): give module names (e.g. [q_proj, v_proj]) "
                                  "or 'all-linear'"),
    ({"llm": "lorra"}, "policy.llm must be one of 'lora', 'full', 'frozen', got 'lorra'"),  # was frozen, silently
])
def test_a_training_policy_that_cannot_work_is_refused_naming_the_setting(settings, message):
    from speechsum.models.policy import TrainingPolicy
    from speechsum.utils.arguments import ConfigError

    with pytest.raises(ConfigError) as info:
        TrainingPolicy(**settings)
    assert str(info.value) == message
    assert TrainingPolicy(llm="full", lora_r=0).lora_r == 0  # LoRA settings matter with llm: lora only


def test_loads_pretrained_parts_from_local_directories(tmp_path, tiny_composed):
    """The hub-id code path (from_pretrained) on directories written by save_pretrained."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperModel,
    )

    from speechsum.models.composed import ComposedSpeechLLM
    from tests.conftest import tiny_backbone_args

    args = tiny_backbone_args()
    llm_args = dict(args["llm"])
    pretrained_llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(llm_args.pop("model_type"), **llm_args))
    pretrained_llm.save_pretrained(tmp_path / "llm")
    tiny_composed.processor.tokenizer.save_pretrained(tmp_path / "llm")
    # A checkpoint's decoding defaults must not leak into generate() (top-k 1 = always greedy).
    GenerationConfig(do_sample=True, top_k=1, no_repeat_ngram_size=1).save_pretrained(tmp_path / "llm")
    WhisperModel(WhisperConfig(**args["encoder"])).save_pretrained(tmp_path / "whisper")
    WhisperFeatureExtractor().save_pretrained(tmp_path / "whisper")

    loaded = ComposedSpeechLLM(llm=str(tmp_path / "llm"), encoder=str(tmp_path / "whisper"), end_of_turn="<|im_end|>")
    assert loaded.processor.tokenizer.get_vocab() == tiny_composed.processor.tokenizer.get_vocab()
    loaded_weights = {n.replace(".base_layer", ""): p for n, p in loaded.llm.named_parameters() if "lora_" not in n}
    saved_weights = dict(pretrained_llm.named_parameters())
    assert loaded_weights.keys() == saved_weights.keys()
    for name, parameter in saved_weights.items():
        torch.testing.assert_close(loaded_weights[name], parameter, msg=name)
    batch = SpeechCollator(loaded.processor)(examples((1.0,)))
    assert torch.equal(batch.prompt_ids, SpeechCollator(tiny_composed.processor)(examples((1.0,))).prompt_ids)
    greedy, greedy_mask = loaded.generate(batch, max_new_tokens=16)
    with torch.no_grad():  # greedy = the argmax of the policy's own next-token distribution
        logits = loaded.response_logits(batch, greedy, greedy_mask)
    logits[..., loaded.audio_token_id] = float("-inf")
    kept = greedy_mask.bool()
    assert torch.equal(logits.argmax(-1)[kept], greedy[kept])
    torch.manual_seed(0)
    samples = [loaded.generate(batch, max_new_tokens=4, do_sample=True)[0] for _ in range(5)]
    assert any(not torch.equal(sample, greedy) for sample in samples)


def test_generate_is_deterministic_in_train_mode_and_restores_it(tiny_composed):
    for name, parameter in tiny_composed.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter)
    for module in tiny_composed.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    tiny_composed.train()
    batch = SpeechCollator(tiny_composed.processor)(examples())
    first, _ = tiny_composed.generate(batch, max_new_tokens=6)
    second, _ = tiny_composed.generate(batch, max_new_tokens=6)
    assert torch.equal(first, second)
    assert tiny_composed.training


def test_samples_are_scored_against_the_repeated_batch(tiny_composed):
    collate = SpeechCollator(tiny_composed.processor)
    items = examples()
    batch = collate(items)
    torch.manual_seed(1)
    ids, mask = tiny_composed.generate(batch, max_new_tokens=5, do_sample=True, num_return_sequences=2)
    repeated = batch.repeat_interleave(2)
    assert repeated.ids == ["ex0", "ex0", "ex1", "ex1", "ex2", "ex2"]
    with torch.no_grad():
        scores = tiny_composed.response_logprobs(repeated, ids, mask)
        for row in range(len(ids)):
            alone = tiny_composed.response_logprobs(collate([items[row // 2]]), ids[row : row + 1], mask[row : row + 1])
            torch.testing.assert_close(scores[row], alone[0], atol=1e-5, rtol=1e-4)


def test_lora_disabled_refuses_a_model_without_lora():
    from speechsum.models.composed import ComposedSpeechLLM
    from speechsum.models.policy import TrainingPolicy
    from tests.conftest import tiny_backbone_args

    model = ComposedSpeechLLM(**{**tiny_backbone_args(), "policy": TrainingPolicy(llm="frozen")})
    with pytest.raises(ValueError, match="no LoRA adapters"):
        with lora_disabled(model):
            pass


def test_trainable_weights_train_in_fp32_when_the_model_is_bf16():
    from speechsum.models.composed import ComposedSpeechLLM
    from speechsum.models.policy import TrainingPolicy, apply_training_policy
    from tests.conftest import tiny_backbone_args

    model = ComposedSpeechLLM(**{**tiny_backbone_args(), "policy": TrainingPolicy(llm="frozen")})
    model.to(torch.bfloat16)
    apply_training_policy(model, model.module_groups(), TrainingPolicy(llm="frozen"))
    dtypes = {p.dtype for _, p in model.trainable_parameters()}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert dtypes == {torch.float32} and frozen == {torch.bfloat16}


def test_system_prompt_comes_first():
    from speechsum.models.composed import ComposedSpeechLLM
    from speechsum.models.policy import TrainingPolicy
    from tests.conftest import tiny_backbone_args

    model = ComposedSpeechLLM(**{**tiny_backbone_args(), "policy": TrainingPolicy(), "system_prompt": "Be brief."})
    batch = SpeechCollator(model.processor)(examples((0.5,)))
    prompt = model.processor.tokenizer.decode(batch.prompt_ids[0])
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|audio|>")
    assert prompt.endswith("Summarise the call.<|im_end|>\n<|im_start|>assistant\n")


def test_prompt_parts_render_once_per_instruction(tiny_composed, monkeypatch):
    processor = tiny_composed.processor
    processor._prompt_cache.clear()
    calls = []
    render = processor._render_prompt_parts
    monkeypatch.setattr(processor, "_render_prompt_parts", lambda ins: calls.append(ins) or render(ins))
    first = processor.encode_prompts([np.zeros(8000, np.float32)] * 3, ["Summarise.", "Other.", "Summarise."])
    again = processor.encode_prompts([np.zeros(8000, np.float32)], ["Summarise."])
    assert calls == ["Summarise.", "Other."]
    assert torch.equal(again.prompt_ids[0], first.prompt_ids[0])
    processor._prompt_cache.clear()


def test_user_prompt_places_audio_and_instruction():
    from speechsum.models.composed import ComposedSpeechLLM
    from tests.conftest import tiny_backbone_args

    args = {**tiny_backbone_args(), "policy": None}
    model = ComposedSpeechLLM(**args, user_prompt="Transcript:\n{audio}\n\n{instruction}")
    processor = model.processor
    batch = SpeechCollator(processor)(examples(seconds=(0.7,)))
    text = processor.tokenizer.decode(batch.prompt_ids[0])
    audio = "<|audio|>" * processor.audio_tokens(int(batch.audio["mel_frames"][0]))
    assert f"Transcript:\n{audio}\n\nSummarise the call." in text
    with pytest.raises(ValueError, match="user_prompt must contain"):
        ComposedSpeechLLM(**args, user_prompt="{instruction} only")


END_OF_TURN_REFUSALS = [
    # a blank one was the eos token without a word; the others failed at the first batch with a traceback
    ("", "end_of_turn: '' is no token: leave it out (null) for the default '<|endoftext|>', or give one token of the "
         "tokenizer's vocabulary"),
    (" ", "end_of_turn: ' ' is no token: leave it out (null) for the default '<|endoftext|>', or give one token of the "
          "tokenizer's vocabulary"),
    ("nope", "end_of_turn: 'nope' is not one token of the tokenizer's vocabulary: give one of its tokens that ends a "
             "turn (its special tokens: '<|endoftext|>', '<|pad|>')"),
    ("<|im_end|> ", "end_of_turn: '<|im_end|> ' is not one token of the tokenizer's vocabulary: give one of its tokens "
                    "that ends a turn (its special tokens: '<|endoftext|>', '<|pad|>')"),
    ("<|audio|>", "end_of_turn: '<|audio|>' is the audio placeholder: give one of its tokens that ends a turn (its "
                  "special tokens: '<|endoftext|>', '<|pad|>')"),
]


@pytest.mark.parametrize(("end_of_turn", "message"), END_OF_TURN_REFUSALS, ids=["empty", "blank", "unknown",
                                                                                "two-tokens", "audio"])
def test_an_end_of_turn_that_is_no_token_of_the_vocabulary_is_refused_when_built(end_of_turn, message):
    from speechsum.models.composed import ComposedSpeechLLM
    from speechsum.utils.arguments import ConfigFieldError
    from tests.conftest import tiny_backbone_args

    with pytest.raises(ConfigFieldError) as info:
        ComposedSpeechLLM(**{**tiny_backbone_args(), "policy": None, "end_of_turn": end_of_turn})
    assert str(info.value) == message
    assert (info.value.field, info.value.value) == ("end_of_turn", end_of_turn)


def test_an_end_of_turn_of_the_vocabulary_ends_every_response():
    from speechsum.models.composed import ComposedSpeechLLM
    from tests.conftest import tiny_backbone_args

    args = {**tiny_backbone_args(), "policy": None}
    model = ComposedSpeechLLM(**{**args, "end_of_turn": "<|im_end|>"})
    ids, mask = model.processor.encode_responses(["do re"])
    assert model.processor.tokenizer.decode(ids[0][mask[0].bool()]) == "do re<|im_end|>"
    assert ComposedSpeechLLM(**{**args, "end_of_turn": None}).processor.end_of_turn == "<|endoftext|>"


SPECIAL_TOKEN_TEXT = ("a special token of the model's tokenizer: it would be read as that token, not as text (it "
                      "could end the turn or add an audio position); remove or rewrite it")


@pytest.mark.parametrize(("setting", "text", "message"), [
    # "93 audio placeholders but 90 audio frames", a traceback at the first batch
    ("user_prompt", "<|audio|>{audio}\n{instruction}", "user_prompt: holds '<|audio|>' (at character 0), "),
    ("system_prompt", "Listen: <|audio|>", "system_prompt: holds '<|audio|>' (at character 8), "),
    # closed the system turn early without a word
    ("system_prompt", "Be brief.<|im_end|>", "system_prompt: holds '<|im_end|>' (at character 9), "),
])
def test_a_prompt_setting_holding_a_special_token_is_refused_when_built(setting, text, message):
    from speechsum.models.composed import ComposedSpeechLLM
    from speechsum.utils.arguments import ConfigFieldError
    from tests.conftest import tiny_backbone_args

    with pytest.raises(ConfigFieldError) as info:
        ComposedSpeechLLM(**{**tiny_backbone_args(), "policy": None, setting: text})
    assert str(info.value) == message + SPECIAL_TOKEN_TEXT
    assert (info.value.field, info.value.value) == (setting, text)


def test_attn_implementation_is_chosen_and_gives_the_same_logprobs(tiny_composed):
    from speechsum.models.composed import ComposedSpeechLLM
    from speechsum.models.policy import TrainingPolicy
    from tests.conftest import tiny_backbone_args

    args = tiny_backbone_args()
    args["policy"] = TrainingPolicy(**args["policy"])
    eager = ComposedSpeechLLM(**args, attn_implementation="eager")
    assert (tiny_composed.llm.config._attn_implementation, eager.llm.config._attn_implementation) == ("sdpa", "eager")
    batch = SpeechCollator(tiny_composed.processor)(examples())  # rows of different lengths: padding
    torch.testing.assert_close(eager.response_logprobs(batch, batch.response_ids, batch.response_mask),
                               tiny_composed.response_logprobs(batch, batch.response_ids, batch.response_mask))

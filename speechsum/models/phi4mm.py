"""Native Phi-4-multimodal backbone: ``Phi4MultimodalForCausalLM`` with its own processor (audio only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from peft import PeftModel
from torch import nn
from transformers import (
    AutoTokenizer,
    Phi4MultimodalConfig,
    Phi4MultimodalFeatureExtractor,
    Phi4MultimodalForCausalLM,
    Phi4MultimodalProcessor,
    PreTrainedTokenizerBase,
)
from transformers.image_processing_utils import ImageProcessingMixin

from speechsum.data.processor import PromptInputs, SpeechProcessor, at_least_one_window, checked_end_of_turn
from speechsum.models.base import NativeSpeechLLM
from speechsum.models.config_fields import check_fixed_field, check_weight_dtype, checked_config
from speechsum.models.policy import ModuleGroups, TrainingPolicy, seeded_init
from speechsum.models.tokenizer import build_byte_tokenizer

AUDIO_TOKEN, IMAGE_TOKEN = "<|audio|>", "<|image|>"  # the byte tokenizer's; hub tokenizers name their own
SPECIAL_TOKENS = (AUDIO_TOKEN, IMAGE_TOKEN, "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
PHI_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


class Phi4MultimodalSpeechProcessor(SpeechProcessor):
    """Prompts and features through the model's own :class:`~transformers.Phi4MultimodalProcessor`.

    The prompt is Phi's ``<|user|>{audio token}{instruction}<|end|><|assistant|>`` (the chat
    template's rendering); the processor expands the tokenizer's audio token (``<|endoftext11|>``
    on the hub, ``<|audio|>`` in the byte tokenizer) to ``audio_embed_sizes[i]`` tokens, one per
    80 ms. Features are padded to the batch's longest clip; there is no fixed input length. A clip
    shorter than one analysis window (``win_length``, 25 ms) is padded with silence to one window: the
    feature extractor fails on it alone and gives it no audio token in a batch.

    Audio tensors: ``audio_input_features`` ``(B, T, 80)`` log-mel frames (10 ms);
    ``audio_attention_mask`` ``(B, T)`` bool (added for a single clip too, where the feature
    extractor leaves it out); ``audio_embed_sizes`` ``(B,)`` audio tokens per clip.
    """

    def __init__(
        self,
        processor: Phi4MultimodalProcessor,
        end_of_turn: str = "<|end|>",
        system_prompt: str | None = None,
    ):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.sample_rate = processor.audio_processor.sampling_rate
        self.end_of_turn = checked_end_of_turn(self.tokenizer, end_of_turn, "<|end|>", processor.audio_token)
        self.system_prompt = system_prompt
        self.check_prompt_settings(system_prompt=system_prompt)
        self.audio_token_id = processor.audio_token_id

    def prompt_text(self, instruction: str) -> str:
        """The chat-formatted prompt, with one unexpanded audio token."""
        messages = self.chat_messages(f"{self.processor.audio_token}{instruction}")
        template = self.tokenizer.chat_template or self.processor.chat_template
        return self.tokenizer.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=True, tokenize=False
        )

    def encode_prompts(self, waveforms: Sequence[np.ndarray], instructions: Sequence[str]) -> PromptInputs:
        inputs = self.processor(
            text=[self.prompt_text(instruction) for instruction in instructions],
            audio=[at_least_one_window(w, self.processor.audio_processor.win_length) for w in waveforms],
            padding=True,
            return_tensors="pt",
            audio_kwargs={"sampling_rate": self.sample_rate},
        )
        features = inputs["audio_input_features"]
        mask = inputs.get("audio_attention_mask")
        if mask is None:
            mask = torch.ones(features.shape[:2], dtype=torch.bool)
        sizes = inputs["audio_embed_sizes"]
        audio = {"audio_input_features": features, "audio_attention_mask": mask, "audio_embed_sizes": sizes}
        return PromptInputs(audio=audio, prompt_ids=inputs["input_ids"], prompt_mask=inputs["attention_mask"])


def _audio_processor(features: Phi4MultimodalFeatureExtractor, tokenizer: PreTrainedTokenizerBase):
    # the model's image processor needs torchvision and is never called here: a bare mixin stands in
    return Phi4MultimodalProcessor(ImageProcessingMixin(), features, tokenizer)


def _load(
    spec: str | dict, dtype: str | None, revision: str | None, speech_lora: str | None
) -> tuple[Phi4MultimodalForCausalLM, Phi4MultimodalProcessor]:
    check_weight_dtype(dtype)
    if isinstance(spec, str):
        model = Phi4MultimodalForCausalLM.from_pretrained(spec, revision=revision, dtype=dtype or "auto")
        if speech_lora:  # the checkpoint's speech adapter, merged: the base the policy trains on
            adapted = PeftModel.from_pretrained(model, spec, subfolder=speech_lora, revision=revision)
            model = adapted.merge_and_unload()
        feature_extractor = Phi4MultimodalFeatureExtractor.from_pretrained(spec, revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(spec, revision=revision)
        return model, _audio_processor(feature_extractor, tokenizer)
    tokenizer = build_byte_tokenizer(SPECIAL_TOKENS)
    tokenizer._set_model_specific_special_tokens({"audio_token": AUDIO_TOKEN, "image_token": IMAGE_TOKEN})
    tokenizer.chat_template = PHI_CHAT_TEMPLATE
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.eos_token_id}
    config = checked_config(Phi4MultimodalConfig, spec, "model", fixed={**ids, "eos_token_id": [tokenizer.eos_token_id]})
    if config.vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size must be at least {len(tokenizer)} (the byte tokenizer's size)")
    for part, key, value in (("audio_config", "audio_token_id", tokenizer.audio_token_id),
                             ("vision_config", "image_token_id", tokenizer.image_token_id)):
        if key in (spec.get(part) or {}):
            check_fixed_field("model", f"{part}.{key}", spec[part][key], value)
        setattr(getattr(config, part), key, value)
    feature_extractor = Phi4MultimodalFeatureExtractor(feature_size=config.audio_config.input_size)
    return Phi4MultimodalForCausalLM(config), _audio_processor(feature_extractor, tokenizer)


class TextDecoder(nn.Module):
    """The language-model part of a ``Phi4MultimodalModel`` (token embeddings, decoder layers, final
    norm) without the audio and vision encoders it also holds: the LLM policy's target, so LoRA
    "all-linear" reaches only the decoder's ``qkv_proj``, ``o_proj``, ``gate_up_proj`` and
    ``down_proj``. A view sharing those modules, not itself a submodule of the backbone."""

    def __init__(self, model: Phi4MultimodalForCausalLM):
        super().__init__()
        inner = model.model
        self.embed_tokens, self.layers, self.norm = inner.embed_tokens, inner.layers, inner.norm
        self._owner = (model,)  # a tuple, so the whole model is not registered as a child
        self.config = model.config

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self._owner[0].gradient_checkpointing_enable(**kwargs)


class Phi4MultimodalSpeechLLM(NativeSpeechLLM):
    """Phi-4-multimodal (conformer audio encoder → 2-layer speech projector → Phi-4-mini), native.

    Args:
        model: hub id or local directory (model, feature extractor, tokenizer), or a
            ``Phi4MultimodalConfig`` dict (text fields, ``audio_config``, ``vision_config``) for a
            random-init model with the built-in byte tokenizer, its audio/image/pad/eos ids written
            into the config.
        end_of_turn: token that ends a response.
        system_prompt: optional system message in every prompt.
        policy: which parameters train (default: frozen encoder, projector, LoRA r=16 α=32).
        dtype: weight dtype for pretrained checkpoints ("bfloat16", …; default: the checkpoint's).
        init_seed: seed for random-init weights, so a model is rebuilt identically on resume.
        revision: hub revision; the transformers-native weights of microsoft/Phi-4-multimodal-instruct
            are at "refs/pr/70" (its main branch holds the remote-code ``phi4mm`` format).
        speech_lora: subfolder of ``model`` holding the checkpoint's speech LoRA ("speech-lora"),
            merged into the LLM weights before the policy applies; None leaves the bare Phi-4-mini
            LLM, which was never trained on audio embeddings without that adapter.

    The vision encoder stays in the model, frozen and unused.
    """

    def __init__(
        self,
        model: str | dict,
        end_of_turn: str = "<|end|>",
        system_prompt: str | None = None,
        policy: TrainingPolicy | None = None,
        dtype: str | None = None,
        init_seed: int = 0,
        revision: str | None = None,
        speech_lora: str | None = None,
    ):
        super().__init__()
        with seeded_init(init_seed):
            self.hf, processor = _load(model, dtype, revision, speech_lora)
        self.processor = Phi4MultimodalSpeechProcessor(processor, end_of_turn, system_prompt)
        self.audio_token_id = self.processor.audio_token_id
        if self.hf.config.audio_config.audio_token_id != self.audio_token_id:
            raise ValueError(f"audio token id {self.audio_token_id} is not the config's audio_token_id")
        self.finish_init(policy)

    def module_groups(self) -> ModuleGroups:
        speech = self.hf.model.embed_tokens_extend.audio_embed
        return ModuleGroups(
            encoder=speech.encoder,
            projector=[speech.up_proj_for_speech, speech.down_proj_for_speech],
            llm=TextDecoder(self.hf),
        )


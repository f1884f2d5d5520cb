"""Native Qwen2-Audio backbone: ``Qwen2AudioForConditionalGeneration`` with its own processor."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor
from transformers import (
    AutoProcessor,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperFeatureExtractor,
)

from speechsum.data.processor import PromptInputs, SpeechProcessor, at_least_one_window, checked_end_of_turn
from speechsum.models.base import NativeSpeechLLM
from speechsum.models.config_fields import check_weight_dtype, checked_config
from speechsum.models.policy import ModuleGroups, TrainingPolicy, seeded_init
from speechsum.models.tokenizer import build_byte_tokenizer

AUDIO_TOKEN = "<|AUDIO|>"
AUDIO_SPECIAL_TOKENS = (AUDIO_TOKEN, "<|audio_bos|>", "<|audio_eos|>")


class Qwen2AudioSpeechProcessor(SpeechProcessor):
    """Prompts and features through the model's own :class:`~transformers.Qwen2AudioProcessor`.

    The prompt is the chat template rendering of one user turn holding the audio
    (``<|audio_bos|><|AUDIO|><|audio_eos|>``) then the instruction, with the assistant header
    appended; the processor expands ``<|AUDIO|>`` to one token per pooled encoder frame (40 ms).

    The native encoder is fixed-length: it only accepts log-mel features of exactly
    ``2 * max_source_positions`` frames (3000 frames = 30 s for the released model), so every clip
    is zero-padded to that length, ``feature_attention_mask`` marking its real frames, and a clip
    longer than ``max_audio_seconds`` is an error (the data module truncates or rejects it first).
    A clip shorter than one analysis window (``n_fft``, 25 ms) is padded with silence to one window:
    the processor gave it no audio token, so the model summarised nothing heard.

    Audio tensors: ``input_features`` ``(B, n_mels, 2 * max_source_positions)`` and
    ``feature_attention_mask`` ``(B, 2 * max_source_positions)``.
    """

    def __init__(
        self,
        processor: Qwen2AudioProcessor,
        max_source_positions: int,
        end_of_turn: str = "<|im_end|>",
        system_prompt: str | None = None,
    ):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        feature_extractor = processor.feature_extractor
        self.sample_rate = feature_extractor.sampling_rate
        self.max_samples = 2 * max_source_positions * feature_extractor.hop_length
        self.max_audio_seconds = self.max_samples / self.sample_rate
        self.end_of_turn = checked_end_of_turn(self.tokenizer, end_of_turn, "<|im_end|>", processor.audio_token)
        self.system_prompt = system_prompt
        self.check_prompt_settings(system_prompt=system_prompt)
        self.audio_token_id = processor.audio_token_id

    def prompt_text(self, instruction: str) -> str:
        """The chat-formatted prompt, with one unexpanded audio placeholder."""
        content = [{"type": "audio", "audio": "<waveform>"}, {"type": "text", "text": instruction}]
        messages = self.chat_messages(content)
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode_prompts(self, waveforms: Sequence[np.ndarray], instructions: Sequence[str]) -> PromptInputs:
        too_long = [len(w) / self.sample_rate for w in waveforms if len(w) > self.max_samples]
        if too_long:
            raise ValueError(
                f"clips of {too_long} s exceed Qwen2-Audio's fixed {self.max_audio_seconds:g} s input; "
                "truncate them in the data module (max_audio_seconds)"
            )
        inputs = self.processor(
            text=[self.prompt_text(instruction) for instruction in instructions],
            audio=[at_least_one_window(w, self.processor.feature_extractor.n_fft) for w in waveforms],
            padding=True,
            return_tensors="pt",
            audio_kwargs={"sampling_rate": self.sample_rate, "max_length": self.max_samples},
        )
        audio = {
            "input_features": inputs["input_features"],
            "feature_attention_mask": inputs["feature_attention_mask"],
        }
        return PromptInputs(audio=audio, prompt_ids=inputs["input_ids"], prompt_mask=inputs["attention_mask"])


def _load(
    spec: str | dict, dtype: str | None
) -> tuple[Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor]:
    check_weight_dtype(dtype)
    if isinstance(spec, str):
        model = Qwen2AudioForConditionalGeneration.from_pretrained(spec, dtype=dtype or "auto")
        return model, AutoProcessor.from_pretrained(spec)
    tokenizer = build_byte_tokenizer(AUDIO_SPECIAL_TOKENS)
    config = checked_config(Qwen2AudioConfig, spec, "model",
                            fixed={"audio_token_id": tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)})
    if config.text_config.vocab_size < len(tokenizer):
        raise ValueError(
            f"text_config.vocab_size must be at least {len(tokenizer)} (the byte tokenizer's size)"
        )
    feature_extractor = WhisperFeatureExtractor(feature_size=config.audio_config.num_mel_bins)
    processor = Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    return Qwen2AudioForConditionalGeneration(config), processor


class Qwen2AudioSpeechLLM(NativeSpeechLLM):
    """Qwen2-Audio (Whisper-large-v3 encoder → linear projector → Qwen-7B), run natively.

    Args:
        model: hub id or local directory (model and ``AutoProcessor``), or a ``Qwen2AudioConfig``
            dict (``audio_config``, ``text_config``) for a random-init model with the built-in
            byte tokenizer, its ``<|AUDIO|>`` id written into the config.
        end_of_turn: token that ends a response.
        system_prompt: optional system message (else the template's default one).
        policy: which parameters train (default: frozen encoder, projector, LoRA r=16 α=32).
        dtype: weight dtype for pretrained checkpoints ("bfloat16", …; default: the checkpoint's).
        init_seed: seed for random-init weights, so a model is rebuilt identically on resume.
    """

    def __init__(
        self,
        model: str | dict,
        end_of_turn: str = "<|im_end|>",
        system_prompt: str | None = None,
        policy: TrainingPolicy | None = None,
        dtype: str | None = None,
        init_seed: int = 0,
    ):
        super().__init__()
        with seeded_init(init_seed):
            self.hf, processor = _load(model, dtype)
        max_source_positions = self.hf.config.audio_config.max_source_positions
        self.processor = Qwen2AudioSpeechProcessor(
            processor, max_source_positions, end_of_turn, system_prompt
        )
        self.audio_token_id = self.processor.audio_token_id
        if self.hf.config.audio_token_id != self.audio_token_id:
            raise ValueError(
                f"the processor's {AUDIO_TOKEN} id {self.audio_token_id} is not the config's "
                f"audio_token_id {self.hf.config.audio_token_id}"
            )
        self.finish_init(policy)

    def module_groups(self) -> ModuleGroups:
        inner = self.hf.model
        return ModuleGroups(
            encoder=inner.audio_tower, projector=[inner.multi_modal_projector], llm=inner.language_model
        )

    def forward(
        self,
        audio: dict[str, Tensor],
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor,
        logits_to_keep: int = 0,
    ) -> Tensor:
        """Logits ``(B, L, V)`` (last ``logits_to_keep`` positions when > 0) from the model's own
        forward (encoder, projector, placeholder filling, decoder); the LM head runs on the kept
        positions only, as ``Qwen2AudioForConditionalGeneration.forward`` has no ``logits_to_keep``."""
        outputs = self.hf.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            input_features=audio["input_features"],
            feature_attention_mask=audio["feature_attention_mask"],
            use_cache=False,
        )
        hidden = outputs.last_hidden_state
        if logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        return self.hf.lm_head(hidden)

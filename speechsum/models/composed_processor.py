"""The composed backbone's processor: Whisper log-mel features + a chat prompt with one
``<|audio|>`` placeholder per projected audio frame."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase, WhisperFeatureExtractor

from speechsum.data.processor import PromptInputs, SpeechProcessor, pad_sequences, require_chat_template
from speechsum.models.feature_cache import audio_content_key
from speechsum.models.tokenizer import AUDIO_TOKEN

PROMPT_CACHE_SIZE = 4096  # distinct instructions whose rendered prompt parts are kept
AUDIO_MARKER = "<<AUDIO>>"  # stands where the audio goes while the chat template is rendered
DEFAULT_USER_PROMPT = "{audio}\n{instruction}"


def stft_ready(waveform: np.ndarray, n_fft: int) -> np.ndarray:
    """``waveform`` with zeros appended up to ``n_fft // 2 + 1`` samples (201 for Whisper) when
    shorter: the log-mel STFT reflects ``n_fft // 2`` samples at each edge, which a clip of a few
    milliseconds does not have (it would fail, and with it every clip batched beside it)."""
    short = n_fft // 2 + 1 - len(waveform)
    return np.pad(waveform, (0, short)) if short > 0 else waveform


def whisper_output_frames(mel_frames: int) -> int:
    """Encoder frames for ``mel_frames`` mel frames: conv2 has stride 2, so ``ceil(T / 2)``."""
    return (mel_frames + 1) // 2


class ComposedProcessor(SpeechProcessor):
    """Whisper log-mel features (padded to the batch's longest clip, never truncated) + chat-formatted
    prompt in which ``<|audio|>`` is repeated once per projected audio frame, + each clip's
    content key (:func:`audio_content_key`, for the feature cache).

    Clips longer than the encoder's window are encoded window by window (see
    :meth:`ComposedSpeechLLM.encoder_frames`), so there is no length limit unless
    ``max_audio_seconds`` sets one. The user turn is ``user_prompt`` with ``{audio}`` (the
    placeholders) and ``{instruction}`` filled in.
    """

    def __init__(
        self,
        feature_extractor: WhisperFeatureExtractor,
        tokenizer: PreTrainedTokenizerBase,
        stack: int,
        end_of_turn: str | None = None,
        system_prompt: str | None = None,
        max_audio_seconds: float | None = None,
        user_prompt: str = DEFAULT_USER_PROMPT,
    ):
        if user_prompt.count("{audio}") != 1 or user_prompt.count("{instruction}") != 1:
            raise ValueError(f"user_prompt must contain '{{audio}}' and '{{instruction}}' once each, got {user_prompt!r}")
        require_chat_template(tokenizer, "ComposedSpeechLLM")
        self.user_prompt = user_prompt
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.stack = stack
        self.sample_rate = feature_extractor.sampling_rate
        self.max_audio_seconds = max_audio_seconds
        self.end_of_turn = end_of_turn or tokenizer.eos_token
        self.system_prompt = system_prompt
        self.audio_token_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
        self._prompt_cache: dict[str, tuple[list[int], list[int]]] = {}  # instruction -> parts

    compresses_audio = False  # the model keeps only some audio positions (CTC compression): set by it

    def prompt_positions_at_least(self, prompt_ids: Tensor, prompt_mask: Tensor) -> Tensor:
        if not self.compresses_audio:
            return prompt_mask.sum(1)
        return (prompt_mask * (prompt_ids != self.audio_token_id)).sum(1)

    def audio_tokens(self, mel_frames: int) -> int:
        return math.ceil(whisper_output_frames(mel_frames) / self.stack)

    def _prompt_parts(self, instruction: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the audio placeholder; rendered once per distinct
        instruction (callers only concatenate, never mutate, the cached lists)."""
        cached = self._prompt_cache.get(instruction)
        if cached is None:
            if len(self._prompt_cache) >= PROMPT_CACHE_SIZE:
                self._prompt_cache.clear()
            cached = self._prompt_cache[instruction] = self._render_prompt_parts(instruction)
        return cached

    def _render_prompt_parts(self, instruction: str) -> tuple[list[int], list[int]]:
        marker = AUDIO_MARKER  # one the instruction and the system prompt do not hold (it is split on)
        while marker in instruction + self.user_prompt + (self.system_prompt or ""):
            marker = marker.replace(">>", "#>>")
        content = self.user_prompt.replace("{audio}", marker).replace("{instruction}", instruction)
        messages = self.chat_messages(content)
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        before, after = text.split(marker)
        encode = self.tokenizer
        return (
            encode(before, add_special_tokens=False)["input_ids"],
            encode(after, add_special_tokens=False)["input_ids"],
        )

    def encode_prompts(self, waveforms: Sequence[np.ndarray], instructions: Sequence[str]) -> PromptInputs:
        # Each clip gets its own features (zero beyond its end) so that, with the encoder's
        # padding mask, a clip's audio embeddings do not depend on what else is in the batch.
        features = [
            self.feature_extractor(
                stft_ready(waveform, self.feature_extractor.n_fft), sampling_rate=self.sample_rate,
                padding="longest", truncation=False, return_tensors="pt",
            )["input_features"][0]
            for waveform in waveforms
        ]
        mel_frames = torch.tensor([f.shape[-1] for f in features])
        input_features = torch.zeros(len(features), features[0].shape[0], int(mel_frames.max()))
        for row, feature in enumerate(features):
            input_features[row, :, : feature.shape[-1]] = feature
        prompts = []
        for frames, instruction in zip(mel_frames.tolist(), instructions):
            before, after = self._prompt_parts(instruction)
            prompts.append(before + [self.audio_token_id] * self.audio_tokens(frames) + after)
        prompt_ids, prompt_mask = pad_sequences(prompts, self.pad_id, side="left")
        audio = {
            "input_features": input_features,
            "mel_frames": mel_frames,
            "content_keys": [audio_content_key(w, self.sample_rate) for w in waveforms],
        }
        return PromptInputs(audio=audio, prompt_ids=prompt_ids, prompt_mask=prompt_mask)

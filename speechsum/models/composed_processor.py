"""The composed backbone's processor: Whisper log-mel features + a chat prompt with one
``<|audio|>`` placeholder per projected audio frame."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase, WhisperFeatureExtractor

from speechsum.data.processor import (
    PromptInputs,
    SpeechProcessor,
    checked_end_of_turn,
    pad_sequences,
    require_chat_template,
)
from speechsum.models.feature_cache import audio_content_key
from speechsum.models.tokenizer import AUDIO_TOKEN
from speechsum.utils.arguments import check_number

PROMPT_CACHE_SIZE = 4096  # distinct instructions whose rendered prompt parts are kept
AUDIO_MARKER = "<<AUDIO>>"  # stands where the audio goes while the chat template is rendered
DEFAULT_USER_PROMPT = "{audio}\n{instruction}"


def stft_ready(waveform: np.ndarray, n_fft: int) -> np.ndarray:
    """``waveform`` with zeros appended up to ``n_fft // 2 + 1`` samples (201 for Whisper) when
    shorter: the log-mel STFT reflects ``n_fft // 2`` samples at each edge, which a clip of a few
    milliseconds does not have (it would fail, and with it every clip batched beside it)."""
    short = n_fft // 2 + 1 - len(waveform)
    return np.pad(waveform, (0, short)) if short > 0 else waveform


def log_mel_frames(num_samples: int, n_fft: int, hop_length: int) -> int:
    """Mel frames Whisper's feature extractor gives a clip of ``num_samples`` samples (unpadded,
    untruncated, after :func:`stft_ready`): its centred STFT has ``1 + n // hop_length`` frames and
    the extractor drops the last, so ``n // hop_length`` with ``n = max(num_samples, n_fft // 2 + 1)``."""
    return max(num_samples, n_fft // 2 + 1) // hop_length


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
        if max_audio_seconds is not None:  # a negative one cut every clip to nothing, blamed on the audio file
            check_number("max_audio_seconds", max_audio_seconds, 0.0, low_open=True, note=" (or null: no limit)")
        self.max_audio_seconds = max_audio_seconds
        self.end_of_turn = checked_end_of_turn(tokenizer, end_of_turn, tokenizer.eos_token, AUDIO_TOKEN)
        self.system_prompt = system_prompt
        self.check_prompt_settings(system_prompt=system_prompt, user_prompt=user_prompt)
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

    def log_mel(self, waveforms: Sequence[np.ndarray], device: str = "cpu") -> tuple[Tensor, Tensor]:
        """Each clip's own log-mel features, zero beyond its end: ``(B, n_mels, T_max)`` float32 on the
        CPU, and its frame count ``(B,)``; ``device``: where the extractor's STFT runs. Per clip, so
        that (with the encoder's padding mask) a clip's audio embeddings do not depend on what else is
        in the batch."""
        features = [
            self.feature_extractor(
                stft_ready(waveform, self.feature_extractor.n_fft), sampling_rate=self.sample_rate,
                padding="longest", truncation=False, return_tensors="pt", device=device,
            )["input_features"][0]
            for waveform in waveforms
        ]
        mel_frames = torch.tensor([f.shape[-1] for f in features])
        input_features = torch.zeros(len(features), features[0].shape[0], int(mel_frames.max()))
        for row, feature in enumerate(features):
            input_features[row, :, : feature.shape[-1]] = feature
        return input_features, mel_frames

    def input_features(self, audio: dict, rows: list[int] | None = None) -> Tensor:
        """Log-mel features ``(len(rows), n_mels, T)`` of the audio dict's clips (all rows when None):
        the processor's ``input_features``, or, where it deferred them (``processor.defer_log_mel``),
        computed now from the dict's ``waveforms`` by :meth:`log_mel` (on the dict's device: on the CPU
        the processor's very values; on a GPU its STFT, within float rounding of them)."""
        if "input_features" in audio:
            return audio["input_features"] if rows is None else audio["input_features"][rows]
        if "waveforms" not in audio:
            raise ValueError("the audio dict has neither `input_features` nor `waveforms`: build it with the model's processor "
                             "(model.processor.encode_prompts)")
        rows = list(range(len(audio["mel_frames"]))) if rows is None else rows
        # float32: a bf16-true trainer casts every float tensor of the batch, the clips too (numpy has no bfloat16)
        waveforms, num_samples = audio["waveforms"].cpu().float(), audio["num_samples"].tolist()
        device = audio["mel_frames"].device  # on a GPU, the STFT of a cache miss runs there
        with torch.autocast(device.type, enabled=False):  # in float32, as the processor computes them (autocast: bf16)
            features, mel_frames = self.log_mel([waveforms[row, : num_samples[row]].numpy() for row in rows], str(device))
        if mel_frames.tolist() != audio["mel_frames"][rows].tolist():
            raise RuntimeError(f"log-mel frame counts {mel_frames.tolist()} differ from the processor's "
                               f"{audio['mel_frames'][rows].tolist()} (a feature extractor of other settings?)")
        return features.to(device)

    defer_log_mel = False  # set by a model whose frozen encoder's frames come from a feature cache

    def encode_prompts(self, waveforms: Sequence[np.ndarray], instructions: Sequence[str]) -> PromptInputs:
        """The prompts, and the audio dict: ``input_features`` ``(B, n_mels, T_max)`` (:meth:`log_mel`),
        ``mel_frames`` ``(B,)`` and ``content_keys``. With ``defer_log_mel`` the dict holds the clips
        instead of their features (``waveforms`` ``(B, N_max)`` float32 zero-padded, ``num_samples``
        ``(B,)``), and the model computes features only for clips its feature cache does not hold
        (:meth:`input_features`): a cached clip needs none, and its log-mel is
        most of the collation's time."""
        if self.defer_log_mel:
            fe = self.feature_extractor
            mel_frames = torch.tensor([log_mel_frames(len(w), fe.n_fft, fe.hop_length) for w in waveforms])
            num_samples = torch.tensor([len(w) for w in waveforms])
            padded = torch.zeros(len(waveforms), max(int(num_samples.max()), 1))
            for row, waveform in enumerate(waveforms):
                padded[row, : len(waveform)] = torch.from_numpy(np.asarray(waveform, dtype=np.float32))
            audio = {"waveforms": padded, "num_samples": num_samples}
        else:
            input_features, mel_frames = self.log_mel(waveforms)
            audio = {"input_features": input_features}
        prompts = []
        for frames, instruction in zip(mel_frames.tolist(), instructions):
            before, after = self._prompt_parts(instruction)
            prompts.append(before + [self.audio_token_id] * self.audio_tokens(frames) + after)
        prompt_ids, prompt_mask = pad_sequences(prompts, self.pad_id, side="left")
        audio |= {"mel_frames": mel_frames, "content_keys": [audio_content_key(w, self.sample_rate) for w in waveforms]}
        return PromptInputs(audio=audio, prompt_ids=prompt_ids, prompt_mask=prompt_mask)

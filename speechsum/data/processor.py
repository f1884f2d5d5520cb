"""Backbone processors: waveforms + text → the tensors a SpeechLLM consumes.

Token layout shared by every stage (B = batch, P = prompt length, R = response length):

- ``prompt_ids``  (B, P) **left**-padded: chat-formatted instruction with the backbone's audio
  placeholder tokens, ending in the assistant turn header, ready for ``generate``;
- ``response_ids`` (B, R) **right**-padded: response tokens ending in the end-of-turn token;
- masks (1 = real token) of the same shapes. Concatenating ``[prompt | response]`` gives one
  training sequence whose response logits sit at positions ``P-1 … P+R-2``.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from speechsum.data.text_checks import reserved_in, reserved_strings
from speechsum.utils.arguments import ConfigFieldError


def require_chat_template(tokenizer: PreTrainedTokenizerBase, owner: str) -> None:
    """ValueError naming ``owner`` when ``tokenizer`` has no chat template (a base LM's tokenizer,
    e.g. GPT-2's): prompts are rendered with it, so this fails when the model is built, not at
    the first batch."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{owner}'s tokenizer has no chat template: set tokenizer.chat_template (e.g. "
                         "speechsum.models.tokenizer.CHATML_TEMPLATE) or pass a tokenizer that has one")


def checked_end_of_turn(tokenizer: PreTrainedTokenizerBase, end_of_turn: str | None, default: str | None,
                        audio_token: str | None = None) -> str:
    """``end_of_turn`` (``default`` when None) once it is one token of ``tokenizer``'s vocabulary and
    not the backbone's ``audio_token``: the token every response ends with and generation stops on;
    else :class:`ConfigFieldError` when the model is built. A blank one was taken as the eos token
    without a word; one outside the vocabulary (``nope``, two words) failed at the first batch with a
    traceback, and so did the audio placeholder (its count no longer matched the clips' frames)."""
    if end_of_turn is not None and (not isinstance(end_of_turn, str) or not end_of_turn.strip()):
        raise ConfigFieldError("", "end_of_turn", f"{end_of_turn!r} is no token: leave it out (null) for the "
                               f"default {default!r}, or give one token of the tokenizer's vocabulary", end_of_turn)
    token = default if end_of_turn is None else end_of_turn
    token_id = tokenizer.convert_tokens_to_ids(token) if token is not None else None
    if token_id is None or token_id == tokenizer.unk_token_id or token == audio_token:
        specials = [t for t in tokenizer.all_special_tokens if t not in (tokenizer.unk_token, audio_token)][:6]
        given = ("the tokenizer has no eos token" if token is None else
                 f"{token!r} is the audio placeholder" if token == audio_token else
                 f"{token!r} is not one token of the tokenizer's vocabulary")
        raise ConfigFieldError("", "end_of_turn", f"{given}: give one of its tokens that ends a turn (its special "
                               f"tokens: {', '.join(map(repr, specials)) or 'none'})", end_of_turn)
    return token


def at_least_one_window(waveform: np.ndarray, window: int) -> np.ndarray:
    """``waveform`` as float32, padded with silence to ``window`` samples when shorter: native
    feature extractors give a clip under one analysis window no audio token (or fail on it)."""
    waveform = np.asarray(waveform, dtype=np.float32)
    return waveform if len(waveform) >= window else np.pad(waveform, (0, window - len(waveform)))


def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[Tensor, Tensor]:
    """Pad token lists to one ``(B, L)`` long tensor on ``side`` ("left"/"right"); returns (ids, mask)."""
    length = max((len(s) for s in sequences), default=0)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if not sequence:
            continue
        span = slice(length - len(sequence), length) if side == "left" else slice(0, len(sequence))
        ids[row, span] = torch.tensor(list(sequence), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


@dataclass
class PromptInputs:
    """What ``SpeechProcessor.encode_prompts`` returns."""

    audio: dict[str, Tensor]  # backbone-specific audio tensors (features, masks, sizes)
    prompt_ids: Tensor  # (B, P) left-padded
    prompt_mask: Tensor  # (B, P)


class SpeechProcessor(ABC):
    """Formats prompts and responses for one backbone; used by the collator and by generation."""

    sample_rate: int = 16_000
    max_audio_seconds: float | None = None  # the encoder's longest input, if it has one
    tokenizer: PreTrainedTokenizerBase
    end_of_turn: str  # appended to every response; generation stops on it
    system_prompt: str | None = None
    context_length: int | None = None  # positions the LM reads (prompt + response); set by the backbone

    @functools.cached_property
    def reserved_text(self) -> tuple[str, ...]:
        """The tokenizer's special tokens as text, which no text the model reads may hold
        (:func:`speechsum.data.text_checks.reserved_strings`; worked out once)."""
        return reserved_strings(self.tokenizer)

    def check_prompt_settings(self, **texts: str | None) -> None:
        """:class:`ConfigFieldError` for the first prompt setting of ``texts`` (``system_prompt="..."``)
        that holds a special token of the tokenizer: ``<|audio|>`` added a position no audio filled (a
        traceback at the first batch), ``<|im_end|>`` closed the turn early, without a word."""
        for name, text in texts.items():
            problem = reserved_in(text, self.reserved_text) if isinstance(text, str) else None
            if problem:
                raise ConfigFieldError("", name, problem, text)

    def prompt_positions_at_least(self, prompt_ids: Tensor, prompt_mask: Tensor) -> Tensor:
        """``(B,)`` positions the LM reads for each prompt, at least: exact, unless the model drops
        audio positions itself (a CTC-compressing backbone's processor counts its text only)."""
        return prompt_mask.sum(1)

    def chat_messages(self, user_content: str | list) -> list[dict]:
        """One user turn holding the audio and the instruction, after the system prompt if any."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [{"role": "user", "content": user_content}]

    @abstractmethod
    def encode_prompts(self, waveforms: Sequence[np.ndarray], instructions: Sequence[str]) -> PromptInputs:
        """Audio features and left-padded prompt ids for a batch of (waveform, instruction)."""

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else self.end_token_id

    @property
    def end_token_id(self) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(self.end_of_turn)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"end-of-turn token {self.end_of_turn!r} is not in the tokenizer's vocabulary")
        return token_id

    # more ids that end a response, e.g. a saved model's generation_config eos ids (set by the backbone)
    extra_stop_token_ids: tuple[int, ...] = ()

    @property
    def stop_token_ids(self) -> list[int]:
        """Token ids that end a generated response: end-of-turn, the tokenizer's eos and
        ``extra_stop_token_ids``."""
        ids = {self.end_token_id, *self.extra_stop_token_ids}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return sorted(ids)

    def encode_responses(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Right-padded ``(B, R)`` response ids, each ending in the end-of-turn token; and mask."""
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return pad_sequences([ids + [self.end_token_id] for ids in encoded], self.pad_id, side="right")

    def decode_responses(self, response_ids: Tensor, response_mask: Tensor) -> list[str]:
        """Text of each response, without padding and stop tokens."""
        stops = set(self.stop_token_ids)
        texts = []
        for ids, mask in zip(response_ids.tolist(), response_mask.tolist()):
            kept = [t for t, m in zip(ids, mask) if m and t not in stops]
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=True).strip())
        return texts

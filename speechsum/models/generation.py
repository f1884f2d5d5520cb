"""Decoding settings and the one generate → decode → truncation-check helper that validation
samples, ``predict``, KD rollouts, ``speechsum evaluate`` and ``speechsum pairs`` share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from speechsum.data.batch import SpeechBatch
from speechsum.models.base import SpeechLLM
from speechsum.models.sampling import check_decoding


@dataclass
class GenerationSettings:
    """Decoding for validation samples and ``predict``: greedy unless ``do_sample``."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    def check(self, name: str = "generation", context: int | None = None) -> None:
        """:class:`~speechsum.utils.arguments.ConfigError` naming ``name.field`` for a value no
        decoding can use (the temperature and top_p are checked also when greedy: a config that
        turns sampling on later must not fail then); ``context``: the LM's, which bounds
        ``max_new_tokens`` (:func:`~speechsum.models.sampling.check_decoding`)."""
        check_decoding(f"{name}.", self.max_new_tokens, self.temperature, self.top_p, context)


@dataclass
class GeneratedTexts:
    """What :func:`generate_texts` returns; rows as ``SpeechLLM.generate``'s (``B · n``, row
    ``b · n + k`` the k-th sample of example b).

    ``ids`` / ``mask`` (rows, N): the new tokens and the mask up to and including the first stop
    token; ``texts`` the decoded responses; ``truncated`` (rows,) bool: no stop token, i.e. cut at
    ``max_new_tokens``; ``num_tokens`` (rows,) int: response length in tokens (``mask.sum(-1)``).
    """

    ids: Tensor
    mask: Tensor
    texts: list[str]
    truncated: Tensor
    num_tokens: Tensor


def generate_texts(
    model: SpeechLLM, batch: SpeechBatch, settings: GenerationSettings, num_return_sequences: int = 1,
    step_check: Callable[[Tensor], Tensor | None] | None = None,
) -> GeneratedTexts:
    """``model.generate`` with ``settings``, decoded by the model's processor, with the truncation flag;
    ``step_check`` is called before each new token with the new tokens so far (:meth:`SpeechLLM.generate`)."""
    checked = {"step_check": step_check} if step_check is not None else {}
    ids, mask = model.generate(batch, **asdict(settings), num_return_sequences=num_return_sequences, **checked)
    processor = model.processor
    stops = torch.tensor(processor.stop_token_ids, device=ids.device)
    truncated = ~torch.isin(ids, stops).any(dim=-1)
    return GeneratedTexts(ids, mask, processor.decode_responses(ids, mask), truncated, mask.sum(dim=-1))

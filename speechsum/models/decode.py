"""The token loop of :meth:`speechsum.models.base.SpeechLLM.generate` without HF ``generate``.

:func:`decode` prefills the prompt through the model's own forward (with a ``DynamicCache``),
then steps a :class:`~speechsum.models.static_decoder.StaticCacheDecoder`, choosing each token as
``generate`` with ``do_sample=False`` does: scores in float32, suppressed ids set to −inf, then the
extra logits processors (temperature, top-p, Gumbel-max noise for sampling), then argmax; rows that
emitted a stop token get ``pad_id`` afterwards, and the loop ends when every row has stopped or
after ``max_new_tokens``. With the same processors, the same random-number draws and the same
logits it returns the same tokens as ``generate``; its tests check that against ``generate``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn
from transformers import DynamicCache, LogitsProcessorList

from speechsum.models.static_decoder import StaticCacheDecoder, unsupported_reason

log = logging.getLogger(__name__)

PrefillFn = Callable[[DynamicCache, Tensor], Tensor]  # (cache, position ids (B, L)) → last logits (B, V)
_fallbacks_logged: set[str] = set()


def generation_positions(attention_mask: Tensor) -> Tensor:
    """Position ids ``(B, L)`` as HF ``generate`` derives them: ``cumsum(mask) - 1``, 0 where masked."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def fast_path_reason(model: nn.Module) -> str | None:
    """None when :func:`decode` can run ``model``; else the reason, logged once per reason so a
    fallback to HF ``generate`` is never silent."""
    reason = unsupported_reason(model)
    if reason is not None and reason not in _fallbacks_logged:
        _fallbacks_logged.add(reason)
        log.info("decoding with HF generate (slower per token): %s", reason)
    return reason


@torch.no_grad()
def decode(
    model: nn.Module,
    prefill: PrefillFn,
    attention_mask: Tensor,
    max_new_tokens: int,
    stop_ids: list[int],
    pad_id: int,
    suppress_ids: list[int] = (),
    logits_processor: LogitsProcessorList | None = None,
    prompt_ids: Tensor | None = None,
) -> Tensor:
    """New token ids ``(B, N)``, ``N <= max_new_tokens``, as HF ``generate(do_sample=False)``.

    Args:
        model: the causal LM (``get_output_embeddings`` and a decoder stack, see
            :func:`~speechsum.models.static_decoder.unsupported_reason`).
        prefill: runs the prompt through the model's forward with the given cache and position
            ids ``(B, L)``; returns the last position's logits ``(B, V)``.
        attention_mask: ``(B, L)`` prompt positions attended to (left padding, compressed audio).
        stop_ids: a row is done after emitting any of these; later tokens of it are ``pad_id``.
        suppress_ids: ids never generated (their score is −inf).
        logits_processor: applied to the float32 scores ``(B, V)`` after suppression, e.g.
            :func:`speechsum.models.base.sampling_processors`.
        prompt_ids: ``(B, L)`` ids the processors see before the new tokens (``(B, 0)`` if None,
            as ``generate`` with ``inputs_embeds``).
    """
    batch, device = attention_mask.shape[0], attention_mask.device
    positions = generation_positions(attention_mask)
    cache = DynamicCache(config=model.config)
    logits = prefill(cache, positions)
    decoder = StaticCacheDecoder(model, cache, attention_mask, positions[:, -1] + 1, max_new_tokens)
    del cache
    vocab = logits.shape[-1]
    suppressed = torch.zeros(vocab, dtype=torch.bool, device=device)
    suppressed[[i for i in suppress_ids if i < vocab]] = True
    stops = torch.tensor(stop_ids, device=device)
    seen = prompt_ids if prompt_ids is not None else torch.zeros(batch, 0, dtype=torch.long, device=device)
    sequence = torch.cat([seen, seen.new_full((batch, max_new_tokens), pad_id)], dim=1)
    start = seen.shape[1]
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    steps = 0
    for t in range(max_new_tokens):
        scores = logits.float().masked_fill(suppressed, float("-inf"))
        if logits_processor:
            scores = logits_processor(sequence[:, : start + t], scores)
        tokens = scores.argmax(-1).masked_fill(~unfinished, pad_id)
        sequence[:, start + t] = tokens
        unfinished &= ~torch.isin(tokens, stops)
        steps = t + 1
        if steps == max_new_tokens or not bool(unfinished.any()):
            break
        logits = decoder.step(tokens, t)
    return sequence[:, start : start + steps]

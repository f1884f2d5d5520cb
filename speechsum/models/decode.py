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
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformers import DynamicCache, LogitsProcessorList

from speechsum.models.sampling import check_finite_scores
from speechsum.models.static_decoder import StaticCacheDecoder, unsupported_reason

log = logging.getLogger(__name__)
_fallbacks_logged: set[str] = set()


@dataclass
class Prompt:
    """What the prefill feeds the causal LM: token ``ids`` ``(B, L)`` or input ``embeds``
    ``(B, L, C)``, the attention ``mask`` ``(B, L)`` (left padding; 0 also on compressed-away audio
    positions) and ``extra`` forward keyword arguments (a native backbone's audio features)."""

    mask: Tensor
    ids: Tensor | None = None
    embeds: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)

    def attended_only(self) -> Prompt:
        """The same prompt without its masked positions (each row's attended positions, left-padded
        to the longest row), when it is given as embeddings: masked keys take no part in attention
        and no position id, so the LM computes the same logits from a shorter prefill and cache.
        Ids with extra inputs (placeholders the model fills itself) are returned unchanged."""
        if self.extra or (self.embeds is None and self.ids is None):
            return self
        order = left_packed_order(self.mask.bool())
        if order is None:
            return self
        mask = torch.gather(self.mask, 1, order)
        if self.embeds is not None:
            embeds = torch.gather(self.embeds, 1, order[..., None].expand(-1, -1, self.embeds.shape[-1]))
            return Prompt(mask, embeds=embeds)
        return Prompt(mask, ids=torch.gather(self.ids, 1, order))


def left_packed_order(keep: Tensor) -> Tensor | None:
    """Gather indices ``(B, W)`` that move each row's ``keep`` positions ``(B, L)`` bool to its end,
    in their order, W = the most any row keeps (a shorter row starts with some of its other
    positions, as left padding); None when every position is kept."""
    width = int(keep.sum(1).max())
    if width == keep.shape[1] and bool(keep[:, -width:].all()):
        return None
    # stable sort: the other positions first, the kept ones after in their order
    return torch.sort(keep.to(torch.int8), dim=1, stable=True).indices[:, -width:]


def drop_compressed_audio(embeds: Tensor, mask: Tensor, is_audio: Tensor) -> tuple[Tensor, Tensor]:
    """``embeds`` ``(B, L, C)`` and ``mask`` ``(B, L)`` without the audio positions CTC compression
    masked (``is_audio`` and mask 0), each row's other positions kept in order and ending at the
    last column, shorter rows left-padded with masked positions. Masked keys take no part in
    attention and no position id, so the LM gives every remaining position the same logits from
    a sequence that is often half as long (a 30-s clip: 375 audio positions, ~25-40 % attended),
    except under sliding-window attention, whose window spans sequence slots, masked ones too:
    there only the packed sequence is what training scores, so generation packs it as well."""
    order = left_packed_order(~(is_audio & (mask == 0)))
    if order is None:
        return embeds, mask
    return torch.gather(embeds, 1, order[..., None].expand(-1, -1, embeds.shape[-1])), torch.gather(mask, 1, order)


def generation_positions(attention_mask: Tensor) -> Tensor:
    """Position ids ``(B, L)`` as HF ``generate`` derives them: ``cumsum(mask) - 1``, 0 where masked."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def fast_path_reason(model: nn.Module, max_position: int = 0) -> str | None:
    """None when :func:`decode` can run ``model`` up to position id ``max_position``; else the
    reason, logged once per reason so a fallback to HF ``generate`` is never silent."""
    reason = unsupported_reason(model, max_position)
    if reason is not None and reason not in _fallbacks_logged:
        _fallbacks_logged.add(reason)
        log.info("decoding with HF generate (slower per token): %s", reason)
    return reason


@torch.no_grad()
def decode(
    model: nn.Module,
    prompt: Prompt,
    max_new_tokens: int,
    stop_ids: list[int],
    pad_id: int,
    suppress_ids: list[int] = (),
    logits_processor: LogitsProcessorList | None = None,
    processor_ids: Tensor | None = None,
) -> Tensor:
    """New token ids ``(B, N)``, ``N <= max_new_tokens``, as HF ``generate(do_sample=False)``.

    Args:
        model: the causal LM (``get_output_embeddings`` and a decoder stack, see
            :func:`~speechsum.models.static_decoder.unsupported_reason`).
        prompt: what the prefill (``model``'s own forward, into a ``DynamicCache``) reads; its
            masked positions are dropped first where that is possible (:meth:`Prompt.attended_only`).
        stop_ids: a row is done after emitting any of these; later tokens of it are ``pad_id``.
        suppress_ids: ids never generated (their score is −inf).
        logits_processor: applied to the float32 scores ``(B, V)`` after suppression, e.g.
            :func:`speechsum.models.sampling.sampling_processors`.
        processor_ids: ``(B, L)`` ids the processors see before the new tokens (``(B, 0)`` if
            None, as ``generate`` with ``inputs_embeds``).
    """
    batch, device = prompt.mask.shape[0], prompt.mask.device
    first_position = generation_positions(prompt.mask)[:, -1] + 1
    prompt = prompt.attended_only()
    cache = DynamicCache(config=model.config)
    outputs = model(input_ids=prompt.ids, inputs_embeds=prompt.embeds, attention_mask=prompt.mask,
                    position_ids=generation_positions(prompt.mask), **prompt.extra, cache=cache, use_cache=True,
                    logits_to_keep=1)
    logits = outputs.logits[:, -1]
    decoder = StaticCacheDecoder(model, cache, prompt.mask, first_position, max_new_tokens)
    del cache, outputs
    vocab = logits.shape[-1]
    suppressed = torch.zeros(vocab, dtype=torch.bool, device=device)
    suppressed[[i for i in suppress_ids if i < vocab]] = True
    stops = torch.tensor(stop_ids, device=device)
    seen = processor_ids if processor_ids is not None else torch.zeros(batch, 0, dtype=torch.long, device=device)
    sequence = torch.cat([seen, seen.new_full((batch, max_new_tokens), pad_id)], dim=1)
    start = seen.shape[1]
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    # a stopped row's token is pad_id whatever it scores: its processors see one finite id (the
    # off-distribution scores after a stop token would widen the nucleus filter's work for nothing)
    stopped_scores = torch.full((vocab,), float("-inf"), device=device).index_fill(0, torch.tensor([0], device=device), 0.0)
    steps = 0
    for t in range(max_new_tokens):
        scores = logits.float().masked_fill(suppressed, float("-inf"))
        if logits_processor:
            scores = logits_processor(sequence[:, : start + t], torch.where(unfinished[:, None], scores, stopped_scores))
        best, tokens = scores.max(-1)  # = argmax (first of ties), faster on CPU
        check_finite_scores(best, t)  # NaN / inf logits: a clear error, as the HF fallback's FiniteScores
        tokens = tokens.masked_fill(~unfinished, pad_id)
        sequence[:, start + t] = tokens
        unfinished &= ~torch.isin(tokens, stops)
        steps = t + 1
        if steps == max_new_tokens or not bool(unfinished.any()):
            break
        logits = decoder.step(tokens, t)
    return sequence[:, start : start + steps]

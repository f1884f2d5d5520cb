"""The processors that turn greedy decoding into sampling: temperature, a nucleus (top-p) filter
that sorts only the few most likely ids, and Gumbel-max noise. Shared by :func:`speechsum.models.decode.decode`
and the HF ``generate`` fallback, so both draw the same tokens from the same random numbers."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TopPLogitsWarper

from speechsum.utils.arguments import ConfigError, check_count, check_number


class GumbelMaxSampler(LogitsProcessor):
    """Exact categorical sampling inside greedy decoding (the Gumbel-max trick): with
    ``g_v = −log(−log u_v)``, ``u_v ~ U(0, 1)`` i.i.d., ``argmax_v(scores_v + g_v)`` is distributed as
    ``softmax(scores)``. Returns the perturbed scores, so ``generate``'s argmax draws the sample.
    Same distribution as ``softmax`` + ``torch.multinomial`` (which draws an exponential per
    vocabulary entry: about 3× slower on CPU); −inf scores (suppressed / top-p-filtered ids)
    stay −inf and are never drawn."""

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        noise = torch.empty_like(scores, dtype=torch.float32).uniform_()
        noise.clamp_(min=torch.finfo(torch.float32).tiny).log_().neg_().log_()  # −g = log(−log u)
        return scores.float() - noise


class Temperature(LogitsProcessor):
    """``scores / temperature`` in float32 (HF's ``TemperatureLogitsWarper`` on float32 scores, bit for
    bit; bf16 / fp16 scores are scaled in float32 too: fp16 ones cannot overflow there). A row whose scaled
    scores overflow to +inf (a logit above ``temperature`` × 3.4e38: a temperature just above
    ``GREEDY_BELOW`` with extreme logits) takes the limit of sampling as the temperature goes to 0: its
    argmax alone stays finite, so it decodes greedily. Before 2026-12-07 the later argmax over several
    +inf scores drew the first of them (the top-p filter's NaNs: the first id), not the likeliest. A
    temperature beyond float32 (above 3.4e38, which is +inf there) gives the limit T -> inf: every id not
    at −inf scores 0 (uniform); before, −inf / inf was NaN and every token the suppressed audio placeholder."""

    def __init__(self, temperature: float) -> None:
        if not temperature > 0.0:
            raise ValueError(f"temperature must be above 0, got {temperature}")
        self.temperature = temperature
        self.uniform = bool(torch.tensor(float(temperature), dtype=torch.float32).isinf())

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.uniform:
            return torch.zeros_like(scores, dtype=torch.float32).masked_fill_(scores == float("-inf"), float("-inf"))
        scaled = scores.float() / self.temperature
        if not bool(scaled.amax() == float("inf")):  # one reduction per step in the usual case
            return scaled
        rows = ((scaled == float("inf")) & torch.isfinite(scores)).any(-1)
        only_argmax = torch.full_like(scaled, float("-inf")).scatter_(-1, scores.float().argmax(-1, keepdim=True), 0.0)
        return torch.where(rows[:, None], only_argmax, scaled)


class NucleusFilter(LogitsProcessor):
    """Top-p filtering, the rule of HF's ``TopPLogitsWarper`` (``min_tokens_to_keep=1``): an id is
    kept iff the probability of the ids ranked above it is below ``top_p``, the most likely id always;
    the others get −inf.

    Sorting the whole vocabulary every step (``TopPLogitsWarper``; ≈ 1.5 ms for 8 × 4,096 on one
    CPU thread) is the costliest part of a sampled decoding step. A trained LM's nucleus is a few
    ids, so this ranks only the ``candidates`` most likely (``topk``, ≈ 0.13 ms): when they hold at
    least ``top_p`` of a row's probability every id outside them is dropped anyway, and the rule
    is applied among them; rows whose nucleus is wider (or whose scores hold a NaN) go through
    ``TopPLogitsWarper``. The kept ids are the warper's up to float rounding of the cumulative sums
    (an id whose rank mass is within ~1e-6 of ``top_p`` may fall on the other side: the two sum in
    different orders) and up to which of several equal scores at the boundary is kept (the warper's
    sort does not order ties)."""

    def __init__(self, top_p: float, candidates: int = 64):
        if not 0.0 <= top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {top_p}")
        self.top_p, self.candidates = top_p, candidates
        self.full_sort = TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.top_p >= 1.0:
            return scores
        if self.candidates >= scores.shape[-1]:
            return self.full_sort(input_ids, scores)
        scores = scores.float()
        top_scores, top_ids = scores.topk(self.candidates, dim=-1)  # descending
        top_probs = (top_scores - scores.logsumexp(-1, keepdim=True)).exp()
        held = top_probs.cumsum(-1)
        keep = held - top_probs < self.top_p  # mass ranked above each candidate
        keep[:, 0] = True
        filtered = torch.full_like(scores, float("-inf")).scatter_(
            -1, top_ids, top_scores.masked_fill(~keep, float("-inf")))
        wide = ~(held[:, -1] >= self.top_p)  # ids beyond the candidates belong to the nucleus too (or NaN)
        if bool(wide.any()):
            filtered[wide] = self.full_sort(input_ids[wide], scores[wide])
        return filtered


def sampling_processors(temperature: float, top_p: float) -> LogitsProcessorList:
    """:class:`Temperature`, :class:`NucleusFilter` and :class:`GumbelMaxSampler`, in the order ``generate``
    applies its own sampling warpers (after the other processors, e.g. suppressed tokens)."""
    processors = LogitsProcessorList()
    if temperature != 1.0:
        processors.append(Temperature(temperature))
    if top_p < 1.0:
        processors.append(NucleusFilter(top_p))
    processors.append(GumbelMaxSampler())
    return processors


class StepCheck(LogitsProcessor):
    """Calls ``check(new_tokens)`` before each new token is chosen, with the tokens chosen so far
    (``(rows, t)``; ``(rows, 0)`` at the first step), scores unchanged: a caller's way to end a
    generation early by raising from it (``speechsum serve``: a client gone mid-answer) or to read
    the tokens as they come (a streamed answer). A ``(rows,)`` bool tensor it returns ends those rows
    now: :class:`EndRows` gives them ``stop_id`` (a stop string found in their text)."""

    def __init__(self, check: Callable[[Tensor], Tensor | None]) -> None:
        self.check, self.start, self.ending = check, None, None

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.start is None:  # the first step: what the processors see before any new token (a prompt, or none)
            self.start = input_ids.shape[1]
        self.ending = self.check(input_ids[:, self.start:])
        return scores


class EndRows(LogitsProcessor):
    """The last processor: the rows its :class:`StepCheck` returned take ``stop_id`` (every other
    score −inf), after every sampler drew its numbers, so the other rows' tokens are unchanged."""

    def __init__(self, step: StepCheck, stop_id: int) -> None:
        self.step, self.stop_id = step, stop_id

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        rows = self.step.ending
        if rows is None or not bool(rows.any()):
            return scores
        ended = torch.full_like(scores[0], float("-inf")).index_fill(0, torch.tensor([self.stop_id], device=scores.device), 0.0)
        return torch.where(rows.to(scores.device)[:, None], ended, scores)


def check_finite_scores(best: Tensor, step: int) -> None:
    """A ``ValueError`` when a row's best score ``best`` ``(rows,)`` at new token ``step`` (0-based) is NaN
    or ±inf: the LM's logits overflowed its dtype, and the argmax was the first id (token 0 on every step)."""
    bad = ~torch.isfinite(best)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(f"generate(): the LM's logits for rows {rows[:8]}{' …' if len(rows) > 8 else ''} at new token "
                         f"{step} are not finite (NaN or inf): its weights or activations overflowed their dtype "
                         "(float16 ends at 65,504); load the LM in bfloat16 or float32 (dtype), or check its weights")


class FiniteScores(LogitsProcessor):
    """The HF ``generate`` fallback's last processor: :func:`check_finite_scores` on each step's scores,
    which it returns unchanged (the fast path checks the same in its loop)."""

    def __init__(self) -> None:
        self.step = 0

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        check_finite_scores(scores.max(-1).values, self.step)
        self.step += 1
        return scores


def with_step_check(processors: LogitsProcessorList | None, check: Callable[[Tensor], Tensor | None] | None,
                    stop_id: int) -> LogitsProcessorList | None:
    """``processors`` with a :class:`StepCheck` of ``check`` first and its :class:`EndRows` (ending rows
    with ``stop_id``) last; ``processors`` as they are without one."""
    if check is None:
        return processors
    step = StepCheck(check)
    return LogitsProcessorList([step, *(processors or []), EndRows(step, stop_id)])


def check_decoding(prefix: str, max_new_tokens: int, temperature: float | None = None, top_p: float | None = None,
                   context: int | None = None) -> None:
    """:class:`~speechsum.utils.arguments.ConfigError` for decoding settings no generation can use,
    named ``prefix`` + the field (``generation.top_p``): ``max_new_tokens`` an integer ≥ 1 and at
    most the LM's ``context`` (prompt and completion share it; a larger value only made the decoder
    allocate its cache for it: gigabytes, or an allocation error); ``temperature`` (None: not
    checked) a finite number above 0; ``top_p`` (None: not checked) in (0, 1]."""
    check_count(f"{prefix}max_new_tokens", max_new_tokens, 1)
    if context is not None and max_new_tokens > context:
        raise ConfigError(f"{prefix}max_new_tokens must be at most the LM's context of {context} positions (the prompt "
                          f"and the completion share it), got {max_new_tokens}; lower it")
    if temperature is not None:
        check_number(f"{prefix}temperature", temperature, 0.0, low_open=True)
    if top_p is not None:
        check_number(f"{prefix}top_p", top_p, 0.0, 1.0, low_open=True)

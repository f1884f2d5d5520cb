"""A loopback server whose ``POST /v1/completions`` answers as vLLM's OpenAI server does, from a
scripted next-token distribution (no model): what the remote KD teacher meets in production.

Everything below is copied from vLLM's code (github.com/vllm-project/vllm, main; file @ commit as
read for this server), not from its docs:

- Request → sampling parameters, ``vllm/entrypoints/openai/completion/protocol.py`` @002032ee,
  ``CompletionRequest.to_sampling_params``: ``prompt_logprobs`` defaults to ``logprobs`` under
  ``echo``; ``echo`` with ``max_tokens: 0`` ("echo_without_generation") runs the engine for one
  token that the answer drops. Without ``echo``, ``max_tokens: 0`` reaches ``SamplingParams``
  as 0 (``get_max_tokens``, ``vllm/entrypoints/serve/utils/api_utils.py`` @00a5fdd2) and
  ``SamplingParams._verify_args`` (``vllm/sampling_params.py`` @00388f65) refuses it:
  "max_tokens must be at least 1, got 0."
- ``SamplingParams._validate_logprobs`` (same file): ``logprobs`` / ``prompt_logprobs`` above
  ``--max-logprobs`` (``max_logprobs``, default 20) → "Requested sample|prompt logprobs of k, which
  is greater than max allowed: m" (sample first, so an echo request names ``logprobs``).
- Context length, ``vllm/renderers/params.py`` @017638d7 ``TokenizeParams._token_len_check``
  with ``max_output_tokens = max_tokens or 0`` (``CompletionRequest.build_tok_params``).
- Errors, ``vllm/entrypoints/utils.py`` @00fc8809 ``create_error_response``: HTTP 400,
  ``{"error": {"message", "type": "BadRequestError", "param", "code": 400}}``; the message is
  ``str(VLLMValidationError)``, which ends in "(parameter=…, value=…)".
- Per prompt position t ≥ 1 the engine keeps a dict ``{scored token: Logprob(rank=its rank),
  top-1..top-k: ranks 1..k}`` in that insertion order; a scored token inside the top-k collapses
  into one entry, so the dict has k or k + 1 entries (``vllm/logprobs.py``
  ``append_logprobs_for_next_position``); position 0 is None. Ranks count the values ≥ the
  token's (``batched_count_greater_than``); ``torch.topk`` orders ties arbitrarily (here: by id).
- The answer, ``vllm/entrypoints/openai/completion/serving.py`` @030ea52e
  ``request_output_to_completion_response``: with ``echo`` and ``max_tokens: 0`` the choice's
  ``text`` is the prompt text and ``logprobs`` (only when ``logprobs`` was asked) come from
  ``_create_completion_logprobs`` over the prompt: ``tokens`` "token_id:N"
  (``return_tokens_as_token_ids``), ``token_logprobs`` ``max(lp, -9999.0)`` (None at position 0),
  ``top_logprobs`` the first ``logprobs + 1`` entries of the position's dict, values
  ``max(lp, -9999.0)`` (None at 0), ``text_offset`` summing the lengths of those token strings;
  the choice's ``prompt_logprobs`` is the engine's list after ``clamp_prompt_logprobs`` (-inf →
  -9999.0; it mutates in place, so both fields carry the clamp), ids as JSON object keys.
- The JSON, ``completion/api_router.py`` @00cd8fcf: ``JSONResponse(response.model_dump())``, so
  every field of ``CompletionResponse`` / ``CompletionResponseChoice`` / ``UsageInfo`` is present,
  None ones included, in declaration order (starlette refuses NaN/inf, hence the -9999.0 clamp).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tests.servers import JSONServer

CLAMP = -9999.0  # vLLM's JSON stand-in for -inf
Distribution = Callable[[list[int]], dict[int, float]]  # prefix → log-prob of every next token id


class ValidationError(Exception):
    """vLLM's ``VLLMValidationError``: ``str()`` appends the parameter and value."""

    def __init__(self, message: str, parameter: str, value: Any) -> None:
        super().__init__(f"{message} (parameter={parameter}, value={value})")
        self.parameter = parameter


def _position(distribution: dict[int, float], token: int, k: int) -> dict[int, dict]:
    """The engine's dict for one prompt position: the scored token first (its rank), then top-1..k."""
    value = distribution[token]
    rank = sum(v >= value for v in distribution.values())
    top = sorted(distribution.items(), key=lambda item: (-item[1], item[0]))[:k]
    entries = [(token, value, rank)] + [(i, v, r) for r, (i, v) in enumerate(top, start=1)]
    return {i: {"logprob": max(v, CLAMP), "rank": r, "decoded_token": f"<{i}>"} for i, v, r in entries}


def _validate(body: dict, max_logprobs: int, max_model_len: int) -> tuple[list[int], int | None, int | None]:
    prompt, echo, max_tokens = body["prompt"], bool(body.get("echo")), body.get("max_tokens")
    max_tokens = 16 if max_tokens is None else max_tokens  # normalize_null_max_tokens
    logprobs, prompt_logprobs = body.get("logprobs"), body.get("prompt_logprobs")
    room = max_model_len - max_tokens
    if len(prompt) > room:  # TokenizeParams._token_len_check
        raise ValidationError(
            f"You passed {len(prompt)} input tokens and requested {max_tokens} output tokens. However, the "
            f"model's context length is only {max_model_len} tokens, resulting in a maximum input length of "
            f"{room} tokens. Please reduce the length of the input prompt.", "input_tokens", len(prompt))
    if prompt_logprobs is None and echo:
        prompt_logprobs = logprobs
    engine_max_tokens = 1 if echo and max_tokens == 0 else min(max_tokens, max_model_len - len(prompt))
    if engine_max_tokens < 1:
        raise ValidationError(f"max_tokens must be at least 1, got {engine_max_tokens}.", "max_tokens", engine_max_tokens)
    for kind, name, asked in (("sample", "logprobs", logprobs), ("prompt", "prompt_logprobs", prompt_logprobs)):
        if asked and asked > max_logprobs:
            raise ValidationError(f"Requested {kind} logprobs of {asked}, which is greater than max allowed: "
                                  f"{max_logprobs}", name, asked)
    return prompt, logprobs, prompt_logprobs


def completion_response(body: dict, distribution: Distribution, max_logprobs: int, max_model_len: int) -> dict:
    """What vLLM sends for a scoring request (``echo``, ``max_tokens: 0``); raises
    :class:`ValidationError` where vLLM answers 400."""
    prompt, logprobs, prompt_logprobs = _validate(body, max_logprobs, max_model_len)
    if not (body.get("echo") and body.get("max_tokens") == 0):
        raise NotImplementedError("this server only scores (echo with max_tokens 0)")
    k = prompt_logprobs or 0
    positions = [None] + [_position(distribution(prompt[:t]), prompt[t], k) for t in range(1, len(prompt))]
    legacy = None
    if logprobs is not None:
        as_ids = body.get("return_tokens_as_token_ids")
        name = (lambda i: f"token_id:{i}") if as_ids else (lambda i: f"<{i}>")
        tokens = [name(i) for i in prompt]
        legacy = {
            "text_offset": [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))],
            "token_logprobs": [None if p is None else p[i]["logprob"] for p, i in zip(positions, prompt)],
            "tokens": tokens,
            "top_logprobs": [None if p is None else {name(i): e["logprob"] for n, (i, e) in enumerate(p.items())
                                                     if logprobs >= n} for p in positions],
        }
    choice = {
        "index": 0, "text": "".join(f"<{i}>" for i in prompt), "logprobs": legacy, "finish_reason": "length",
        "stop_reason": None, "token_ids": None,
        "prompt_logprobs": positions if prompt_logprobs is not None else None,
        "prompt_token_ids": None, "routed_experts": None,
    }
    usage = {"prompt_tokens": len(prompt), "total_tokens": len(prompt), "completion_tokens": 0,
             "prompt_tokens_details": None}
    return {"id": "cmpl-scripted", "object": "text_completion", "created": 0, "model": body.get("model"),
            "choices": [choice], "service_tier": None, "system_fingerprint": None, "usage": usage,
            "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}


class VLLMServer(JSONServer):
    """``with VLLMServer(distribution, max_logprobs=20, max_model_len=4096) as server``: ``server.url``
    (the base URL, ``…/v1``), ``server.bodies`` (the JSON requests received)."""

    def __init__(self, distribution: Distribution, max_logprobs: int = 20, max_model_len: int = 4096) -> None:
        self.bodies: list[dict] = []

        def answer(body: dict) -> dict | tuple[int, dict]:
            self.bodies.append(body)
            try:
                return completion_response(body, distribution, max_logprobs, max_model_len)
            except ValidationError as error:
                return 400, {"error": {"message": str(error), "type": "BadRequestError", "param": error.parameter,
                                       "code": 400}}

        super().__init__(answer)


def scripted_distribution(vocab: int, k: int) -> Distribution:
    """A deterministic next-token distribution per prefix with what vLLM can send: ties (values
    rounded to 0.5 before normalising), tokens at -inf (sent as -9999.0), and positions with fewer
    than ``k`` finite tokens (so -9999.0 fills the top-k)."""

    def distribution(prefix: list[int]) -> dict[int, float]:
        seed = (len(prefix) * 7919 + prefix[-1] * 104729) % 2**31
        logits = [round(((seed * (i + 1) * 2654435761) % 1000) / 100) / 2 for i in range(vocab)]
        finite = 3 if len(prefix) % 5 == 0 else vocab  # every fifth position: 3 finite tokens only
        keep = {prefix[-1] % vocab, *((seed + j * 31) % vocab for j in range(finite))}
        keep |= set(range(vocab)) if finite == vocab else set()
        total = math.log(sum(math.exp(logits[i]) for i in keep))
        return {i: (logits[i] - total if i in keep else -math.inf) for i in range(vocab)}

    return distribution

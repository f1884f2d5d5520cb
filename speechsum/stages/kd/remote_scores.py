"""The remote KD teacher's scores, read from a scoring server's reply and checked before the loss.

Per completion position a reply gives the supplied token's log-prob and the top-k alternatives:
``echo`` + ``logprobs`` (the OpenAI legacy format, token names ``token_id:<id>``) or vLLM's
``prompt_logprobs`` (per position ``{"<id>": {"logprob": ...}}``). Every value read is checked:
lists long enough, entries of the right type, ids that are integers, echoed ids those sent (the
prompt's too; a BOS token the server put in front is named as such), log-probs finite and
≤ 0 (up to :data:`LOGPROB_SLACK` of float rounding), a position's alternatives' probabilities
summing to at most 1 (up to :data:`MASS_SLACK`). Anything else is an ``EndpointError`` (a ValueError) naming the
endpoint, the field and the position: a broken server must not feed NaN or garbage into KD.
A request the server refuses (HTTP 400: top-k above its limit, prompt beyond its context) becomes
:func:`refusal`, naming the setting to change.
"""

from __future__ import annotations

import math
from typing import Any

import pydantic

from speechsum.utils.endpoint_advice import UNKNOWN_MODEL, refusal_advice
from speechsum.utils.replies import EndpointError, json_type

LOGPROB_SLACK = 1e-4  # a log-prob may print a hair above 0 (float rounding); read as 0
MASS_SLACK = 0.05  # how far one position's top-k probabilities may sum past 1 (a half-precision server's rounding)
NO_SCORES = ("; token-level KD needs a server that scores supplied text (echo + logprobs, or vLLM's prompt_logprobs): "
             "vLLM or speechsum serve; the OpenAI and Azure APIs do not (set the teacher's scoring: none, "
             "sequence-level KD)")
ADDED_BOS = (" (a BOS token its tokenizer adds to every prompt), so every score would be one position off: serve "
             "the teacher with a server that scores token-id prompts as sent (vLLM, speechsum serve), or turn off its "
             "BOS token (add_bos_token: false in the served tokenizer's config)")
PAST_THE_END = (": the server generated after them (it did not honour max_tokens=0 with echo), so its reply is not "
                "the scores of the text sent: serve the teacher with vLLM or speechsum serve, which score a prompt "
                "without generating")
OTHER_TOKENS = ": the server scored other tokens than those sent, so its scores are not the teacher's for this text"
Scores = tuple[list[float], list[list[tuple[int, float]]]]  # token log-probs, top-k [(id, log-prob)] best first


def token_id(name: Any, endpoint: str, where: str) -> int:
    """``"token_id:123"`` (``return_tokens_as_token_ids``) → 123."""
    if not isinstance(name, str) or not name.startswith("token_id:"):
        raise EndpointError(
            f"{endpoint}: {where}: the server named a token {name!r} instead of 'token_id:<id>': it must support "
            "`return_tokens_as_token_ids` (vLLM, speechsum serve) so that scores map to token ids exactly"
        )
    digits = name[len("token_id:"):]
    if not (digits.isascii() and digits.isdigit()):
        raise EndpointError(f"{endpoint}: {where}: token {name!r} has no integer id")
    return int(digits)


def logprob(value: Any, endpoint: str, where: str) -> float:
    """``value`` as a log-probability: a finite number ≤ 0 (+ :data:`LOGPROB_SLACK`), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value > LOGPROB_SLACK:
        raise EndpointError(f"{endpoint}: {where} is {value!r}; a log-probability is a finite number <= 0")
    return min(float(value), 0.0)


def refusal(error: Any, endpoint: str, top_k: int, prompt_tokens: int, completion_tokens: int) -> EndpointError:
    """A 400 or 404 answer to a scoring request (``openai.BadRequestError``, ``NotFoundError``) as an
    error naming what to change. Read from vLLM's words ("Requested sample|prompt logprobs of k,
    which is greater than max allowed", param ``logprobs``/``prompt_logprobs``; "context length")
    and speechsum serve's; a 404 is a model name the endpoint does not serve, or (naming no model) a
    base_url that is not the API's root."""
    reason = str(getattr(error, "message", None) or error)
    code = str(getattr(error, "code", None))
    advice = refusal_advice(f"{reason} {code} {getattr(error, 'param', None)}")  # e.g. logprobs or echo not taken
    if getattr(error, "status_code", None) == 404 and code != "model_not_found" and "model" not in reason.lower():
        hint = ("no such route (a 404 that names no model): set the teacher's base_url "
                "(model.teacher.init_args.base_url) to the API's root, ending in /v1 (http://HOST:PORT/v1)")
    elif getattr(error, "status_code", None) == 404 or code == "model_not_found" or advice == UNKNOWN_MODEL:
        hint = ("the endpoint does not serve this model name: set the teacher's model "
                "(model.teacher.init_args.model) to the name its /v1/models lists")
    elif (getattr(error, "param", None) in ("logprobs", "prompt_logprobs") or "max allowed" in reason) and \
            not advice:
        hint = (f"top_k={top_k} asks for more log-probs per position than the server returns: lower the teacher's "
                f"top_k (model.teacher.init_args.top_k), or restart the server with --max-logprobs {top_k} "
                "(vllm serve and speechsum serve alike)")
    elif "context length" in reason.lower() or code == "context_length_exceeded":
        hint = (f"the teacher's prompt ({prompt_tokens} tokens: chat template, instruction, transcript) plus the "
                f"student's completion ({completion_tokens} tokens) exceed the teacher's context: serve the teacher "
                "with a longer one (vllm serve --max-model-len, up to what the model supports), lower the student's "
                "completions (model.max_new_tokens), or shorten the longest transcripts")
    else:  # a parameter the server does not take (echo, logprobs: which scoring mode to use), a content filter, …
        hint = advice or "the server refused this request (HTTP 400), which retrying cannot change"
    return EndpointError(f"{endpoint}: the teacher's scoring request was refused ({reason}): {hint}.")


def check_top_ids(ids: Any, vocab_size: int, endpoint: str) -> None:
    """An :class:`EndpointError` for a top-k token id (a tensor of them, −1 = empty) the student has no
    logit for (the server's model has a larger vocabulary): the loss would index past the student's logits."""
    largest = int(ids.max()) if ids is not None and ids.numel() else -1
    if largest >= vocab_size:
        raise EndpointError(
            f"{endpoint}: the teacher's top-k names token id {largest}, beyond the student's {vocab_size} logits: the "
            "served model's vocabulary is not the student's. Serve a teacher with the student's tokenizer and "
            "vocabulary size for token-level KD, or set the teacher's scoring: none (sequence-level KD)")


def short_top_warning(sizes: list[int], top_k: int, endpoint: str) -> str | None:
    """What to say when every position got fewer alternatives (``sizes``) than ``top_k`` (a server capping its
    log-probs: the loss then puts the rest of the teacher's mass in the tail); None when one got them all."""
    most = max(sizes, default=top_k)
    if most >= top_k:
        return None
    return (f"{endpoint} returned at most {most} alternatives per position where top_k={top_k} were asked: the server "
            f"caps its log-probs; KD runs on those {most} plus the tail (lower top_k to match, or serve the teacher "
            f"with vLLM or speechsum serve --max-logprobs {top_k})")


def _best(scored: list[tuple[int, float]], k: int, endpoint: str, where: str) -> list[tuple[int, float]]:
    """The ``k`` most likely of one position's alternatives; an :class:`EndpointError` when their probabilities
    sum past 1 (+ :data:`MASS_SLACK`): values of no one distribution (logits), which the loss read as a teacher
    with no tail and more than all the mass."""
    mass = math.fsum(math.exp(value) for _, value in scored)
    if mass > 1 + MASS_SLACK:
        raise EndpointError(
            f"{endpoint}: {where}: the probabilities of its {len(scored)} log-probs sum to {mass:.3g}, more than 1: "
            "they are not the log-probabilities of one distribution (logits, or values not normalized: serve vLLM "
            "with its default --logprobs-mode raw_logprobs)")
    return sorted(scored, key=lambda pair: pair[1], reverse=True)[:k]


def check_echoed(tokens: list[Any], endpoint: str, prompt: list[int], completion: list[int]) -> None:
    """An :class:`EndpointError` unless the echoed ``tokens`` are the ids sent (``prompt`` + ``completion``):
    one list comparison when they are; else the first that differs, named as prompt or completion, or a
    token the server put in front of them (a BOS its tokenizer adds), which would shift every score."""
    sent = prompt + completion
    names = [f"token_id:{token}" for token in sent]
    added = len(tokens) - len(sent)
    if tokens[: len(sent)] == names:
        if added > 0:  # tokens it wrote after them (max_tokens=0 not honoured): read before as scores of nothing sent
            raise EndpointError(f"{endpoint}: the reply echoes {len(tokens)} tokens, {added} more than the {len(sent)} "
                                f"sent{PAST_THE_END}")
        return
    if added > 0 and tokens[added:] == names:
        shown = ", ".join(str(token) for token in tokens[:added])
        raise EndpointError(f"{endpoint}: the server put {shown} in front of the {len(sent)} tokens sent{ADDED_BOS}")
    for position, token in enumerate(sent):
        echoed = token_id(tokens[position], endpoint, f"logprobs.tokens[{position}]")
        if echoed != token:
            part = (f"prompt token {position} of {len(prompt)}" if position < len(prompt)
                    else f"completion token {position - len(prompt)} of {len(completion)}")
            raise EndpointError(
                f"{endpoint}: echoed token {echoed} at {position} ({part}), sent {token}{OTHER_TOKENS}")


def echo_scores(choice: Any, endpoint: str, prompt: list[int], completion: list[int], k: int) -> Scores:
    """Scores of ``completion`` (sent after the ``prompt`` ids) from an ``echo`` reply's ``logprobs``; the
    echoed ids are checked against those sent (:func:`check_echoed`)."""
    start = len(prompt)
    end = start + len(completion)
    logprobs = getattr(choice, "logprobs", None)
    if not isinstance(logprobs, pydantic.BaseModel) or not isinstance(logprobs.tokens, list) \
            or len(logprobs.tokens) < end:
        raise EndpointError(f"{endpoint}: the reply does not echo the {end} prompt tokens sent{NO_SCORES}")
    check_echoed(logprobs.tokens, endpoint, prompt, completion)
    for name in ("token_logprobs", "top_logprobs"):
        values = getattr(logprobs, name, None)
        if isinstance(values, list) and len(values) > end:  # entries for no token sent: the lists do not line up
            raise EndpointError(f"{endpoint}: logprobs.{name} has {len(values)} entries, {len(values) - end} more than "
                                f"the {end} tokens echoed: its scores do not line up with the tokens, so none can be read by "
                                "position; serve the teacher with vLLM or speechsum serve")
        if not isinstance(values, list) or len(values) < end:
            shown = f"has {len(values)} entries" if isinstance(values, list) else f"is {json_type(values)}"
            raise EndpointError(f"{endpoint}: logprobs.{name} {shown}; the {end} echoed tokens need one each{NO_SCORES}")
    token_lps, tops = [], []
    for position in range(start, end):
        token_lps.append(logprob(logprobs.token_logprobs[position], endpoint, f"logprobs.token_logprobs[{position}]"))
        where = f"logprobs.top_logprobs[{position}]"
        top = logprobs.top_logprobs[position]
        if not isinstance(top, dict):
            raise EndpointError(f"{endpoint}: {where} is {json_type(top)}, not an object of token -> log-prob")
        tops.append(_best([(token_id(name, endpoint, where), logprob(value, endpoint, f"{where}[{name!r}]"))
                           for name, value in top.items()], k, endpoint, where))
    return token_lps, tops


def prompt_logprob_scores(choice: Any, endpoint: str, prompt: list[int], completion: list[int], k: int) -> Scores:
    """Scores of ``completion`` (sent after the ``prompt`` ids) from vLLM's ``prompt_logprobs``."""
    start = len(prompt)
    end = start + len(completion)
    entries = (getattr(choice, "model_extra", None) or {}).get("prompt_logprobs")
    if not isinstance(entries, list):
        raise EndpointError(f"{endpoint}: the reply's prompt_logprobs is {json_type(entries)}, not an array{NO_SCORES}")
    if len(entries) > end:
        raise EndpointError(f"{endpoint}: prompt_logprobs has {len(entries)} positions, {len(entries) - end} more than "
                            f"the {end} tokens sent: the server put tokens in front of them{ADDED_BOS}")
    for position in range(1, min(start, len(entries))):  # the prompt's scored ids: those sent (one lookup each)
        entry = entries[position]
        if not isinstance(entry, dict) or str(prompt[position]) not in entry:
            raise EndpointError(f"{endpoint}: prompt_logprobs[{position}] does not score prompt token {position} of "
                                f"{start} sent ({prompt[position]}){OTHER_TOKENS}")
    token_lps, tops = [], []
    for position, token in zip(range(start, end), completion):
        entry = entries[position] if position < len(entries) else None
        where = f"prompt_logprobs[{position}]"
        if not isinstance(entry, dict) or str(token) not in entry:
            shown = "" if entry is None or isinstance(entry, dict) else f": {json_type(entry)}, not an object"
            raise EndpointError(f"{endpoint}: no prompt_logprobs for position {position} (token {token}){shown}")
        scored = []
        for name, value in entry.items():
            if not (name.isascii() and name.isdigit()):
                raise EndpointError(f"{endpoint}: {where} names token {name!r}, not an integer id")
            if not isinstance(value, dict) or "logprob" not in value:
                raise EndpointError(f"{endpoint}: {where}[{name!r}] is {json_type(value)} without a 'logprob'")
            scored.append((int(name), logprob(value["logprob"], endpoint, f"{where}[{name!r}].logprob")))
        token_lps.append(dict(scored)[token])
        tops.append(_best(scored, k, endpoint, where))
    return token_lps, tops

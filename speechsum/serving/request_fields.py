"""Which request fields ``speechsum serve`` reads: every other field is refused (400), never ignored.

A field is either *read* (validated and applied by :mod:`speechsum.serving.openai_format`), *known
but not applied* (accepted only at the value that changes nothing, e.g. ``presence_penalty: 0``),
*accepted and ignored* (bookkeeping that cannot change the reply: ``user``, ``metadata``…, listed
in docs/serve.md) or unrecognised: a 400 naming it, as OpenAI's "Unrecognized request argument
supplied", so a request never gets a different decoding than it asked for.
"""

from __future__ import annotations

import json

from speechsum.serving.protocol import APIError
from speechsum.serving.streaming import stream_mode

# read and applied, per route
COMMON_FIELDS = ("model", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "logprobs", "stream",
                 "stream_options", "return_tokens_as_token_ids")
COMPLETION_FIELDS = COMMON_FIELDS + ("prompt", "echo", "prompt_logprobs")
CHAT_FIELDS = COMMON_FIELDS + ("messages", "max_completion_tokens", "top_logprobs", "response_format")

# OpenAI's and vLLM's sampling options that decoding here does not apply: accepted only at the
# value that changes nothing
NEUTRAL_ONLY: dict[str, tuple] = {
    "frequency_penalty": (0,), "presence_penalty": (0,), "repetition_penalty": (1,), "top_k": (-1, 0),
    "min_p": (0,), "min_tokens": (0,), "ignore_eos": (False,), "length_penalty": (1,), "use_beam_search": (False,),
}
# OpenAI fields that cannot change the reply (labels, storage, latency hints): accepted, no effect (docs/serve.md)
IGNORED_CHAT_FIELDS = ("user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
                       "prediction", "parallel_tool_calls")
IGNORED_COMPLETION_FIELDS = ("user",)
# OpenAI fields for features this server lacks: refused unless null (or the one harmless value)
CHAT_FEATURES = {
    "modalities": "it answers with text only; leave 'modalities' out or send [\"text\"]",
    "audio": "it answers with text only (send input audio as an input_audio content part)",
    "reasoning_effort": "the served model is not an OpenAI reasoning model",
    "verbosity": "it has no verbosity control",
    "web_search_options": "it has no web search",
}
# accepted only empty / at their default (as logit_bias on both routes): check_fields says which
TOOL_FIELDS = ("tools", "functions", "tool_choice", "function_call")
COMPLETION_ONLY = ("best_of", "suffix")


def _bad(message: str, param: str) -> APIError:
    return APIError(400, message, param=param)


def check_fields(body: dict, chat: bool) -> None:
    """400 for a field of ``body`` this server would not apply: unknown names, features it lacks
    (tools, audio output…), a ``stream`` or ``stream_options`` it cannot read, and sampling options at
    a value other than the neutral one."""
    read = CHAT_FIELDS if chat else COMPLETION_FIELDS
    ignored = IGNORED_CHAT_FIELDS if chat else IGNORED_COMPLETION_FIELDS
    extra = (*TOOL_FIELDS, *CHAT_FEATURES) if chat else COMPLETION_ONLY
    known = {*read, *ignored, *NEUTRAL_ONLY, "logit_bias", *extra}
    for name in body:
        if name not in known:
            route = "/v1/chat/completions" if chat else "/v1/completions"
            raise _bad(f"Unrecognized request argument supplied: {name!r}. speechsum serve does not read it on "
                       f"{route}; remove it (the fields it reads are listed in docs/serve.md).", name)
    stream_mode(body)
    if body.get("best_of") not in (None, 1):
        raise _bad("'best_of' other than 1 is not supported.", "best_of")
    if body.get("logit_bias"):
        raise _bad("'logit_bias' is not supported.", "logit_bias")
    if body.get("suffix"):
        raise _bad("'suffix' is not supported.", "suffix")
    if body.get("tools") or body.get("functions") or body.get("tool_choice") not in (None, "none") \
            or body.get("function_call") not in (None, "none"):
        raise _bad("Tool and function calls are not supported by speechsum serve.", "tools")
    for name, feature in CHAT_FEATURES.items():
        value = body.get(name)
        if value is not None and not (name == "modalities" and value == ["text"]):
            raise _bad(f"'{name}' is not supported by speechsum serve: {feature}; got {json.dumps(value)[:80]}.",
                       name)
    for name, neutral in NEUTRAL_ONLY.items():
        value = body.get(name)
        if value is not None and not (isinstance(value, bool) == isinstance(neutral[0], bool) and value in neutral):
            shown = " or ".join(json.dumps(v) for v in neutral)
            raise _bad(f"'{name}' is not supported by speechsum serve (only {shown}, which changes nothing); got "
                       f"{json.dumps(value)[:80]}.", name)

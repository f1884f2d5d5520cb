"""Which request fields ``speechsum serve`` reads: every other field is refused (400), never ignored.

A field is either *read* (validated and applied by :mod:`speechsum.serving.openai_format`), *known
but not applied* (accepted only at the value that changes nothing, e.g. ``presence_penalty: 0``),
*accepted and ignored* (bookkeeping that cannot change the reply: ``user``, ``metadata``…, listed
in docs/serve.md) or unrecognised: a 400 naming it, as OpenAI's "Unrecognized request argument
supplied", so a request never gets a different decoding than it asked for. A message's fields
likewise (:func:`check_message_fields`); the ignored ones are named in the request's log line.
"""

from __future__ import annotations

import json

from speechsum.serving.protocol import bad_request
from speechsum.serving.streaming import IGNORED_STREAM_OPTIONS, stream_mode

# read and applied, per route
COMMON_FIELDS = ("model", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "logprobs", "stream",
                 "stream_options", "return_tokens_as_token_ids")
COMPLETION_FIELDS = COMMON_FIELDS + ("prompt", "echo", "prompt_logprobs")
CHAT_FIELDS = COMMON_FIELDS + ("messages", "max_completion_tokens", "top_logprobs", "response_format",
                               "add_generation_prompt", "continue_final_message")  # the last two: vLLM's

# OpenAI's and vLLM's sampling options that decoding here does not apply: accepted only at the
# value that changes nothing
NEUTRAL_ONLY: dict[str, tuple] = {
    "frequency_penalty": (0,), "presence_penalty": (0,), "repetition_penalty": (1,), "top_k": (-1, 0),
    "min_p": (0,), "min_tokens": (0,), "ignore_eos": (False,), "length_penalty": (1,), "use_beam_search": (False,),
}
# OpenAI fields that cannot change the reply (labels, storage, latency hints): accepted, no effect (docs/serve.md),
# when of their JSON type or null (as OpenAI checks them), and named in the request's log line
IGNORED_CHAT_FIELDS: dict[str, type] = {
    "user": str, "metadata": dict, "store": bool, "service_tier": str, "safety_identifier": str,
    "prompt_cache_key": str, "prediction": dict, "parallel_tool_calls": bool}
IGNORED_COMPLETION_FIELDS: dict[str, type] = {"user": str}
# a message's fields besides role and content (the chat template gets those two): accepted, not shown
# to the model, when of their JSON type; tool_calls, function_call and audio only empty (check_message_fields).
# reasoning / reasoning_content: what vLLM's reasoning parsers add to a reply, echoed back by multi-turn clients
IGNORED_MESSAGE_FIELDS: dict[str, type] = {"name": str, "refusal": str, "tool_call_id": str, "annotations": list,
                                           "reasoning": str, "reasoning_content": str}
MESSAGE_FIELDS = ("role", "content", "tool_calls", "function_call", "audio", *IGNORED_MESSAGE_FIELDS)
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")  # OpenAI's
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512  # OpenAI's limits
PENALTIES = ("frequency_penalty", "presence_penalty")  # OpenAI's range: [-2, 2]
JSON_TYPE_NAMES = {str: "a string", dict: "an object", bool: "true or false", list: "an array"}
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
            raise bad_request(f"Unrecognized request argument supplied: {name!r}. speechsum serve does not read it on "
                              f"{route}; remove it (the fields it reads are listed in docs/serve.md).", name)
    stream_mode(body)
    for name, kind in ignored.items():
        _check_type(body, name, kind, name)
    if chat:
        _check_metadata(body.get("metadata"))
        if body.get("service_tier") not in (None, *SERVICE_TIERS):
            raise bad_request(f"'service_tier' must be one of {', '.join(SERVICE_TIERS)} (or null); got "
                              f"{json.dumps(body['service_tier'])[:80]}.", "service_tier")
    best_of = body.get("best_of")
    if best_of is not None and (isinstance(best_of, bool) or best_of != 1):
        raise bad_request(f"'best_of' other than 1 is not supported; got {json.dumps(best_of)[:80]}.", "best_of")
    _check_logit_bias(body.get("logit_bias"))
    if body.get("logit_bias") not in (None, {}):
        raise bad_request(f"'logit_bias' is not supported (only {{}} or null); got {json.dumps(body['logit_bias'])[:80]}.",
                          "logit_bias")
    if body.get("suffix") not in (None, ""):
        raise bad_request(f"'suffix' is not supported; got {json.dumps(body['suffix'])[:80]}.", "suffix")
    for name in TOOL_FIELDS:  # tools and functions only empty, tool_choice and function_call only "none"
        value = body.get(name)
        if value is not None and value != ("none" if name.endswith(("choice", "call")) else []):
            raise bad_request(f"Tool and function calls are not supported by speechsum serve: leave '{name}' out; got "
                              f"{json.dumps(value)[:80]}.", name)
    for name, feature in CHAT_FEATURES.items():
        value = body.get(name)
        if value is not None and not (name == "modalities" and value == ["text"]):
            raise bad_request(f"'{name}' is not supported by speechsum serve: {feature}; got {json.dumps(value)[:80]}.",
                              name)
    for name, neutral in NEUTRAL_ONLY.items():
        value = body.get(name)
        if name in PENALTIES and value is not None:  # OpenAI's range first: a value it refuses is told so
            _check_penalty(name, value)
        if value is not None and not (isinstance(value, bool) == isinstance(neutral[0], bool) and value in neutral):
            shown = " or ".join(json.dumps(v) for v in neutral)
            raise bad_request(f"'{name}' is not supported by speechsum serve (only {shown}, which changes nothing); got "
                              f"{json.dumps(value)[:80]}.", name)


def _check_penalty(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"'{name}' must be a number in [-2.0, 2.0], got {json.dumps(value)[:80]}.", name)
    if not -2 <= value <= 2:
        raise bad_request(f"'{name}' must be in [-2.0, 2.0], got {json.dumps(value)[:80]}.", name)


def _check_logit_bias(bias: object) -> None:
    """OpenAI's shape of a ``logit_bias`` object: token ids (integers, as JSON keys are strings) to
    biases in [-100, 100]; a 400 naming the first entry that is not (the feature itself is refused after)."""
    if not isinstance(bias, dict):
        return
    for key, value in bias.items():
        if not (key.strip().isascii() and key.strip().isdigit()):
            raise bad_request(f"'logit_bias' keys must be token ids (non-negative integers, e.g. \"50256\"), got "
                              f"{json.dumps(key)[:80]}.", "logit_bias")
        if isinstance(value, bool) or not isinstance(value, int | float) or not -100 <= value <= 100:
            raise bad_request(f"'logit_bias' values must be numbers in [-100, 100], got {json.dumps(value)[:80]} for "
                              f"token {key.strip()}.", "logit_bias")


def _check_metadata(metadata: object) -> None:
    """OpenAI's limits on ``metadata``: at most 16 pairs, keys of at most 64 characters, string values of
    at most 512 (an object or null is checked before)."""
    if not isinstance(metadata, dict):
        return
    if len(metadata) > MAX_METADATA_PAIRS:
        raise bad_request(f"'metadata' holds {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} are allowed.",
                          "metadata")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise bad_request(f"'metadata' key {json.dumps(key)[:40]}… is {len(key)} characters long; keys are at most "
                              f"{MAX_METADATA_KEY}.", "metadata")
        if not isinstance(value, str):
            raise bad_request(f"'metadata.{key}' must be a string (metadata values are strings of at most "
                              f"{MAX_METADATA_VALUE} characters), got {json.dumps(value)[:80]}.", "metadata")
        if len(value) > MAX_METADATA_VALUE:
            raise bad_request(f"'metadata.{key}' is {len(value)} characters long; values are at most "
                              f"{MAX_METADATA_VALUE}.", "metadata")


def _check_type(obj: dict, name: str, kind: type, param: str) -> None:
    value = obj.get(name)
    if value is not None and not isinstance(value, kind):
        raise bad_request(f"'{param}' must be {JSON_TYPE_NAMES[kind]} (or null), got {json.dumps(value)[:80]}.", param)


def check_message_fields(message: dict, index: int) -> None:
    """400 for a field of ``messages[index]`` that OpenAI's messages do not have (named, as OpenAI
    refuses it), or one of theirs of the wrong type; tool calls and audio references only empty."""
    for name in message:
        if name not in MESSAGE_FIELDS:
            raise bad_request(f"messages[{index}] has an unrecognized field {name!r}: a message takes "
                              f"{', '.join(MESSAGE_FIELDS)}; remove it.", f"messages[{index}].{name}")
    for name, kind in IGNORED_MESSAGE_FIELDS.items():
        _check_type(message, name, kind, f"messages[{index}].{name}")
    if message.get("tool_calls") or message.get("function_call"):
        raise bad_request(f"messages[{index}]: tool and function calls are not supported by speechsum serve.",
                          f"messages[{index}]")
    if message.get("audio") is not None:
        raise bad_request(f"messages[{index}].audio: a reference to an earlier audio answer is not supported (this server "
                          "answers with text only); send audio input as an input_audio content part.",
                          f"messages[{index}].audio")


def check_part_fields(obj: dict, allowed: tuple[str, ...], param: str, what: str) -> None:
    """400 for a key of a content part (or of its ``input_audio`` / ``audio_url`` object) at ``param``
    that ``what`` does not take: it would be dropped unread (a text part's ``input_audio``: the audio)."""
    for name in obj:
        if name not in allowed:
            raise bad_request(f"{param} has an unrecognized field {json.dumps(name)[:40]}: {what} takes "
                              f"{', '.join(allowed)}; remove it.", f"{param}.{name}")


def check_refusal_part(part: dict, param: str) -> None:
    """An assistant message's ``{"type": "refusal", "refusal": "…"}`` part (OpenAI's shape of a refusal it sends
    back): accepted and not shown to the model, as a message's ``refusal`` field; a 400 naming what is wrong."""
    check_part_fields(part, ("type", "refusal"), param, "a refusal part")
    if not isinstance(part.get("refusal"), str):
        raise bad_request(f"{param}.refusal must be a string, got {json.dumps(part.get('refusal'))[:80]}.",
                          f"{param}.refusal")


def ignored_fields(body: dict, chat: bool) -> list[str]:
    """The fields of a valid ``body`` that were accepted with no effect, for the request log: top-level
    bookkeeping (``user``, ``metadata``…) and messages' ``name``, ``refusal``…"""
    ignored = IGNORED_CHAT_FIELDS if chat else IGNORED_COMPLETION_FIELDS
    found = [name for name in body if name in ignored and body[name] is not None]
    options = body.get("stream_options") or {}
    found += [f"stream_options.{name}" for name in IGNORED_STREAM_OPTIONS if options.get(name) is not None]
    for index, message in enumerate((body.get("messages") or []) if chat else []):
        found += [f"messages[{index}].{name}" for name in message
                  if name in IGNORED_MESSAGE_FIELDS and message[name] not in (None, [], "")]
        parts = message.get("content") if isinstance(message.get("content"), list) else []
        found += [f"messages[{index}].content[{position}]" for position, part in enumerate(parts)
                  if part.get("type") == "refusal"]  # an assistant's refusal part, not shown
    return found

"""OpenAI/vLLM JSON ⇄ backend records: request validation (clear 400s) and response rendering.

Field names and shapes follow the OpenAI API (legacy completions, chat completions) and vLLM's
extensions (``prompt_logprobs``, ``return_tokens_as_token_ids``) so that the official ``openai``
client and vLLM-style clients parse the responses unchanged.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from speechsum.serving.audio_parts import audio_url_part, input_audio_part
from speechsum.serving.logprobs_format import chat_logprobs, legacy_logprobs, vllm_prompt_logprobs
from speechsum.serving.protocol import (
    APIError,
    AudioInput,
    ChatOutput,
    ChatRequest,
    CompletionOutput,
    CompletionRequest,
    Generation,
    Sampling,
    bad_request,
    sent_value,
)
from speechsum.serving.request_fields import (
    check_fields,
    check_message_fields,
    check_part_fields,
    check_refusal_part,
)
from speechsum.utils.io import finite_json_number
from speechsum.utils.replies import json_type

CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
PART_TYPES = ("text", "input_audio", "audio_url")  # a content part: its type and one field of that name
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
MAX_STOPS = 4  # OpenAI's limit on stop sequences
LOGPROBS_FLAG = "--max-logprobs"  # the server option bounding logprobs, top_logprobs and prompt_logprobs


@dataclass
class Limits:
    """Per-request limits: ``max_tokens`` (completion tokens), ``max_logprobs`` (top-k), ``max_n``
    (samples per prompt), ``max_prompts`` (prompts in one completions request), ``max_audio_bytes``
    (size of one ``input_audio`` file; 0 when the backend reads no audio)."""

    max_tokens: int = 4096
    max_logprobs: int = 20
    max_n: int = 16
    max_prompts: int = 256
    default_completion_tokens: int = 16  # OpenAI's default for /v1/completions
    max_audio_bytes: int = 0  # largest input_audio file; 0: the backend reads no audio


def _integer(body: dict, name: str, default: int | None, low: int, high: int | None = None,
             flag: str | None = None) -> int | None:
    """``body[name]``, an integer in [low, high] (``default`` if absent or null); ``flag``: the server option that
    sets ``high``, named when a value passes it (before 2026-12-07 "must be between 0 and 5": OpenAI's bound?)."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{name}' must be an integer, {sent_value(body, name)}.", name)
    if flag is not None and high is not None and value > high:
        raise bad_request(f"'{name}' is {value}, above this server's limit of {high} ({flag}).", name)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise bad_request(f"'{name}' must be {bounds}, got {value}.", name)
    return value


def _number(body: dict, name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"'{name}' must be a number, {sent_value(body, name)}.", name)
    if not finite_json_number(value):
        raise bad_request(f"'{name}' must be a finite number, got {value}.", name)
    if value > high or value < low or (low_open and value == low):
        raise bad_request(f"'{name}' must be in {'(' if low_open else '['}{low}, {high}], got {value}.", name)
    return float(value)


def _boolean(body: dict, name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be true or false, {sent_value(body, name)}.", name)
    return value


def check_model(body: dict, served: str) -> None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request(f"'model' must be a string (the served model's name, '{served}'), got {json_type(model)}.", "model")
    if model is not None and model != served:  # 404, as OpenAI and vLLM answer
        raise APIError(404, f"The model '{model}' does not exist; this server serves '{served}'.", param="model",
                       code="model_not_found")


def _sampling(body: dict, limits: Limits, max_tokens: int | None, field: str = "max_tokens") -> Sampling:
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise bad_request("'stop' must be a string or an array of strings.", "stop")
    if any(s == "" for s in stops):
        raise bad_request("'stop' strings must not be empty.", "stop")
    if len(stops) > MAX_STOPS:  # as OpenAI: "Up to 4 sequences"
        raise bad_request(f"'stop' holds {len(stops)} sequences; at most {MAX_STOPS} are allowed.", "stop")
    fit = max_tokens is None
    return Sampling(
        max_tokens=limits.max_tokens if fit else max_tokens,
        fit_to_context=fit,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        n=_integer(body, "n", 1, 1, limits.max_n),
        stop=stops,
        seed=_integer(body, "seed", None, -(2**63), 2**64 - 1),
        max_tokens_field=field,
    )


def _max_tokens(body: dict, names: tuple[str, ...], limits: Limits, default: int | None, low: int) -> int | None:
    given = {name: value for name in names if (value := _integer(body, name, None, low)) is not None}
    if len(set(given.values())) > 1:  # one would be dropped unseen: say so rather than pick
        shown = " and ".join(f"'{name}' is {value}" for name, value in given.items())
        raise bad_request(f"{shown}: send one of them ('max_tokens' is the older name of 'max_completion_tokens').",
                          names[-1])
    for name, value in given.items():
        if value > limits.max_tokens:
            raise bad_request(f"'{name}' is {value}, above this server's limit of {limits.max_tokens} (--max-tokens-limit).",
                       name)
        return value
    return default


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _prompt_kind(value: Any) -> str | None:
    """What one element of a ``prompt`` array is: "id", "text", "ids" (a token id array) or None."""
    if _is_token_id(value):
        return "id"
    return "text" if isinstance(value, str) else "ids" if isinstance(value, list) else None


def _prompts(body: dict, limits: Limits) -> list[str | list[int]]:
    if "prompt" not in body:
        raise bad_request("Missing required field 'prompt' (a string, an array of strings or of token ids).", "prompt")
    prompt = body["prompt"]
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise bad_request("'prompt' must be a non-empty string, array of strings, array of token ids or array of token id "
                          f"arrays; got {json_type(prompt)}{' (empty)' if prompt == [] else ''}.", "prompt")
    kind = _prompt_kind(prompt[0])
    if kind is None:
        raise bad_request(f"'prompt[0]' must be a string, a token id or a token id array; got {json.dumps(prompt[0])[:40]}.",
                          "prompt")
    for index, element in enumerate(prompt):
        if _prompt_kind(element) != kind:
            expected = {"id": "a token id (an integer)", "text": "a string", "ids": "a token id array"}[kind]
            raise bad_request(f"'prompt[{index}]' must be {expected}, as 'prompt[0]' is; got {json.dumps(element)[:40]}.",
                       "prompt")
        if kind == "ids":
            if not element:
                raise bad_request(f"'prompt[{index}]' is an empty token id array.", "prompt")
            wrong = next((j for j, token in enumerate(element) if not _is_token_id(token)), None)
            if wrong is not None:
                raise bad_request(f"'prompt[{index}][{wrong}]' must be a token id (an integer), got "
                           f"{json.dumps(element[wrong])[:40]}.", "prompt")
    prompts: list = [prompt] if kind == "id" else [list(p) if kind == "ids" else p for p in prompt]
    if len(prompts) > limits.max_prompts:
        raise bad_request(f"At most {limits.max_prompts} prompts per request, got {len(prompts)}.", "prompt")
    return prompts


def parse_completion(body: dict, limits: Limits) -> tuple[list[CompletionRequest], bool]:
    """Validate a ``/v1/completions`` body → one request per prompt and ``return_tokens_as_token_ids``."""
    check_fields(body, chat=False)
    prompts = _prompts(body, limits)
    max_tokens = _max_tokens(body, ("max_tokens",), limits, min(limits.default_completion_tokens, limits.max_tokens),
                             low=0)
    sampling = _sampling(body, limits, max_tokens)
    echo = _boolean(body, "echo")
    if max_tokens == 0 and not echo:  # as vLLM (SamplingParams); echo + 0 is the one-pass scoring request
        raise bad_request("max_tokens must be at least 1, got 0; 0 only scores the prompt, with 'echo': true.", "max_tokens")
    logprobs = _integer(body, "logprobs", None, 0, limits.max_logprobs, LOGPROBS_FLAG)
    prompt_logprobs = _integer(body, "prompt_logprobs", None, 0, limits.max_logprobs, LOGPROBS_FLAG)
    as_ids = _boolean(body, "return_tokens_as_token_ids")
    requests = [CompletionRequest(p, sampling, echo, logprobs, prompt_logprobs) for p in prompts]
    return requests, as_ids


def _message_content(message: dict, index: int, limits: Limits) -> tuple[str, list[AudioInput]]:
    """The message's text (text parts joined by line breaks, as vLLM) and its ``input_audio`` parts."""
    content = message.get("content")
    if content is None or content == []:
        if message.get("role") == "assistant":  # an assistant turn may be empty
            return "", []
        raise bad_request(f"messages[{index}].content is missing or empty: send the message's text (a string or an "
                          "array of content parts).", f"messages[{index}].content")
    if isinstance(content, str):
        return content, []
    if isinstance(content, list):
        texts, audio = [], []
        for position, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in PART_TYPES:
                check_part_fields(part, ("type", kind), f"messages[{index}].content[{position}]",
                                  f"{'a' if kind == 'text' else 'an'} {kind} part")
            if kind == "input_audio":
                audio.append(input_audio_part(part, index, position, limits.max_audio_bytes))
            elif kind == "audio_url":  # vLLM's
                audio.append(audio_url_part(part, index, position, limits.max_audio_bytes))
            elif kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "text":
                raise bad_request(f"messages[{index}].content[{position}].text must be a string, got "
                           f"{json_type(part.get('text'))}.", f"messages[{index}].content[{position}].text")
            elif kind == "refusal" and message.get("role") == "assistant":  # OpenAI's: not shown, as the refusal field
                check_refusal_part(part, f"messages[{index}].content[{position}]")
            else:
                where = f"messages[{index}].content[{position}]"
                got = (json_type(part) if not isinstance(part, dict) else "of no type (its 'type' is missing)"
                       if "type" not in part else f"type {json.dumps(kind)[:40]}")
                supported = ("only text, input_audio and audio_url (a data: URL) parts are supported" if limits.max_audio_bytes
                             else "this model reads text parts only")  # before 2026-12-07 audio parts, too, it did not read
                raise bad_request(f"{where} is {got}: {supported}.",
                           f"{where}.type")
        return "\n".join(texts), audio  # as vLLM: two parts "Summarize:", "the text" are not "Summarize:the text"
    raise bad_request(f"messages[{index}].content must be a string or an array of content parts.",
               f"messages[{index}].content")


def parse_chat(body: dict, limits: Limits) -> tuple[ChatRequest, bool]:
    """Validate a ``/v1/chat/completions`` body → the request and ``return_tokens_as_token_ids``."""
    check_fields(body, chat=True)
    messages = body.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise bad_request(f"'messages' must be an array of {{role, content}} objects, got {json_type(messages)}.", "messages")
    if messages == []:
        raise bad_request("'messages' is empty: send at least one message ({role, content}).", "messages")
    if not messages:
        raise bad_request("Missing required field 'messages' (a non-empty array of {role, content}).", "messages")
    clean, audio = [], []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{index}] must be an object with 'role' and 'content'.", f"messages[{index}]")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise bad_request(f"messages[{index}].role must be one of {', '.join(CHAT_ROLES)}; {sent_value(message, 'role')}.",
                       f"messages[{index}].role")
        check_message_fields(message, index)
        if role == "tool" and not message.get("tool_call_id"):
            raise bad_request(f"Missing required parameter: 'messages[{index}].tool_call_id' (a 'tool' message answers "
                              "the assistant's tool call of that id).", f"messages[{index}].tool_call_id")
        text, parts = _message_content(message, index, limits)
        clean.append({"role": role, "content": text})
        audio += parts
    # at least 1, as OpenAI and vLLM: a chat request has no echo, so 0 would ask for nothing
    max_tokens = _max_tokens(body, ("max_completion_tokens", "max_tokens"), limits, None, low=1)
    # a context error names the field the client sent (before 2026-12-07 max_tokens, which it had not)
    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    sampling = _sampling(body, limits, max_tokens, field)
    logprobs = _boolean(body, "logprobs")
    top = _integer(body, "top_logprobs", None, 0, limits.max_logprobs, LOGPROBS_FLAG)
    if top is not None and not logprobs:
        raise bad_request("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
    _check_response_format(body.get("response_format"))
    add_prompt, continue_final = _turn_options(body, clean)
    request = ChatRequest(clean, sampling, top_logprobs=(top or 0) if logprobs else None, audio=audio,
                          add_generation_prompt=add_prompt, continue_final_message=continue_final)
    return request, _boolean(body, "return_tokens_as_token_ids")


def _turn_options(body: dict, messages: list[dict]) -> tuple[bool, bool]:
    """vLLM's ``add_generation_prompt`` (default true) and ``continue_final_message`` (default false):
    continuing needs the last message to be the assistant's, and implies no generation prompt unless
    one is asked for too (a 400, as vLLM: the two contradict)."""
    continue_final = _boolean(body, "continue_final_message")
    add_prompt = _boolean(body, "add_generation_prompt", default=not continue_final)
    if continue_final and add_prompt:
        raise bad_request("'continue_final_message' and 'add_generation_prompt' cannot both be true: continue the last "
                          "message or open a new assistant turn.", "continue_final_message")
    if continue_final and messages[-1]["role"] != "assistant":
        raise bad_request(f"'continue_final_message' continues the last message, which must be the assistant's; "
                          f"messages[{len(messages) - 1}] is the {messages[-1]['role']}'s.", "continue_final_message")
    return add_prompt, continue_final


def _check_response_format(response_format: Any) -> None:
    """``response_format``: null or ``{"type": "text"}``; a 400 naming what is wrong otherwise. JSON
    modes (``json_object``, ``json_schema``) are refused: decoding here cannot constrain the output to
    JSON, and a client that asked for it would parse free text as if it were."""
    if response_format is None:
        return
    if not isinstance(response_format, dict):
        raise bad_request("'response_format' must be an object such as {\"type\": \"text\"}, got "
                          f"{json.dumps(response_format)[:80]}.", "response_format")
    kind = response_format.get("type")
    if kind not in RESPONSE_FORMATS:
        raise bad_request(f"'response_format.type' must be one of {', '.join(RESPONSE_FORMATS)}; "
                          f"{sent_value(response_format, 'type')}.", "response_format.type")
    if kind != "text":
        raise bad_request(f"'response_format' {{\"type\": \"{kind}\"}} is not supported by speechsum serve: it cannot "
                          "constrain the model's output to JSON. Leave 'response_format' out (or send {\"type\": "
                          "\"text\"}), ask for JSON in the prompt and validate the reply.", "response_format.type")


# ----------------------------------------------------------------------------------------------- rendering


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_response(
    model: str, requests: list[CompletionRequest], outputs: list[CompletionOutput], as_ids: bool
) -> dict:
    """The ``text_completion`` object; choice index = prompt index × n + sample index (as OpenAI)."""
    choices, prompt_total, completion_total = [], 0, 0
    for request, output in zip(requests, outputs):
        prompt_total += output.num_prompt_tokens
        for generation in output.generations:
            text = (output.prompt_text if request.echo else "") + generation.text
            logprobs = None
            if request.logprobs is not None:
                tokens = (output.prompt_tokens if request.echo else []) + (generation.tokens or [])
                logprobs = legacy_logprobs(tokens, request.logprobs, as_ids)
            choice: dict[str, Any] = {"index": len(choices), "text": text, "logprobs": logprobs,
                                      "finish_reason": generation.finish_reason, "stop_reason": None}
            if request.prompt_logprobs is not None:
                choice["prompt_logprobs"] = vllm_prompt_logprobs(output.prompt_tokens, request.prompt_logprobs)
            choices.append(choice)
            completion_total += generation.num_tokens
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": choices, "usage": _usage(prompt_total, completion_total),
            "system_fingerprint": None}


def chat_response(model: str, request: ChatRequest, output: ChatOutput, as_ids: bool) -> dict:
    choices = []
    for index, generation in enumerate(output.generations):
        logprobs = None
        if request.top_logprobs is not None:
            logprobs = chat_logprobs(generation.tokens or [], request.top_logprobs, as_ids)
        choices.append({"index": index, "message": {"role": "assistant", "content": generation.text,
                                                    "refusal": None, "tool_calls": []},
                        "logprobs": logprobs, "finish_reason": generation.finish_reason, "stop_reason": None})
    completion_total = sum(g.num_tokens for g in output.generations)
    reply = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
             "model": model, "choices": choices, "usage": _usage(output.num_prompt_tokens, completion_total),
             "system_fingerprint": None}
    if output.warnings:  # answered, but the client should know (silent audio): an extra field OpenAI clients keep
        reply["warnings"] = [{"code": w.code, "param": w.param, "message": w.message} for w in output.warnings]
    return reply


def warning_header(warnings: list[dict]) -> dict[str, str]:
    """A reply's ``warnings`` (silent audio…) as an HTTP ``Warning`` header too (``199``: a miscellaneous
    warning; one quoted warn-value each, ASCII), so ``curl -i`` and proxies' logs show them; {} for none."""
    values = []
    for warning in warnings:
        text = "".join(c if " " <= c <= "~" else "?" for c in f"{warning['code']}: {warning['message']}")
        values.append('199 speechsum-serve "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return {"Warning": ", ".join(values)} if values else {}


def models_response(model: str, max_model_len: int | None, created: int) -> dict:
    card = {"id": model, "object": "model", "created": created, "owned_by": "speechsum", "root": model,
            "max_model_len": max_model_len}
    return {"object": "list", "data": [card]}


__all__ = ["Generation", "Limits", "check_model", "parse_chat", "parse_completion", "completion_response",
           "chat_response", "models_response", "warning_header"]

"""Odd requests to ``speechsum serve`` (OpenAI Chat Completions' general case): a body that is not JSON
by its Content-Type, message fields OpenAI's messages lack or of the wrong type, bookkeeping fields of the
wrong type, tool fields, response_format; each an OpenAI-shaped error naming the field (no model:
``ScriptedChatBackend`` on loopback)."""

from __future__ import annotations

import http.client
import json
import logging
import time
from urllib.parse import urlparse

import pytest

from speechsum.utils.remote import openai_client

MODEL = "scripted"
USER = [{"role": "user", "content": "hi"}]


def _post(url: str, body: bytes | dict, content_type: str | None = "application/json",
          path: str = "/v1/chat/completions") -> tuple[int, dict, dict]:
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Length": str(len(data))} | ({"Content-Type": content_type} if content_type else {})
    connection.request("POST", path, data, headers)
    response = connection.getresponse()
    answer = response.status, dict(response.getheaders()), json.loads(response.read())
    connection.close()
    return answer


@pytest.mark.parametrize(("content_type", "message"), [
    ("application/x-www-form-urlencoded",  # curl -d without -H: was read as JSON anyway
     "Content-Type 'application/x-www-form-urlencoded' is not JSON: send the request as a JSON object with "
     "'Content-Type: application/json' (curl: -H 'Content-Type: application/json'; its -d alone sends a form)."),
    ("text/plain", "Content-Type 'text/plain' is not JSON: send the request as a JSON object with "
                   "'Content-Type: application/json'."),
    ("application/json; charset=utf-16", "Content-Type 'application/json; charset=utf-16': the body must be UTF-8 "
                                         "JSON; send it as UTF-8 with 'Content-Type: application/json'."),
])
def test_a_body_that_is_not_json_by_its_content_type_is_a_415(served, content_type, message):
    backend, url = served
    before = backend.count
    status, headers, body = _post(url, {"model": MODEL, "messages": USER}, content_type)
    assert (status, headers["Connection"]) == (415, "close")
    assert body == {"error": {"message": message, "type": "invalid_request_error", "param": None,
                              "code": "unsupported_media_type"}}
    assert backend.count == before


@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; charset=UTF-8",
                                          "Application/JSON", "application/merge-patch+json"])
def test_json_content_types_and_none_are_read(served, content_type):
    status, _, body = _post(served[1], {"model": MODEL, "messages": USER}, content_type)
    assert (status, body["choices"][0]["message"]["content"]) == (200, "ok")


def test_a_utf8_byte_order_mark_is_read_as_json_reads_it(served):
    """Before: 400 'Unexpected UTF-8 BOM' (PowerShell and Notepad files start with one; FastAPI/vLLM read it)."""
    status, _, body = _post(served[1], b"\xef\xbb\xbf" + json.dumps({"model": MODEL, "messages": USER}).encode())
    assert (status, body["choices"][0]["message"]["content"]) == (200, "ok")


@pytest.mark.parametrize(("message", "error", "param"), [
    ({"role": "user", "content": "hi", "foo": 1},  # was ignored silently
     "messages[0] has an unrecognized field 'foo': a message takes role, content, tool_calls, function_call, audio, "
     "name, refusal, tool_call_id, annotations, reasoning, reasoning_content; remove it.", "messages[0].foo"),
    ({"role": "assistant", "content": "hi", "reasoning_content": 5},
     "'messages[0].reasoning_content' must be a string (or null), got 5.", "messages[0].reasoning_content"),
    ({"role": "user", "content": "hi", "name": 5}, "'messages[0].name' must be a string (or null), got 5.",
     "messages[0].name"),
    ({"role": "assistant", "content": "hi", "audio": {"id": "audio_1"}},
     "messages[0].audio: a reference to an earlier audio answer is not supported (this server answers with text "
     "only); send audio input as an input_audio content part.", "messages[0].audio"),
    ({"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]},
     "messages[0]: tool and function calls are not supported by speechsum serve.", "messages[0]"),
])
def test_a_message_field_openai_lacks_or_of_the_wrong_type_is_named(served, message, error, param):
    status, _, body = _post(served[1], {"model": MODEL, "messages": [message]})
    assert (status, body["error"]["message"], body["error"]["param"]) == (400, error, param)


@pytest.mark.parametrize(("fields", "error", "param"), [
    ({"user": 5}, "'user' must be a string (or null), got 5.", "user"),  # was accepted: OpenAI refuses it
    ({"metadata": "run-1"}, "'metadata' must be an object (or null), got \"run-1\".", "metadata"),
    ({"parallel_tool_calls": 5}, "'parallel_tool_calls' must be true or false (or null), got 5.",
     "parallel_tool_calls"),
    ({"tool_choice": "auto"},  # was named 'tools'
     "Tool and function calls are not supported by speechsum serve: leave 'tool_choice' out; got \"auto\".",
     "tool_choice"),
    ({"tools": "x"}, "Tool and function calls are not supported by speechsum serve: leave 'tools' out; got \"x\".",
     "tools"),
    ({"logit_bias": 0}, "'logit_bias' is not supported (only {} or null); got 0.", "logit_bias"),  # was accepted
    ({"response_format": "json_object"},  # was "'response_format.type' must be one of …" of a string
     "'response_format' must be an object such as {\"type\": \"text\"}, got \"json_object\".",
     "response_format"),
    ({"response_format": {"type": "xml"}},
     "'response_format.type' must be one of text, json_object, json_schema; got \"xml\".", "response_format.type"),
    # JSON modes were accepted and not enforced: free text came back to a client that parses it as JSON
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
     "'response_format' {\"type\": \"json_schema\"} is not supported by speechsum serve: it cannot constrain the "
     "model's output to JSON. Leave 'response_format' out (or send {\"type\": \"text\"}), ask for JSON in the prompt "
     "and validate the reply.", "response_format.type"),
    ({"response_format": {"type": "json_object"}},
     "'response_format' {\"type\": \"json_object\"} is not supported by speechsum serve: it cannot constrain the "
     "model's output to JSON. Leave 'response_format' out (or send {\"type\": \"text\"}), ask for JSON in the prompt "
     "and validate the reply.", "response_format.type"),
    ({"messages": []}, "'messages' is empty: send at least one message ({role, content}).", "messages"),
    ({"continue_final_message": True},  # vLLM's prefill continues the assistant's turn only
     "'continue_final_message' continues the last message, which must be the assistant's; messages[0] is the user's.",
     "continue_final_message"),
    ({"messages": [*USER, {"role": "assistant", "content": "he"}], "continue_final_message": True,
      "add_generation_prompt": True},
     "'continue_final_message' and 'add_generation_prompt' cannot both be true: continue the last message or open a "
     "new assistant turn.", "continue_final_message"),
    ({"add_generation_prompt": "no"}, "'add_generation_prompt' must be true or false, got \"no\".",
     "add_generation_prompt"),
])
def test_a_top_level_field_of_the_wrong_type_or_value_is_named(served, fields, error, param):
    status, _, body = _post(served[1], {"model": MODEL, "messages": USER, **fields})
    assert (status, body["error"]["message"], body["error"]["param"]) == (400, error, param)


def test_best_of_true_is_not_read_as_1(served):
    status, _, body = _post(served[1], {"model": MODEL, "prompt": "hi", "best_of": True}, path="/v1/completions")
    assert (status, body["error"]["message"]) == (400, "'best_of' other than 1 is not supported; got true.")


def test_a_reply_message_sent_back_is_accepted_and_what_is_ignored_is_logged(served, caplog):
    """The openai client's reply message, dumped and appended to the conversation (refusal, annotations, audio
    and tool_calls null), is a message like any other; the fields with no effect are named in the log line."""
    backend, url = served
    client = openai_client(url)
    reply = client.chat.completions.create(model=MODEL, messages=USER).choices[0].message.model_dump()
    assert {"refusal", "annotations", "audio", "tool_calls", "function_call"} <= set(reply)
    with caplog.at_level(logging.INFO, logger="speechsum.serving.cli"):
        again = client.chat.completions.create(model=MODEL, user="u-1", messages=[
            {"role": "developer", "content": "be brief", "name": "ops"}, *USER, reply, *USER])
    assert again.choices[0].message.content == "ok"
    assert backend.requests[-1].messages == [{"role": "developer", "content": "be brief"}, *USER,
                                             {"role": "assistant", "content": "ok"}, *USER]
    deadline = time.monotonic() + 10.0  # the server thread logs the request after the reply is written
    while not (lines := [r.getMessage() for r in caplog.records if '"POST /v1/chat/completions" 200' in r.getMessage()]):
        assert time.monotonic() < deadline, "no request log line"
        time.sleep(0.01)
    assert lines[-1].endswith(" ignored=user,messages[0].name")


def test_a_reasoning_models_reply_echoed_back_is_accepted(served):
    """vLLM's reasoning parsers add ``reasoning`` / ``reasoning_content`` to a reply; multi-turn clients send the
    reply back as it came: accepted, not shown to the model."""
    backend, url = served
    reply = {"role": "assistant", "content": "ok", "reasoning": "think", "reasoning_content": "think"}
    status, _, body = _post(url, {"model": MODEL, "messages": [*USER, reply, *USER]})
    assert (status, body["choices"][0]["message"]["content"]) == (200, "ok")
    assert backend.requests[-1].messages == [*USER, {"role": "assistant", "content": "ok"}, *USER]


def test_an_assistant_messages_refusal_part_is_accepted_not_shown_and_logged(served, caplog):
    """OpenAI's assistant content may hold ``{"type": "refusal", "refusal": …}`` parts (as its ``refusal`` field);
    before: a 400 "is type \"refusal\": only text, input_audio and audio_url parts are supported"."""
    backend, url = served
    reply = {"role": "assistant", "content": [{"type": "text", "text": "ok"}, {"type": "refusal", "refusal": "no"}]}
    with caplog.at_level(logging.INFO, logger="speechsum.serving.cli"):
        status, _, body = _post(url, {"model": MODEL, "messages": [*USER, reply, *USER]})
        assert (status, body["choices"][0]["message"]["content"]) == (200, "ok")
        assert backend.requests[-1].messages == [*USER, {"role": "assistant", "content": "ok"}, *USER]
        deadline = time.monotonic() + 10.0  # the server thread logs the request after the reply is written
        while not (lines := [r.getMessage() for r in caplog.records if '"POST /v1/chat/completions" 200' in r.getMessage()]):
            assert time.monotonic() < deadline, "no request log line"
            time.sleep(0.01)
    assert lines[-1].endswith(" ignored=messages[1].content[1]")
    wrong = {"role": "assistant", "content": [{"type": "refusal", "refusal": 5}]}
    status, _, body = _post(url, {"model": MODEL, "messages": [*USER, wrong, *USER]})
    assert (status, body["error"]["message"], body["error"]["param"]) == (
        400, "messages[1].content[0].refusal must be a string, got 5.", "messages[1].content[0].refusal")
    refusing_user = {"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}
    status, _, body = _post(url, {"model": MODEL, "messages": [refusing_user]})  # a user's: not OpenAI's shape
    assert (status, body["error"]["param"]) == (400, "messages[0].content[0].type")


@pytest.mark.parametrize(("body", "key"), [
    (b'{"model": "scripted", "model": "other", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    (b'{"model": "scripted", "messages": [{"role": "user", "content": "a", "content": "b"}]}', "content"),
])
def test_a_key_given_twice_is_a_400_not_the_last_one_silently(served, body, key):
    """Before: JSON kept the last value without a word (the first request was answered as for model 'other')."""
    _, url = served
    status, _, answer = _post(url, body)
    assert status == 400
    assert answer["error"]["message"] == (f"Request body gives the key {key!r} twice in one object: a JSON parser keeps "
                                          "one of the two silently; send it once.")
    assert answer["error"]["param"] == key


@pytest.mark.parametrize(("encoding", "how"), [
    ("utf-16", "a little-endian byte-order mark"),  # PowerShell 5's Out-File, Notepad's "Unicode"
    ("utf-16-le", "a 0 byte beside each ASCII character"),
    ("utf-16-be", "a 0 byte beside each ASCII character"),
])
def test_a_utf16_body_is_told_to_be_sent_as_utf8(served, encoding, how):
    """Before: "not UTF-8: … can't decode byte 0xff", or (no byte-order mark) "not valid JSON: Expecting value"."""
    body = json.dumps({"model": MODEL, "messages": USER}).encode(encoding)
    status, _, answer = _post(served[1], body)
    assert (status, answer["error"]["message"]) == (400, f"Request body is UTF-16 ({how}), not UTF-8: send it as UTF-8 "
                                                         "JSON (PowerShell: -Encoding utf8; a file saved as 'Unicode': "
                                                         "save it as UTF-8).")

"""OpenAI's limits on request fields in ``speechsum serve`` (stop sequences, metadata, service tiers, penalty
and logit_bias ranges, a tool message's id) and its request framing (chunked uploads, a client gone mid-stream);
a real server on loopback with ``ScriptedChatBackend``."""

from __future__ import annotations

import json
import socket
import struct
import time
from urllib.parse import urlparse

import pytest

from tests.servers import ScriptedChatBackend, serve_in_thread

MODEL = "scripted"
USER = [{"role": "user", "content": "hi"}]
CHAT = json.dumps({"model": MODEL, "messages": USER}).encode()


def _connect(url: str) -> socket.socket:
    parsed = urlparse(url)
    return socket.create_connection((parsed.hostname, parsed.port), timeout=10)


def _exchange(url: str, request: bytes) -> tuple[str, dict]:
    """Send ``request`` (which asks to close the connection); the status line and the JSON body."""
    with _connect(url) as sock:
        sock.sendall(request)
        answer = b""
        while part := sock.recv(65536):
            answer += part
    head, _, body = answer.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], json.loads(body.rsplit("\r\n\r\n", 1)[-1])


def _post(url: str, body: dict, path: str = "/v1/chat/completions") -> tuple[str, dict]:
    data = json.dumps({"model": MODEL, **body}).encode()
    return _exchange(url, b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data))


def _error(status: str, body: dict) -> tuple[str, str, str | None]:
    assert status == "HTTP/1.1 400 Bad Request" and body["error"]["type"] == "invalid_request_error"
    return body["error"]["message"], body["error"]["param"], body["error"]["code"]


@pytest.mark.parametrize(("fields", "message", "param"), [
    # at most 4 stop sequences, as OpenAI (before: any number, each one decoded at every generated token)
    ({"stop": ["a", "b", "c", "d", "e"]}, "'stop' holds 5 sequences; at most 4 are allowed.", "stop"),
    # metadata: OpenAI's 16 pairs, 64-character keys, string values of at most 512 characters (before: any object)
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "'metadata' holds 17 pairs; at most 16 are allowed.", "metadata"),
    ({"metadata": {"k" * 65: "v"}}, f"'metadata' key \"{'k' * 39}… is 65 characters long; keys are at most 64.",
     "metadata"),
    ({"metadata": {"run": 1}}, "'metadata.run' must be a string (metadata values are strings of at most 512 "
                               "characters), got 1.", "metadata"),
    ({"metadata": {"run": "v" * 513}}, "'metadata.run' is 513 characters long; values are at most 512.", "metadata"),
    ({"service_tier": "fastest"}, "'service_tier' must be one of auto, default, flex, scale, priority (or null); "
                                  "got \"fastest\".", "service_tier"),
    # OpenAI's range before "not supported": a value no OpenAI endpoint takes is told its range
    ({"presence_penalty": 2.5}, "'presence_penalty' must be in [-2.0, 2.0], got 2.5.", "presence_penalty"),
    ({"frequency_penalty": -3}, "'frequency_penalty' must be in [-2.0, 2.0], got -3.", "frequency_penalty"),
    ({"frequency_penalty": "0"}, "'frequency_penalty' must be a number in [-2.0, 2.0], got \"0\".", "frequency_penalty"),
    ({"presence_penalty": 1.5}, "'presence_penalty' is not supported by speechsum serve (only 0, which changes "
                                "nothing); got 1.5.", "presence_penalty"),
    ({"logit_bias": {"hello": 5}}, "'logit_bias' keys must be token ids (non-negative integers, e.g. \"50256\"), got "
                                   "\"hello\".", "logit_bias"),
    ({"logit_bias": {"42": 101}}, "'logit_bias' values must be numbers in [-100, 100], got 101 for token 42.",
     "logit_bias"),
    ({"logit_bias": {"42": 5}}, "'logit_bias' is not supported (only {} or null); got {\"42\": 5}.", "logit_bias"),
    # OpenAI's required field (before: a tool message without it reached the template)
    ({"messages": [*USER, {"role": "tool", "content": "42"}]},
     "Missing required parameter: 'messages[1].tool_call_id' (a 'tool' message answers the assistant's tool call of "
     "that id).", "messages[1].tool_call_id"),
])
def test_a_field_past_openais_limits_is_a_400_naming_it(served, fields, message, param):
    backend, url = served
    before = backend.count
    assert _error(*_post(url, {"messages": USER, **fields})) == (message, param, None)
    assert backend.count == before  # refused before the backend ran


def test_the_limits_themselves_are_accepted(served):
    status, body = _post(served[1], {"messages": [*USER, {"role": "tool", "content": "42", "tool_call_id": "c1"}],
                                     "stop": ["a", "b", "c", "d"], "service_tier": "flex", "presence_penalty": 0,
                                     "metadata": {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}})
    assert (status, body["choices"][0]["message"]["content"]) == ("HTTP/1.1 200 OK", "ok")


def test_five_stop_strings_are_refused_on_completions_too(served):
    assert _error(*_post(served[1], {"prompt": "hi", "stop": list("abcde")}, "/v1/completions")) == (
        "'stop' holds 5 sequences; at most 4 are allowed.", "stop", None)


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    chunks, start = b"", 0
    for size in sizes:
        chunks += b"%x;ext=1\r\n%s\r\n" % (size, body[start:start + size])
        start += size
    return chunks + b"0\r\nX-Trailer: t\r\n\r\n"


HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def test_a_chunked_upload_is_read_as_its_content_length_twin():
    """Before: any Transfer-Encoding was a 400 "send Content-Length" (httpx and requests send a streamed
    body chunked; uvicorn, which vLLM runs on, reads it)."""
    backend = ScriptedChatBackend(lambda messages: messages[0]["content"])
    with serve_in_thread(backend, max_request_bytes=len(CHAT) + 5) as url:
        with _connect(url) as sock:  # two chunked requests on one connection, then one with Content-Length
            sock.sendall((HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(CHAT, [7, len(CHAT) - 7])) * 2
                         + HEAD + b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(CHAT), CHAT))
            answer = b""
            while part := sock.recv(65536):
                answer += part
        assert answer.count(b"HTTP/1.1 200 OK") == 3 and answer.count(b'"content": "hi"') == 3
        with _connect(url) as sock:  # Expect: 100-continue: the 100 comes before the chunks are sent
            sock.sendall(HEAD + b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
            assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(_chunked(CHAT, [len(CHAT)]))
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        status, body = _exchange(url, HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(CHAT + b" " * 6, [len(CHAT) + 6]))
        assert (status, body["error"]["code"]) == ("HTTP/1.1 413 Request Entity Too Large", "request_too_large")
        assert body["error"]["message"] == (f"Request body of over {len(CHAT) + 5} bytes exceeds this server's limit of "
                                            f"{len(CHAT) + 5} bytes (--max-request-bytes, plus the base64 size of "
                                            "--max-audio-bytes when the model reads audio).")
        assert backend.count == 4


@pytest.mark.parametrize(("framing", "message"), [
    (b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
     "Chunked request body: invalid chunk size line b'zz'; each chunk starts with its size in hexadecimal and a line "
     "break."),
    (b"Transfer-Encoding: chunked\r\n\r\n9\r\n{}\r\n0\r\n\r\n",
     "Chunked request body: a chunk is shorter than its size line says, or not followed by a line break: send the "
     "whole body."),
    (b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n",  # which one frames it? refused
     "Transfer-Encoding together with Content-Length is not supported: send Content-Length or 'Transfer-Encoding: "
     "chunked' alone."),
    (b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     "Transfer-Encoding 'gzip, chunked' is not supported: send Content-Length or 'Transfer-Encoding: chunked' alone."),

    # repeated, the header is one list (a proxy reading the last one frames the body otherwise); before: the first
    # one was read and the rest ignored, and the connection kept open
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
     "Transfer-Encoding 'chunked, identity' is not supported: send Content-Length or 'Transfer-Encoding: chunked' "
     "alone."),
])
def test_chunked_framing_the_server_cannot_trust_is_a_400_that_closes_the_connection(served, framing, message):
    backend, url = served
    before = backend.count
    next_request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"  # must not be read as a request
    with _connect(url) as sock:
        sock.sendall(HEAD + framing + next_request)
        answer = b""
        while part := sock.recv(65536):
            answer += part
    assert answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1") == 1
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"] == message
    assert backend.count == before


def test_a_client_gone_mid_stream_leaves_the_server_serving_others(capsys):
    """A streamed answer larger than the socket buffers, its client reset after the first bytes: the write
    fails in the server's thread; the server goes on answering the next clients."""
    backend = ScriptedChatBackend(lambda messages: "word " * 400_000)
    stream = json.dumps({"model": MODEL, "messages": USER, "stream": True}).encode()
    with serve_in_thread(backend) as url:
        for _ in range(3):
            sock = _connect(url)
            sock.sendall(HEAD + b"Content-Length: %d\r\n\r\n%s" % (len(stream), stream))
            assert sock.recv(64).startswith(b"HTTP/1.1 200 OK")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, mid-stream
        time.sleep(0.2)
        backend.reply = lambda messages: "ok"
        status, body = _post(url, {"messages": USER})
    assert (status, body["choices"][0]["message"]["content"]) == ("HTTP/1.1 200 OK", "ok")
    assert "Traceback" not in capsys.readouterr().err

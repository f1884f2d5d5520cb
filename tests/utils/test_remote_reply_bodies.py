"""Reply bodies that are no completion, from real loopback servers. One without end (a server, proxy
or download sending gigabytes): the whole-request timeout did not bound it (a loopback server sent
3 GB within it; the client held 6 GB), so a body over ``MAX_REPLY_BYTES`` ends the request, once,
naming the endpoint. A page or an event stream answered with 200: its error says what it is."""

from __future__ import annotations

import gzip
import importlib
import json
import zlib
from http.server import BaseHTTPRequestHandler

import openai
import pytest

from speechsum.utils import deadline
from speechsum.utils.chat_json import ChatJsonAsker
from speechsum.utils.remote import endpoint_error_text, error_text, openai_client, with_retries
from tests.servers import JSONServer, RawServer

MESSAGES = [{"role": "user", "content": "hi"}]
COMPLETION = {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [
    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}]}


def endless_chunks(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """200 with a chunked body (no length) of spaces that goes on until the client hangs up (400 MB at most)."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (4096, b" " * 4096)
    for _ in range(100_000):
        handler.wfile.write(chunk)


def _chat(url: str) -> object:
    client = openai_client(url)
    return with_retries(lambda: client.chat.completions.create(model="m", messages=MESSAGES), backoff_seconds=0)


def test_a_reply_over_the_limit_by_its_length_ends_the_request_once(monkeypatch):
    monkeypatch.setattr(deadline, "MAX_REPLY_BYTES", 10_000)
    padded = b" " * 10_000 + json.dumps(COMPLETION).encode()  # valid JSON: read whole before, whatever its size
    with JSONServer(lambda request: padded) as server:
        with pytest.raises(deadline.ReplyTooLarge) as raised:
            _chat(server.url)
    assert server.requests == 1  # not retried: the same server sends the same again
    assert endpoint_error_text(raised.value) == (
        f"the endpoint {server.url}/chat/completions failed (ReplyTooLarge: the reply is {len(padded)} bytes by its "
        "Content-Length, over the 0.00953674 MiB any completion needs); check that base_url is the OpenAI-compatible "
        "API's and that nothing in between (a proxy, a login or download page) answers in its place, then rerun")


def test_a_reply_without_length_is_cut_at_the_limit(monkeypatch):
    monkeypatch.setattr(deadline, "MAX_REPLY_BYTES", 2**20)
    with RawServer(endless_chunks) as server:
        with pytest.raises(deadline.ReplyTooLarge, match=r"^the reply is more than 1048576 bytes, over the 1 MiB"):
            _chat(server.url)
    assert len(server.targets) == 1


def test_a_reply_within_the_limit_is_read(monkeypatch):
    monkeypatch.setattr(deadline, "MAX_REPLY_BYTES", 10_000)
    padded = b" " * 9_000 + json.dumps(COMPLETION).encode()
    with JSONServer(lambda request: padded) as server:
        assert _chat(server.url).choices[0].message.content == "ok"


def text_answer(content_type: str, text: str, status: int = 200):
    def respond(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        data = text.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return respond


LOGIN_PAGE = "<!DOCTYPE html>\n<html>\n  <head><title>Sign in</title></head>\n  <body>Corporate login</body>\n</html>"
STREAM = 'data: {"choices": [{"index": 0, "delta": {"content": "ok"}}]}\n\ndata: [DONE]\n\n'


@pytest.mark.parametrize("content_type, text, what", [
    # before: "the reply is a string, not a completion object"
    ("text/html", LOGIN_PAGE, "the reply is an HTML page, starting '<!DOCTYPE html> <html> <head><title>Sign in</title>"
                              "</head> <body>Corporate login…', not a JSON completion"),
    ("text/event-stream", STREAM, "the reply is an event stream (a streamed reply, which was not asked for), starting "
                                  "'data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"ok\"}}]} data: "
                                  "[DONE]', not a JSON completion"),
    # before: only "Expecting value: line 1 column 1 (char 0)"
    ("application/json", LOGIN_PAGE, "the reply body is not JSON (JSONDecodeError: Expecting value: line 1 column 1 "
                                     "(char 0)); it is an HTML page, starting '<!DOCTYPE html> <html> <head><title>Sign "
                                     "in</title></head> <body>Corporate login…'"),
    ("text/plain", "Too many requests, slow down", "the reply is text, starting 'Too many requests, slow down', not a "
                                                   "JSON completion"),
])
def test_a_reply_that_is_text_says_what_it_is(content_type, text, what):
    with RawServer(text_answer(content_type, text)) as server:
        answer = ChatJsonAsker(openai_client(server.url), "m", request_attempts=2, backoff_seconds=0).ask(
            MESSAGES, json.loads)
    assert answer.value is None and len(server.targets) == 2  # retried as malformed, then given up
    assert answer.error == f"request failed: MalformedReply: {server.url}/: {what}"


@pytest.mark.parametrize("status, kind", [(502, "InternalServerError"), (403, "PermissionDeniedError")])
def test_an_error_status_whose_body_is_a_page_says_whose_page_it_is(status, kind):
    """Before: only "Error code: 502": whose page answered (a gateway's, a login's) was not said."""
    with RawServer(text_answer("text/html", LOGIN_PAGE, status)) as server:
        with pytest.raises(openai.APIStatusError) as error:
            _chat(server.url)
    page = "an HTML page, starting '<!DOCTYPE html> <html> <head><title>Sign in</title></head> <body>Corporate login…'"
    assert error_text(error.value) == f"{kind}: Error code: {status} ({page})"


def compressed_answer(coding: str, data: bytes):
    def respond(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Encoding", coding)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return respond


@pytest.mark.parametrize("coding", ["br", "zstd"])
def test_a_reply_in_a_compression_the_client_cannot_decode_says_so(coding):
    """Before: read as it was, "the reply body is not UTF-8 text (UnicodeDecodeError: …)"."""
    from speechsum.utils.replies import COMPRESSIONS
    library = importlib.import_module(f"{deadline._transport_class().httpx.__name__}._decoders")  # the client's
    if coding in library.SUPPORTED_DECODERS:
        pytest.skip(f"this HTTP library decodes {coding}")
    assert coding in COMPRESSIONS
    compressed = b"\x0b\x02\x80\xff\xfe" + json.dumps(COMPLETION).encode()  # not UTF-8 read as it is
    with RawServer(compressed_answer(coding, compressed)) as server:
        answer = ChatJsonAsker(openai_client(server.url), "m", request_attempts=1).ask(MESSAGES, json.loads)
    assert answer.error == (
        f"request failed: MalformedReply: {server.url}/chat/completions: the reply is compressed as '{coding}', which "
        "this client does not decode (it asked for 'gzip, deflate'): set the server, or the proxy in between, to "
        "answer uncompressed or in one of those")


@pytest.mark.parametrize("coding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_reply_over_the_limit_once_decompressed_ends_the_request_once(monkeypatch, coding, compress):
    """A gzip bomb: before, only the bytes as sent were counted, and these few KiB were decompressed whole."""
    monkeypatch.setattr(deadline, "MAX_REPLY_BYTES", 2**20)
    bomb = compress(b" " * 5 * 2**20 + json.dumps(COMPLETION).encode())  # valid JSON: read whole before
    assert len(bomb) < 10_000
    with RawServer(compressed_answer(coding, bomb)) as server:
        with pytest.raises(deadline.ReplyTooLarge) as raised:
            _chat(server.url)
    assert len(server.targets) == 1  # not retried
    assert endpoint_error_text(raised.value) == (
        f"the endpoint {server.url}/chat/completions failed (ReplyTooLarge: the reply is more than 1048576 bytes once "
        f"decompressed (Content-Encoding: {coding}), over the 1 MiB any completion needs); check that base_url is the "
        "OpenAI-compatible API's and that nothing in between (a proxy, a login or download page) answers in its place, "
        "then rerun")


def test_a_compressed_reply_within_the_limit_is_read(monkeypatch):
    monkeypatch.setattr(deadline, "MAX_REPLY_BYTES", 2**20)
    with RawServer(compressed_answer("gzip", gzip.compress(b" " * 2**19 + json.dumps(COMPLETION).encode()))) as server:
        assert _chat(server.url).choices[0].message.content == "ok"

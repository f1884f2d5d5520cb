"""Backpressure of ``speechsum serve``: at most ``--max-waiting`` requests wait for the model; one
more is a 503 with ``Retry-After`` at once (before: every request queued without bound)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import openai
import pytest

from speechsum.serving.admission import ModelQueue
from speechsum.serving.cli import build_parser, build_server
from speechsum.serving.protocol import APIError
from speechsum.utils.remote import openai_client
from tests.servers import ThreadedServer
from tests.serving.tiny_lm import MODEL

BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})


def _post(port: int, body: str = BODY) -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = (response.status, dict(response.getheaders()), json.loads(response.read()))
    connection.close()
    return answer


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def test_a_full_queue_answers_503_with_retry_after_and_drains(backend):
    server = build_server(backend, port=0, max_waiting=1)
    port = server.server_address[1]
    answers: list[int] = []
    with ThreadedServer(server):
        with backend._lock:  # the model busy: requests queue
            blocked = [threading.Thread(target=lambda: answers.append(_post(port)[0])) for _ in range(2)]
            for thread in blocked:
                thread.start()
            _wait_for(lambda: server.queue.admitted == 2)  # one "served" (waiting on the lock) + one waiting
            status, headers, body = _post(port)
            assert (status, headers["Retry-After"]) == (503, "2")  # 1 s per request before any finished, × 2 ahead
            assert body == {"error": {
                "message": "The server is overloaded: the model is busy and 1 request waits for it (--max-waiting 1). "
                           "Retry in 2 s (the Retry-After header).",
                "type": "server_error", "param": None, "code": "server_overloaded"}}
            with pytest.raises(openai.InternalServerError) as caught:  # the official client sees a 503 (retried)
                openai_client(server.base_url).chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
            assert caught.value.status_code == 503
            # a request that is wrong anyway is told so, not told to retry; health checks still answer
            assert _post(port, json.dumps({"model": MODEL, "messages": []}))[0] == 400
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/health")
            assert connection.getresponse().status == 200
            connection.close()
        for thread in blocked:
            thread.join(timeout=30)
        assert answers == [200, 200] and server.queue.admitted == 0
        assert _post(port)[0] == 200  # drained: served again


def test_a_large_body_is_not_read_while_the_queue_is_full(backend):
    """Before: read (up to 41 MB for a speech student) and parsed, its audio decoded from base64, then refused with
    the same 503; an Expect: 100-continue client was told to send it."""
    server = build_server(backend, port=0, max_waiting=0)
    port = server.server_address[1]
    answers: list[int] = []
    with ThreadedServer(server):
        with backend._lock:  # the model busy: the one request admitted waits for it
            blocked = threading.Thread(target=lambda: answers.append(_post(port)[0]))
            blocked.start()
            _wait_for(lambda: server.queue.admitted == 1)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (2 * 1024 * 1024))
                answer = b""
                while part := sock.recv(65536):  # the 503 and the connection's end: no 100 Continue, no body read
                    answer += part
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1" in head and b"Connection: close" in head
            assert json.loads(body)["error"]["code"] == "server_overloaded"
            assert _post(port, json.dumps({"model": MODEL, "messages": []}))[0] == 400  # a small body is still read
        blocked.join(timeout=30)
    assert answers == [200]


def test_max_waiting_zero_serves_one_at_a_time_and_the_option_is_documented(capsys):
    queue = ModelQueue(0)
    with queue.slot():
        with pytest.raises(APIError) as caught, queue.slot():
            pass
        assert caught.value.status == 503 and "no request may wait for it (--max-waiting 0)" in caught.value.message
    with queue.slot():  # freed
        assert queue.admitted == 1
    assert build_parser().parse_args(["--model", "m"]).max_waiting == 32
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--model", "m", "--max-waiting", "-1"])
    assert "argument --max-waiting: must be at least 0, got -1" in capsys.readouterr().err
    help_text = " ".join(build_parser().format_help().split())
    assert "answered at once with HTTP 503 and a Retry-After header" in help_text and "(default 32; 0: none waits)" in help_text


def test_retry_after_follows_the_time_per_request():
    queue = ModelQueue(4)
    queue.seconds_per_request = 2.5
    queue.admitted = 3
    assert queue.retry_after() == 8  # ceil(2.5 × 3)
    queue.seconds_per_request = 100.0
    assert queue.retry_after() == 60  # the openai client ignores longer waits


def _padded(size: int) -> str:
    """:data:`BODY` with spaces after it, ``size`` bytes in all."""
    return BODY + " " * (size - len(BODY))


def _answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """Head and body of one answer on ``sock`` (read up to its Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def test_bodies_read_at_once_are_bounded_by_the_body_budget(backend):
    """Before: every connection's body was read at once, however many (memory bound by the connections alone,
    up to 41 MB each for a speech student) while the model's queue had room."""
    server = build_server(backend, port=0, max_reading_bytes=1000)
    port = server.server_address[1]
    with ThreadedServer(server), socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        first = _padded(600).encode()
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 600\r\n\r\n" + first[:100])  # its body comes slowly: 600 bytes taken
        _wait_for(lambda: server.bodies.reading == 600)
        status, headers, body = _post(port, _padded(500))  # 600 + 500 bytes: over the budget
        assert (status, headers["Retry-After"], headers["Connection"]) == (503, "1", "close")
        assert body == {"error": {
            "message": "The server is busy reading other request bodies (600 bytes at once, --max-reading-bytes "
                       "1000). Retry in 1 s (the Retry-After header).",
            "type": "server_error", "param": None, "code": "server_overloaded"}}
        with socket.create_connection(("127.0.0.1", port), timeout=30) as chunked:  # chunk by chunk, the same
            chunked.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n1f4\r\n" + _padded(500).encode() + b"\r\n0\r\n\r\n")
            assert _answer(chunked)[0].startswith(b"HTTP/1.1 503 ")
        assert _post(port, _padded(400))[0] == 200  # 600 + 400 bytes: within it
        slow.sendall(first[100:])
        assert _answer(slow)[0].startswith(b"HTTP/1.1 200 ")
        _wait_for(lambda: server.bodies.reading == 0)
        assert _post(port, _padded(1500))[0] == 200  # a body alone is read, even one over the budget
    assert build_parser().parse_args(["--model", "m"]).max_reading_bytes is None  # default: twice the largest body
    unserved = build_server(backend, port=0, max_request_bytes=4096)
    assert unserved.bodies.limit == 8192
    unserved.server_close()

"""How ``speechsum serve`` keeps or closes a connection: what ``Connection`` asks (HTTP/1.0 keep-alive, ``close``
among other options) and requests whose body would otherwise be run as the next request (raw sockets on loopback)."""

from __future__ import annotations

import json

import pytest

from tests.servers import ScriptedChatBackend, serve_in_thread
from tests.serving.test_serve_http import CHAT, _answer, _connect, _post


@pytest.mark.parametrize("framing", [f"Content-Length: {len(CHAT)}\r\n\r\n".encode() + CHAT,
                                     b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"],
                         ids=["content-length", "chunked"])
def test_an_options_request_with_a_body_closes_its_connection(framing):
    """Before: an OPTIONS request's body was left unread on a kept connection and parsed as the next request:
    a 400 "Bad request syntax ('{...}POST /v1/chat/completions HTTP/1.1')" answered the request behind it."""
    with serve_in_thread(ScriptedChatBackend(lambda m: "x")) as url, _connect(url) as sock:
        sock.sendall(b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + framing + _post(CHAT))
        answer = _answer(sock)
    head, _, rest = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 204 No Content\r\n") and "\r\nConnection: close" in head and rest == ""


def test_an_http_1_0_keep_alive_connection_is_told_it_stays_open(served):
    """HTTP/1.0 closes a connection unless the answer says ``Connection: keep-alive``: before, the server kept an
    HTTP/1.0 keep-alive connection open without saying so, and such a client (``ab -k``, a proxy speaking 1.0) read
    on for the close, which came after 300 s idle. A second request on the connection is answered too."""
    _, url = served
    with _connect(url) as sock, sock.makefile("rb") as answers:
        for request in (b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                        _post(CHAT).replace(b"HTTP/1.1", b"HTTP/1.0").replace(b"\r\n\r\n", b"\r\nConnection: keep-alive"
                                                                                     b"\r\nContent-Type: application/json\r\n\r\n")):
            sock.sendall(request)
            head = [answers.readline().decode().rstrip("\r\n")]
            while head[-1]:
                head.append(answers.readline().decode().rstrip("\r\n"))
            headers = dict(line.split(": ", 1) for line in head[1:-1])
            assert head[0].endswith(" 200 OK") and headers["Connection"] == "keep-alive"
            assert json.loads(answers.read(int(headers["Content-Length"])))


@pytest.mark.parametrize("connection", ["Connection: TE, close\r\n", "Connection: TE\r\nConnection: close\r\n"],
                         ids=["one-list", "two-headers"])
def test_close_among_the_connection_options_closes_the_connection(served, connection):
    """``Connection`` is a list of options (RFC 9110 §7.6.1; Perl's LWP sends ``TE, close``): before, only a value
    of exactly ``close`` closed the connection, so such a client's was kept and the request behind it answered."""
    _, url = served
    with _connect(url) as sock:
        sock.sendall(_post(CHAT, connection) + _post(CHAT))
        answer = _answer(sock)
    assert answer.count("HTTP/1.1 200 OK") == 1 and "\r\nConnection: close\r\n" in answer


def test_an_http_1_0_chunked_request_closes_its_connection(served):
    """RFC 9112 §6.1: HTTP/1.0 has no Transfer-Encoding, so a 1.0 request with one has faulty framing and its
    connection must be closed after the answer; before, a keep-alive one was kept and the next request run."""
    _, url = served
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(CHAT), CHAT)
    with _connect(url) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunked + _post(CHAT))
        answer = _answer(sock)
    assert answer.count("HTTP/1.1 200 OK") == 1 and "\r\nConnection: close\r\n" in answer


def test_an_http_0_9_request_keeps_no_connection(served):
    """HTTP/0.9 has no headers and no persistent connections; before, a "Connection: keep-alive" line after its
    request line was obeyed: the connection was kept and the next request answered after the bare body."""
    _, url = served
    with _connect(url) as sock:
        sock.sendall(b"GET /health\r\nConnection: keep-alive\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(sock) == '{"status": "ok"}'

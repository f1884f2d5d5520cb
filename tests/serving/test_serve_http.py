"""The HTTP layer of ``speechsum serve`` (no model: ``ScriptedChatBackend``): backlog, vanished clients, headers."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from urllib.parse import urlparse

import openai
import pytest

from speechsum.serving.http import APIServer, build_server
from tests.servers import ScriptedChatBackend, serve_in_thread

CHAT = json.dumps({"model": "scripted", "messages": [{"role": "user", "content": "x"}]}).encode()


def _connect(url: str) -> socket.socket:
    parts = urlparse(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=5)


def _post(body: bytes, extra: str = "") -> bytes:
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def test_the_listen_backlog_takes_bursts():
    assert APIServer.request_queue_size >= 128  # the standard library's 5 resets concurrent bursts


def test_a_client_gone_before_the_error_reply_is_one_log_line(capsys, caplog):
    caplog.set_level("INFO", logger="speechsum.serving.cli")
    backend = ScriptedChatBackend(lambda m: "x", fail_first_n=1, fail_status=400, delay=0.3)
    with serve_in_thread(backend) as url:
        sock = _connect(url)
        sock.sendall(_post(CHAT))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset while the backend still works: the 400 has nobody to go to
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not _logged(caplog, "Traceback", "400", "499"):
            time.sleep(0.05)
        assert _chat_status(url) == 200  # still serving
    assert "Traceback" not in capsys.readouterr().err
    assert _logged(caplog, '"POST /v1/chat/completions" 499')


def test_a_vanished_client_outside_a_request_is_one_log_line(capsys, caplog):
    caplog.set_level("INFO", logger="speechsum.serving.cli")
    server = build_server(ScriptedChatBackend(lambda m: "x"), port=0)
    try:
        try:
            raise BrokenPipeError(32, "Broken pipe")
        except BrokenPipeError:
            server.handle_error(None, ("192.0.2.1", 5))
    finally:
        server.server_close()
    assert capsys.readouterr().err == "" and _logged(caplog, "192.0.2.1: the client closed the connection")


def _logged(caplog, *parts: str) -> bool:
    return any(part in r.getMessage() for r in caplog.records for part in parts)


def _chat_status(url: str) -> int:
    with _connect(url) as sock:
        sock.sendall(_post(CHAT))
        return int(sock.recv(4096).split(b" ", 2)[1])


def test_a_malformed_authorization_header_is_named():
    with serve_in_thread(ScriptedChatBackend(lambda m: "x"), api_key="s3cret") as url, _connect(url) as sock:
        sock.sendall(_post(CHAT, "Authorization : Bearer s3cret\r\n"))
        answer = sock.makefile("rb").read().decode()  # the server closes after a malformed request
    assert answer.startswith("HTTP/1.1 400") and "Malformed request headers" in answer
    assert "s3cret" not in answer


def _answer(sock: socket.socket) -> str:
    return sock.makefile("rb").read().decode()  # to the end: the server closes after a refused body


def test_an_unknown_route_or_method_is_answered_before_its_body_is_read():
    """Before: a body over the size limit was a 413 (and one under it was read whole) although no route
    takes it; an OpenAI audio upload (POST /v1/audio/transcriptions) was told its size, not where audio goes."""
    backend = ScriptedChatBackend(lambda m: "x")
    with serve_in_thread(backend, max_request_bytes=1000) as url:
        with _connect(url) as sock:  # the body is never sent: the answer must not wait for it
            sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 30000000\r\n"
                         b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
            answer = _answer(sock)
        assert answer.startswith("HTTP/1.1 404") and "Connection: close" in answer
        assert json.loads(answer.split("\r\n\r\n", 1)[1]) == {"error": {
            "message": "Unknown route POST /v1/audio/transcriptions. This server offers GET /v1/models, POST "
                       "/v1/completions and POST /v1/chat/completions; audio goes in a chat completion: an "
                       "input_audio content part (base64 file) of the user message, to a speech student "
                       "(docs/serve.md).", "type": "invalid_request_error", "param": None, "code": "not_found"}}
        with _connect(url) as sock:
            sock.sendall(b"PUT /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{")
            answer = _answer(sock)
        assert answer.startswith("HTTP/1.1 405") and "Method PUT is not allowed on /v1/chat/completions (it takes POST, OPTIONS)." in answer
        with _connect(url) as sock:  # a POST route still sizes its body first
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{")
            assert _answer(sock).startswith("HTTP/1.1 413")
        assert _chat_status(url) == 200 and backend.count == 1  # still serving; only that request ran


def test_a_multipart_body_is_refused_by_its_content_type_not_as_malformed_headers():
    """Before: the header parser's notes on a multipart Content-Type (no boundary in a body it was not
    given) were taken for an unreadable header line: 400 'Malformed request headers … no space before
    the colon'. A body that is not JSON by its Content-Type is a 415 saying what to send, answered
    before the body is read (the connection is closed: the unread body is no next request)."""
    body = b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nscripted\r\n--b--\r\n"
    with serve_in_thread(ScriptedChatBackend(lambda m: "x")) as url, _connect(url) as sock:
        sock.sendall(_post(body, "Content-Type: multipart/form-data; boundary=b\r\n") + _post(CHAT))
        answers = ""
        while part := sock.recv(65536):
            answers += part.decode()
    assert answers.startswith("HTTP/1.1 415") and answers.count("HTTP/1.1 ") == 1 and "Connection: close" in answers
    assert json.loads(answers.split("\r\n\r\n", 1)[1])["error"] == {
        "message": "Content-Type 'multipart/form-data; boundary=b' is not JSON: send the request as a JSON object "
                   "with 'Content-Type: application/json'.",
        "type": "invalid_request_error", "param": None, "code": "unsupported_media_type"}
    assert "Malformed request headers" not in answers


def test_expect_100_continue_is_answered_only_once_the_request_may_send_its_body():
    """Before: "100 Continue" went out at once, so curl sent a large audio body into a 401 (or 404, 413)."""
    expect = "Expect: 100-continue\r\n"
    with serve_in_thread(ScriptedChatBackend(lambda m: "x"), api_key="s3cret") as url:
        with _connect(url) as sock:  # a wrong key: the final answer comes first, and the body is never sent
            sock.sendall(_post(CHAT, expect + "Authorization: Bearer wrong\r\n")[: -len(CHAT)])
            assert _answer(sock).startswith("HTTP/1.1 401")
        with _connect(url) as sock:
            sock.sendall(_post(CHAT, expect + "Authorization: Bearer s3cret\r\n")[: -len(CHAT)])
            assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(CHAT)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")


def test_a_route_without_its_v1_prefix_says_where_base_url_goes_wrong():
    """A client given base_url http://HOST:PORT (no /v1) posts to /chat/completions: the 404 says so."""
    from speechsum.utils.remote import openai_client

    with serve_in_thread(ScriptedChatBackend(lambda m: "x")) as url:
        client = openai_client(url.removesuffix("/v1"))
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["message"] == (
        "Unknown route POST /chat/completions. This server offers GET /v1/models, POST /v1/completions and POST "
        "/v1/chat/completions (did you mean /v1/chat/completions? A client's base_url ends in /v1: "
        "http://HOST:PORT/v1).")


@pytest.mark.parametrize(("line", "message"), [
    (b"PRI * HTTP/2.0", "Invalid HTTP version (2.0): send HTTP/1.1 requests."),
    (b"POST /v1/chat/completions", "Bad HTTP/0.9 request type ('POST')."),
    (b"GARBAGE", "Bad request syntax ('GARBAGE')."),
])
def test_an_unreadable_request_line_gets_a_status_line_and_a_4xx(line, message):
    """Before: HTTP/0.9's bare body (no status line: curl reports "Received HTTP/0.9") and, for an
    HTTP/2 preface, a 505 server_error."""
    with serve_in_thread(ScriptedChatBackend(lambda m: "x")) as url, _connect(url) as sock:
        sock.sendall(line + b"\r\n\r\n")
        answer = _answer(sock)
    assert answer.startswith("HTTP/1.1 400 Bad Request\r\n")
    assert json.loads(answer.split("\r\n\r\n", 1)[1])["error"]["message"] == message


def test_a_compressed_body_is_refused_by_its_content_encoding():
    """Before: a gzip body was read as JSON: 400 'Request body is not UTF-8: … byte 0x8b …'."""
    import gzip

    body = gzip.compress(CHAT)
    with serve_in_thread(ScriptedChatBackend(lambda m: "x")) as url:
        with _connect(url) as sock:
            sock.sendall(_post(body, "Content-Encoding: gzip\r\n"))
            answer = _answer(sock)
        assert answer.startswith("HTTP/1.1 415 Unsupported Media Type") and json.loads(
            answer.split("\r\n\r\n", 1)[1])["error"]["message"] == (
            "Content-Encoding 'gzip' request bodies are not supported; send the JSON uncompressed.")
        assert _chat_status(url) == 200


def test_a_key_sent_without_bearer_is_told_so_and_never_echoed():
    """Before: 'Missing API key' although an Authorization header came (the bare key, or Basic)."""
    with serve_in_thread(ScriptedChatBackend(lambda m: "x"), api_key="s3cret") as url:
        for header in ("Authorization: s3cret\r\n", "Authorization: Basic czNjcmV0\r\n"):
            with _connect(url) as sock:
                sock.sendall(_post(CHAT, header))
                answer = _answer(sock)
            assert answer.startswith("HTTP/1.1 401") and "s3cret" not in answer and "czNj" not in answer
            assert json.loads(answer.split("\r\n\r\n", 1)[1])["error"]["message"] == (
                "Missing API key (the Authorization header sent does not start with 'Bearer '): send "
                "'Authorization: Bearer <key>' (the server was started with --api-key-env).")


@pytest.mark.parametrize(("method", "message"), [
    ("BREW", "Method BREW is not supported by this server."),
    ("post", "Method post is not supported by this server (methods are upper-case: POST)."),
])
def test_an_unknown_method_is_a_405_not_a_501_that_clients_retry(method, message):
    """Before: 501 server_error, which the openai client raises as InternalServerError (retried)."""
    with serve_in_thread(ScriptedChatBackend(lambda m: "x")) as url, _connect(url) as sock:
        sock.sendall(f"{method} /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = _answer(sock)
    assert answer.startswith("HTTP/1.1 405 Method Not Allowed\r\n")
    assert json.loads(answer.split("\r\n\r\n", 1)[1]) == {"error": {
        "message": message, "type": "invalid_request_error", "param": None, "code": "method_not_allowed"}}


def test_an_ipv6_host_is_served():
    """Before: --host ::1 failed 'Address family for hostname not supported' (IPv4 sockets only)."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError as error:  # a machine without IPv6
        pytest.skip(f"no IPv6 loopback: {error}")
    server = build_server(ScriptedChatBackend(lambda m: "x"), host="::1", port=0)
    try:
        assert server.base_url.startswith("http://[::1]:")
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        from speechsum.utils.remote import openai_client

        reply = openai_client(server.base_url).chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content == "x"
    finally:
        server.shutdown()
        server.server_close()


def test_a_405_names_the_allowed_methods_and_options_answers_them():
    """Before: a 405 without the Allow header a 405 must carry (RFC 9110), and OPTIONS, the request
    that asks for it, was itself a 405 error."""
    with serve_in_thread(ScriptedChatBackend(lambda m: "x")) as url:
        for method, path, allowed in (("DELETE", "/v1/chat/completions", "POST, OPTIONS"),
                                      ("POST", "/v1/models", "GET, HEAD, OPTIONS")):
            with _connect(url) as sock:
                sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
                head = sock.recv(65536).decode()
            assert head.startswith("HTTP/1.1 405") and f"\r\nAllow: {allowed}\r\n" in head
        with _connect(url) as sock:  # keep-alive: the next request on the connection is answered too
            options = b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n"
            sock.sendall(options + _post(CHAT, "Connection: close\r\n"))
            answer = _answer(sock)
        assert answer.startswith("HTTP/1.1 204 No Content\r\n") and "\r\nAllow: POST, OPTIONS\r\n" in answer
        assert "HTTP/1.1 200 OK" in answer.split("\r\n\r\n", 1)[1]


def _exchange(url: str, request: str) -> tuple[str, dict[str, str]]:
    with _connect(url) as sock:
        sock.sendall(request.encode())
        head = _answer(sock).split("\r\n\r\n", 1)[0].split("\r\n")
    return head[0], dict(line.split(": ", 1) for line in head[1:])


def test_allowed_browser_origins_get_cors_headers_and_a_keyless_preflight():
    """Before: a browser page could not call the server at all: its preflight (OPTIONS, no key) was a 401
    or 405, and no answer carried Access-Control-Allow-Origin."""
    page = "http://localhost:3000"
    preflight = ("OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-"
                 "Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n")
    chat = _post(CHAT, "Authorization: Bearer s3cret\r\nOrigin: {origin}\r\nConnection: close\r\n").decode()
    with serve_in_thread(ScriptedChatBackend(lambda m: "x"), api_key="s3cret", allowed_origins=(page,)) as url:
        status, headers = _exchange(url, preflight.replace("{origin}", page))
        assert status == "HTTP/1.1 204 No Content" and headers["Access-Control-Allow-Origin"] == page
        assert headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
        assert headers["Access-Control-Allow-Headers"] == "authorization, content-type"
        status, headers = _exchange(url, chat.replace("{origin}", page))
        assert status == "HTTP/1.1 200 OK" and headers["Access-Control-Allow-Origin"] == page
        # a page's script may read a 503's Retry-After (the openai package's retries honour it) and a reply's
        # Warning: not CORS-safelisted, both were hidden from it before
        assert headers["Access-Control-Expose-Headers"] == "Retry-After, Warning"
        status, headers = _exchange(url, chat.replace("{origin}", "http://elsewhere.example"))
        assert status == "HTTP/1.1 200 OK" and "Access-Control-Allow-Origin" not in headers
    with serve_in_thread(ScriptedChatBackend(lambda m: "x")) as url:  # the default: no origin allowed
        status, headers = _exchange(url, preflight.replace("{origin}", page))
        assert status == "HTTP/1.1 204 No Content" and "Access-Control-Allow-Origin" not in headers


def test_an_absolute_form_request_target_is_served_as_its_path(served):
    """As a client configured with a proxy sends it (RFC 9112 §3.2.2: a server must accept it); before: a 404
    "Unknown route POST http://127.0.0.1:PORT/v1/chat/completions"."""
    _, url = served
    port = urlparse(url).port
    with _connect(url) as sock:
        sock.sendall(f"POST http://127.0.0.1:{port}/v1/chat/completions?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Connection: close\r\nContent-Length: {len(CHAT)}\r\n\r\n".encode() + CHAT)
        head, body = _answer(sock).split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 200") and json.loads(body)["choices"][0]["message"]["content"] == "ok"
    with _connect(url) as sock:
        sock.sendall(f"GET HTTP://127.0.0.1:{port}/v1/models/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head, body = _answer(sock).split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 200") and json.loads(body)["data"][0]["id"] == "scripted"


@pytest.mark.parametrize(("method", "target", "meant"), [
    ("POST", "/v1/v1/chat/completions", "/v1/chat/completions"),  # base_url http://HOST:PORT/v1/v1
    ("POST", "/openai/deployments/scripted/chat/completions?api-version=2024-10-21", "/v1/chat/completions"),  # Azure's
    ("POST", "/api/v1/completions", "/v1/completions"),
    ("GET", "/v1/v1/models", "/v1/models"),
])
def test_a_route_under_another_prefix_names_the_one_meant(served, method, target, meant):
    """Before: only a path missing its /v1 got the hint; these got the bare list of routes."""
    _, url = served
    with _connect(url) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode())
        head, body = _answer(sock).split("\r\n\r\n", 1)
    path = target.split("?")[0]
    assert head.startswith("HTTP/1.1 404") and json.loads(body)["error"]["message"] == (
        f"Unknown route {method} {path}. This server offers GET /v1/models, POST /v1/completions and POST "
        f"/v1/chat/completions (did you mean {meant}? A client's base_url ends in /v1: http://HOST:PORT/v1).")


def test_options_asterisk_is_answered_with_the_servers_methods(served):
    """RFC 9110 §9.3.7: ``OPTIONS *`` asks the server itself; before: a 404 "Unknown route OPTIONS *"."""
    _, url = served
    status, headers = _exchange(url, "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == "HTTP/1.1 204 No Content" and headers["Allow"] == "GET, HEAD, POST, OPTIONS"
    status, headers = _exchange(url, "GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == "HTTP/1.1 405 Method Not Allowed" and headers["Allow"] == "OPTIONS"


@pytest.mark.parametrize(("version", "hosts", "message"), [
    ("HTTP/1.1", "", "An HTTP/1.1 request needs a Host header (RFC 9112 §3.2): send 'Host: HOST:PORT', as every "
                     "HTTP client does."),
    ("HTTP/1.0", "Host: a\r\nHost: b\r\n", "The request has 2 Host headers; send exactly one."),
])
def test_a_request_without_one_host_header_is_a_400(served, version, hosts, message):
    """RFC 9112 §3.2: a server MUST answer these with 400; before: they were served (200)."""
    backend, url = served
    count = backend.count
    with _connect(url) as sock:
        sock.sendall(f"POST /v1/chat/completions {version}\r\n{hosts}Content-Length: {len(CHAT)}\r\n\r\n".encode() + CHAT)
        head, body = _answer(sock).split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 400") and "Connection: close" in head
    assert json.loads(body)["error"]["message"] == message and backend.count == count  # nothing generated


def test_an_http_1_0_request_needs_no_host_and_an_empty_one_passes(served):
    _, url = served
    for request in ("GET /health HTTP/1.0\r\n\r\n", "GET /health HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n"):
        status, _ = _exchange(url, request)
        assert status.endswith(" 200 OK")

"""The HTTP layer of ``speechsum serve`` (no model: ``ScriptedChatBackend``): backlog, vanished clients, headers."""

from __future__ import annotations

import json
import socket
import struct
import time
from urllib.parse import urlparse

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

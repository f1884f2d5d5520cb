"""A request whose client gave up while it waited for the model is not generated for nobody."""

from __future__ import annotations

import json
import logging
import socket
import time
from urllib.parse import urlparse

from speechsum.utils.remote import openai_client
from tests.servers import serve_in_thread
from tests.serving.tiny_lm import MODEL


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_request_whose_client_left_while_it_waited_is_not_generated(backend, caplog):
    """Before: a client that timed out while its request waited behind others (and retried) still had
    its request generated once the model was free, for nobody, ahead of the retry."""
    generated = []
    original = backend._generate
    backend._generate = lambda *args: generated.append(args) or original(*args)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    try:
        with serve_in_thread(backend) as url, caplog.at_level(logging.INFO, logger="speechsum.serving.cli"):
            parts = urlparse(url)
            with backend._lock:  # the model busy with another request
                with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
                    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                 b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    time.sleep(0.3)  # the request now waits for the model
                # the client gave up (closed) before the model was free
            assert _wait_for(lambda: '"POST /v1/chat/completions" 499' in caplog.text)
            assert generated == []
            reply = openai_client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                                max_tokens=2)
            assert reply.choices[0].finish_reason in ("stop", "length") and len(generated) == 1
    finally:
        backend._generate = original

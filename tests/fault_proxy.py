"""A seeded fault-injecting HTTP proxy in front of a real loopback server (tests only).

    with serve_in_thread(backend) as url, FaultProxy(url, seed=3, rate=0.35) as proxy:
        client = openai_client(proxy.url, timeout=1.0)     # every request passes the proxy

Each request is either forwarded to the upstream server and its answer relayed, or answered with
one fault of :data:`FAULTS` instead. The choice depends only on ``seed``, the request (method,
path, body) and how many times that same request was seen before, never on thread timing, so a
run is reproducible. Only the first ``max_faults_per_request`` sightings of a request can be
faulted, so a client with more attempts than that always gets through (outcomes can then be
compared with a fault-free run exactly). ``timeout`` hangs ``hang_seconds``: set it above the
client's timeout.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.servers import ThreadedServer

RELAYED_HEADERS = ("content-type", "retry-after", "retry-after-ms")


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None,
          length: int | None = None) -> None:
    """An answer with ``body``; ``length`` (default ``len(body)``) is the Content-Length announced."""
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()


def _error(status: int, message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "injected_fault", "code": status}}).encode()


def _timeout(proxy: FaultProxy, handler: BaseHTTPRequestHandler) -> None:
    time.sleep(proxy.hang_seconds)  # the client gives up first; then close without a word


def _rate_limit(proxy: FaultProxy, handler: BaseHTTPRequestHandler) -> None:
    _send(handler, 429, _error(429, "injected rate limit"), {"Retry-After": str(proxy.retry_after)})


def _server_error(proxy: FaultProxy, handler: BaseHTTPRequestHandler) -> None:
    _send(handler, 500, _error(500, "injected internal error"))


def _unavailable(proxy: FaultProxy, handler: BaseHTTPRequestHandler) -> None:
    _send(handler, 503, _error(503, "injected overload"))


def _malformed_json(proxy: FaultProxy, handler: BaseHTTPRequestHandler) -> None:
    _send(handler, 200, b'{"id": "cmpl-1", "object": "chat.completion", "choices": [{"index": 0,, oops')


def _truncated_body(proxy: FaultProxy, handler: BaseHTTPRequestHandler) -> None:
    status, headers, body = proxy.forward(handler)  # the real answer, cut in half mid-transfer
    _send(handler, status, body[: len(body) // 2], headers, length=len(body))


def _refused(proxy: FaultProxy, handler: BaseHTTPRequestHandler) -> None:
    pass  # close the socket without answering


FAULTS: dict[str, Callable[[FaultProxy, BaseHTTPRequestHandler], None]] = {
    "timeout": _timeout,
    "rate_limit": _rate_limit,
    "server_error": _server_error,
    "unavailable": _unavailable,
    "malformed_json": _malformed_json,
    "truncated_body": _truncated_body,
    "refused": _refused,
}


@dataclass
class ProxiedRequest:
    """One request the proxy saw: its digest (method, path, body), how many times the same request
    came before (``occurrence``), and the fault it got ("" = forwarded and relayed whole)."""

    digest: str
    occurrence: int
    fault: str


class FaultProxy(ThreadedServer):
    """The proxy (module docstring). Counters: ``requests`` (every request seen), ``faults``
    (per fault kind), ``delivered`` (answers relayed whole), ``delivered_digests`` (the distinct
    requests among them)."""

    def __init__(self, upstream: str, seed: int, rate: float = 0.35, kinds: tuple[str, ...] = tuple(FAULTS),
                 max_faults_per_request: int = 2, hang_seconds: float = 1.5, retry_after: float = 0.05) -> None:
        unknown = set(kinds) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULTS)}")
        target = urlsplit(upstream)
        self.upstream_host, self.upstream_port = target.hostname, target.port
        self.seed, self.rate, self.kinds = seed, rate, tuple(kinds)
        self.max_faults_per_request, self.hang_seconds, self.retry_after = max_faults_per_request, hang_seconds, retry_after
        self.log: list[ProxiedRequest] = []
        self._seen: Counter = Counter()
        self._lock = threading.Lock()
        super().__init__(ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class()))
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a hanging "timeout" must not hold up shutdown
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{target.path}"

    # -- counters ---------------------------------------------------------------------------------
    @property
    def requests(self) -> int:
        return len(self.log)

    @property
    def faults(self) -> Counter:
        return Counter(r.fault for r in self.log if r.fault)

    @property
    def delivered(self) -> int:
        return sum(not r.fault for r in self.log)

    @property
    def delivered_digests(self) -> set[str]:
        return {r.digest for r in self.log if not r.fault}

    def fault_share(self) -> float:
        return sum(self.faults.values()) / max(1, self.requests)

    # -- the decision -----------------------------------------------------------------------------
    def choose(self, digest: str, occurrence: int) -> str:
        """The fault for the ``occurrence``-th sight (0-based) of request ``digest``, "" for none."""
        if occurrence >= self.max_faults_per_request:
            return ""
        rng = random.Random(f"{self.seed}:{digest}:{occurrence}")
        return rng.choice(self.kinds) if rng.random() < self.rate else ""

    def _admit(self, method: str, path: str, body: bytes) -> str:
        digest = hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()[:16]
        with self._lock:
            occurrence = self._seen[digest]
            self._seen[digest] += 1
            fault = self.choose(digest, occurrence)
            self.log.append(ProxiedRequest(digest, occurrence, fault))
        return fault

    def forward(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        """Send the handler's request upstream: (status, relayed headers, body)."""
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection")}
            connection.request(handler.command, handler.path, body=handler.body, headers=headers)
            response = connection.getresponse()
            body = response.read()
            relayed = {k: v for k, v in response.getheaders() if k.lower() in RELAYED_HEADERS}
            return response.status, relayed, body
        finally:
            connection.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: the answer's end is the close

            def _handle(self) -> None:
                self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._admit(self.command, self.path, self.body)
                try:
                    if fault:
                        FAULTS[fault](proxy, self)
                    else:
                        status, headers, body = proxy.forward(self)
                        _send(self, status, body, headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (after its timeout)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

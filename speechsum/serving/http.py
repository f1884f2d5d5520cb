"""The HTTP layer of ``speechsum serve``: routes, API-key check, size limit, errors, request log.

Standard library only (:class:`http.server.ThreadingHTTPServer`); one thread per connection, so
slow clients do not block others — the backend serialises model calls itself.
"""

from __future__ import annotations

import logging
import select
import socket
import sys
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from speechsum.serving import openai_format as fmt
from speechsum.serving.admission import DEFAULT_MAX_WAITING, BodyBudget, ModelQueue
from speechsum.serving.cors import cors_headers, preflight_headers
from speechsum.serving.json_body import json_bytes, json_object
from speechsum.serving.protocol import APIError, Backend, ClientGone
from speechsum.serving.request_body import large_body, read_body
from speechsum.serving.request_fields import ignored_fields
from speechsum.serving.routes import (
    POST_ROUTES,
    SERVER_METHODS,
    allowed_methods,
    check_api_key,
    check_header_lines,
    check_host,
    keeps_connection,
    route_error,
    route_path,
)
from speechsum.serving.streaming import LiveStream, stream_mode

LOG = logging.getLogger("speechsum.serving.cli")
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_AUDIO_BYTES = 25 * 1024 * 1024  # as OpenAI's audio uploads
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")  # the ones with a do_* below
CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)  # nobody to answer


class APIServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding the backend and the serving options.

    ``base_url`` → ``"http://HOST:PORT/v1"`` once bound (port 0 picks a free port).
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog (the standard library's 5 resets bursts of connections)

    def __init__(self, address: tuple[str, int], backend: Backend, api_key: str | None,
                 max_request_bytes: int, limits: fmt.Limits, allowed_origins: tuple[str, ...] = (),
                 max_waiting: int = DEFAULT_MAX_WAITING, max_reading_bytes: int | None = None) -> None:
        if ":" in address[0]:  # an IPv6 address (::1, ::): the standard library binds IPv4 only
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.backend = backend
        self.api_key = api_key
        self.max_request_bytes = max_request_bytes
        self.limits = limits
        self.allowed_origins = allowed_origins  # CORS (speechsum.serving.cors); () = none
        self.queue = ModelQueue(max_waiting)  # backpressure: a 503 once max_waiting requests wait for the model
        self.bodies = BodyBudget(max_reading_bytes or 2 * max_request_bytes)  # bytes of bodies read at once
        self.created = int(time.time())
        self.dropped = 0  # requests whose client left while they waited for the model (logged as 499)

    def handle_error(self, request: Any, client_address: tuple) -> None:
        """A client that went away is one log line; anything else keeps the standard traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, CLIENT_GONE):
            LOG.info("%s: the client closed the connection (%s)", client_address[0], type(error).__name__)
            return
        super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


def build_server(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_tokens_limit: int = 4096,
    max_logprobs: int = 20,
    max_n: int = 16,
    max_audio_bytes: int = DEFAULT_MAX_AUDIO_BYTES,
    allowed_origins: tuple[str, ...] = (),
    max_waiting: int = DEFAULT_MAX_WAITING,
    max_reading_bytes: int | None = None,
) -> APIServer:
    """Bind an OpenAI-compatible server for ``backend`` (not yet serving: call ``serve_forever()``).

    ``api_key``: when set, every ``/v1`` request needs ``Authorization: Bearer <key>`` (else 401).
    ``max_request_bytes``: larger bodies get 413. ``max_tokens_limit``: largest accepted
    ``max_tokens``; ``max_logprobs``: largest top-k; ``max_n``: most samples per prompt.
    ``max_audio_bytes``: largest ``input_audio`` file, for a backend that reads audio
    (``backend.reads_audio``); its base64 size is added to the body limit, so a larger body is
    refused from its Content-Length before anything is read or decoded. ``allowed_origins``: browser
    origins answered with CORS headers ("*": any; default none, :mod:`speechsum.serving.cors`).
    ``max_waiting``: most requests waiting for the model besides the one it serves; one more gets a
    503 with ``Retry-After`` (:mod:`speechsum.serving.admission`). ``max_reading_bytes``: most bytes of
    request bodies read at once over all connections (default: two of the largest body); a body beyond
    it while others are read gets a 503 with ``Retry-After``, a body alone is always read.
    """
    audio_bytes = max_audio_bytes if getattr(backend, "reads_audio", False) else 0
    limits = fmt.Limits(max_tokens=max_tokens_limit, max_logprobs=max_logprobs, max_n=max_n,
                        max_audio_bytes=audio_bytes)
    body_limit = max_request_bytes + 4 * -(-audio_bytes // 3)  # + the audio's base64 length
    return APIServer((host, port), backend, api_key or None, body_limit, limits, tuple(allowed_origins), max_waiting,
                     max_reading_bytes)


class _Handler(BaseHTTPRequestHandler):
    server: APIServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client (httpx) expects
    server_version = "speechsum-serve"
    timeout = 300  # seconds a connection may sit idle or stall mid-request before it is dropped
    continue_pending = False  # the request sent Expect: 100-continue, not yet answered

    def log_request(self, code: Any = "-", size: Any = "-") -> None:  # one line per request is ours
        pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (BaseHTTPRequestHandler API)
        LOG.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._handle("OPTIONS")

    def do_HEAD(self) -> None:  # noqa: N802  (GET's status and headers, no body)
        self._handle("HEAD")

    def parse_request(self) -> bool:
        """The standard library's, ``Connection`` read as RFC 9110 and 9112 ask (:func:`keeps_connection`; the
        standard library compared its whole value with ``close`` and ``keep-alive``)."""
        if not super().parse_request():
            return False
        self.close_connection = not keeps_connection(self.headers, self.request_version, not self.close_connection)
        return True

    def handle_expect_100(self) -> bool:
        """``Expect: 100-continue``: the interim answer waits until the key, the route and the body's
        size have passed (:meth:`_read_body`), so a refused upload is answered before it is sent (the
        standard library said "100 Continue" at once: curl then sent a large body into a 401 or 413)."""
        self.continue_pending = True
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """What the standard library answers itself (a method no ``do_*`` handles, a malformed
        request line, headers too long), as this server's JSON error instead of an HTML page, with a
        status line (a line it could not read left HTTP/0.9's bare body) and a 4xx: a client's
        mistake, not the server's (its 501 and 505 read as 5xx errors to retry)."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # any later version: the status line and headers are written
        reason = message or self.responses.get(code, ("Error",))[0]
        if code == 501:  # a method no route takes
            method = getattr(self, "command", None) or "request"
            case = f" (methods are upper-case: {method.upper()})" if method.upper() in HTTP_METHODS else ""
            code, reason = 405, f"Method {method} is not supported by this server{case}"
        elif code == 505:
            code, reason = 400, f"{reason}: send HTTP/1.1 requests"
        self._send_error(APIError(code, f"{reason}.", code="method_not_allowed" if code == 405 else None))

    # ------------------------------------------------------------------------------------------ dispatch
    def _handle(self, method: str) -> None:
        started = time.perf_counter()
        path = route_path(self.path)
        status, usage, self.ignored, self.live = 500, None, [], None
        try:
            self._check_headers()  # first: a malformed line hides the headers after it (Authorization too)
            if path.startswith("/v1/") and method != "OPTIONS":  # a CORS preflight carries no key
                self._check_key()  # before the body is read: an unauthorised client cannot make us read it
            self._check_route(method, path)  # before the body too: a 404/405 says more than its size (413)
            if method == "OPTIONS":  # what the route takes, no body (a client's or proxy's capability check)
                methods = SERVER_METHODS if path == "*" else allowed_methods(path)  # *: the server's (RFC 9110)
                cors = preflight_headers(self.headers, self.server.allowed_origins, methods)
                self.close_connection = self.close_connection or self._body_may_follow()  # unread: not a request
                status = self._send_no_content({"Allow": methods, **cors})
                return
            status, payload = self._route(path)
            usage = payload.get("usage")
            if self.live is None:
                self._send(status, payload, fmt.warning_header(payload.get("warnings") or []))
            else:
                self.live.finish(payload)
        except APIError as error:
            status = self._send_error(error)
        except ClientGone as gone:  # it left while its request waited for the model or was generated: work dropped
            status, self.close_connection = 499, True
            self.server.dropped += 1
            LOG.info("%s: the client closed its connection %s (%d so far)", self.client_address[0], gone.what,
                     self.server.dropped)
        except CLIENT_GONE:
            status, self.close_connection = 499, True  # the client went away; nothing to answer
        except Exception:  # a bug or backend failure: log it, answer 500 without internals
            LOG.error("internal error on %s %s:\n%s", method, path, traceback.format_exc())
            status = self._send_error(APIError(500, "Internal server error; see the server log."))
        finally:
            self.continue_pending = False
            tokens = f" prompt_tokens={usage['prompt_tokens']} completion_tokens={usage['completion_tokens']}" if usage else ""
            ignored = f" ignored={','.join(self.ignored)}" if self.ignored else ""  # accepted fields with no effect
            LOG.info('%s "%s %s" %d %.0fms%s%s', self.client_address[0], method, path, status,
                     1000 * (time.perf_counter() - started), tokens, ignored)

    def _check_route(self, method: str, path: str) -> None:
        """404 for a path this server has no route for, 405 for a method its route does not take;
        answered without reading the body, so the connection is closed when one may follow."""
        allowed = allowed_methods(path)
        if allowed and method in allowed.split(", "):
            return
        if self._body_may_follow():
            self.close_connection = True  # the unread body must not be parsed as the next request
        raise route_error(method, path)

    def _body_may_follow(self) -> bool:
        lengths = self.headers.get_all("Content-Length") or []
        return (self.headers.get("Transfer-Encoding") is not None or any(v.strip() != "0" for v in lengths)
                or (not lengths and self.command == "POST"))

    def _route(self, path: str) -> tuple[int, dict]:
        """The answer to a request :meth:`_check_route` let through; a ``stream: true`` request's is sent by
        ``self.live`` (:class:`~speechsum.serving.streaming.LiveStream`) as it is generated. The body and its
        JSON are let go once parsed: a request waiting for the model holds only what it needs (before
        2026-12-07 also both, each the size of its base64 audio: 3.7x the file in all)."""
        backend, limits = self.server.backend, self.server.limits
        if path in POST_ROUTES and self.server.queue.full and large_body(self.headers):  # before 2026-12-07 read first
            self.close_connection = True  # its body unread: read and parsed, it would be refused all the same
            raise self.server.queue.overloaded()
        with self.server.bodies.reader() as share:  # the body's bytes count against the budget until parsed
            body = self._read_body(share.take)
            if path == "/health":
                return 200, {"status": "ok"}
            if path == "/v1/models":
                return 200, fmt.models_response(backend.model_name, backend.max_model_len, self.server.created)
            if path.startswith("/v1/models/"):
                name = unquote(path.removeprefix("/v1/models/"))
                if name != backend.model_name:
                    raise APIError(404, f"The model '{name}' does not exist; this server serves "
                                        f"'{backend.model_name}'.", param="model", code="model_not_found")
                card = fmt.models_response(backend.model_name, backend.max_model_len, self.server.created)["data"][0]
                return 200, card
            request = json_object(body)
            del body
            fmt.check_model(request, backend.model_name)
            chat = path != "/v1/completions"
            parsed, as_ids = fmt.parse_chat(request, limits) if chat else fmt.parse_completion(request, limits)
            self.ignored, mode = ignored_fields(request, chat=chat), stream_mode(request)
            del request
        if mode is not None:  # the answer is sent by self.live as it comes
            self.live = LiveStream(chat, backend.model_name, mode, self._start_stream, self._write_chunk)
            self.live.attach([parsed] if chat else parsed)
        if not chat:  # POST /v1/completions
            for one in parsed:
                one.client_gone = self._client_gone
            with self.server.queue.slot():
                outputs = backend.complete(parsed)
            reply = fmt.completion_response(backend.model_name, parsed, outputs, as_ids)
        else:  # POST /v1/chat/completions
            parsed.client_gone = self._client_gone
            with self.server.queue.slot():
                output = backend.chat(parsed)
            reply = fmt.chat_response(backend.model_name, parsed, output, as_ids)
        return 200, reply

    def _start_stream(self, warnings: list[dict]) -> None:
        """The status line and headers of a streamed answer: chunked (HTTP/1.0: ended by closing)."""
        self.chunked = self.request_version == "HTTP/1.1"
        self.close_connection = self.close_connection or not self.chunked
        self._send_head(200, "text/event-stream", {"Cache-Control": "no-cache", **fmt.warning_header(warnings)},
                        {"Transfer-Encoding": "chunked"} if self.chunked else {})

    def _write_chunk(self, data: bytes) -> None:
        if not self.chunked:
            self.wfile.write(data)
        else:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n")

    # ------------------------------------------------------------------------------------------ plumbing
    def _client_gone(self) -> bool:
        """Whether the client has closed its connection (its end reads as closed, or was reset); a
        pipelined next request reads as data, not as gone. As nginx's 499: a half-close counts as gone."""
        try:
            if not select.select([self.connection], [], [], 0)[0]:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _check_headers(self) -> None:
        try:
            check_header_lines(self.headers)
            check_host(self.headers, self.request_version)
        except APIError:
            self.close_connection = True  # its body, if any, is not read
            raise

    def _read_body(self, take: Callable[[int], None]) -> bytes:
        """The request's body (:func:`~speechsum.serving.request_body.read_body`): Content-Length or
        chunked, within the size limit and the server's body budget (``take``); the ``100 Continue`` sent
        once it may come. Any error closes the connection: the unread rest of the body must not be parsed
        as the next request."""
        try:
            return read_body(self.headers, self.rfile, self.command, self.server.max_request_bytes, self._send_continue,
                             take)
        except APIError:
            self.close_connection = True
            raise

    def _send_continue(self) -> None:
        if self.continue_pending:
            self.continue_pending = False
            self.send_response_only(100)
            self.end_headers()

    def _check_key(self) -> None:
        try:
            check_api_key(self.headers, self.server.api_key)
        except APIError:
            self.close_connection = True  # the unread body must not be parsed as the next request
            raise

    def _send_error(self, error: APIError) -> int:
        """Answer ``error``; the status for the request log: the error's, or 499 when the client is gone.
        A streamed answer already begun gets it as an ``error`` event, its connection then closed."""
        try:
            if getattr(self, "live", None) is not None and self.live.started:
                self.close_connection = True
                self.live.fail(error)
                return error.status
            self._send(error.status, error.body(), error.headers)
            return error.status
        except CLIENT_GONE:
            self.close_connection = True
            return 499

    def _send_head(self, status: int, content_type: str, headers: dict[str, str], framing: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        cors = cors_headers(getattr(self, "headers", None), self.server.allowed_origins)  # none: request line unread
        for name, value in {**framing, **cors, **headers}.items():
            self.send_header(name, value)
        self._end_head()

    def _send_no_content(self, headers: dict[str, str]) -> int:
        self.send_response(204)
        for name, value in headers.items():
            self.send_header(name, value)
        self._end_head()
        return 204

    def _end_head(self) -> None:
        """``Connection``, then the head's end: close, or keep-alive to an HTTP/1.0 client whose connection is
        kept (it asked): HTTP/1.0 closes unless told so, and before 2026-12-07 such a client (``ab -k``, a proxy
        speaking 1.0) read on for a close that came only after 300 s idle."""
        if self.close_connection:
            self.send_header("Connection", "close")
        elif self.request_version == "HTTP/1.0":
            self.send_header("Connection", "keep-alive")
        self.end_headers()

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, "application/json", json_bytes(payload), headers)

    def _send_bytes(self, status: int, content_type: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        self._send_head(status, content_type, headers or {}, {"Content-Length": str(len(data))})
        if self.command != "HEAD":
            self.wfile.write(data)


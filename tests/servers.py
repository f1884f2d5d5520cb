"""Real OpenAI-compatible HTTP servers on loopback for tests (``speechsum serve``'s own stack).

    with serve_in_thread(ScriptedChatBackend(lambda messages: '{"winner": "A"}', fail_first_n=2)) as url:
        client = speechsum.utils.remote.openai_client(url)   # talks HTTP to 127.0.0.1, no mocks

``ScriptedChatBackend`` answers chat completions with ``reply(messages)`` and can fail on purpose
(first n requests, every k-th request, with any HTTP status) and records every request it saw.
``JSONServer`` is a bare server answering 200 with any JSON (wrongly shaped replies, NaN).
For seeded network faults (timeouts, 429, 5xx, malformed or truncated bodies, dropped connections)
put ``tests.fault_proxy.FaultProxy`` in front of either server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from time import sleep
from typing import Any

from speechsum.serving.cli import build_server
from speechsum.serving.protocol import (
    APIError,
    Backend,
    ChatOutput,
    ChatRequest,
    CompletionOutput,
    CompletionRequest,
    Generation,
)


class ThreadedServer:
    """A loopback HTTP server serving in a daemon thread inside ``with`` (shut down, closed and
    joined on exit): the lifecycle every test server here shares."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def serve_in_thread(backend: Backend, api_key: str | None = None, **server_options) -> Iterator[str]:
    """Run ``build_server(backend, port=0, api_key=...)`` in a daemon thread; yield its base URL
    ``"http://127.0.0.1:PORT/v1"``; shut it down on exit. ``server_options`` go to build_server."""
    server = build_server(backend, host="127.0.0.1", port=0, api_key=api_key, **server_options)
    with ThreadedServer(server):
        yield server.base_url


class RawServer(ThreadedServer):
    """A bare loopback server that reads each POST's body and lets ``respond(handler, body)`` write the whole
    answer (status line, headers, body: a drip, a chunked stream, …; an ``OSError`` when the client hangs
    up is ignored); ``targets``: the request targets seen (absolute URLs when used as a forward proxy)."""

    def __init__(self, respond: Callable[[BaseHTTPRequestHandler, bytes], None]) -> None:
        self.targets: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                owner.targets.append(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    respond(self, body)
                except OSError:
                    pass  # the client gave up

        super().__init__(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.address = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.url = f"{self.address}/v1"


class JSONServer(RawServer):
    """A bare loopback server (not speechsum serve) answering each POST with 200 and the JSON of
    ``answer(request_body)`` (NaN written as NaN; bytes sent as they are, e.g. not UTF-8; an answer
    ``(status, body)`` sets the status):
    ``with JSONServer(answer) as server`` gives ``server.url`` (the base URL) and
    ``server.requests`` (POSTs so far)."""

    def __init__(self, answer: Callable[[dict], Any]) -> None:
        def respond(handler: BaseHTTPRequestHandler, body: bytes) -> None:
            reply = answer(json.loads(body))
            status, reply = reply if isinstance(reply, tuple) else (200, reply)
            data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

        super().__init__(respond)

    @property
    def requests(self) -> int:
        return len(self.targets)


def prompt_text(messages: list[dict]) -> str:
    """The first user turn: the prompt a scripted judge answers (a re-ask after a malformed answer adds
    the answer and a correction after it)."""
    return next(message["content"] for message in messages if message["role"] == "user")


@dataclass
class RecordedRequest:
    """One request the scripted backend received: its 1-based number, kind ("chat"/"completion"),
    the messages (or prompt) and the HTTP status it was answered with (200 or the failure)."""

    number: int
    kind: str
    messages: list[dict]
    status: int


class ScriptedChatBackend:
    """A backend whose chat completions answer ``reply(messages)`` (no model involved).

    Failures, decided per request number r = 1, 2, …: r ≤ ``fail_first_n``, or
    ``fail_every`` = k > 0 and r % k == 0 → HTTP ``fail_status`` with an OpenAI error body (a 429
    carries ``Retry-After: retry_after`` when given). ``delay`` seconds of sleep per request
    (timeouts, concurrency). ``requests`` records every request; ``count`` is how many arrived;
    ``max_in_flight`` the most requests handled at once. Completions answer ``reply`` on a single
    user message holding the prompt text (token-id prompts are refused with a 400).
    """

    def __init__(
        self,
        reply: Callable[[list[dict]], str],
        fail_first_n: int = 0,
        fail_status: int = 500,
        fail_every: int = 0,
        delay: float = 0.0,
        retry_after: float | None = None,
        model_name: str = "scripted",
    ) -> None:
        self.reply = reply
        self.fail_first_n = fail_first_n
        self.fail_status = fail_status
        self.fail_every = fail_every
        self.delay = delay
        self.retry_after = retry_after
        self.model_name = model_name
        self.max_model_len: int | None = None
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self.requests)

    def _answer(self, kind: str, messages: list[dict], n: int) -> list[Generation]:
        with self._lock:
            number = len(self.requests) + 1
            fail = number <= self.fail_first_n or (self.fail_every > 0 and number % self.fail_every == 0)
            self.requests.append(RecordedRequest(number, kind, messages, self.fail_status if fail else 200))
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.delay:
                sleep(self.delay)
            if fail:
                headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
                raise APIError(self.fail_status, f"scripted failure of request {number}", headers=headers)
            texts = [self.reply(messages) for _ in range(n)]
        finally:
            with self._lock:
                self._in_flight -= 1
        return [Generation(text=t, finish_reason="stop", tokens=None, num_tokens=len(t.split())) for t in texts]

    def chat(self, request: ChatRequest) -> ChatOutput:
        if request.top_logprobs is not None:
            raise APIError(400, "ScriptedChatBackend cannot return log-probs.", param="logprobs")
        generations = self._answer("chat", request.messages, request.sampling.n)
        return ChatOutput(num_prompt_tokens=sum(len(m["content"].split()) for m in request.messages),
                          generations=generations)

    def complete(self, requests: list[CompletionRequest]) -> list[CompletionOutput]:
        for request in requests:  # every prompt checked before any is answered, as HFBackend
            if not isinstance(request.prompt, str):
                raise APIError(400, "ScriptedChatBackend only takes text prompts.", param="prompt")
            if request.logprobs is not None or request.prompt_logprobs is not None:
                raise APIError(400, "ScriptedChatBackend cannot return log-probs.", param="logprobs")
        return [self._complete(request) for request in requests]

    def _complete(self, request: CompletionRequest) -> CompletionOutput:
        messages = [{"role": "user", "content": request.prompt}]
        generations = self._answer("completion", messages, request.sampling.n)
        return CompletionOutput(prompt_text=request.prompt, prompt_tokens=None,
                                num_prompt_tokens=len(request.prompt.split()), generations=generations)

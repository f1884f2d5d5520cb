"""A total time limit per HTTP request for the ``openai`` client.

The client's own ``timeout`` limits each network operation (connect, one write, one read), so a
server dripping a byte now and then holds a request forever. :class:`DeadlineTransport` gives
every operation of a request at most the time left until ``seconds`` after the request started:
connecting, sending, waiting for the answer and reading it end within ``seconds`` in total, with
the client's usual timeout error (``openai.APITimeoutError``, retried). Requests through an
environment proxy (``HTTPS_PROXY``) keep the per-operation limit only. It extends the HTTP
library the installed ``openai`` uses (``httpx2``/``httpcore2``, or ``httpx``/``httpcore`` in older releases).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from typing import Any

import openai

_NAME = next(c.__module__.split(".")[0] for c in openai.DefaultHttpxClient.__mro__ if c.__module__.startswith("httpx"))
_httpx = importlib.import_module(_NAME)  # httpx2, or httpx for an older openai
_httpcore = importlib.import_module(_NAME.replace("httpx", "httpcore"))

Left = Callable[[float | None, type[Exception]], float]


class _Stream(_httpcore.NetworkStream):
    """A connection whose reads and writes wait at most the time left to the request's deadline."""

    def __init__(self, stream: _httpcore.NetworkStream, left: Left) -> None:
        self._stream, self._left = stream, left

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._left(timeout, _httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._left(timeout, _httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> _httpcore.NetworkStream:
        left = self._left(timeout, _httpcore.ConnectTimeout)
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, left), self._left)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(_httpcore.NetworkBackend):
    def __init__(self, backend: _httpcore.NetworkBackend, left: Left) -> None:
        self._backend, self._left = backend, left

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> _httpcore.NetworkStream:
        stream = self._backend.connect_tcp(host, port, self._left(timeout, _httpcore.ConnectTimeout), local_address,
                                           socket_options)
        return _Stream(stream, self._left)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> _httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(path, self._left(timeout, _httpcore.ConnectTimeout), socket_options)
        return _Stream(stream, self._left)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class DeadlineTransport(_httpx.HTTPTransport):
    """An ``HTTPTransport`` whose every request ends within ``seconds`` (connect to last byte)."""

    def __init__(self, seconds: float, **options: Any) -> None:
        super().__init__(**options)
        self.seconds = seconds
        self._deadline = threading.local()  # per thread: a sync request runs, and is read, on one thread
        self._pool._network_backend = _Backend(self._pool._network_backend, self._left)

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        deadline = getattr(self._deadline, "at", None)
        if deadline is None:
            return timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise error(f"no complete answer within {self.seconds:g} s")
        return left if timeout is None else min(timeout, left)

    def handle_request(self, request: _httpx.Request) -> _httpx.Response:
        self._deadline.at = time.monotonic() + self.seconds
        return super().handle_request(request)

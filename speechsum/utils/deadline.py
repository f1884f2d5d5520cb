"""A total time limit per HTTP request for the ``openai`` client.

The client's own ``timeout`` limits each network operation (connect, one write, one read), so a
server dripping a byte now and then holds a request forever. :class:`DeadlineTransport` gives
every operation of a request at most the time left until ``seconds`` after the request started:
connecting, sending, waiting for the answer and reading it end within ``seconds`` in total, with
the client's usual timeout error (``openai.APITimeoutError``, retried). The environment's proxies
(``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), which a client given its own transport
ignores, are honoured with the same limit; a loopback host (``127.0.0.1``, ``localhost``, ``[::1]``: a
local vLLM or ``speechsum serve``) is always asked directly, as no proxy can reach this machine's loopback.
A reply body over :data:`MAX_REPLY_BYTES` (a server or something in between sending without end: read
whole into memory, it took gigabytes before the timeout) ends the request with :class:`ReplyTooLarge`, as
sent and once decompressed (a gzip body of 1 MiB inflates to 1 GiB). So does a host name whose lookup
takes longer than the time left (the system resolver has no timeout of its own).
It extends the HTTP library the installed ``openai`` uses (``httpx2``/``httpcore2``, or
``httpx``/``httpcore`` in older releases).
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import openai

log = logging.getLogger(__name__)
Left = Callable[[float | None, type[Exception]], float]
# the most a reply body may hold: a completion, or a KD teacher's top-k log-probs of a 32k-token prompt (~50 MB), fits
MAX_REPLY_BYTES = 256 * 2**20


class ReplyTooLarge(openai.APIError):
    """A reply body over :data:`MAX_REPLY_BYTES` (as sent, or once decompressed); not retried."""

    def __init__(self, request: Any, size: str) -> None:
        super().__init__(
            f"the reply is {size}, over the {MAX_REPLY_BYTES / 2**20:g} MiB any completion needs", request, body=None)


def deadline_http_client(seconds: float, **options: Any) -> Any | None:
    """``openai.DefaultHttpxClient`` whose every request ends within ``seconds``, or None (the client's
    default, a limit per operation, with one warning) where the installed ``openai`` builds on an
    HTTP library layout this module does not know. ``options`` go to the client (e.g. ``event_hooks``)."""
    transport_class = _transport_class()
    if transport_class is not None:
        # the client's own connection limits (openai's: 1,000, 100 kept alive) are ignored once a
        # transport is given, so the transport gets them
        limits = getattr(getattr(openai, "_constants", None), "DEFAULT_CONNECTION_LIMITS", None)
        pool = {"limits": limits} if limits is not None else {}
        try:
            transport = transport_class(seconds, **pool)
            mounts = proxy_mounts(transport_class.httpx, lambda proxy: transport_class(seconds, proxy=proxy, **pool))
            return openai.DefaultHttpxClient(transport=transport, mounts=mounts, **options)
        except (AttributeError, ImportError, TypeError) as err:  # a pool without the network backend we wrap
            _unsupported(f"{type(err).__name__}: {err}")
    return None


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def proxy_mounts(httpx: Any, proxy_transport: Callable[[Any], Any]) -> dict[str, Any]:
    """The client's ``mounts`` for the environment's proxies (``getproxies``: ``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, ``NO_PROXY``, as ``httpx`` reads them): a ``proxy_transport(proxy)`` per proxied scheme,
    None (the client's own transport: direct) for each ``NO_PROXY`` host and the loopback hosts; {} without
    proxies. A client given a transport ignored them: requests went direct, unreachable behind a proxy."""
    proxies = importlib.import_module(f"{httpx.__name__}._utils").get_environment_proxies()
    if not any(proxies.values()):
        return {}
    mounts: dict[str, Any] = {}
    for pattern, url in proxies.items():
        try:
            mounts[pattern] = None if url is None else proxy_transport(httpx.Proxy(url))
        except (ImportError, ValueError) as err:  # SOCKS without socksio, a scheme httpx has no transport for
            _unusable_proxy(pattern, f"{type(err).__name__}: {err}")
    return {**mounts, **{f"all://{host}": None for host in LOOPBACK_HOSTS}}


@functools.cache
def _unusable_proxy(pattern: str, reason: str) -> None:
    log.warning("remote clients: the environment's proxy for %s cannot be used (%s); those requests go direct",
                pattern, reason)


@functools.cache
def _unsupported(reason: str) -> None:
    log.warning("remote clients: no total time limit per request with this openai/httpx (%s); "
                "the timeout limits each connect, write and read", reason)


@functools.cache
def _transport_class() -> type | None:
    """``DeadlineTransport`` built on the HTTP library the installed ``openai`` uses (``httpx2`` /
    ``httpcore2``, or ``httpx`` / ``httpcore`` in older releases); None when it cannot be found."""
    try:
        name = next((c.__module__.split(".")[0] for c in openai.DefaultHttpxClient.__mro__
                     if c.__module__.startswith("httpx")), None)
        httpx = importlib.import_module(name or "")
        httpcore = importlib.import_module((name or "").replace("httpx", "httpcore"))
        return _build(httpx, httpcore)
    except (AttributeError, ImportError, TypeError, ValueError) as err:  # no such pair, or other classes
        _unsupported(f"no httpx/httpcore layout to build on ({type(err).__name__}: {err})")
        return None


def _build(httpx: Any, httpcore: Any) -> type:
    """The transport class on these modules: a network backend wrapped so that each connect, read and
    write gets at most the time left to the request's deadline."""
    httpx_module = httpx

    class _Stream(httpcore.NetworkStream):
        """A connection whose reads and writes wait at most the time left to the request's deadline."""

        def __init__(self, stream: httpcore.NetworkStream, left: Left) -> None:
            self._stream, self._left = stream, left

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._stream.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._stream.write(buffer, self._left(timeout, httpcore.WriteTimeout))

        def close(self) -> None:
            self._stream.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                      timeout: float | None = None) -> httpcore.NetworkStream:
            left = self._left(timeout, httpcore.ConnectTimeout)
            return _Stream(self._stream.start_tls(ssl_context, server_hostname, left), self._left)

        def get_extra_info(self, info: str) -> Any:
            return self._stream.get_extra_info(info)

    class _Backend(httpcore.NetworkBackend):
        def __init__(self, backend: httpcore.NetworkBackend, left: Left) -> None:
            self._backend, self._left = backend, left

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options: Any = None) -> httpcore.NetworkStream:
            addresses = resolve_within(host, port, self._left(timeout, httpcore.ConnectTimeout),
                                       httpcore.ConnectTimeout, httpcore.ConnectError)
            errors: list[Exception] = [httpcore.ConnectError(f"the host name {host} resolved to no address")]
            for address in addresses:  # as socket.create_connection tries them, each within the time left
                try:
                    stream = self._backend.connect_tcp(address, port, self._left(timeout, httpcore.ConnectTimeout),
                                                       local_address, socket_options)
                    return _Stream(stream, self._left)
                except httpcore.ConnectError as err:
                    errors.append(err)
            raise errors[min(1, len(errors) - 1)]  # the first address's, as socket.create_connection raised

        def connect_unix_socket(self, path: str, timeout: float | None = None,
                                socket_options: Any = None) -> httpcore.NetworkStream:
            stream = self._backend.connect_unix_socket(path, self._left(timeout, httpcore.ConnectTimeout), socket_options)
            return _Stream(stream, self._left)

        def sleep(self, seconds: float) -> None:
            self._backend.sleep(seconds)

    class DeadlineTransport(httpx.HTTPTransport):
        """An ``HTTPTransport`` whose every request ends within ``seconds`` (connect to last byte)."""

        httpx = httpx_module

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

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            self._deadline.at = time.monotonic() + self.seconds
            response = super().handle_request(request)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_REPLY_BYTES:
                response.close()
                raise ReplyTooLarge(request, f"{int(declared)} bytes by its Content-Length")
            response.stream = _CappedBody(response.stream, request)
            coding = response.headers.get("content-encoding", "").strip().lower()
            if coding not in ("", "identity"):  # what the client decodes is capped too: a gzip bomb
                try:
                    response._decoder = _CappedDecoder(response._get_content_decoder(), request, coding)
                except Exception:  # noqa: BLE001  (codings the client refuses: it says so when it reads the body)
                    pass
            return response

    class _CappedBody(httpx.SyncByteStream):
        """A reply body that raises :class:`ReplyTooLarge` once more than :data:`MAX_REPLY_BYTES` arrived."""

        def __init__(self, stream: Any, request: httpx.Request) -> None:
            self._stream, self._request = stream, request

        def __iter__(self) -> Any:
            received = 0
            for chunk in self._stream:
                received += len(chunk)
                if received > MAX_REPLY_BYTES:
                    raise ReplyTooLarge(self._request, f"more than {MAX_REPLY_BYTES} bytes")
                yield chunk

        def close(self) -> None:
            self._stream.close()

    return DeadlineTransport


def resolve_within(host: str, port: int, seconds: float | None, timeout_error: type[Exception],
                   connect_error: type[Exception]) -> list[str]:
    """The addresses of ``host`` (an IP address: itself), looked up in a thread waited for at most ``seconds``:
    the system resolver (``getaddrinfo``) has no timeout, and one that hung held a request past its time limit.
    ``timeout_error`` when the lookup takes longer (the thread is left to end on its own), ``connect_error``
    when it fails (an unknown host), as the HTTP library's own connect raised them."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    found: dict[str, Any] = {}

    def look_up() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except OSError as err:  # socket.gaierror: no such host, no network
            found["error"] = err

    thread = threading.Thread(target=look_up, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise timeout_error(f"the host name {host} was not resolved within the {seconds:.3g} s left to the request "
                            "(the system's DNS resolver did not answer)")
    if "error" in found:
        raise connect_error(str(found["error"])) from found["error"]
    return list(dict.fromkeys(str(info[4][0]) for info in found["infos"]))


class _CappedDecoder:
    """A reply's content decoder (gzip, deflate, …) that raises :class:`ReplyTooLarge` once what it decoded passes
    :data:`MAX_REPLY_BYTES`: the cap on the bytes as sent did not bound them (a 1 MiB gzip body inflates to 1 GiB,
    which the client joined in memory). Decoders give bytes (``httpx``) or an iterator of them (``httpx2``)."""

    def __init__(self, decoder: Any, request: Any, coding: str) -> None:
        self._decoder, self._request, self._coding, self._decoded = decoder, request, coding, 0

    def decode(self, data: bytes) -> Any:
        return self._counted(self._decoder.decode(data))

    def flush(self) -> Any:
        return self._counted(self._decoder.flush())

    def _counted(self, decoded: Any) -> Any:
        if isinstance(decoded, bytes):
            self._count(decoded)
            return decoded
        return (self._count(chunk) for chunk in decoded)

    def _count(self, chunk: bytes) -> bytes:
        self._decoded += len(chunk)
        if self._decoded > MAX_REPLY_BYTES:
            raise ReplyTooLarge(self._request, f"more than {MAX_REPLY_BYTES} bytes once decompressed (Content-Encoding: "
                                               f"{self._coding})")
        return chunk

"""The routes of ``speechsum serve`` and the checks of a request's line, headers and key before any route runs.

What :mod:`speechsum.serving.http` asks before it reads a body: which methods a path takes (404/405),
which route a path with none was meant for, and whether the request names its host as HTTP/1.1 asks.
"""

from __future__ import annotations

import hmac
from email.errors import FirstHeaderLineIsContinuationDefect, MissingHeaderBodySeparatorDefect
from email.message import Message
from urllib.parse import urlsplit

from speechsum.serving.protocol import APIError

POST_ROUTES = ("/v1/completions", "/v1/chat/completions")
GET_ROUTES = ("/health", "/v1/models")  # and /v1/models/NAME
SERVER_METHODS = "GET, HEAD, POST, OPTIONS"  # what some route takes: the Allow of ``OPTIONS *``
HEADER_LINE_DEFECTS = (MissingHeaderBodySeparatorDefect, FirstHeaderLineIsContinuationDefect)
AUDIO_ROUTE_HINT = ("; audio goes in a chat completion: an input_audio content part (base64 file) of the user "
                    "message, to a speech student (docs/serve.md)")


def route_path(target: str) -> str:
    """The route of a request target: its path without query or trailing ``/``, in origin-form
    (``/v1/models?x``) or absolute-form (``http://host:8000/v1/models``, as a client sends it to a
    proxy; RFC 9112 §3.2.2: a server must accept it — before 2026-12-07 a 404)."""
    if target[:8].lower().startswith(("http://", "https://")):
        target = urlsplit(target).path
    return target.split("?", 1)[0].rstrip("/") or "/"


def allowed_methods(path: str) -> str | None:
    """The methods a route takes, as an ``Allow`` header lists them; None for a path with no route.
    ``*`` (``OPTIONS *``, RFC 9110 §9.3.7: a question to the server itself) takes OPTIONS only."""
    if path in GET_ROUTES or path.startswith("/v1/models/"):
        return "GET, HEAD, OPTIONS"
    if path == "*":
        return "OPTIONS"
    return "POST, OPTIONS" if path in POST_ROUTES else None


def route_error(method: str, path: str) -> APIError:
    """The 405 (with ``Allow``) for a method the route does not take, or the 404 for a path with no
    route, naming the route a client most likely meant."""
    allowed = allowed_methods(path)
    if allowed:  # Allow: what the route takes, as a 405 must say (RFC 9110)
        return APIError(405, f"Method {method} is not allowed on {path} (it takes {allowed}).",
                        code="method_not_allowed", headers={"Allow": allowed})
    hint = AUDIO_ROUTE_HINT if path.startswith("/v1/audio/") else ""
    if meant := meant_route(path):  # a client's base_url without its /v1, with it twice, or Azure's paths
        hint = f" (did you mean {meant}? A client's base_url ends in /v1: http://HOST:PORT/v1)"
    return APIError(404, f"Unknown route {method} {path}. This server offers GET /v1/models, "
                         f"POST /v1/completions and POST /v1/chat/completions{hint}.", code="not_found")


def meant_route(path: str) -> str | None:
    """The route a path that has none was meant for: the one it ends with (``/chat/completions``: a
    base_url without /v1; ``/v1/v1/models``: with it twice; ``/openai/deployments/NAME/chat/completions``:
    Azure's); None when it ends with none of them."""
    for route in ("/v1/chat/completions", "/v1/completions", "/v1/models"):
        if path.endswith(route.removeprefix("/v1")):
            return route
    return None


def check_header_lines(headers: Message) -> None:
    """400 for a header line the parser could not read: it drops every header after it. Not the defects it
    notes for a multipart Content-Type (no boundary in a body it was not given): those say nothing of the lines."""
    broken = [d for d in headers.defects if isinstance(d, HEADER_LINE_DEFECTS)]
    if broken:
        raise APIError(400, f"Malformed request headers ({broken[0]}): write each as 'Name: value', "
                            "with no space before the colon.")


def keeps_connection(headers: Message, version: str, kept: bool) -> bool:
    """Whether a request's connection stays open after its answer (``kept``: the standard library's view).
    ``Connection`` is a list of options, over all its headers (RFC 9110 §7.6.1): ``close`` among others (``TE,
    close``, as Perl's LWP sends) closes it, ``keep-alive`` keeps an HTTP/1.0 one. HTTP/0.9 keeps none, and an
    HTTP/1.0 request with ``Transfer-Encoding`` (which 1.0 lacks) has faulty framing: closed (RFC 9112 §6.1)."""
    options = {option.strip().lower() for value in headers.get_all("Connection") or [] for option in value.split(",")}
    if "close" in options or version == "HTTP/0.9" or (version == "HTTP/1.0" and "Transfer-Encoding" in headers):
        return False
    return kept or "keep-alive" in options


def check_host(headers: Message, version: str) -> None:
    """400 for an HTTP/1.1 request without a ``Host`` header, or any request with more than one
    (RFC 9112 §3.2: a server MUST answer both with 400; before 2026-12-07 they were served). An empty
    ``Host`` is what a client sends for a target without an authority, and passes."""
    hosts = headers.get_all("Host") or []
    if len(hosts) > 1:
        raise APIError(400, f"The request has {len(hosts)} Host headers; send exactly one.")
    if not hosts and _version_number(version) >= (1, 1):
        raise APIError(400, "An HTTP/1.1 request needs a Host header (RFC 9112 §3.2): send "
                            "'Host: HOST:PORT', as every HTTP client does.")


def _version_number(version: str) -> tuple[int, int]:
    """``HTTP/1.1`` → (1, 1), as the standard library read it (``HTTP/0.9``: a request line without one)."""
    major, _, minor = version.removeprefix("HTTP/").partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else (0, 9)


def check_api_key(headers: Message, expected: str | None) -> None:
    """401 unless the request carries ``expected`` (``Authorization: Bearer <key>``, or Azure's ``api-key``
    header); nothing to check without a key. A key sent without "Bearer " is no key here; never echoed."""
    if expected is None:
        return
    header = headers.get("Authorization", "")
    given = header[7:].strip() if header.lower().startswith("bearer ") else headers.get("api-key", "")
    if not given:
        sent = " (the Authorization header sent does not start with 'Bearer ')" if header.strip() else ""
        raise APIError(401, f"Missing API key{sent}: send 'Authorization: Bearer <key>' (the server was "
                            "started with --api-key-env).", code="missing_api_key")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

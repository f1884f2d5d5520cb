"""Cross-origin (CORS) headers of ``speechsum serve``, for browser clients of origins it was told to allow.

Off by default (``--allowed-origins`` empty: no CORS header, so a web page cannot read the answers);
``--allowed-origins '*'`` allows any origin, as vLLM's default. A preflight (``OPTIONS`` with
``Origin``) carries no credentials, so it is answered without the API key; the request it announces
still needs one.
"""

from __future__ import annotations

import argparse
import re
from email.message import Message

PREFLIGHT_MAX_AGE = "600"  # seconds a browser may reuse a preflight's answer
# what a browser sends as Origin: lower-case scheme://host[:port], no path (or 'null', of a file:// page)
# answer headers a page's script may read, beyond the CORS-safelisted ones: the 503's Retry-After (which the
# openai package's retries honour; hidden from them in a browser before 2026-12-07) and the reply's Warning
EXPOSED_HEADERS = "Retry-After, Warning"
ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[a-z0-9.\-\[\]:]+|null")


def allowed_origin(text: str) -> str:
    """argparse ``type=`` of ``--allowed-origins``: ``*``, or an origin as browsers send it; one they
    never send (``http://localhost:3000/`` with its slash, a path, capitals) matched no request, so
    every browser call failed CORS without a word on the server."""
    if text == "*" or ORIGIN.fullmatch(text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is no origin a browser sends: write scheme://host[:port] in lower case, "
                                     "without a path or a trailing '/' (e.g. http://localhost:3000), or '*' for any")


def cors_headers(headers: Message | None, allowed: tuple[str, ...]) -> dict[str, str]:
    """``Access-Control-Allow-Origin`` for a request from an allowed ``Origin``, and the headers a page may
    read besides the safelisted ones (:data:`EXPOSED_HEADERS`); {} otherwise."""
    origin = headers.get("Origin") if headers is not None else None
    if not origin or not allowed:
        return {}
    if "*" in allowed:
        return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": EXPOSED_HEADERS}
    if origin not in allowed:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin", "Access-Control-Expose-Headers": EXPOSED_HEADERS}


def preflight_headers(headers: Message, allowed: tuple[str, ...], methods: str) -> dict[str, str]:
    """A preflight's answer headers: the origin's, the route's ``methods`` and the headers it asked to send."""
    origin = cors_headers(headers, allowed)
    if not origin:
        return {}
    asked = headers.get("Access-Control-Request-Headers") or "Authorization, Content-Type"
    return {**origin, "Access-Control-Allow-Methods": methods, "Access-Control-Allow-Headers": asked,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE}

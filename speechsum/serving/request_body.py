"""Reading the body of a ``speechsum serve`` request: its framing (``Content-Length``, or
``Transfer-Encoding: chunked`` as httpx, requests and curl send a streamed upload) and its size limit.

Every :class:`APIError` raised here leaves the connection unusable (where the body ends is unknown):
the caller closes it, so nothing left of the body is parsed as the next request.
"""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message
from typing import BinaryIO

from speechsum.serving.json_body import check_content_type
from speechsum.serving.protocol import APIError

MAX_CHUNK_LINE = 1024  # a chunk's size line (hex digits and extensions) or one trailer line
MAX_TRAILER_LINES = 64
LARGE_BODY_BYTES = 1024 * 1024  # larger bodies (audio) are not read while the model's queue is full: a 503 at once


def too_large(size: int | str, limit: int) -> APIError:
    return APIError(413, f"Request body of {size} bytes exceeds this server's limit of {limit} bytes "
                         "(--max-request-bytes, plus the base64 size of --max-audio-bytes when the model reads "
                         "audio).", code="request_too_large")


def large_body(headers: Message) -> bool:
    """A body over :data:`LARGE_BODY_BYTES`, or chunked (of a size not known before it is read)."""
    length = (headers.get("Content-Length") or "").strip()
    return headers.get("Transfer-Encoding") is not None or (length.isdigit() and int(length) > LARGE_BODY_BYTES)


def read_body(headers: Message, rfile: BinaryIO, command: str, limit: int,
              send_continue: Callable[[], None], take: Callable[[int], None] = lambda size: None) -> bytes:
    """The body of a request with ``headers`` from ``rfile``, at most ``limit`` bytes (413 above it);
    ``send_continue`` is called once the body may come (the client's ``Expect: 100-continue``), ``take(size)``
    before ``size`` bytes of it are read (the server's :class:`~speechsum.serving.admission.BodyBudget`)."""
    lengths = headers.get_all("Content-Length") or []
    codings = headers.get_all("Transfer-Encoding")  # repeated, they are one list (RFC 9110 §5.3): "chunked, identity"
    coding = ", ".join(codings) if codings else None
    if coding is not None and (coding.strip().lower() != "chunked" or lengths):
        reason = "together with Content-Length" if coding.strip().lower() == "chunked" else f"{coding.strip()!r}"
        raise APIError(400, f"Transfer-Encoding {reason} is not supported: send Content-Length or "
                            "'Transfer-Encoding: chunked' alone.")
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":  # a compressed body read as JSON was "not UTF-8" (gzip's first bytes)
        raise APIError(415, f"Content-Encoding {encoding!r} request bodies are not supported; send the JSON "
                            "uncompressed.", code="unsupported_content_encoding")
    if command == "POST":  # before the body is read: a form or an upload is told at once what to send
        check_content_type(headers.get("Content-Type"))
    if coding is not None:
        send_continue()
        return read_chunked(rfile, limit, take)
    if not lengths and command == "POST":  # a body may follow; without its length it would run as a request
        raise APIError(411, "A POST needs a Content-Length header (the body's size in bytes) or "
                            "'Transfer-Encoding: chunked'.", code="length_required")
    if len(set(lengths)) > 1:
        raise APIError(400, f"Conflicting Content-Length headers {lengths}: send one.")
    text = (lengths[0] if lengths else "0").strip()
    if not (text.isascii() and text.isdigit()):  # digits only: int() would also read "", "+2" and "1_0"
        raise APIError(400, f"Invalid Content-Length header {lengths[0]!r}: send the body's size in bytes.")
    length = int(text)
    if length > limit:
        raise too_large(length, limit)
    if length > 0:
        take(length)  # before the 100 Continue: a body refused for now is not sent
        send_continue()
    body = rfile.read(length) if length > 0 else b""
    if len(body) < length:  # the client closed mid-body: what came is not the request it meant
        raise APIError(400, f"Request body ended after {len(body)} of the {length} bytes its Content-Length "
                            "announced: send the whole body.")
    return body


def read_chunked(rfile: BinaryIO, limit: int, take: Callable[[int], None] = lambda size: None) -> bytes:
    """A ``Transfer-Encoding: chunked`` body (RFC 9112 §7.1): chunks of hex-announced size, a last
    chunk of size 0 and optional trailer lines (read and dropped); 413 once the chunks pass ``limit``,
    400 for a size line that is not hex or a body that ends early; ``take(size)`` before each chunk is read."""
    parts, total = [], 0
    while True:
        line = rfile.readline(MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\n"):
            ended = "ended before its last chunk (a chunk of size 0)" if len(line) <= MAX_CHUNK_LINE \
                else f"has a chunk size line over {MAX_CHUNK_LINE} bytes"
            raise APIError(400, f"Chunked request body {ended}: send the whole body.")
        digits = line.split(b";", 1)[0].strip()
        if not digits or len(digits) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in digits):
            raise APIError(400, f"Chunked request body: invalid chunk size line {line[:40].rstrip()!r}; each chunk "
                                "starts with its size in hexadecimal and a line break.")
        size = int(digits, 16)
        if size == 0:
            break
        total += size
        if total > limit:
            raise too_large(f"over {limit}", limit)
        take(size)
        data = rfile.read(size)
        if len(data) < size or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise APIError(400, "Chunked request body: a chunk is shorter than its size line says, or not followed "
                                "by a line break: send the whole body.")
        parts.append(data)
    for _ in range(MAX_TRAILER_LINES):  # trailer fields, up to the blank line that ends the message
        line = rfile.readline(MAX_CHUNK_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return b"".join(parts)
        if not line.endswith(b"\n"):
            break
    raise APIError(400, "Chunked request body: its trailer does not end with a blank line.")

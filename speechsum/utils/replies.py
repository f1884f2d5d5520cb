"""Checking the shape of an OpenAI-compatible endpoint's 200 replies before reading them.

The ``openai`` client builds its reply objects without validating them, so a body such as
``{"choices": []}``, ``{"error": ...}`` or a JSON array arrives as an object whose fields are
missing, None or of the wrong type. :func:`first_choice` and :func:`chat_text` read a reply or
raise :class:`MalformedReply` naming the endpoint and what was wrong (a transient error in
:data:`speechsum.utils.remote.TRANSIENT_ERRORS`: the request is asked again); inside
:func:`fetch_reply`, so is a body the client cannot decode (not UTF-8, not JSON).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic

T = TypeVar("T")


class EndpointError(ValueError):
    """An endpoint's answer a run cannot use; the message names the endpoint (its base URL) and what
    was wrong, so a command ends with it in one line (``speechsum.cli``), not a traceback."""


class MalformedReply(EndpointError):
    """A 200 reply whose body is not the API's shape (not UTF-8 JSON, no choices, an error object, …)."""


def fetch_reply(endpoint: str, request: Callable[[], T]) -> T:
    """``request()``, an ``openai`` client call; a reply body the client cannot decode raises
    :class:`MalformedReply` naming ``endpoint`` (the client itself raises a bare ``UnicodeDecodeError``
    for a body that is not UTF-8, which no retry policy took for an endpoint's fault, or ``JSONDecodeError``)."""
    try:
        return request()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        what = "UTF-8 text" if isinstance(error, UnicodeDecodeError) else "JSON"
        body = getattr(error, "doc", "")  # the text that is no JSON: a page or stream says what answered
        shown = f"; it is {text_reply(body)}" if body.strip() else ""
        raise MalformedReply(f"{endpoint}: the reply body is not {what} ({type(error).__name__}: {error}){shown}") \
            from error


def text_reply(text: str) -> str:
    """What a reply that is text, not JSON, looks like, with its start: an HTML page (a proxy's login or
    error page), an event stream (a streamed reply nobody asked for) or other text."""
    start = " ".join(text.split())
    start = start if len(start) <= 80 else f"{start[:80]}…"
    if start[:1] == "<":
        kind = "an HTML page"
    elif start.startswith(("data:", "event:", ": ")):
        kind = "an event stream (a streamed reply, which was not asked for)"
    else:
        kind = "text"
    return f"{kind}, starting {start!r}"


COMPRESSIONS = ("br", "zstd", "compress", "x-compress")  # codings an HTTP library may lack a decoder for


def refuse_undecodable_encoding(response: Any) -> None:
    """A response hook: :class:`MalformedReply` (retried) for a body compressed in a coding the HTTP library
    cannot decode (``br`` without brotli, ``zstd``), which a server sent though the client never asked for it
    (its ``Accept-Encoding`` lists only what it decodes): it was read as is, "not UTF-8 text"."""
    codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
    library = sys.modules.get(f"{type(response).__module__.split('.')[0]}._decoders")
    decodable = getattr(library, "SUPPORTED_DECODERS", {})
    if unknown := [c for c in codings if c in COMPRESSIONS and c not in decodable]:
        response.close()
        raise MalformedReply(
            f"{response.request.url}: the reply is compressed as {unknown[0]!r}, which this client does not decode "
            f"(it asked for {response.request.headers.get('accept-encoding', 'none')!r}): set the server, or the proxy "
            "in between, to answer uncompressed or in one of those")


def json_type(value: Any) -> str:
    """How a parsed JSON value is named in messages: "an object", "an array", "a string", …"""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def first_choice(response: Any, endpoint: str) -> Any:
    """``response.choices[0]``, or :class:`MalformedReply` naming ``endpoint`` (its base URL)."""
    if isinstance(response, str):  # the client hands over a body that is not application/json as text
        raise MalformedReply(f"{endpoint}: the reply is {text_reply(response)}, not a JSON completion")
    if not isinstance(response, pydantic.BaseModel):
        raise MalformedReply(f"{endpoint}: the reply is {json_type(response)}, not a completion object")
    choices = getattr(response, "choices", None)
    if choices is None or choices == []:
        error = (response.model_extra or {}).get("error")
        what = "no choices" if choices is None else "an empty choices array"
        raise MalformedReply(f"{endpoint}: the reply holds " + (
            f"an error instead of choices: {str(error)[:200]}" if error is not None else what))
    if not isinstance(choices, list):
        raise MalformedReply(f"{endpoint}: the reply's choices is {json_type(choices)}, not an array")
    if not isinstance(choices[0], pydantic.BaseModel):
        raise MalformedReply(f"{endpoint}: the reply's choices[0] is {json_type(choices[0])}, not an object")
    return choices[0]


def chat_text(response: Any, endpoint: str) -> str:
    """The text of a chat completion's first choice ("" when the server sent none), or :class:`MalformedReply`;
    content sent as a list of parts (some gateways and models) is read as its text parts (:func:`parts_text`)."""
    message = getattr(first_choice(response, endpoint), "message", None)
    if not isinstance(message, pydantic.BaseModel):
        raise MalformedReply(f"{endpoint}: the reply's choices[0].message is {json_type(message)}, not an object")
    content = message.content
    if isinstance(content, list):
        return parts_text(content, endpoint)
    if content is not None and not isinstance(content, str):
        raise MalformedReply(f"{endpoint}: the reply's choices[0].message.content is {json_type(content)}, "
                             "not a string or an array of parts")
    return content or ""


def parts_text(parts: list, endpoint: str) -> str:
    """The text of content sent as parts (``[{"type": "text", "text": "..."}, ...]``): its ``text`` parts
    joined; other parts (``thinking``, ``reasoning``, ``refusal``, …) are no answer and are not read
    (as ``reasoning_content`` is not). A part that is no object with a ``type``, or a text part without a
    string ``text``, is a :class:`MalformedReply` naming it (refused whole before 2026-12-07)."""
    texts = []
    for index, part in enumerate(parts):
        where = f"{endpoint}: the reply's choices[0].message.content[{index}]"
        if not isinstance(part, dict):
            raise MalformedReply(f"{where} is {json_type(part)}, not a content part (an object with a type)")
        kind = part.get("type")
        if not isinstance(kind, str):
            raise MalformedReply(f"{where} has no type: a content part is an object such as "
                                 '{"type": "text", "text": "..."}')
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise MalformedReply(f"{where} is a text part whose text is {json_type(part.get('text'))}, "
                                     "not a string")
            texts.append(part["text"])
    return "".join(texts)

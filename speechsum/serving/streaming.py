"""``stream: true`` answers of ``speechsum serve``: a finished reply as OpenAI's server-sent events.

The model generates the whole completion first (the backend has no token callback), then the reply
is sent as the chunks an OpenAI stream holds, so streaming clients (the ``openai`` package's
``stream=True``, LangChain, chat UIs) read it unchanged: per choice a chunk with the text (and its
log-probs), then one with its ``finish_reason``; with ``stream_options.include_usage`` every chunk
carries ``"usage": null`` and a last chunk with no choices carries the usage; then ``data: [DONE]``.
A reply's ``warnings`` (silent audio) ride in its first chunk.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from speechsum.serving.protocol import APIError

DONE = b"data: [DONE]\n\n"


def stream_mode(body: dict) -> bool | None:
    """None: answer with one JSON object; else stream, with a final usage chunk when True. A 400 for
    ``stream_options`` without ``stream: true`` or holding anything but a boolean ``include_usage``."""
    stream, options = body.get("stream"), body.get("stream_options")
    if stream is not None and not isinstance(stream, bool):
        raise APIError(400, f"'stream' must be true or false, got {json.dumps(stream)[:80]}.", param="stream")
    if options is None:
        return None if not stream else False
    if not stream:
        raise APIError(400, "'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"} \
            or not isinstance(options.get("include_usage", False), bool):
        raise APIError(400, "'stream_options' takes only {\"include_usage\": true or false}; got "
                            f"{json.dumps(options)[:80]}.", param="stream_options")
    return options.get("include_usage", False)


def _chunk(reply: dict, choices: list[dict], include_usage: bool) -> dict:
    kind = "chat.completion.chunk" if reply["object"] == "chat.completion" else reply["object"]
    chunk = {"id": reply["id"], "object": kind, "created": reply["created"], "model": reply["model"],
             "system_fingerprint": reply.get("system_fingerprint"), "choices": choices}
    return {**chunk, "usage": None} if include_usage else chunk


def _chat_choices(choice: dict) -> list[dict]:
    """A chat choice as its two chunk choices: the message as a delta, then its finish_reason."""
    message = choice["message"]
    delta = {"role": message["role"], "content": message["content"]}
    return [{"index": choice["index"], "delta": delta, "logprobs": choice["logprobs"], "finish_reason": None},
            {"index": choice["index"], "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]}]


def stream_chunks(reply: dict, include_usage: bool) -> list[dict]:
    """The chunks of a finished ``chat.completion`` or ``text_completion`` reply, in order."""
    if reply["object"] == "chat.completion":
        parts = [part for choice in reply["choices"] for part in _chat_choices(choice)]
    else:  # a completion choice carries its text and finish_reason in one chunk, as vLLM's last one
        parts = list(reply["choices"])
    chunks = [_chunk(reply, [part], include_usage) for part in parts]
    if "warnings" in reply:  # the reply's warnings (silent audio) in its first chunk, before any text
        chunks[0]["warnings"] = reply["warnings"]
    if include_usage:
        chunks.append({**_chunk(reply, [], include_usage), "usage": reply["usage"]})
    return chunks


def event_stream(chunks: list[dict], encode: Callable[[dict], bytes]) -> bytes:
    """The body of a ``text/event-stream`` answer: each chunk as ``data: <json>``, then ``data: [DONE]``."""
    return b"".join(b"data: " + encode(chunk) + b"\n\n" for chunk in chunks) + DONE

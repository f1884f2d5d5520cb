"""``stream: true`` answers of ``speechsum serve``: OpenAI's server-sent events, sent as the tokens come.

A backend sends each choice's text so far to the request's :class:`LiveStream` as it generates
(:class:`~speechsum.serving.protocol.TextStream`); the stream sends what is new as a chunk once it is
sure to stay in the answer (:func:`settled`: not what may turn out to start a stop string, an incomplete
character, trailing space), and, once the backend has answered, the rest of each choice's text and
its ``finish_reason``. So the concatenated deltas are the unstreamed answer's text exactly (before
2026-12-07 the whole answer came in one chunk after generation). A request with log-probs, or a backend
that sends no text, is streamed once answered. Streaming clients (the ``openai`` package's
``stream=True``, LangChain, chat UIs) read it unchanged: with ``stream_options.include_usage`` every
chunk carries ``"usage": null`` and a last chunk with no choices carries the usage; then ``data: [DONE]``.
A reply's ``warnings`` (silent audio) ride in its first chunk and in the ``Warning`` header.
The body is sent with ``Transfer-Encoding: chunked`` (its length is not known when it starts).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable

from speechsum.serving.json_body import json_bytes
from speechsum.serving.protocol import APIError, ChatRequest, ClientGone, CompletionRequest, ReplyWarning

DONE = b"data: [DONE]\n\n"
LOG = logging.getLogger(__name__)
GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
# OpenAI's stream options that cannot change the text (random padding of each chunk against size side channels,
# on by default at OpenAI): accepted, none added, named in the request's log line
IGNORED_STREAM_OPTIONS = ("include_obfuscation",)


def stream_mode(body: dict) -> bool | None:
    """None: answer with one JSON object; else stream, with a final usage chunk when True. A 400 for
    ``stream_options`` without ``stream: true`` or holding anything but OpenAI's two options, each a
    boolean or null: ``include_usage`` and ``include_obfuscation`` (:data:`IGNORED_STREAM_OPTIONS`:
    no ``obfuscation`` padding is added, as with OpenAI's ``false``; before 2026-12-07 a 400)."""
    stream, options = body.get("stream"), body.get("stream_options")
    if stream is not None and not isinstance(stream, bool):
        raise APIError(400, f"'stream' must be true or false, got {json.dumps(stream)[:80]}.", param="stream")
    if options is None:
        return None if not stream else False
    if not stream:
        raise APIError(400, "'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    names = ("include_usage", *IGNORED_STREAM_OPTIONS)
    if not isinstance(options, dict) or set(options) - set(names) \
            or not all(isinstance(options.get(name), bool | None) for name in names):
        raise APIError(400, "'stream_options' takes only {\"include_usage\": true or false, \"include_obfuscation\": "
                            f"true or false}}; got {json.dumps(options)[:80]}.", param="stream_options")
    return bool(options.get("include_usage"))



def settled(text: str, stops: list[str]) -> str:
    """The part of a choice's ``text`` so far that stays in its answer whatever comes next: up to its
    first stop string; else without its last ``len(longest stop) - 1`` characters (they may start
    one); then without a white space in its last 4 characters and what follows it (a tokenizer that
    cleans up spaces, ``clean_up_tokenization_spaces``, turns "can '" into "can's" once an "s" follows),
    a trailing incomplete character (U+FFFD) or white space (a speech student's answer is stripped)."""
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    if cuts:
        text = text[:min(cuts)]
    elif stops:
        text = text[:max(len(text) - max(len(s) for s in stops) + 1, 0)]
    end = len(text)
    for position in range(len(text) - 1, max(len(text) - 5, -1), -1):
        if text[position].isspace():
            end = position
            break
    while end and (text[end - 1].isspace() or text[end - 1] == "\ufffd"):
        end -= 1
    return text[:end]


class LiveStream:
    """One streamed reply: ``start(warnings)`` sends the status line and headers (at the first chunk, so
    an error before any text is still a JSON error), ``write(bytes)`` one piece of the chunked body.
    Both run on a writer thread of the stream's own: the generation (which holds the model) only queues
    its chunks, so a client that reads slowly or not at all does not hold the model for the requests
    behind it (it would until the connection's timeout, 300 s); once a write fails, the next chunk
    queued raises :class:`ClientGone` and the generation stops."""

    def __init__(self, chat: bool, model: str, include_usage: bool, start: Callable[[list[dict]], None],
                 write: Callable[[bytes], None]) -> None:
        self.chat, self.model, self.include_usage, self.stops = chat, model, include_usage, []
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self._start, self._write = start, write
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._failed: BaseException | None = None  # the writer's error: the client is gone
        self.started = False
        self.sent: dict[int, str] = {}  # choice index → its text sent so far
        self.warnings: list[dict] | None = None  # not yet sent

    def warn(self, warnings: list[ReplyWarning]) -> None:
        if warnings and not self.started:
            self.warnings = [{"code": w.code, "param": w.param, "message": w.message} for w in warnings]

    def text(self, index: int, text: str) -> None:
        """Choice ``index``'s text so far: what is :func:`settled` and new is sent."""
        done, safe = self.sent.get(index, ""), settled(text, self.stops)
        if len(safe) > len(done) and safe.startswith(done):
            self._send_text(index, safe[len(done):], None, None)
            self.sent[index] = safe

    def attach(self, requests: list[ChatRequest] | list[CompletionRequest]) -> None:
        """Stream the text of ``requests`` (a chat's one, or a completion's one per prompt) as it is generated,
        unless one asks for log-probs or echo: those are sent with the text once answered."""
        self.stops = requests[0].sampling.stop
        if any(getattr(r, "top_logprobs", None) is not None or getattr(r, "echo", False)
               or getattr(r, "logprobs", None) is not None or getattr(r, "prompt_logprobs", None) is not None
               for r in requests):
            return
        for number, request in enumerate(requests):  # a later prompt's choices follow the earlier ones'
            request.stream = _Shifted(self, number * request.sampling.n)

    def finish(self, reply: dict) -> None:
        """The rest of each choice of the backend's answer ``reply``, its finish_reason, the usage, [DONE]."""
        if self.warnings is None and reply.get("warnings") and not self.started:
            self.warnings = reply["warnings"]
        for choice in reply["choices"]:
            index = choice["index"]
            final, done = choice["message"]["content"] if self.chat else choice["text"], self.sent.get(index, "")
            if not final.startswith(done):  # a backend whose text so far was not its answer's start
                LOG.error("streamed choice %d: %r was sent, but the answer is %r", index, done, final)
            rest = final[len(done):] if final.startswith(done) else ""
            if self.chat:
                if rest or index not in self.sent or choice["logprobs"] is not None:
                    self._send_text(index, rest, choice["logprobs"], None)
                self._send({"index": index, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]})
            else:
                self._send({**choice, "text": rest})
        if self.include_usage:
            self._send(None, reply["usage"])
        self._put(DONE)
        self._put(b"")  # the chunked body's end
        self._close()

    def fail(self, error: APIError) -> None:
        """An error after the stream started: as vLLM, an ``error`` event, then [DONE]."""
        self._put(b"data: " + json_bytes(error.body()) + b"\n\n" + DONE)
        self._put(b"")
        self._close()

    def _send_text(self, index: int, text: str, logprobs: dict | None, finish: str | None) -> None:
        if self.chat:
            delta = {"content": text} if index in self.sent else {"role": "assistant", "content": text}
            self.sent.setdefault(index, "")
            self._send({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
        else:
            self.sent.setdefault(index, "")
            self._send({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish,
                        "stop_reason": None})

    def _send(self, choice: dict | None, usage: dict | None = None) -> None:
        if not self.started:  # the headers first, with the warnings the first chunk carries
            self.started = True
            self._queue.put((self._start, self.warnings or []))
            self._writer = threading.Thread(target=self._drain, name="speechsum-stream", daemon=True)
            self._writer.start()
        chunk = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                 "created": self.created, "model": self.model, "system_fingerprint": None,
                 "choices": [choice] if choice is not None else []}
        if self.include_usage:
            chunk["usage"] = usage
        if self.warnings is not None:  # in the first chunk, before any text
            chunk["warnings"], self.warnings = self.warnings, None
        self._put(b"data: " + json_bytes(chunk) + b"\n\n")

    def _put(self, data: bytes) -> None:
        if self._failed is not None:
            raise self._gone()
        self._queue.put((self._write, data))

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            call, argument = item
            try:
                call(argument)
            except BaseException as error:  # noqa: BLE001 - the client gone (or a write that failed): stop writing
                if not isinstance(error, GONE):
                    LOG.error("a streamed answer could not be written", exc_info=True)
                self._failed = error
                return

    def _close(self) -> None:
        """Wait until everything queued is written; :class:`ClientGone` when it could not be."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
        if self._failed is not None:
            raise self._gone()

    def _gone(self) -> ClientGone:
        return ClientGone("the client closed its connection while its answer was streamed",
                          f"while its answer was streamed ({type(self._failed).__name__})")


class _Shifted:
    def __init__(self, live: LiveStream, offset: int) -> None:
        self.live, self.offset = live, offset

    def text(self, index: int, text: str) -> None:
        self.live.text(self.offset + index, text)

    def warn(self, warnings: list[ReplyWarning]) -> None:
        self.live.warn(warnings)

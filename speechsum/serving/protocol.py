"""The backend interface of ``speechsum serve``: request/result records and the error type.

The HTTP layer (:mod:`speechsum.serving.http`) parses OpenAI-style JSON into these records, calls a
:class:`Backend` and renders its results back into OpenAI/vLLM JSON; a backend never sees HTTP.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from speechsum.utils.arguments import GREEDY_BELOW


class APIError(Exception):
    """A request the server answers with an OpenAI-style error body and HTTP ``status``.

    Rendered as ``{"error": {"message", "type", "param", "code"}}``; ``headers`` are added to the
    response (e.g. ``Retry-After`` on a 429).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type or _default_error_type(status)
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 naming the request field ``param``."""
    return APIError(400, message, param=param, code=code)


def sent_value(obj: dict, name: str) -> str:
    """What a request sent for ``obj[name]``, in JSON's words: "'format' is missing" or "got \"WAV\"" (not Python's None)."""
    return f"got {json.dumps(obj[name])[:80]}" if name in obj else f"'{name}' is missing"


def _default_error_type(status: int) -> str:
    # OpenAI's types: its 401s and 404s are "invalid_request_error" too (code: invalid_api_key, model_not_found)
    return {429: "rate_limit_error"}.get(status, "server_error" if status >= 500 else "invalid_request_error")


class ClientGone(ConnectionAbortedError):
    """The client closed its connection while its request waited for the model, or while its answer was
    generated: nothing to answer. ``what``: the request log's words for what became of the request."""

    def __init__(self, message: str, what: str = "while its request waited; dropped unserved") -> None:
        super().__init__(message)
        self.what = what


def client_present() -> bool:
    return False


def check_client(client_gone: Callable[[], bool]) -> None:
    """Raise :class:`ClientGone` when the request's client has closed its connection: a backend calls
    it once the model is its (after waiting for the lock), so a request its client gave up on (a timeout,
    then a retry) is not generated for nobody while the retry waits behind it."""
    if client_gone():
        raise ClientGone("the client closed its connection while its request waited for the model")


@dataclass
class Sampling:
    """How to generate: ``max_tokens`` new tokens at most (0: none), ``temperature`` 0 = greedy
    (so is any temperature below ``GREEDY_BELOW``: logits divided by it overflow float32, as vLLM),
    nucleus ``top_p``, ``n`` samples per prompt, ``stop`` strings (not included in the text),
    ``seed`` for reproducible sampling. ``fit_to_context``: the request gave no max_tokens, so the
    backend lowers ``max_tokens`` to what fits the context instead of rejecting the request.
    ``max_tokens_field``: the request field that set ``max_tokens``, which a context error names."""

    max_tokens: int
    fit_to_context: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    max_tokens_field: str = "max_tokens"  # or max_completion_tokens, OpenAI's newer name, when the request sent that

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def rng_seed(self) -> int:
        """The seed a backend gives ``torch.manual_seed`` (inside a forked RNG): the request's, else
        fresh OS randomness, so unseeded requests sample differently (also across restarts)."""
        return self.seed % 2**63 if self.seed is not None else secrets.randbits(63)


@dataclass
class TokenLogprob:
    """One token of a scored or generated text.

    ``text`` is the token's piece of the decoded text (pieces concatenate to the full text);
    ``logprob`` is log p(token | everything before) under the raw model distribution (natural log,
    no temperature), None for the first prompt token; ``top`` holds the most likely alternatives
    at this position as ``(token_id, token_text, logprob)``, best first; ``rank`` is 1 + the number
    of vocabulary entries more likely than this token.
    """

    token_id: int
    text: str
    logprob: float | None
    top: list[tuple[int, str, float]] = field(default_factory=list)
    rank: int | None = None


@dataclass
class Generation:
    """One sampled continuation: its text, ``finish_reason`` ("stop" or "length"), its tokens with
    log-probs (None unless requested) and ``num_tokens`` generated (counting a final end token)."""

    text: str
    finish_reason: str
    tokens: list[TokenLogprob] | None
    num_tokens: int


class TextStream(Protocol):
    """Where a backend sends a streamed answer as it is generated (:class:`speechsum.serving.streaming.LiveStream`):
    ``text(index, text)`` with choice ``index``'s text so far (stop strings not yet cut), ``warn`` with the
    reply's warnings once known. A backend that calls neither is streamed once it has answered."""

    def text(self, index: int, text: str) -> None: ...

    def warn(self, warnings: list[ReplyWarning]) -> None: ...


@dataclass
class CompletionRequest:
    """A legacy ``/v1/completions`` prompt: text or token ids. ``logprobs`` = top-k per generated
    (and, with ``echo``, prompt) token; ``prompt_logprobs`` = vLLM's top-k per prompt token."""

    prompt: str | list[int]
    sampling: Sampling
    echo: bool = False
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    client_gone: Callable[[], bool] = field(default=client_present, repr=False, compare=False)
    stream: TextStream | None = field(default=None, repr=False, compare=False)  # stream: true, no log-probs

    @property
    def prompt_top_k(self) -> int | None:
        """Top-k the backend must return for prompt tokens (None: prompt need not be scored)."""
        wanted = [k for k in (self.logprobs if self.echo else None, self.prompt_logprobs) if k is not None]
        return max(wanted) if wanted else None


@dataclass
class CompletionOutput:
    """The result for one prompt: its text, its scored tokens (when ``prompt_top_k`` was set),
    its length in tokens and ``sampling.n`` generations."""

    prompt_text: str
    prompt_tokens: list[TokenLogprob] | None
    num_prompt_tokens: int
    generations: list[Generation]


@dataclass
class AudioInput:
    """One OpenAI ``input_audio`` content part: the decoded file bytes, its ``format`` ("wav",
    "mp3", "flac", "ogg"), the index of the message holding it and the JSON path (for errors)."""

    data: bytes
    format: str
    message: int
    param: str


@dataclass
class ChatRequest:
    """A ``/v1/chat/completions`` request: OpenAI ``messages`` (role + string content: the text
    parts joined by line breaks); ``top_logprobs`` None = no log-probs, k ≥ 0 = log-probs with k alternatives per
    token; ``audio``: the ``input_audio`` parts (only for backends that read audio). vLLM's
    ``add_generation_prompt`` (open a new assistant turn after the messages, the default) and
    ``continue_final_message`` (continue the last, assistant, message instead: a prefill)."""

    messages: list[dict]
    sampling: Sampling
    top_logprobs: int | None = None
    audio: list[AudioInput] = field(default_factory=list)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    client_gone: Callable[[], bool] = field(default=client_present, repr=False, compare=False)
    stream: TextStream | None = field(default=None, repr=False, compare=False)  # stream: true, no log-probs


@dataclass
class ReplyWarning:
    """Something about a request that was answered anyway but that its client should know (the
    reply's ``warnings``): ``code`` (e.g. ``silent_audio``), the request field ``param`` it concerns
    and a ``message`` saying what to check."""

    code: str
    param: str
    message: str


@dataclass
class ChatOutput:
    """A chat request's result: prompt length, generations and ``warnings`` for the client."""

    num_prompt_tokens: int
    generations: list[Generation]
    warnings: list[ReplyWarning] = field(default_factory=list)


@runtime_checkable
class Backend(Protocol):
    """What the HTTP layer serves. ``max_model_len`` (prompt + completion tokens) or None.

    Backends raise :class:`APIError` for requests they cannot serve (e.g. prompt too long: 400).
    """

    model_name: str
    max_model_len: int | None

    def complete(self, requests: list[CompletionRequest]) -> list[CompletionOutput]:
        """One output per prompt of a completion request; every prompt checked before any is generated."""
        ...

    def chat(self, request: ChatRequest) -> ChatOutput: ...

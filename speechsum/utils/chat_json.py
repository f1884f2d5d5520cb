"""Structured (JSON) answers from an OpenAI-compatible chat endpoint: ask, read, re-ask a malformed
answer with what was wrong, give up without guessing (the LLM judges' and ``speechsum synth``'s asker)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

import openai

from speechsum.utils.endpoint_advice import refusal_advice
from speechsum.utils.remote import RetryCounter, error_text, is_retryable, with_retries, without_keys
from speechsum.utils.replies import EndpointError, chat_text, fetch_reply

LOG = logging.getLogger(__name__)
T = TypeVar("T")
REQUEST_FAILED = "request failed"  # how a JsonAnswer's error starts when the endpoint refused or failed the request
JUDGE_MAX_TOKENS = "the judge's max_tokens (--judge-max-tokens of speechsum pairs and evaluate)"
DOWN_AFTER = 3  # asks in a row given up after every retry (no reply between them): the endpoint is down, not the item


@dataclass
class JsonAnswer(Generic[T]):
    """What :meth:`ChatJsonAsker.ask` got: ``value`` (the parsed answer) or None with ``error``
    (why not); ``attempts``: asks made (1..parse_attempts)."""

    value: T | None
    error: str = ""
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.value is not None


class ChatJsonAsker:
    """Ask an OpenAI-compatible ``/v1/chat/completions`` for a structured (JSON) answer, robustly.

    :meth:`ask` sends ``messages`` (e.g. a system prompt + a user turn) and parses the reply with
    the caller's ``parse`` (which raises ``ValueError`` on a malformed answer). A malformed answer is
    asked again, up to ``parse_attempts`` asks (not after a refusal, nor after the same reply twice at temperature
    0: :func:`final_refusal`), then given up (``value=None``) — never guessed; its
    error says when the reply was cut at ``max_tokens`` or held only reasoning (``reasoning_content``).
    A re-ask is ``messages`` + the malformed reply (assistant turn) + :func:`correction_turn` (what
    was wrong, answer again with the JSON only): a judge at temperature 0 given the same messages
    would give the same reply again.
    Each ask goes through :func:`with_retries` (the transient failures of :func:`is_retryable`:
    timeouts, dropped or cut-short connections, malformed bodies, 408/429/5xx; ``request_attempts``
    tries, exponential backoff). HTTP outcomes:

    - 400 (e.g. prompt too long): this item only → ``value=None``, ``error="request failed: …"``;
    - retries exhausted / other 5xx: the same when ``give_up_after_retries`` (default), else raised; raised
      too once :data:`DOWN_AFTER` asks in a row (across threads, no reply between them) gave up so: the
      endpoint is down, and giving every item up after its retries was hours of requests to a dead server;
    - 401/403/404 and any other 4xx: a configuration error → raised, stopping the run.

    Thread-safe counters: ``calls`` (HTTP requests, retries included), ``malformed`` (unparsable
    answers), ``retries`` (a :class:`RetryCounter`), ``prompt_tokens`` / ``completion_tokens``
    (summed from the answers' ``usage``; 0 added when a server sends none).
    """

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        *,
        parse_attempts: int = 3,
        request_attempts: int = 4,
        backoff_seconds: float = 0.5,
        temperature: float = 0.0,
        max_tokens: int = 256,
        give_up_after_retries: bool = True,
        max_tokens_setting: str = "max_tokens",
    ):
        if parse_attempts < 1:
            raise ValueError(f"parse_attempts must be >= 1, got {parse_attempts}")
        self.client = client
        self.model = model
        self.parse_attempts = parse_attempts
        self.request_attempts = request_attempts
        self.backoff_seconds = backoff_seconds
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.give_up_after_retries = give_up_after_retries
        self.max_tokens_setting = max_tokens_setting  # named where an answer was cut at max_tokens
        self.retries = RetryCounter()
        self.calls = 0
        self.malformed = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._given_up_in_a_row = 0
        self._lock = threading.Lock()

    def usage(self) -> dict:
        """For stats files and logs: HTTP calls, retries (by error, backoff slept), malformed answers, tokens."""
        with self._lock:
            counts = {"api_calls": self.calls, "malformed_answers": self.malformed,
                      "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}
        return {**counts, **self.retries.as_dict()}

    def complete(self, messages: list[dict[str, str]]) -> str:
        """One chat completion (no retries): the reply's text ("" when the server sent none);
        :class:`MalformedReply` (retried) for a body that is not a chat completion."""
        return self._complete(messages)[0]

    def _complete(self, messages: list[dict[str, str]]) -> tuple[str, str, bool]:
        """:meth:`complete`'s text, a note on why it may hold no answer (cut at ``max_tokens``, only reasoning
        sent: ``reasoning_content``, which is never read as the answer) and whether the reply is a refusal no
        re-ask changes (the model's ``refusal``, the endpoint's content filter)."""
        with self._lock:
            self.calls += 1
        endpoint = without_keys(str(self.client.base_url))
        response = fetch_reply(endpoint, lambda: self.client.chat.completions.create(
            model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
        ))
        usage = getattr(response, "usage", None)
        prompt, completion = (getattr(usage, name, 0) for name in ("prompt_tokens", "completion_tokens"))
        with self._lock:
            self.prompt_tokens += prompt if isinstance(prompt, int) else 0
            self.completion_tokens += completion if isinstance(completion, int) else 0
        text = chat_text(response, endpoint)
        choice = response.choices[0]
        reasoning = any(getattr(choice.message, name, None) for name in ("reasoning_content", "reasoning"))
        cut = getattr(choice, "finish_reason", None) == "length"
        notes = [f"cut at max_tokens={self.max_tokens}: raise {self.max_tokens_setting}"] if cut else []
        notes += ["the reply holds only reasoning, no answer"] if reasoning and not text.strip() else []
        refused = not text.strip() and (getattr(choice, "finish_reason", None) == "content_filter"
                                        or any(note.startswith("the model refused") for note in no_text_notes(choice)))
        notes += no_text_notes(choice) if not text.strip() else []
        return text, "; ".join(notes), refused

    def _request_failed(self, err: BaseException) -> str:
        """An item's error for a request the endpoint refused or failed, naming the endpoint (the item's
        error is kept in predictions and pairs files, where the run's URL is not), keys masked."""
        endpoint, text = without_keys(str(self.client.base_url)), error_text(err)
        return without_keys(f"{REQUEST_FAILED}{'' if endpoint in text else f' at {endpoint}'}: {text}")

    def _endpoint_down(self, err: BaseException) -> bool:
        """Count an ask given up after every retry; True (with a warning) from the :data:`DOWN_AFTER`-th in a row."""
        with self._lock:
            self._given_up_in_a_row += 1
            down = self._given_up_in_a_row >= DOWN_AFTER
        if down:
            LOG.warning("%s: %d requests in a row failed after every retry (the last: %s): the endpoint is down or "
                        "overloaded; stopping", without_keys(str(self.client.base_url)), DOWN_AFTER, error_text(err))
        return down

    def ask(self, messages: list[dict[str, str]], parse: Callable[[str], T], label: str = "") -> JsonAnswer[T]:
        """``parse(reply)`` of the first well-formed reply, or ``value=None`` with the error; ``label``
        (e.g. an example id) only names the item in log warnings."""
        error, last = "", None
        asked = messages
        for attempt in range(1, self.parse_attempts + 1):
            try:
                text, note, refused = with_retries(
                    partial(self._complete, asked), self.request_attempts, self.backoff_seconds, on_retry=self.retries
                )
            except openai.BadRequestError as err:
                return JsonAnswer(None, self._request_failed(err), attempt)
            except Exception as err:
                if not (self.give_up_after_retries and is_retryable(err)) or self._endpoint_down(err):
                    raise
                return JsonAnswer(None, self._request_failed(err), attempt)
            with self._lock:
                self._given_up_in_a_row = 0
            try:
                return JsonAnswer(parse(text), "", attempt)
            except ValueError as err:
                with self._lock:
                    self.malformed += 1
                error = f"{err} ({note})" if note else str(err)
                LOG.warning("%s: malformed answer%s (attempt %d/%d): %s",
                            self.model, f" for {label}" if label else "", attempt, self.parse_attempts, error)
                stop = final_refusal(refused, (text, error) == last and self.temperature == 0)
                if stop and attempt < self.parse_attempts:
                    return JsonAnswer(None, f"malformed answer after {attempt} attempts: {error} ({stop})", attempt)
                last = (text, error)
                asked = [*messages, {"role": "assistant", "content": text}, correction_turn(error)]
        return JsonAnswer(None, f"malformed answer after {self.parse_attempts} attempts: {error}", self.parse_attempts)


def final_refusal(refused: bool, repeated: bool) -> str:
    """Why a malformed answer is not asked again, "" when it may be: a refusal (the model's, a content filter's),
    which a re-ask with the same content gets again, or the same reply as the last at temperature 0, whose re-ask
    would be the very request just answered (each was asked ``parse_attempts`` times before 2026-12-07)."""
    if refused:
        return "a refusal, not asked again"
    return "the same answer as the last, at temperature 0: asked again, it would be given again" if repeated else ""


def no_text_notes(choice: object) -> list[str]:
    """Why a chat reply's choice holds no text, as far as it says: the model refused (``refusal``), the
    endpoint's content filter stopped it (``finish_reason: content_filter``), or it called a tool
    instead of answering (``tool_calls``, ``function_call``)."""
    notes = []
    message = getattr(choice, "message", None)
    if getattr(choice, "finish_reason", None) == "content_filter":
        notes.append("stopped by the endpoint's content filter (finish_reason content_filter)")
    refusal = getattr(message, "refusal", None)
    content = getattr(message, "content", None)
    if not refusal and isinstance(content, list):  # content as parts: a refusal part
        refusal = next((part.get("refusal") for part in content if isinstance(part, dict)
                        and part.get("type") == "refusal"), None)
    if isinstance(refusal, str) and refusal.strip():
        notes.append(f"the model refused: {refusal.strip()[:120]!r}")
    if getattr(message, "tool_calls", None) or getattr(message, "function_call", None):
        notes.append("the reply is a tool call, not text: serve the model without tools or tool_choice for it")
    return notes


def correction_turn(error: str) -> dict[str, str]:
    """The user turn a re-ask adds after a malformed reply (which goes before it as the assistant's
    turn): what could not be read, and to answer again with only the JSON the instructions ask for."""
    return {"role": "user", "content": f"Your answer could not be read ({error}). Answer again, following the "
                                       "instructions above, with only the JSON object they ask for and no other text."}


def check_not_all_refused(errors: list[str | None], endpoint: str, model: str, judge: str) -> None:
    """Raise :class:`EndpointError` when every ask behind ``errors`` (one per item: the
    :class:`JsonAnswer` error, None for an answer) was a request the endpoint refused or failed: the
    judge's settings are wrong (a model that takes no temperature 0 answers each 400), not the
    answers, and leaving every item unjudged would hide it. So is every item unjudged by answers that
    could not be read (a model that answers in prose, or is cut at max_tokens): the run ended with
    exit 0 and an empty pairs file, or an evaluation without the metric."""
    endpoint = without_keys(endpoint)  # as the errors name it
    refused = [error.replace(f"{REQUEST_FAILED} at {endpoint}:", f"{REQUEST_FAILED}:", 1)  # named once, first
               for error in errors if error and error.startswith(REQUEST_FAILED)]
    if errors and len(refused) == len(errors):
        advice = refusal_advice(refused[0])
        advice = f"{advice} (the judge's model: {model!r})" if advice else (
            f"check the judge's model {model!r}, max_tokens and temperature (some reasoning models take no temperature 0)")
        raise EndpointError(without_keys(
            f"{endpoint}: {judge} refused all {len(errors)} requests (the first: {refused[0]}); {advice}, then rerun"))
    if errors and all(errors):
        raise EndpointError(without_keys(
            f"{endpoint}: {judge} gave no usable answer for any of the {len(errors)} items (the first: {errors[0]}); "
            f"check the judge's model {model!r} (one that answers in the JSON asked for) and max_tokens (reasoning "
            "models need thousands), then rerun"))

"""Calling remote OpenAI-compatible APIs robustly: client, retries, JSON answers, concurrency, a cache.

Used by every remote path (teacher scoring, judges, data generation) against OpenAI, Azure OpenAI,
vLLM or ``speechsum serve``. Keys come only from environment variables and are never logged,
cached or written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import openai
from tqdm.auto import tqdm

LOG = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

PLACEHOLDER_KEY = "EMPTY"  # what vLLM and speechsum serve accept when they run without a key
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    openai.APITimeoutError,  # subclass of APIConnectionError; listed for clarity
    openai.APIConnectionError,
    openai.RateLimitError,
    openai.InternalServerError,
)


def openai_client(base_url: str | None, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0) -> openai.OpenAI:
    """An ``openai.OpenAI`` client for ``base_url`` (None: api.openai.com) with its own retries off.

    The key is read from the environment variable named ``api_key_env``. With a ``base_url`` and the
    variable unset, the placeholder key "EMPTY" is used (self-hosted vLLM / ``speechsum serve``
    without ``--api-key-env``); for the official API an unset variable is an error. Azure OpenAI:
    ``base_url="https://<resource>.openai.azure.com/openai/v1/"`` with the Azure key in the variable.
    ``max_retries=0``: retries happen in :func:`with_retries`, where they are counted.
    """
    key = os.environ.get(api_key_env) if api_key_env else None
    if not key:
        if base_url is None:
            raise ValueError(
                f"No API key: the environment variable {api_key_env} is not set. Export it "
                f"(export {api_key_env}=...) or give a base_url of a self-hosted endpoint."
            )
        key = PLACEHOLDER_KEY
    return openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=0)


def is_retryable(error: BaseException) -> bool:
    """Timeouts, connection errors, 429 and 5xx are worth retrying; other 4xx are not."""
    if isinstance(error, RETRYABLE_ERRORS):
        return True
    return isinstance(error, openai.APIStatusError) and error.status_code >= 500


def _retry_after_seconds(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def backoff_delay(retry: int, backoff_seconds: float, max_backoff: float = 30.0, rng: random.Random | None = None) -> float:
    """Delay before retry number ``retry`` (1-based): b·2^(retry−1) capped at ``max_backoff``, with
    "equal jitter": uniformly in [d/2, d], so concurrent clients do not retry in lockstep."""
    delay = min(max_backoff, backoff_seconds * 2 ** (retry - 1))
    return delay * (0.5 + 0.5 * (rng or random).random())


class RetryCounter:
    """A thread-safe ``on_retry`` hook that counts: ``retries`` in total, ``by_error`` per error
    class name (e.g. {"RateLimitError": 3}), ``slept`` seconds of backoff."""

    def __init__(self) -> None:
        self.retries = 0
        self.by_error: dict[str, int] = {}
        self.slept = 0.0
        self._lock = threading.Lock()

    def __call__(self, retry: int, error: BaseException, delay: float) -> None:
        with self._lock:
            self.retries += 1
            name = type(error).__name__
            self.by_error[name] = self.by_error.get(name, 0) + 1
            self.slept += delay


def with_retries(
    call: Callable[[], T],
    attempts: int = 4,
    backoff_seconds: float = 0.5,
    *,
    max_backoff: float = 30.0,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    retry_if: Callable[[BaseException], bool] = is_retryable,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call()`` up to ``attempts`` times; retry errors for which ``retry_if`` holds (default:
    timeouts, connection errors, 429, 5xx) after :func:`backoff_delay` (or the server's
    ``Retry-After``, if longer, capped at ``max_backoff``); re-raise the last error when attempts run
    out, and any other error at once. ``on_retry(retry_number, error, delay)`` runs before each
    sleep — pass a :class:`RetryCounter` to count.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:
            if attempt == attempts or not retry_if(error):
                raise
            delay = backoff_delay(attempt, backoff_seconds, max_backoff)
            server_delay = _retry_after_seconds(error)
            if server_delay is not None:
                delay = min(max_backoff, max(delay, server_delay))
            LOG.warning("attempt %d/%d failed (%s); retrying in %.2fs", attempt, attempts, type(error).__name__, delay)
            if on_retry is not None:
                on_retry(attempt, error, delay)
            sleep(delay)
    raise AssertionError("unreachable")


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
    asked again, up to ``parse_attempts`` asks, then given up (``value=None``) — never guessed.
    Each ask goes through :func:`with_retries` (timeouts, 429, 5xx; ``request_attempts`` tries,
    exponential backoff). HTTP outcomes:

    - 400 (e.g. prompt too long): this item only → ``value=None``, ``error="request failed: …"``;
    - retries exhausted / other 5xx: the same when ``give_up_after_retries`` (default), else raised;
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
        self.retries = RetryCounter()
        self.calls = 0
        self.malformed = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._lock = threading.Lock()

    def complete(self, messages: list[dict[str, str]]) -> str:
        """One chat completion (no retries): the reply's text ("" when the server sent none)."""
        with self._lock:
            self.calls += 1
        response = self.client.chat.completions.create(
            model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
        )
        usage = response.usage
        with self._lock:
            self.prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
            self.completion_tokens += getattr(usage, "completion_tokens", 0) or 0
        return response.choices[0].message.content or ""

    def ask(self, messages: list[dict[str, str]], parse: Callable[[str], T], label: str = "") -> JsonAnswer[T]:
        """``parse(reply)`` of the first well-formed reply, or ``value=None`` with the error; ``label``
        (e.g. an example id) only names the item in log warnings."""
        error = ""
        for attempt in range(1, self.parse_attempts + 1):
            try:
                text = with_retries(
                    lambda: self.complete(messages), self.request_attempts, self.backoff_seconds, on_retry=self.retries
                )
            except openai.BadRequestError as err:
                return JsonAnswer(None, f"request failed: {type(err).__name__}: {err}", attempt)
            except Exception as err:
                if not (self.give_up_after_retries and is_retryable(err)):
                    raise
                return JsonAnswer(None, f"request failed: {type(err).__name__}: {err}", attempt)
            try:
                return JsonAnswer(parse(text), "", attempt)
            except ValueError as err:
                with self._lock:
                    self.malformed += 1
                error = str(err)
                LOG.warning("%s: malformed answer%s (attempt %d/%d): %s",
                            self.model, f" for {label}" if label else "", attempt, self.parse_attempts, err)
        return JsonAnswer(None, f"malformed answer after {self.parse_attempts} attempts: {error}", self.parse_attempts)


def first_json_object(text: str, error: type[ValueError] = ValueError) -> dict:
    """The first ``{...}`` in an LLM's answer (code fences and chatter around it allowed), parsed;
    raises ``error`` (a ``ValueError`` subclass, so :meth:`ChatJsonAsker.ask` asks again) when
    there is none or it is not valid JSON."""
    match = re.search(r"\{.*\}", text or "", flags=re.DOTALL)
    if match is None:
        raise error(f"no JSON object in the answer: {(text or '')[:80]!r}")
    try:
        return json.loads(match.group(0))
    except json.JSONDecodeError as err:
        raise error(f"invalid JSON ({err.msg}): {match.group(0)[:80]!r}") from err


def map_concurrent(
    fn: Callable[[T], R],
    items: Iterable[T],
    max_workers: int = 8,
    desc: str | None = None,
    *,
    return_exceptions: bool = False,
    postfix: Callable[[], dict[str, Any]] | None = None,
    progress: bool = True,
) -> list[R | BaseException]:
    """``[fn(x) for x in items]`` on a pool of ``max_workers`` threads, results in input order.

    At most ``max_workers`` calls run at once and at most 2·``max_workers`` are queued, so huge
    inputs and Ctrl-C behave. A tqdm bar (``desc``) advances per finished item and shows
    ``postfix()`` (e.g. counts of ties/failures kept by the caller) after each. An exception in
    ``fn`` is returned in that item's slot when ``return_exceptions``, else the remaining work is
    cancelled and the first exception (in completion order) is raised.
    """
    items = list(items)
    results: list[Any] = [None] * len(items)
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    bar = tqdm(total=len(items), desc=desc, disable=not progress, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="map_concurrent")
    pending: dict[Future, int] = {}
    next_index = 0
    try:
        while next_index < len(items) or pending:
            while next_index < len(items) and len(pending) < 2 * max_workers:
                pending[pool.submit(fn, items[next_index])] = next_index
                next_index += 1
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                error = future.exception()
                if error is not None and not return_exceptions:
                    raise error
                results[index] = error if error is not None else future.result()
                bar.update(1)
            if postfix is not None:
                bar.set_postfix(postfix(), refresh=False)
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return results


def cache_key(*parts: Any) -> str:
    """A stable key for cache entries: sha256 hex of the JSON of ``parts`` (sorted keys, UTF-8).

    Example: ``cache_key("judge-v2", model, example_id, summary_a, summary_b)``.
    """
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class JsonlCache:
    """A resumable, append-only key → JSON-object cache in one JSONL file ``{"key": k, "value": v}``.

    Every ``put`` appends one line, flushes and fsyncs, under a lock (safe from many threads of one
    process; not from several processes). On open the file is replayed: a truncated final line
    (a crash mid-write) is ignored, cut off the file and counted in ``truncated_lines``; a key seen
    again counts in ``duplicates`` (the last value wins); any other unreadable line is an error
    naming the file and line. Never put secrets in values.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.truncated_lines = 0
        self.duplicates = 0
        self._entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115  (closed in close())

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        lines = data.split(b"\n")
        for number, raw in enumerate(lines, start=1):
            is_last = number == len(lines)
            if is_last and raw == b"":
                break
            if not is_last and raw.strip() == b"":
                good_end += len(raw) + 1
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                if not (isinstance(record, dict) and isinstance(record.get("key"), str)
                        and isinstance(record.get("value"), dict)):
                    raise ValueError("expected an object with a string 'key' and an object 'value'")
            except (ValueError, UnicodeDecodeError) as error:
                if is_last:  # no newline after it: a write cut short
                    self.truncated_lines += 1
                    LOG.warning("%s: ignoring truncated last line %d (%d bytes)", self.path, number, len(raw))
                    break
                raise ValueError(f"{self.path}, line {number}: unreadable cache entry ({error}). "
                                 "Remove the line or the file to rebuild the cache.") from None
            if is_last:  # complete JSON but no trailing newline: keep it, finish the line
                good_end = len(data)
                self._remember(record["key"], record["value"])
                break
            good_end += len(raw) + 1
            self._remember(record["key"], record["value"])
        if good_end < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
        elif data and not data.endswith(b"\n"):
            with open(self.path, "ab") as handle:
                handle.write(b"\n")

    def _remember(self, key: str, value: dict) -> None:
        if key in self._entries:
            self.duplicates += 1
        self._entries[key] = value

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, value: dict) -> None:
        """Store ``value`` (a JSON-serialisable dict) under ``key`` durably (flush + fsync)."""
        line = json.dumps({"key": key, "value": value}, ensure_ascii=False, allow_nan=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._remember(key, value)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> JsonlCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

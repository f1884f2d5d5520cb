"""Calling remote OpenAI-compatible APIs robustly: client, retries, JSON answers, concurrency, a cache.

Used by every remote path (teacher scoring, judges, data generation) against OpenAI, Azure OpenAI,
vLLM or ``speechsum serve``. One retry policy, :func:`is_retryable` over the table
:data:`TRANSIENT_ERRORS`, decides what :func:`with_retries` retries; the cache,
:class:`~speechsum.utils.jsonl_cache.JsonlCache`, is re-exported here. Keys come only from
environment variables and are never logged, cached or written anywhere.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import openai
from tqdm.auto import tqdm

from speechsum.utils.answers import first_json_object  # noqa: F401  (re-exported)
from speechsum.utils.arguments import (
    ConfigError,
    base_url_problem,
    basic_auth_replaces_key,
    check_key_variable,
    key_problem,
    unset_text,
)
from speechsum.utils.client_logs import mask_client_logs
from speechsum.utils.deadline import deadline_http_client
from speechsum.utils.endpoint_advice import TIMEOUT_SETTINGS, endpoint_advice, proxy_refused
from speechsum.utils.jsonl_cache import JsonlCache, process_rank  # noqa: F401  (re-exported)
from speechsum.utils.redirects import (  # noqa: F401  (re-exported)
    PLACEHOLDER_KEY,
    redirect_loop,
    refuse_method_changing_redirect,
    refuse_redirect_dropping_key,
)
from speechsum.utils.replies import EndpointError, MalformedReply, refuse_undecodable_encoding, text_reply
from speechsum.utils.url_secrets import without_url_secrets

LOG = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

KEYS_IN_USE: set[str] = set()  # every key a client was made with: masked where an endpoint's message is shown
_BASIC_AUTH_SAID: set[tuple[str, str]] = set()  # (base_url, variable) whose Basic auth in the key's place was warned about
# The retry policy, as a table: errors that say "try again later", not "this request is wrong".
TRANSIENT_ERRORS: dict[type[BaseException], str] = {
    openai.APITimeoutError: "no answer within the client's timeout",
    openai.APIConnectionError: "refused, reset, or closed before the whole answer arrived (a truncated body)",
    openai.RateLimitError: "429 rate limit (the server's Retry-After is honoured, bounded)",
    openai.InternalServerError: "5xx: the server failed or is overloaded",
    json.JSONDecodeError: "a 200 whose body is not valid JSON (malformed, or cut short without a length)",
    openai.APIResponseValidationError: "a body that is not the API's schema",
    MalformedReply: "a 200 whose JSON is not a completion (no choices, an error object, a message of the wrong type)",
}
MALFORMED_ADVICE = ("; check that base_url is the OpenAI-compatible API's (ending in /v1) and that nothing in between "
                    "(a proxy, a login page) answers in its place, then rerun")
TRANSIENT_STATUS = (408, 429)  # besides every 5xx
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = tuple(TRANSIENT_ERRORS)


def openai_client(base_url: str | None, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0) -> openai.OpenAI:
    """An ``openai.OpenAI`` client for ``base_url`` (None: api.openai.com) with its own retries off.

    The key is read from the environment variable named ``api_key_env``. With a ``base_url`` and the
    variable unset, the placeholder key "EMPTY" is used (self-hosted vLLM / ``speechsum serve``
    without ``--api-key-env``); for the official API an unset variable is an error. Azure OpenAI:
    ``base_url="https://<resource>.openai.azure.com/openai/v1/"`` with the Azure key in the variable.
    ``max_retries=0``: retries happen in :func:`with_retries`, where they are counted.
    ``timeout``: seconds per request in total, connect to last byte (:func:`deadline_http_client`).
    A ``base_url`` that is not an http(s) URL (``127.0.0.1:8000/v1``) is a ``ConfigError`` naming it.
    """
    check_key_variable("api_key_env", api_key_env or None)
    if base_url is not None and (problem := base_url_problem(base_url)):
        # the client's own error is a bare "Connection error." (retried in vain), its cause unshown
        raise ConfigError(f"base_url {problem}")
    key = usable_key(os.environ.get(api_key_env), api_key_env) if api_key_env else None
    if not key:
        if base_url is None:
            raise ValueError(
                f"No API key: the environment variable {api_key_env} {unset_text(api_key_env)}. Export it "
                f"(export {api_key_env}=...) or give a base_url of a self-hosted endpoint."
            )
        key = PLACEHOLDER_KEY
    else:
        KEYS_IN_USE.add(key)
        note = basic_auth_replaces_key(base_url, "api_key_env", api_key_env, "base_url")
        if note and (base_url, api_key_env) not in _BASIC_AUTH_SAID:
            _BASIC_AUTH_SAID.add((base_url, api_key_env))
            LOG.warning(note)
    mask_client_logs(without_keys)  # httpx logs each request's URL at INFO, a user:password@ in it whole
    hooks = {"response": [refuse_method_changing_redirect, refuse_redirect_dropping_key, refuse_undecodable_encoding]}
    # without a whole-request deadline (an HTTP library layout deadline.py does not know) the redirect hook stays
    http_client = deadline_http_client(timeout, event_hooks=hooks) or openai.DefaultHttpxClient(event_hooks=hooks)
    return openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=0, http_client=http_client)


def usable_key(key: str | None, variable: str) -> str | None:
    """The API key of environment variable ``variable`` without the spaces and line end around it (a key
    read from a file: ``export KEY=$(< key.txt)`` of a Windows file keeps its CR, which the HTTP client
    refused with an error quoting the whole key, retried as a connection error); a ``ConfigError``
    naming the variable, never the key, when a character inside it cannot go into an HTTP header."""
    if key is None:
        return None
    if key.strip():
        KEYS_IN_USE.add(key)  # masked as given, too
    key = key.strip()
    if problem := key_problem(key, variable):
        raise ConfigError(problem)
    return key


def check_key_option(variable: str, base_url: str | None, option: str = "--api-key-env",
                     url_option: str = "--judge-base-url") -> None:
    """Before any work: the key in the environment variable that command-line ``option`` names can be sent
    (:func:`usable_key`), and is set where no ``base_url`` (a self-hosted endpoint) lets it be unset; a
    ``ConfigError`` naming the option and the variable, never the key."""
    try:
        key = usable_key(os.environ.get(variable), variable)
    except ConfigError as err:
        raise ConfigError(f"{option} {variable}: {err}") from None
    if not key and base_url is None:
        raise ConfigError(f"{option} {variable}: that environment variable {unset_text(variable)}, and the official "
                          f"API needs a key: export it (export {variable}=...), or give {url_option} of a self-hosted "
                          "endpoint")


def endpoint_failure(command: str, client: openai.OpenAI, api_key_env: str, error: BaseException,
                     cache: object) -> SystemExit | None:
    """The exit of a resumable command whose endpoint failed (an API error, or a transient one
    retried in vain): one message naming the endpoint, the key's variable (its value masked if the
    server echoed it) and the ``cache`` a rerun resumes from; None for any other error."""
    if not (isinstance(error, openai.OpenAIError) or is_retryable(error)):
        return None
    reason = error_text(error)  # keys masked there
    timeout_setting = {"speechsum pairs": "--judge-timeout", "speechsum synth": "--timeout"}.get(command, TIMEOUT_SETTINGS)
    advice = endpoint_advice(error, f"${api_key_env}", timeout_setting) or (f"fix the cause (URL, model name, key in ${api_key_env}, "
                                                          "server load)")
    return SystemExit(without_keys(f"{command}: the endpoint {client.base_url} failed ({reason}): {advice}. Everything "
                                   f"finished so far is cached in {cache}; rerun the same command to resume."))


def error_text(error: BaseException) -> str:
    """``Type: message`` of an endpoint's error; the start of a status error's body that is no JSON (an HTML
    page: whose it is) and a connection error's or timeout's cause added (the
    client says only "Connection error."; its cause says refused, unknown host, TLS…); keys masked
    (:func:`without_keys`)."""
    text = f"{type(error).__name__}: {error}"
    body = getattr(error, "body", None)
    if isinstance(error, openai.APIStatusError) and isinstance(body, str) and body.strip() and body.strip() not in text:
        text += f" ({text_reply(body)})"  # "Error code: 502" alone hid whose page it was (a proxy's, a login's)
    cause = error.__cause__
    if isinstance(error, openai.APIConnectionError) and cause is not None and str(cause):
        text += f" ({type(cause).__name__}: {cause})"
    return without_keys(text)  # it is logged and kept (a verdict's error): no key a server echoed


def without_keys(text: str) -> str:
    """``text`` with every API key in use (:data:`KEYS_IN_USE`) replaced by ``***``: servers echo the
    key they refused ("Incorrect API key provided: sk-…"); so are the credentials of any URL in it, whatever
    its form (``http://user:password@host`` → ``http://***@host``, ``?api_key=***``: :func:`without_url_secrets`)."""
    text = without_url_secrets(text)
    for key in sorted(KEYS_IN_USE, key=len, reverse=True):
        if len(key) >= 8:
            text = text.replace(key, "***")
        else:  # a short key ("x", "dummy") only where it stands alone: "Expecting" became "E***pecting"
            text = re.sub(rf"(?<![\w-]){re.escape(key)}(?![\w-])", "***", text)
    return text


def endpoint_error_text(error: BaseException) -> str | None:
    """One line for the first error from an OpenAI-compatible endpoint in ``error``'s chain (a 401,
    a 404 for a wrong model name, a connection refused after the retries, an :class:`EndpointError`
    such as a reply that is not a completion), keys masked, with what to check; None when the chain
    holds none."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, EndpointError):  # it names the endpoint; a reply that is no completion says what to check
            advice = MALFORMED_ADVICE if isinstance(error, MalformedReply) else ""
            return without_keys(f"{error}{advice}")
        if isinstance(error, openai.OpenAIError):
            url = getattr(getattr(error, "request", None), "url", None)
            where = f"the endpoint {url}" if url else "the OpenAI-compatible endpoint"
            advice = endpoint_advice(error) or ("check its URL, the model name, and the API key in the environment "
                                                "variable named by api_key_env / --api-key-env")
            return without_keys(f"{where} failed ({error_text(error)}); {advice}, then rerun")
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def is_retryable(error: BaseException) -> bool:
    """The retry policy: transient errors (:data:`TRANSIENT_ERRORS`; HTTP 408, 429 and 5xx) are
    retried; any other error (400, 401, 403, 404, 422, …: the request or setup is wrong) is not, nor
    a 429 whose code says the account's quota is used up (OpenAI's ``insufficient_quota``: no wait
    ends it), nor a redirect loop (:func:`redirect_loop`), nor a proxy's 407 (:func:`proxy_refused`)."""
    if isinstance(error, openai.RateLimitError) and getattr(error, "code", None) == "insufficient_quota":
        return False
    if redirect_loop(error):  # the same redirects again: 21 requests per attempt
        return False
    if proxy_refused(error):  # a proxy's 407 to an https tunnel: a "Connection error.", retried in vain
        return False
    if isinstance(error, RETRYABLE_ERRORS):
        return True
    return isinstance(error, openai.APIStatusError) and (error.status_code >= 500 or error.status_code in TRANSIENT_STATUS)


def retry_after_seconds(error: BaseException) -> float | None:
    """The wait the server asked for in its answer's headers: ``retry-after-ms`` (OpenAI),
    ``Retry-After`` in seconds or as an HTTP date; None when absent or unreadable."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if (millis := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(millis) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            moment = email.utils.parsedate_to_datetime(value)
            return max(0.0, moment.timestamp() - time.time())
    except (ValueError, TypeError, OverflowError):
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

    def as_dict(self) -> dict:
        """For stats files and logs: ``{"retries", "retries_by_error", "retry_sleep_seconds"}``."""
        with self._lock:
            return {"retries": self.retries, "retries_by_error": dict(sorted(self.by_error.items())),
                    "retry_sleep_seconds": round(self.slept, 3)}


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
    :func:`is_retryable`) after :func:`backoff_delay` (or the server's Retry-After, if longer; both
    capped at ``max_backoff``, so a server asking for an hour cannot stall a run); re-raise the last
    error when attempts run out, and any other error at once. ``on_retry(retry_number, error,
    delay)`` runs before each sleep — pass a :class:`RetryCounter` to count. An error raised after every
    attempt carries ``retries_spent`` = (attempts, seconds waited), which :func:`endpoint_advice` says.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    waited = 0.0
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:
            if attempt == attempts and attempts > 1 and retry_if(error):
                error.retries_spent = (attempts, waited)  # said by endpoint_advice: what "every retry" was
            if attempt == attempts or not retry_if(error):
                raise
            delay = backoff_delay(attempt, backoff_seconds, max_backoff)
            server_delay = retry_after_seconds(error)
            if server_delay is not None:
                delay = min(max_backoff, max(delay, server_delay))
            LOG.warning("attempt %d/%d failed (%s); retrying in %.2fs", attempt, attempts, type(error).__name__, delay)
            if on_retry is not None:
                on_retry(attempt, error, delay)
            sleep(delay)
            waited += delay
    raise AssertionError("unreachable")


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
    """``[fn(x) for x in items]`` on ``max_workers`` threads, results in input order.

    At most ``max_workers`` calls run at once; each worker takes the next item when it is free. A
    tqdm bar (``desc``) advances per finished item and shows ``postfix()`` (e.g. counts of
    ties/failures kept by the caller) after each. An exception in ``fn`` is returned in that item's
    slot when ``return_exceptions``, else no further item starts, the calls running are waited for
    (what they cache is kept) and the first exception (in completion order) is raised. On Ctrl-C or
    SIGTERM (``KeyboardInterrupt``, ``SystemExit``) nothing is waited for: the workers are daemon
    threads, so a call still in flight (a remote request with a long timeout and its retries)
    never keeps the process alive.
    """
    items = list(items)
    results: list[Any] = [None] * len(items)
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    bar = tqdm(total=len(items), desc=desc, disable=not progress, dynamic_ncols=True)
    todo, take, stop = iter(enumerate(items)), threading.Lock(), threading.Event()
    finished: queue.SimpleQueue = queue.SimpleQueue()

    def worker() -> None:
        while not stop.is_set():
            with take:
                index, item = next(todo, (None, None))
            if index is None:
                return
            try:
                finished.put((index, fn(item), None))
            except BaseException as error:  # handed to the calling thread
                finished.put((index, None, error))

    workers = [threading.Thread(target=worker, name=f"map_concurrent_{i}", daemon=True)
               for i in range(min(max_workers, len(items)))]
    for thread in workers:
        thread.start()
    try:
        for _ in items:
            index, value, error = _next_finished(finished)
            if error is not None and not return_exceptions:
                raise error
            results[index] = error if error is not None else value
            bar.update(1)
            if postfix is not None:
                bar.set_postfix(postfix(), refresh=False)
    except Exception:
        stop.set()
        for thread in workers:
            thread.join()
        raise
    finally:
        stop.set()
        bar.close()
    return results


def _next_finished(finished: queue.SimpleQueue) -> tuple:
    """The next ``(index, value, error)`` a worker put. Waits in short slices: a wait without a timeout
    blocks in C, and a Ctrl-C delivered to a worker thread (or by ``_thread.interrupt_main``) would only
    be raised in the main thread once the next call finished, however long that takes."""
    while True:
        try:
            return finished.get(timeout=0.1)
        except queue.Empty:
            continue


def cache_key(*parts: Any) -> str:
    """A stable key for cache entries: sha256 hex of the JSON of ``parts`` (sorted keys, UTF-8).

    Example: ``cache_key("judge-v2", model, example_id, summary_a, summary_b)``.
    """
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

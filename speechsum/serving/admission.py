"""Backpressure of ``speechsum serve``: a bounded queue in front of the model.

Model calls run one at a time, so requests beyond the one being generated wait. At most
``max_waiting`` of them may wait; one more is answered at once with a 503 (OpenAI's "overloaded"
status, which the ``openai`` client and :func:`speechsum.utils.remote.with_retries` retry) and a
``Retry-After`` from the recent time per request, instead of waiting without bound (before
2026-12-06 every request queued, each holding its body and decoded audio, until clients timed out).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from speechsum.serving.protocol import APIError

DEFAULT_MAX_WAITING = 32
MAX_RETRY_AFTER = 60  # seconds; the openai client ignores a longer Retry-After (and backs off itself)
SMOOTHING = 0.3  # weight of the latest request in the running time per request
BODY_RETRY_AFTER = 1  # seconds, for a body refused while others are read (bodies are read in about that time)


class ModelQueue:
    """Admits a request to the model when fewer than ``max_waiting`` wait besides the one served."""

    def __init__(self, max_waiting: int = DEFAULT_MAX_WAITING) -> None:
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be at least 0, got {max_waiting}")
        self.max_waiting = max_waiting
        self.admitted = 0  # the request being served and those waiting for the model
        self.seconds_per_request: float | None = None  # running mean of the time one request holds the model
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return max(self.admitted - 1, 0)

    def retry_after(self) -> int:
        """Whole seconds until the queue has likely moved on by one request (1 before any finished)."""
        per_request = self.seconds_per_request or 1.0
        return min(MAX_RETRY_AFTER, max(1, math.ceil(per_request * max(self.admitted, 1))))

    @property
    def full(self) -> bool:
        """Whether one more request would be refused now."""
        return self.admitted > self.max_waiting

    def overloaded(self) -> APIError:
        """The 503 of a full queue, with its ``Retry-After``."""
        retry = self.retry_after()
        queued = {0: "no request may wait", 1: "1 request waits"}.get(self.waiting, f"{self.waiting} requests wait")
        return APIError(503, f"The server is overloaded: the model is busy and {queued} for it (--max-waiting "
                             f"{self.max_waiting}). Retry in {retry} s (the Retry-After header).",
                        code="server_overloaded", headers={"Retry-After": str(retry)})

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a place in the queue for the ``with`` body (the backend call); a 503 when it is full."""
        with self._lock:
            if self.full:
                raise self.overloaded()
            ahead = self.admitted
            self.admitted += 1
        started = time.monotonic()
        try:
            yield
        finally:
            # the time it waited behind the others and its own, shared by them: about one request's time
            each = (time.monotonic() - started) / (ahead + 1)
            with self._lock:
                self.admitted -= 1
                previous = self.seconds_per_request
                self.seconds_per_request = each if previous is None else (1 - SMOOTHING) * previous + SMOOTHING * each


class BodyBudget:
    """Bytes of request bodies being read and parsed at once, over every connection, at most ``limit``
    (before 2026-12-07 only the number of connections bounded them: a burst of large uploads arriving
    while the queue still had room was read at once). A body alone is always read, whatever its size:
    the budget refuses a body only while others are being read (a 503 with ``Retry-After``)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the body budget must be at least 1 byte, got {limit}")
        self.limit = limit
        self.reading = 0  # bytes taken by the bodies being read now
        self._lock = threading.Lock()

    @contextmanager
    def reader(self) -> Iterator[BodyReader]:
        """A request's share of the budget while its body is read and parsed; given back at the ``with``'s end."""
        share = BodyReader(self)
        try:
            yield share
        finally:
            with self._lock:
                self.reading -= share.taken
            share.taken = 0

    def overloaded(self) -> APIError:
        return APIError(503, f"The server is busy reading other request bodies ({self.reading} bytes at once, "
                             f"--max-reading-bytes {self.limit}). Retry in {BODY_RETRY_AFTER} s (the Retry-After "
                             "header).", code="server_overloaded", headers={"Retry-After": str(BODY_RETRY_AFTER)})


class BodyReader:
    """One request's bytes of a :class:`BodyBudget`: :meth:`take` before each part of its body is read."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.taken = 0

    def take(self, size: int) -> None:
        """Take ``size`` more bytes; a 503 if others are read and all would pass the budget's limit."""
        budget = self.budget
        with budget._lock:
            others = budget.reading - self.taken
            if others > 0 and budget.reading + size > budget.limit:
                raise budget.overloaded()
            budget.reading += size
            self.taken += size

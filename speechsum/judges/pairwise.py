"""Pairwise judges for DPO preference pairs: which of two summaries of one recording is better.

- :class:`OpenAIJudge`: an LLM through any OpenAI-compatible chat endpoint (GPT-4.1, Azure,
  vLLM, ``speechsum serve``), rubric in ``speechsum/prompts/pairwise_judge_v1.md``. Each pair is
  judged in both orders (A/B, then B/A) to cancel position bias; disagreement → tie. A malformed
  answer is asked again, then the pair is *unjudged* (``winner=None``) — never guessed.
- :class:`FactPairJudge`: the bundled benchmark's offline fact judge (``FactJudge.compare``).

A verdict's ``winner`` is "A", "B", "tie", or None (unjudged); ``identity`` names judge + prompt
version, part of every cache key.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from speechsum.utils.chat_json import JUDGE_MAX_TOKENS, ChatJsonAsker
from speechsum.utils.io import PROMPTS_DIR
from speechsum.utils.remote import RetryCounter, first_json_object, openai_client

PROMPT_PATH = PROMPTS_DIR / "pairwise_judge_v1.md"
PAIRWISE_PROMPT = PROMPT_PATH.read_text(encoding="utf-8")
PROMPT_VERSION = "pairwise-v1-" + hashlib.sha256(PAIRWISE_PROMPT.encode()).hexdigest()[:8]
WINNERS = ("A", "B", "tie")


@dataclass
class JudgeInput:
    """What a judge reads besides the two summaries."""

    id: str
    instruction: str
    transcript: str | None = None
    meta: dict | None = None


@dataclass
class PairVerdict:
    """``winner``: "A", "B", "tie" or None (unjudged); ``details``: scores / per-order answers."""

    winner: str | None
    reasons: str = ""
    details: dict = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        return self.winner is not None

    @classmethod
    def from_cache(cls, value: dict, where: str) -> PairVerdict:
        """A verdict read back from a cache (``where`` names the file and entry), checked: a
        hand-edited or foreign entry raised a bare ``KeyError``, or a winner "C" counted as B."""
        winner, reasons, details = value.get("winner"), value.get("reasons", ""), value.get("details", {})
        if winner not in WINNERS or not isinstance(reasons, str) or not isinstance(details, dict):
            shown = json.dumps(value, ensure_ascii=False)[:200]
            raise ValueError(f"{where}: not a pair verdict (expected winner A, B or tie, text reasons and an object "
                             f"details), got {shown}. Remove that line or the file to rebuild the cache.")
        return cls(winner, reasons, details)


class PairwiseJudge(ABC):
    """Compares two summaries of one input. Thread-safe ``compare``; ``calls`` counts judge work."""

    name: str
    prompt_version: str = ""

    @property
    def identity(self) -> str:
        return f"{self.name}|{self.prompt_version}" if self.prompt_version else self.name

    @abstractmethod
    def compare(self, item: JudgeInput, a: str, b: str) -> PairVerdict:
        """Which of ``a`` (shown as A) and ``b`` is better for ``item``."""


class FactPairJudge(PairwiseJudge):
    """The offline fact judge as a pairwise judge: ``FactJudge.compare`` (score difference beyond
    its ``tie_margin``), with both 1–7 scores and reasons in ``details``. Needs the benchmark's
    ``meta`` (facts, required_facts, entities) on every example."""

    def __init__(self, judge=None):
        from speechsum.judges.fact import FactJudge

        self.judge = judge or FactJudge()
        self.name = self.judge.name
        self.prompt_version = ""
        self.calls = 0
        self._lock = threading.Lock()

    def compare(self, item: JudgeInput, a: str, b: str) -> PairVerdict:
        if not item.meta:
            raise ValueError(f"example {item.id!r}: the fact judge needs the benchmark's `meta` (facts, entities)")
        with self._lock:
            self.calls += 1
        score_a = self.judge.score(a, item.meta, item.instruction)
        score_b = self.judge.score(b, item.meta, item.instruction)
        outcome = self.judge.preference(score_a, score_b)
        winner = {1: "A", -1: "B", 0: "tie"}[outcome]
        return PairVerdict(
            winner,
            f"A: {score_a.reasons} | B: {score_b.reasons}",
            {"score_a": score_a.score, "score_b": score_b.score},
        )


class MalformedVerdict(ValueError):
    """The judge's answer is not the JSON verdict the prompt asks for."""


def parse_pair_verdict(text: str) -> tuple[str, str]:
    """``(winner, reasons)`` from the JSON object holding ``winner`` (:func:`first_json_object`: a
    reasoning block, code fences and prose around it ignored; two objects with different winners
    refused); winner must be A, B or tie (case-insensitive, "Summary A" read as A). Raises
    :class:`MalformedVerdict`."""
    data = first_json_object(text, MalformedVerdict, key="winner")
    winner = data["winner"]
    label = re.sub(r"^(?:summary|answer)\s+", "", winner.strip(" *.\"'").lower()) if isinstance(winner, str) else None
    canonical = {w.lower(): w for w in WINNERS}.get(label) if label is not None else None
    if canonical is None:
        raise MalformedVerdict(f"'winner' must be A, B or tie, got {winner!r}")
    reasons = data.get("reasons", "")
    return canonical, reasons if isinstance(reasons, str) else json.dumps(reasons, ensure_ascii=False)


def pair_user_message(item: JudgeInput, a: str, b: str) -> str:
    """The judge's user turn: labelled sections, the two candidates last."""
    return "\n\n".join(
        [
            f"INSTRUCTION:\n{item.instruction.strip()}",
            f"TRANSCRIPT:\n{(item.transcript or '').strip() or '(not given)'}",
            f"SUMMARY A:\n{a.strip() or '(empty answer)'}",
            f"SUMMARY B:\n{b.strip() or '(empty answer)'}",
        ]
    )


class OpenAIJudge(PairwiseJudge):
    """Pairwise LLM judge behind an OpenAI-compatible ``/v1/chat/completions``.

    Args:
        model: the judge model the endpoint serves (the paper: GPT-4.1).
        base_url: endpoint (None: the official OpenAI API, which needs the key variable set).
        api_key_env: environment variable holding the key (read once, never stored anywhere else).
        parse_attempts: asks per order before a malformed answer makes the pair unjudged.
        request_attempts / backoff_seconds: HTTP retries of transient failures (timeouts, refused or
            cut-short connections, malformed bodies, 429, 5xx), exponential backoff; counted in :meth:`usage`.
        temperature / max_tokens / timeout: judge decoding and seconds per request.
    """

    def __init__(
        self,
        model: str = "gpt-4.1",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        parse_attempts: int = 3,
        request_attempts: int = 4,
        backoff_seconds: float = 0.5,
        temperature: float = 0.0,
        max_tokens: int = 256,
        timeout: float = 60.0,
    ):
        self.model = model
        self.client = openai_client(base_url, api_key_env=api_key_env, timeout=timeout)
        self.asker = ChatJsonAsker(
            self.client, model, parse_attempts=parse_attempts, request_attempts=request_attempts,
            backoff_seconds=backoff_seconds, temperature=temperature, max_tokens=max_tokens,
            max_tokens_setting=JUDGE_MAX_TOKENS,
        )
        self.name = f"openai:{model}"
        self.prompt_version = PROMPT_VERSION
        self.order_disagreements = 0  # pairs whose two orders disagreed (position bias): ties
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        """HTTP requests made (retries included)."""
        return self.asker.calls

    @property
    def malformed(self) -> int:
        """Answers that were not a valid verdict."""
        return self.asker.malformed

    @property
    def retries(self) -> RetryCounter:
        return self.asker.retries

    def usage(self) -> dict:
        """API use so far, for logs and stats files (:meth:`ChatJsonAsker.usage`): calls, retries by error,
        malformed answers, …, and ``order_disagreements`` (pairs made ties by position bias)."""
        with self._lock:
            return {**self.asker.usage(), "order_disagreements": self.order_disagreements}

    def ask(self, item: JudgeInput, a: str, b: str) -> tuple[str | None, str]:
        """One order: ``(winner, reasons)``, or ``(None, error)`` after ``parse_attempts`` malformed
        answers, a rejected request (400) or exhausted HTTP retries (see :class:`ChatJsonAsker`)."""
        messages = [{"role": "system", "content": PAIRWISE_PROMPT},
                    {"role": "user", "content": pair_user_message(item, a, b)}]
        answer = self.asker.ask(messages, parse_pair_verdict, label=item.id)
        return answer.value if answer.ok else (None, answer.error)

    def compare(self, item: JudgeInput, a: str, b: str) -> PairVerdict:
        """Both orders; the same winner twice → that winner, any disagreement → tie."""
        first, first_reasons = self.ask(item, a, b)
        if first is None:
            return PairVerdict(None, first_reasons, {"ab": None})
        swapped, swapped_reasons = self.ask(item, b, a)
        if swapped is None:
            return PairVerdict(None, swapped_reasons, {"ab": first})
        second = {"A": "B", "B": "A", "tie": "tie"}[swapped]  # back in a/b terms
        details = {"ab": first, "ba": swapped, "reasons_ab": first_reasons, "reasons_ba": swapped_reasons}
        if first == second:
            return PairVerdict(first, first_reasons, details)
        with self._lock:
            self.order_disagreements += 1
        return PairVerdict("tie", f"order disagreement ({first} vs {second} after swapping)", details)

"""LLM rubric judge: the paper's 1–7 score through any OpenAI-compatible chat endpoint.

The rubric (accuracy, coherence, style, hallucination, instruction following → one overall
1–7 score) lives in ``speechsum/prompts/rubric_judge_v1.md``; its version string is
:data:`RUBRIC_VERSION` plus a hash of the file, so editing the prompt never reuses old verdicts.
The judge must answer with one JSON object ``{"score": 1-7, "accuracy": …, "reasons": …}``.
Asking, re-asking and HTTP retries are :class:`speechsum.utils.chat_json.ChatJsonAsker`'s: a malformed
answer is asked again (``parse_attempts`` times) and then counted *unjudged* (``score=None``), never
guessed; transient failures (timeouts, refused or cut-short connections, malformed bodies, 429, 5xx:
:func:`speechsum.utils.remote.is_retryable`) are retried with backoff and counted (:meth:`RubricJudge.usage`,
logged after each :meth:`RubricJudge.score`; exhausted retries stop the run); a 400 makes that answer unjudged. Verdicts are cached in a resumable JSONL file keyed by
``(hash of instruction + source + reference + prediction, rubric version, judge model)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from speechsum.utils.answers import whole_number
from speechsum.utils.chat_json import JUDGE_MAX_TOKENS, ChatJsonAsker, check_not_all_refused
from speechsum.utils.io import PROMPTS_DIR
from speechsum.utils.remote import JsonlCache, first_json_object, map_concurrent, openai_client

log = logging.getLogger(__name__)

RUBRIC_PATH = PROMPTS_DIR / "rubric_judge_v1.md"
CRITERIA = ("accuracy", "coherence", "style", "hallucination", "instruction_following")


RUBRIC_TEXT = RUBRIC_PATH.read_text(encoding="utf-8")  # read once: the text judged with is the one hashed
RUBRIC_VERSION = "rubric-v1-" + hashlib.sha256(RUBRIC_TEXT.encode()).hexdigest()[:8]


@dataclass
class RubricItem:
    """What the judge reads for one answer. ``source`` is the transcript (the source of truth)."""

    instruction: str
    prediction: str
    source: str = ""
    reference: str = ""

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass
class RubricVerdict:
    """One verdict; ``score`` is None when the judge never gave a valid answer (unjudged)."""

    score: int | None
    criteria: dict[str, int] = field(default_factory=dict)
    reasons: str = ""
    attempts: int = 0
    error: str | None = None

    @property
    def judged(self) -> bool:
        return self.score is not None


class MalformedVerdict(ValueError):
    """The judge's answer is not the JSON object the rubric asks for."""


def _score_value(value: object, name: str) -> int:
    return whole_number(value, name, 1, 7, MalformedVerdict)


def parse_verdict(text: str) -> RubricVerdict:
    """Parse the judge's answer: the JSON object holding ``score`` (:func:`first_json_object`: a
    reasoning block, code fences and prose around it ignored; two objects with different scores
    refused), an integer in 1..7 (or its digits quoted); criteria present must be integers in 1..7 too.
    A score only in prose ("Score: 6/7"), out of range (0, 8, 6.5, "six") or a refusal raises."""
    data = first_json_object(text, MalformedVerdict, key="score")
    criteria = {name: _score_value(data[name], name) for name in CRITERIA if name in data}
    return RubricVerdict(score=_score_value(data["score"], "score"), criteria=criteria, reasons=str(data.get("reasons", "")))


def user_message(item: RubricItem) -> str:
    """The judge's user turn: labelled sections, the candidate last."""
    parts = [f"INSTRUCTION:\n{item.instruction.strip()}", f"TRANSCRIPT:\n{item.source.strip() or '(not given)'}"]
    if item.reference.strip():
        parts.append(f"REFERENCE:\n{item.reference.strip()}")
    parts.append(f"CANDIDATE:\n{item.prediction.strip() or '(empty answer)'}")
    return "\n\n".join(parts)


class RubricJudge:
    """Scores answers 1–7 with an LLM judge behind an OpenAI-compatible ``/v1/chat/completions``.

    Args:
        model: the judge model name the endpoint serves (the paper: GPT-4.1).
        base_url: endpoint, e.g. ``http://localhost:8000/v1`` (None: the official OpenAI API).
        api_key_env: environment variable holding the API key (never stored anywhere).
        cache_path: JSONL cache of verdicts (None: no cache).
        parse_attempts: how many times a malformed answer is asked again before "unjudged".
        max_workers: concurrent requests.
        temperature / max_tokens: judge decoding.
        timeout: seconds per request.
        request_attempts / backoff_seconds: HTTP retries (timeouts, 429, 5xx) with exponential backoff.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        cache_path: str | Path | None = None,
        parse_attempts: int = 3,
        max_workers: int = 8,
        temperature: float = 0.0,
        max_tokens: int = 256,
        timeout: float = 60.0,
        request_attempts: int = 4,
        backoff_seconds: float = 0.5,
    ):
        self.model = model
        self.client = openai_client(base_url, api_key_env=api_key_env, timeout=timeout)
        # exhausted HTTP retries stop the evaluation (raised), unlike a 400 (this item unjudged)
        self.asker = ChatJsonAsker(
            self.client, model, parse_attempts=parse_attempts, request_attempts=request_attempts,
            backoff_seconds=backoff_seconds, temperature=temperature, max_tokens=max_tokens,
            max_tokens_setting=JUDGE_MAX_TOKENS,
            give_up_after_retries=False,
        )
        self.cache = JsonlCache(cache_path) if cache_path else None
        self.max_workers = max_workers
        self.name = f"llm-judge:{model}:{RUBRIC_VERSION}"

    def _cache_key(self, item: RubricItem) -> str:
        return f"{item.key()}|{RUBRIC_VERSION}|{self.model}"

    def score_one(self, item: RubricItem) -> RubricVerdict:
        """One verdict (from the cache when there). Unjudged verdicts are not cached."""
        key = self._cache_key(item)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return RubricVerdict(**hit)
        messages = [{"role": "system", "content": RUBRIC_TEXT}, {"role": "user", "content": user_message(item)}]
        answer = self.asker.ask(messages, parse_verdict)
        if not answer.ok:
            return RubricVerdict(score=None, attempts=answer.attempts, error=answer.error)
        verdict = answer.value
        verdict.attempts = answer.attempts
        if self.cache is not None:
            self.cache.put(key, asdict(verdict))
        return verdict

    def score(self, items: list[RubricItem]) -> list[RubricVerdict]:
        """Verdicts in input order (concurrent requests, progress bar)."""
        verdicts = map_concurrent(self.score_one, items, max_workers=self.max_workers, desc="LLM judge")
        check_not_all_refused([v.error for v in verdicts], str(self.client.base_url), self.model, "the LLM judge")
        unjudged = sum(not v.judged for v in verdicts)
        if unjudged:
            log.warning("LLM judge: %d of %d answers unjudged (malformed or rejected)", unjudged, len(items))
        log.info("LLM judge: %s", json.dumps(self.usage()))
        return verdicts

    def usage(self) -> dict:
        """API use so far, for logs and stats files (:meth:`ChatJsonAsker.usage`): calls, retries by error, …"""
        return self.asker.usage()

    @property
    def description(self) -> str:
        return (
            f"LLM judge score 1-7 ({', '.join(CRITERIA)} -> overall), judge model {self.model}, "
            f"rubric {RUBRIC_VERSION} (speechsum/prompts/{RUBRIC_PATH.name}); unjudged answers excluded"
        )

"""``speechsum synth``: the paper's stage-1 SFT data from your own audio + transcripts.

For every recording of an input manifest (``id``, ``audio``, ``transcript``; see
:mod:`speechsum.data.manifest`) an LLM behind any OpenAI-compatible endpoint

1. writes ``K`` diverse summarisation queries across styles (short summary, bullets, e-mail,
   action items, title + abstract, focused questions, …);
2. rates each query's importance 1–10; the best ``N`` (at least ``--min-importance``) are kept;
3. writes the summary for each kept query.

The output is a training manifest: the same audio, ``instruction`` = query, ``summary`` = the
written answer, ``transcript`` kept, and ``meta.synth`` = {model, prompt versions, importance,
style, source id}; it is written atomically, with ``<out stem>.stats.json`` (counts, token usage)
beside it. Every answer is cached in a resumable JSONL file keyed by (transcript hash, prompt
version, model, settings): a crashed or interrupted run, rerun, asks only for what is missing.
Timeouts, refused or cut-short connections, malformed bodies, 429 (its Retry-After honoured,
bounded) and 5xx are retried with backoff, every retry counted in the stats file; when retries run
out the run stops (rerun to resume). A malformed answer is asked again, then that recording (queries, rating) or that query
(summary) is skipped and counted. The API key is read from an environment variable only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import openai

from speechsum.data.manifest import Example, load_manifest
from speechsum.synth.prompts import (
    PROMPT_VERSIONS,
    QUERIES_PROMPT,
    RATE_PROMPT,
    STYLES,
    SUMMARY_PROMPT,
    checked_queries,
    checked_scores,
    checked_summary,
    parse_queries,
    parse_scores,
    parse_summary,
    queries_messages,
    rate_messages,
    summary_messages,
)
from speechsum.utils.arguments import (
    MAX_ATTEMPTS,
    MAX_TOKENS,
    MAX_WORKERS,
    DefaultsHelpFormatter,
    at_least,
    endpoint_url,
    key_variable,
    number,
    positive_seconds,
)
from speechsum.utils.chat_json import ChatJsonAsker
from speechsum.utils.client_logs import quiet_client_logs
from speechsum.utils.io import (
    check_cache_path,
    check_not_above,
    check_not_an_input,
    check_output_path,
    write_atomic,
    write_jsonl,
)
from speechsum.utils.remote import (
    JsonlCache,
    cache_key,
    check_key_option,
    endpoint_failure,
    map_concurrent,
    openai_client,
    without_keys,
)
from speechsum.utils.repeated_options import OnceParser

log = logging.getLogger(__name__)


@dataclass
class SynthSettings:
    """What to generate and how to ask (every field is a ``speechsum synth`` option)."""

    model: str
    num_queries: int = 8
    keep: int = 3
    min_importance: int = 1
    styles: list[str] = field(default_factory=lambda: list(STYLES))
    query_temperature: float = 0.8
    summary_temperature: float = 0.3
    max_tokens: int = 1024
    concurrency: int = 8
    parse_attempts: int = 3
    request_attempts: int = 6
    backoff_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.keep <= self.num_queries:
            raise ValueError(f"--keep {self.keep}: keeps that many of the --num-queries {self.num_queries} queries per "
                             f"recording, so it must be 1 to {self.num_queries}: lower --keep or raise --num-queries")
        if not 1 <= self.min_importance <= 10:
            raise ValueError(f"min_importance must be in 1..10, got {self.min_importance}")
        unknown = [s for s in self.styles if s not in STYLES]
        if unknown or not self.styles:
            raise ValueError(f"--styles: unknown or no styles {unknown}; choose from {', '.join(STYLES)}, comma-separated "
                             "(or leave --styles out for all of them)")


@dataclass
class Plan:
    """One recording's kept queries (``[{"style", "query", "importance"}]``), best first, or the
    ``failure`` ("queries" / "rating") that skips it."""

    example: Example
    kept: list[dict] = field(default_factory=list)
    failure: str = ""


class Synthesizer:
    """Runs the three steps for many recordings, with a cache and counters.

    ``counts``: ``cached`` answers reused, ``asked`` answers obtained now, ``failed_queries`` /
    ``failed_rating`` (recordings skipped), ``failed_summary`` (queries skipped), ``below_min``
    (queries under ``min_importance``). Usage and retries: see :meth:`usage`.
    """

    def __init__(self, settings: SynthSettings, client: openai.OpenAI, cache: JsonlCache, progress: bool = True):
        self.settings = settings
        self.cache = cache
        self.progress = progress
        common = dict(parse_attempts=settings.parse_attempts, request_attempts=settings.request_attempts,
                      backoff_seconds=settings.backoff_seconds, max_tokens=settings.max_tokens,
                      give_up_after_retries=False, max_tokens_setting="--max-tokens")  # exhausted retries stop the run
        self.askers = {
            "queries": ChatJsonAsker(client, settings.model, temperature=settings.query_temperature, **common),
            "rating": ChatJsonAsker(client, settings.model, temperature=0.0, **common),
            "summary": ChatJsonAsker(client, settings.model, temperature=settings.summary_temperature, **common),
        }
        self.counts: Counter = Counter()
        self.first_failure: str | None = None  # what the first failed ask said
        self._lock = threading.Lock()

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def _cached_ask(self, step: str, key: str, messages: list[dict], parse, check, label: str) -> dict | None:
        """The cached value for ``key`` (passed through ``check``, the checks ``parse`` makes on an
        answer's value), else ask (``{"value": parsed}`` cached on success), else None."""
        if (hit := self.cache.get(key)) is not None:
            self._count("cached")
            return {"value": self._checked_hit(hit, key, step, check)}
        answer = self.askers[step].ask(messages, parse, label=f"{label} ({step})")
        if not answer.ok:
            log.warning("%s: %s failed: %s", label, step, answer.error)
            self._count(f"failed_{step}")
            with self._lock:
                self.first_failure = self.first_failure or f"{label}: {step}: {answer.error}"
            return None
        self._count("asked")
        value = {"value": answer.value}
        self.cache.put(key, value)
        return value

    def _checked_hit(self, hit: dict, key: str, step: str, check):
        """A cached answer of another version or hand-edited (a summary that is a number, scores
        fewer than the queries) stops the run naming the cache file and key: it was written to the
        output manifest as it was, or crashed the run with a KeyError."""
        try:
            if "value" not in hit:
                raise ValueError("no 'value'")
            return check(hit["value"])
        except ValueError as error:
            shown = json.dumps(hit, ensure_ascii=False)[:200]
            raise ValueError(f"{self.cache.path}: the entry with key {key} is not a cached {step} answer ({error}): "
                             f"{shown}. Remove that line or the file to rebuild the cache.") from None

    def plan(self, example: Example) -> Plan:
        """Steps 1 and 2 for one recording: queries, their importance, the kept ones."""
        s = self.settings
        transcript_hash = hashlib.sha256(example.transcript.encode("utf-8")).hexdigest()
        key = cache_key("synth-queries", QUERIES_PROMPT.version, s.model, transcript_hash, s.num_queries,
                        s.styles, s.query_temperature)
        got = self._cached_ask("queries", key, queries_messages(example.transcript, s.num_queries, s.styles),
                               lambda text: parse_queries(text, s.num_queries, s.styles),
                               lambda value: checked_queries(value, s.num_queries, s.styles), example.id)
        if got is None:
            return Plan(example, failure="queries")
        queries = got["value"]
        key = cache_key("synth-rating", RATE_PROMPT.version, s.model, transcript_hash, queries)
        got = self._cached_ask("rating", key, rate_messages(example.transcript, queries),
                               lambda text: parse_scores(text, len(queries)),
                               lambda value: checked_scores(value, len(queries)), example.id)
        if got is None:
            return Plan(example, failure="rating")
        rated = [{**q, "importance": score} for q, score in zip(queries, got["value"])]
        best = sorted(rated, key=lambda q: -q["importance"])[: s.keep]  # stable: ties keep the LLM's order
        kept = [q for q in best if q["importance"] >= s.min_importance]
        self._count("below_min", len(best) - len(kept))
        return Plan(example, kept)

    def summarise(self, job: tuple[Example, dict]) -> str | None:
        """Step 3: the summary for one kept query (None: failed, counted)."""
        example, query = job
        s = self.settings
        transcript_hash = hashlib.sha256(example.transcript.encode("utf-8")).hexdigest()
        key = cache_key("synth-summary", SUMMARY_PROMPT.version, s.model, transcript_hash, query["query"],
                        s.summary_temperature)
        got = self._cached_ask("summary", key, summary_messages(example.transcript, query["query"]),
                               parse_summary, checked_summary, example.id)
        return None if got is None else got["value"]

    def _postfix(self) -> dict:
        failed = sum(v for k, v in self.counts.items() if k.startswith("failed_"))
        return {"cached": self.counts["cached"], "asked": self.counts["asked"], "failed": failed}

    def run(self, examples: list[Example], out_dir: Path) -> list[dict]:
        """The output manifest's rows, in input order (recording, then importance)."""
        plans = map_concurrent(self.plan, examples, self.settings.concurrency, desc="synth: queries + ratings",
                               postfix=self._postfix, progress=self.progress)
        jobs = [(plan.example, query) for plan in plans for query in plan.kept]
        summaries = map_concurrent(self.summarise, jobs, self.settings.concurrency, desc="synth: summaries",
                                   postfix=self._postfix, progress=self.progress)
        rows, rank = [], Counter()
        for (example, query), summary in zip(jobs, summaries):
            if summary is not None:
                rows.append(self.output_row(example, query, summary, rank[example.id], out_dir))
            rank[example.id] += 1
        return rows

    def output_row(self, example: Example, query: dict, summary: str, rank: int, out_dir: Path) -> dict:
        audio = Path(example.audio)
        root = out_dir.resolve()
        row = {
            "id": f"{example.id}-synth{rank}",
            "audio": str(audio.relative_to(root)) if audio.is_relative_to(root) else str(audio),
            "instruction": query["query"],
            "summary": summary,
            "transcript": example.transcript,
            "lang": example.lang,
        }
        row["meta"] = {
            **(example.meta or {}),
            "synth": {"source_id": example.id, "model": self.settings.model, "prompt_versions": PROMPT_VERSIONS,
                      "style": query["style"], "importance": query["importance"], "rank": rank},
        }
        return row

    def usage(self) -> dict:
        """API use of this run, summed over the three steps' askers (:meth:`ChatJsonAsker.usage`):
        calls, retries (by error, backoff slept), malformed answers, tokens (from ``usage``)."""
        totals: Counter = Counter()
        by_error: Counter = Counter()
        for asker in self.askers.values():
            usage = asker.usage()
            by_error.update(usage.pop("retries_by_error"))
            totals.update(usage)
        totals["retry_sleep_seconds"] = round(totals["retry_sleep_seconds"], 3)
        return {**totals, "retries_by_error": dict(sorted(by_error.items()))}


def stats_path(out: Path) -> Path:
    """``data/train.jsonl`` → ``data/train.stats.json``."""
    return out.with_name(out.stem + ".stats.json")


def run_synth(args: argparse.Namespace, progress: bool = True) -> dict:
    """The whole job (``main`` without argument parsing); returns the stats it wrote."""
    started = time.monotonic()
    check_output_path(args.out, "--out")  # not after the paid LLM calls
    check_output_path(stats_path(Path(args.out)), "--out's stats file")  # a folder there: after them, --out written
    check_not_an_input(args.out, "--out", [("--manifest", args.manifest)])
    check_not_an_input(stats_path(Path(args.out)), "--out", [("--manifest", args.manifest)],
                       "the stats file written beside --out (<out stem>.stats.json) would replace that input")
    cache_file = Path(args.cache) if args.cache else Path(args.out).with_name(Path(args.out).name + ".cache") / "synth.jsonl"
    check_output_path(cache_file, "--cache" if args.cache else "the default --cache")  # a file o.jsonl.cache in the way
    if args.cache:
        check_cache_path(args.cache, "--cache", [("--manifest", args.manifest)],
                         [("--out", args.out), ("--out's stats", stats_path(Path(args.out)))])
    check_not_above(args.out, "--out", cache_file, "--cache")
    check_key_option(args.api_key_env, args.base_url, url_option="--base-url")  # before the manifest's audio is read
    settings = SynthSettings(
        model=args.model, num_queries=args.num_queries, keep=args.keep, min_importance=args.min_importance,
        styles=args.styles.split(",") if args.styles is not None else list(STYLES), query_temperature=args.query_temperature,
        summary_temperature=args.summary_temperature, max_tokens=args.max_tokens, concurrency=args.concurrency,
        parse_attempts=args.parse_attempts, request_attempts=args.request_attempts,
        backoff_seconds=args.backoff_seconds,
    )
    examples, skipped_lines = load_manifest(args.manifest, on_bad_example=args.on_bad_example,
                                            require_transcript=True, require_instruction=False)
    if args.limit:
        examples = examples[: args.limit]
    out = Path(args.out)
    client = openai_client(args.base_url, api_key_env=args.api_key_env, timeout=args.timeout)
    cache = JsonlCache(cache_file)
    synthesizer = Synthesizer(settings, client, cache, progress=progress)
    try:
        rows = synthesizer.run(examples, out.parent)
    except Exception as error:
        if (stop := endpoint_failure("speechsum synth", client, args.api_key_env, error, cache_file)) is None:
            raise
        raise stop from error
    finally:
        cache.discard_if_unused()  # nothing asked yet: no empty cache left for the message to name
    counts = synthesizer.counts
    if examples and not rows and not counts["asked"] and not counts["cached"] and synthesizer.first_failure:
        # no ask succeeded: a wrong --model or endpoint fails every one alike
        failed = sum(v for k, v in counts.items() if k.startswith("failed_"))
        raise ValueError(f"no example written: {failed} of {failed + counts['asked']} requests failed and none of the "
                         f"{len(examples)} recordings gave one (the first: {synthesizer.first_failure}); check --model "
                         f"{settings.model!r} and --base-url. Nothing was written to {out}")
    write_jsonl(out, rows)
    stats = {
        "out": str(out),
        "manifest": str(args.manifest),
        "recordings": len(examples),
        "skipped_manifest_lines": len(skipped_lines),
        "rows": len(rows),
        "skipped_recordings": {"queries": counts["failed_queries"], "rating": counts["failed_rating"]},
        "skipped_summaries": counts["failed_summary"],
        "below_min_importance": counts["below_min"],
        "answers_cached": counts["cached"],
        "answers_asked": counts["asked"],
        **synthesizer.usage(),
        "model": settings.model,
        "base_url": args.base_url and without_keys(args.base_url),  # a user:password@ in it masked
        "prompt_versions": PROMPT_VERSIONS,
        "settings": asdict(settings),
        "cache": str(cache_file),
        "wall_seconds": round(time.monotonic() - started, 3),
    }
    write_atomic(stats_path(out), json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    skipped_recordings = counts["failed_queries"] + counts["failed_rating"]
    print(f"speechsum synth: {len(rows)} examples from {len(examples)} recordings -> {out}")
    print(f"  skipped: {skipped_recordings} recordings (queries {counts['failed_queries']}, rating "
          f"{counts['failed_rating']}), {counts['failed_summary']} summaries, {len(skipped_lines)} manifest lines; "
          f"{counts['below_min']} queries below --min-importance")
    print(f"  answers: {counts['cached']} from cache, {counts['asked']} asked; {stats['api_calls']} API calls, "
          f"{stats['retries']} retries, {stats['malformed_answers']} malformed; tokens: {stats['prompt_tokens']} "
          f"prompt + {stats['completion_tokens']} completion; stats -> {stats_path(out)}")
    return stats


def build_parser() -> argparse.ArgumentParser:
    p = OnceParser(
        prog="speechsum synth",
        description="Build SFT data from your audio + transcripts (the paper's stage-1 recipe): an LLM writes "
                    "diverse summarisation queries per transcript, rates their importance, keeps the best and "
                    "writes their summaries. Resumable: rerun the same command after a crash.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--manifest", required=True, help="input JSONL manifest with id, audio and transcript per line")
    p.add_argument("--out", required=True, help="output training manifest (JSONL); stats go to <stem>.stats.json")
    p.add_argument("--model", required=True, help="model name the endpoint serves, e.g. gpt-4o or a vLLM model id")
    p.add_argument("--base-url", type=endpoint_url, default=None,
                   help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM, speechsum serve), "
                        "https://<resource>.openai.azure.com/openai/v1/ (Azure); default: api.openai.com")
    p.add_argument("--api-key-env", type=key_variable, default="OPENAI_API_KEY",
                   help="name of the environment variable holding the API key (the key itself is never "
                        "accepted on the command line, logged or cached)")
    p.add_argument("--num-queries", type=at_least(1, 64), default=8, help="K: queries written per transcript")
    p.add_argument("--keep", type=at_least(1, 64), default=3, help="N: best-rated queries kept per transcript (1..K)")
    p.add_argument("--min-importance", type=at_least(1, 10), default=1,
                   help="drop kept queries rated below this importance (1-10)")
    p.add_argument("--styles", default=None,
                   help=f"comma-separated query styles to draw from (default all: {','.join(STYLES)})")
    p.add_argument("--query-temperature", type=number(0.0, 2.0), default=0.8, help="sampling temperature for writing queries")
    p.add_argument("--summary-temperature", type=number(0.0, 2.0), default=0.3,
                   help="sampling temperature for writing summaries (ratings use 0)")
    p.add_argument("--max-tokens", type=at_least(1, MAX_TOKENS), default=1024, help="max completion tokens per answer")
    p.add_argument("--concurrency", type=at_least(1, MAX_WORKERS), default=8, help="requests in flight at once")
    p.add_argument("--timeout", type=positive_seconds, default=120.0, help="seconds per HTTP request before it is retried")
    p.add_argument("--request-attempts", type=at_least(1, MAX_ATTEMPTS), default=6,
                   help="tries per request on timeouts, 429 and 5xx (exponential backoff; then the run stops)")
    p.add_argument("--backoff-seconds", type=number(0.0, what="a number of seconds"), default=1.0, help="first retry delay (doubles per retry)")
    p.add_argument("--parse-attempts", type=at_least(1, MAX_ATTEMPTS), default=3,
                   help="asks per answer when the LLM's answer is malformed; then the item is skipped and counted")
    p.add_argument("--cache", default=None, help="cache file (JSONL); default <out>.cache/synth.jsonl")
    p.add_argument("--on-bad-example", choices=("error", "skip"), default="error",
                   help="a bad input manifest line: stop with file:line (error) or log, count and skip it")
    p.add_argument("--limit", type=at_least(0), default=0, help="use only the first N recordings (0: all), to try settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in CI logs)")
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_client_logs()  # one line per request otherwise (the logger is httpx2 with newer openai releases)
    args = build_parser().parse_args(argv)
    try:
        run_synth(args, progress=not args.no_progress)
    except ValueError as error:  # bad settings or manifest: the message names the option / file:line
        raise SystemExit(f"speechsum synth: {error}") from error

"""`speechsum synth` against a real `speechsum serve` HTTP server on loopback (scripted LLM answers)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.data.manifest import load_manifest
from speechsum.serving.protocol import APIError
from speechsum.synth.prompts import PROMPT_VERSIONS, STYLES, parse_queries, parse_scores, parse_summary
from speechsum.synth.run import build_parser, main, run_synth, stats_path
from speechsum.utils.remote import JsonlCache
from tests.conftest import REPO
from tests.helpers import with_options
from tests.servers import JSONServer, ScriptedChatBackend, prompt_text, serve_in_thread

SECRET = "sk-test-synth-0123456789-never-written"
K, KEEP, RECORDINGS = 5, 2, 6


def scores_for(n: int) -> list[int]:
    """The scripted importance of queries 0..n-1: 1, 8, 5, 2, 9 → kept: query 4, then query 1."""
    return [(i * 7) % 10 + 1 for i in range(n)]


class ScriptedLLM:
    """Deterministic answers to the three synth prompts, told apart by their user turns.

    ``broken``: {(step, recording[, query number for summaries]): bad answers before a good one (99: never good)}; ``fail_after``:
    every call after that many raises a 503 (a dead server). ``replies`` keeps what was answered.
    """

    def __init__(self, broken: dict | None = None, fail_after: int | None = None):
        self.broken = broken or {}
        self.fail_after = fail_after
        self.replies: list[str] = []
        self.calls: Counter = Counter()
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict]) -> str:
        user = prompt_text(messages)
        transcript = re.search(r"TRANSCRIPT:\n(.*?)(\n\nQUER|$)", user, re.DOTALL).group(1)
        recording = int(re.match(r"Recording (\d+)", transcript).group(1))
        step = "queries" if "NUMBER OF QUERIES:" in user else "rating" if "\nQUERIES:\n" in user else "summary"
        with self._lock:
            if self.fail_after is not None and sum(self.calls.values()) >= self.fail_after:
                raise APIError(503, "scripted outage")
            key = (step, recording)
            if step == "summary":  # one query's summary: (step, recording, query number)
                key += (int(re.search(r"Query (\d+) for", user).group(1)),)
            self.calls[key] += 1
            bad = self.calls[key] <= self.broken.get(key, 0)
        if step == "queries":
            styles = re.findall(r"^- (\w+):", user, re.MULTILINE)
            count = int(re.search(r"NUMBER OF QUERIES: (\d+)", user).group(1))
            queries = [{"style": styles[i % len(styles)], "query": f"Query {i} for recording {recording}."}
                       for i in range(count)]
            queries.insert(1, {"style": styles[0], "query": "QUERY 0 for recording " + f"{recording}"})  # a duplicate
            reply = "Sure, here they are" if bad else "```json\n" + json.dumps({"queries": queries}) + "\n```"
        elif step == "rating":
            count = len(re.findall(r"^\d+\. ", user.split("\nQUERIES:\n")[1], re.MULTILINE))
            reply = json.dumps({"scores": [11] * count} if bad else {"scores": scores_for(count)})
        else:
            query = user.split("\nQUERY:\n")[1]
            reply = '{"summary": ""}' if bad else json.dumps({"summary": f"Answer to '{query}' from {transcript}"})
        with self._lock:
            self.replies.append(reply)
        return reply


@pytest.fixture
def recordings(tmp_path, toy_data) -> Path:
    """An input manifest of toy audio with transcripts and no instruction/summary."""
    examples, _ = load_manifest(toy_data["train"])
    lines = [{"id": f"rec{i}", "audio": e.audio, "transcript": f"Recording {i}: {e.transcript}.",
              "meta": {"speaker_count": i}} for i, e in enumerate(examples[:RECORDINGS])]
    path = tmp_path / "in" / "recordings.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def synth(url: str, manifest: Path, out: Path, *extra: str) -> dict:
    args = build_parser().parse_args(with_options([
        "--manifest", str(manifest), "--out", str(out), "--model", "scripted", "--base-url", url,
        "--api-key-env", "SYNTH_TEST_KEY", "--num-queries", str(K), "--keep", str(KEEP),
        "--concurrency", "3", "--backoff-seconds", "0.01", "--parse-attempts", "2", "--request-attempts", "3",
    ], *extra))
    return run_synth(args, progress=False)


def test_synth_writes_training_manifest(tmp_path, recordings, tiny_composed, monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    llm = ScriptedLLM(broken={("queries", 0): 1, ("rating", 1): 99, ("summary", 2, 4): 99})
    backend = ScriptedChatBackend(llm, fail_every=4, fail_status=500)
    out = tmp_path / "out" / "train.jsonl"
    with serve_in_thread(backend, api_key=SECRET) as url:
        # one request at a time: every 4th fails, its retry (the next request) succeeds — deterministic
        stats = synth(url, recordings, out, "--concurrency", "1")

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # recording 1 skipped (rating always malformed); recording 2 loses its best query's summary
    assert stats["skipped_recordings"] == {"queries": 0, "rating": 1}
    assert stats["skipped_summaries"] == 1
    assert len(rows) == stats["rows"] == (RECORDINGS - 1) * KEEP - 1
    assert len({r["id"] for r in rows}) == len(rows)
    by_source = Counter(r["meta"]["synth"]["source_id"] for r in rows)
    assert by_source == {"rec0": 2, "rec2": 1, "rec3": 2, "rec4": 2, "rec5": 2}
    best_first = sorted(range(K), key=lambda i: -scores_for(K)[i])[:KEEP]  # [4, 1]
    for row in rows:
        synth_meta = row["meta"]["synth"]
        recording = int(synth_meta["source_id"][3:])
        index = best_first[synth_meta["rank"]]
        assert row["instruction"] == f"Query {index} for recording {recording}."
        assert synth_meta["importance"] == scores_for(K)[index]
        assert row["summary"] == f"Answer to '{row['instruction']}' from {row['transcript']}"
        assert row["transcript"].startswith(f"Recording {recording}: ")
        assert synth_meta["model"] == "scripted" and synth_meta["prompt_versions"] == PROMPT_VERSIONS
        assert synth_meta["style"] == list(STYLES)[index % len(STYLES)]
        assert row["meta"]["speaker_count"] == recording  # the input's meta is carried along
    assert [r["meta"]["synth"]["rank"] for r in rows if r["meta"]["synth"]["source_id"] == "rec2"] == [1]

    # counts: malformed = 1 (rec0 queries) + 2 (rec1 rating) + 2 (rec2 summary); 500s retried
    assert stats["malformed_answers"] == 5
    assert stats["retries_by_error"]["InternalServerError"] == stats["retries"] > 0
    ok = [r for r in backend.requests if r.status == 200]
    assert stats["api_calls"] == len(backend.requests) and len(ok) == len(llm.replies)
    assert stats["prompt_tokens"] == sum(len(m["content"].split()) for r in ok for m in r.messages)
    assert stats["completion_tokens"] == sum(len(text.split()) for text in llm.replies)
    assert json.loads(stats_path(out).read_text()) == stats

    # the API key is in no file written
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path

    # the output is a training manifest SFT's datamodule reads
    dm = SpeechSumDataModule(train_manifest=str(out), max_batch_seconds=60.0, max_batch_size=4)
    dm.processor = tiny_composed.processor
    dm.setup("fit")
    batch_ids = [i for batch in dm.train_dataloader() for i in batch.ids]
    assert sorted(batch_ids) == sorted(r["id"] for r in rows)


def test_crash_then_rerun_resumes(tmp_path, recordings, monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    out = tmp_path / "out" / "train.jsonl"
    total = RECORDINGS * (1 + 1 + KEEP)  # queries + rating + KEEP summaries per recording
    dead = ScriptedLLM(fail_after=10)
    with serve_in_thread(ScriptedChatBackend(dead)) as url, pytest.raises(SystemExit, match="rerun the same command"):
        synth(url, recordings, out)
    assert not out.exists() and not stats_path(out).exists()  # nothing half-written
    cache_file = out.with_name("train.jsonl.cache") / "synth.jsonl"
    cached = len(cache_file.read_text().splitlines())
    assert 0 < cached == sum(dead.calls.values()) <= 10

    # a rerun asks only for what is missing (429s with Retry-After on the way), loses nothing
    healthy = ScriptedLLM()
    with serve_in_thread(ScriptedChatBackend(healthy, fail_first_n=2, fail_status=429, retry_after=0.01)) as url:
        stats = synth(url, recordings, out)
    assert sum(healthy.calls.values()) == total - cached
    assert stats["answers_cached"] == cached and stats["answers_asked"] == total - cached
    assert stats["retries_by_error"] == {"RateLimitError": 2}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == RECORDINGS * KEEP and len({r["id"] for r in rows}) == len(rows)
    assert len(cache_file.read_text().splitlines()) == total  # every answer once: no duplicates

    # a third run asks nothing and writes the same manifest
    before = out.read_bytes()
    idle = ScriptedLLM()
    with serve_in_thread(ScriptedChatBackend(idle)) as url:
        stats = synth(url, recordings, out)
    assert sum(idle.calls.values()) == 0 and stats["api_calls"] == 0
    assert out.read_bytes() == before

    # a new prompt setting (K) is a new cache key: asked again
    with serve_in_thread(ScriptedChatBackend(ScriptedLLM())) as url:
        stats = synth(url, recordings, out, "--num-queries", "4", "--limit", "1")
    assert stats["answers_asked"] >= 2


def test_wrongly_shaped_replies_stop_synth_naming_the_endpoint(tmp_path, recordings, monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    with JSONServer(lambda request: {"choices": []}) as server, pytest.raises(SystemExit) as stop:
        synth(server.url, recordings, tmp_path / "out" / "train.jsonl")
    message = str(stop.value)
    assert message.startswith(f"speechsum synth: the endpoint {server.url}") and "MalformedReply" in message
    assert "an empty choices array" in message and "rerun the same command" in message
    assert "$SYNTH_TEST_KEY" in message and SECRET not in message and server.requests >= 3  # asked again


def test_a_model_the_endpoint_does_not_serve_fails_the_run_not_every_example_silently(tmp_path, recordings, monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    out = tmp_path / "out" / "train.jsonl"
    args = ["--manifest", str(recordings), "--out", str(out), "--model", "no-such-model", "--api-key-env", "SYNTH_TEST_KEY",
            "--backoff-seconds", "0.01", "--no-progress"]
    with serve_in_thread(ScriptedChatBackend(ScriptedLLM())) as url, pytest.raises(SystemExit) as stop:
        main([*args, "--base-url", url])
    message = str(stop.value)  # speechsum serve answers an unknown model 404, as OpenAI and vLLM: the first call stops
    assert message.startswith(f"speechsum synth: the endpoint {url}/ failed (NotFoundError: Error code: 404 - ")
    assert "The model 'no-such-model' does not exist; this server serves 'scripted'." in message
    assert not out.exists() and not stats_path(out).exists() and SECRET not in message
    refusing = ScriptedChatBackend(ScriptedLLM(), fail_every=1, fail_status=400)  # every example refused: 400s
    with serve_in_thread(refusing) as url, pytest.raises(SystemExit) as stop:
        main([*(a if a != "no-such-model" else "scripted" for a in args), "--base-url", url])
    message = str(stop.value)
    assert message.startswith("speechsum synth: no example written: ") and f"none of the {RECORDINGS} recordings" in message
    assert "check --model 'scripted' and --base-url" in message
    assert not out.exists() and not stats_path(out).exists() and SECRET not in message
    assert not out.parent.exists()  # nor the empty cache (out/train.jsonl.cache/synth.jsonl) it once left


def test_bad_input_line_names_file_and_line(tmp_path, recordings):
    lines = recordings.read_text().splitlines()
    record = json.loads(lines[2])
    del record["transcript"]
    lines[2] = json.dumps(record)
    recordings.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit, match=rf"{re.escape(str(recordings))}:3: missing field 'transcript'"):
        main(["--manifest", str(recordings), "--out", str(tmp_path / "o.jsonl"), "--model", "m",
              "--base-url", "http://127.0.0.1:9/v1"])
    assert not (tmp_path / "o.jsonl").exists()


def kill_once_cached(command: list[str], cache_file: Path, lines: int, limit: float = 120.0) -> int:
    """Start ``command`` (a real `speechsum synth` process), SIGKILL it once ``cache_file`` holds
    ``lines`` lines (failing if it ends by itself first or takes over ``limit`` seconds); returns
    how many answers the cache then holds."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + limit
    while not (cache_file.exists() and cache_file.read_text().count("\n") >= lines):
        assert process.poll() is None and time.monotonic() < deadline, "synth ended before it was killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with JsonlCache(cache_file) as cache:
        return len(cache)


def test_killed_process_then_rerun_loses_and_repeats_nothing(tmp_path, recordings):
    """SIGKILL a real `speechsum synth` process mid-run; the rerun asks only for what was not cached."""
    out = tmp_path / "out" / "train.jsonl"
    cache_file = out.with_name("train.jsonl.cache") / "synth.jsonl"
    total = RECORDINGS * (1 + 1 + KEEP)
    slow = ScriptedChatBackend(ScriptedLLM(), delay=0.1)
    with serve_in_thread(slow) as url:
        command = [sys.executable, "-m", "speechsum.cli", "synth", "--manifest", str(recordings), "--out", str(out),
                   "--model", "scripted", "--base-url", url, "--num-queries", str(K), "--keep", str(KEEP),
                   "--concurrency", "2", "--no-progress"]
        cached = kill_once_cached(command, cache_file, lines=6)
    assert not out.exists() and 6 <= cached < total

    healthy = ScriptedLLM()
    with serve_in_thread(ScriptedChatBackend(healthy)) as url:
        stats = synth(url, recordings, out)
    assert sum(healthy.calls.values()) == total - cached == stats["answers_asked"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == RECORDINGS * KEEP and len({r["id"] for r in rows}) == len(rows)
    with JsonlCache(cache_file) as cache:
        assert len(cache) == total and cache.duplicates == 0


def test_help_shows_defaults_only_where_there_are_some(capsys):
    """``(default: None)`` followed the required --manifest, --out and --model, as if they were optional."""
    from speechsum.cli import main

    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "--manifest MANIFEST input JSONL manifest with id, audio and transcript per line --out" in text
    assert "K: queries written per transcript (default: 8)" in text


def test_min_importance_out_of_range_is_a_usage_error(capsys):
    from speechsum.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["synth", "--manifest", "m.jsonl", "--out", "o.jsonl", "--model", "m", "--min-importance", "50"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith("error: argument --min-importance: must be at most 10, got 50\n")


@pytest.mark.parametrize(("options", "message"), [
    # before: an empty --styles drew from every style without a word
    (["--styles", ""], "speechsum synth: --styles: unknown or no styles ['']; choose from " + ", ".join(STYLES)
     + ", comma-separated (or leave --styles out for all of them)"),
    (["--num-queries", "2", "--keep", "3"], "speechsum synth: --keep 3: keeps that many of the --num-queries 2 "
     "queries per recording, so it must be 1 to 2: lower --keep or raise --num-queries"),
])
def test_settings_that_cannot_work_are_refused_naming_the_options(tmp_path, recordings, options, message):
    from speechsum.cli import main as speechsum

    with pytest.raises(SystemExit) as info:
        speechsum(["synth", "--manifest", str(recordings), "--out", str(tmp_path / "o.jsonl"), "--model", "m",
                   "--base-url", "http://127.0.0.1:9/v1", *options])
    assert info.value.code == message
    assert not list(tmp_path.glob("o.jsonl*"))


def test_an_out_that_is_the_input_manifest_is_refused_before_any_call(tmp_path, recordings):
    """`--out` the `--manifest` file: the training manifest replaced the recordings' manifest."""
    from speechsum.cli import main as speechsum

    original = recordings.read_text()
    with pytest.raises(SystemExit) as info:
        speechsum(["synth", "--manifest", str(recordings), "--out", str(recordings), "--model", "m", "--base-url",
                   "http://127.0.0.1:9/v1"])
    assert info.value.code == (f"speechsum synth: --out {recordings} is the --manifest file: the output would "
                               "replace that input; give another --out path")
    assert recordings.read_text() == original


@pytest.mark.parametrize(("answer", "shown"), [('{"scores": [Infinity, 2]}', "inf"), ('{"scores": [1e400, 2]}', "inf"),
                                               ('{"scores": [NaN, 2]}', "nan"), ('{"scores": ["7", 2.0]}', None)])
def test_an_importance_no_integer_can_hold_is_a_malformed_answer_not_a_crash(answer, shown):
    """Before: int(inf) raised OverflowError, not ValueError: the whole run stopped instead of asking again."""
    if shown is None:
        assert parse_scores(answer, 2) == [7, 2]
        return
    with pytest.raises(ValueError, match=re.escape(f"'scores[0]' must be an integer 1-10, got {shown}")):
        parse_scores(answer, 2)


def test_answers_the_output_manifest_would_refuse_are_malformed_and_asked_again():
    """Before: a summary or query holding a control character (or a summary of zero-width spaces) was written to the
    training manifest, whose loader then refused that line: the synth run's output did not load."""
    with pytest.raises(ValueError, match=re.escape("the summary holds the control character U+001B at character 0")):
        parse_summary('{"summary": "\\u001b[1mAna sends the budget."}')
    with pytest.raises(ValueError, match="no non-empty 'summary' string"):
        parse_summary('{"summary": "\\u200b\\u200b"}')
    queries = {"queries": [{"style": "bullets", "query": "List the\u0000 decisions."}]}  # JSON writes it \u0000
    with pytest.raises(ValueError, match=re.escape("query 1 holds the control character U+0000 at character 8")):
        parse_queries(json.dumps(queries), 1, ["bullets"])
    assert parse_summary('{"summary": " Ana sends the budget.\\n- by Friday "}') == "Ana sends the budget.\n- by Friday"


@pytest.mark.parametrize(("step", "value", "problem"), [
    ("summary", {"value": 42}, "no non-empty 'summary' string in the answer"),
    ("summary", {"summary": "an older layout"}, "no 'value'"),
    ("rating", {"value": [9]}, "expected 'scores' with 5 integers, got '[9]'"),
    ("queries", {"value": "Query 0, Query 1"}, "no 'queries' list in the answer"),
])
def test_a_cached_answer_of_the_wrong_shape_stops_synth_naming_the_cache_entry(tmp_path, recordings, monkeypatch,
                                                                                step, value, problem):
    """A cache line of another version or hand-edited: a summary 42 was written to the training manifest
    as it was (its loader refused it later), a value-less entry or a queries string was a traceback."""
    from speechsum.cli import main as speechsum

    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    out = tmp_path / "out" / "train.jsonl"
    with serve_in_thread(ScriptedChatBackend(ScriptedLLM())) as url:
        synth(url, recordings, out, "--limit", "1")
    cache_file = out.with_name("train.jsonl.cache") / "synth.jsonl"
    entries = [json.loads(line) for line in cache_file.read_text().splitlines()]
    shape = {"summary": str, "rating": int, "queries": dict}[step]
    target = next(e for e in entries if isinstance(e["value"]["value"], str) == (shape is str)
                  and (shape is str or isinstance(e["value"]["value"][0], shape)))
    target["value"] = value
    cache_file.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    out.unlink()
    stats_path(out).unlink()

    idle = ScriptedLLM()
    with serve_in_thread(ScriptedChatBackend(idle)) as url, pytest.raises(SystemExit) as info:
        speechsum(["synth", "--manifest", str(recordings), "--out", str(out), "--model", "scripted", "--base-url", url,
                   "--api-key-env", "SYNTH_TEST_KEY", "--num-queries", str(K), "--keep", str(KEEP), "--limit", "1",
                   "--no-progress"])
    shown = json.dumps(value)
    assert info.value.code == (f"speechsum synth: {cache_file}: the entry with key {target['key']} is not a cached "
                               f"{step} answer ({problem}): {shown}. Remove that line or the file to rebuild the cache.")
    assert not out.exists() and not stats_path(out).exists()


def test_an_out_whose_stats_file_is_the_input_manifest_is_refused_before_any_call(tmp_path, recordings):
    """`--out rec.jsonl` beside a manifest named rec.stats.json: the stats file replaced the manifest."""
    from speechsum.cli import main as speechsum

    manifest = recordings.with_name("rec.stats.json")
    recordings.rename(manifest)
    original = manifest.read_text()
    with pytest.raises(SystemExit) as info:
        speechsum(["synth", "--manifest", str(manifest), "--out", str(manifest.with_name("rec.jsonl")), "--model", "m",
                   "--base-url", "http://127.0.0.1:9/v1"])
    assert info.value.code == (f"speechsum synth: --out {manifest} is the --manifest file: the stats file written beside "
                               "--out (<out stem>.stats.json) would replace that input; give another --out path")
    assert manifest.read_text() == original
    assert sorted(p.name for p in manifest.parent.iterdir()) == ["rec.stats.json"]


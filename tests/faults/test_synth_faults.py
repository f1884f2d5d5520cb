"""`speechsum synth` through the fault proxy: nothing lost or repeated, the same manifest as a
fault-free run, every retry counted in the stats file, and a killed run resumes asking only for
what is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from speechsum.data.manifest import load_manifest
from speechsum.synth.run import build_parser, run_synth, stats_path
from speechsum.utils.remote import JsonlCache
from tests.fault_proxy import FaultProxy
from tests.servers import ScriptedChatBackend, serve_in_thread
from tests.synth.test_synth import KEEP, RECORDINGS, K, ScriptedLLM, kill_once_cached

TOTAL = RECORDINGS * (1 + 1 + KEEP)  # answers: queries + rating + KEEP summaries per recording
TIMEOUT = 2.0  # the client's: far above a scripted answer's time even on a busy machine; the proxy hangs longer
SEED = 11


@pytest.fixture
def recordings(tmp_path, toy_data) -> Path:
    examples, _ = load_manifest(toy_data["train"])
    lines = [{"id": f"rec{i}", "audio": e.audio, "transcript": f"Recording {i}: {e.transcript}."}
             for i, e in enumerate(examples[:RECORDINGS])]
    path = tmp_path / "recordings.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def synth_argv(url: str, manifest: Path, out: Path) -> list[str]:
    return ["--manifest", str(manifest), "--out", str(out), "--model", "scripted", "--base-url", url,
            "--num-queries", str(K), "--keep", str(KEEP), "--concurrency", "3", "--backoff-seconds", "0.01",
            "--request-attempts", "3", "--timeout", str(TIMEOUT)]


def synth(url: str, manifest: Path, out: Path) -> dict:
    return run_synth(build_parser().parse_args(synth_argv(url, manifest, out)), progress=False)


def faulty(url: str) -> FaultProxy:
    return FaultProxy(url, seed=SEED, rate=0.35, max_faults_per_request=2, hang_seconds=TIMEOUT + 0.3)


def test_synth_through_faults_equals_the_fault_free_run(tmp_path, recordings):
    clean_out, faulty_out = tmp_path / "clean" / "train.jsonl", tmp_path / "faulty" / "train.jsonl"
    with serve_in_thread(ScriptedChatBackend(ScriptedLLM())) as url:
        clean = synth(url, recordings, clean_out)
    llm = ScriptedLLM()
    with serve_in_thread(ScriptedChatBackend(llm)) as url, faulty(url) as proxy:
        stats = synth(proxy.url, recordings, faulty_out)

    assert faulty_out.read_bytes() == clean_out.read_bytes()  # same rows, same order: none lost or doubled
    with serve_in_thread(ScriptedChatBackend(ScriptedLLM())) as url, faulty(url) as again:
        repeat = synth(again.url, recordings, tmp_path / "again" / "train.jsonl")
    assert again.faults == proxy.faults and repeat["retries_by_error"] == stats["retries_by_error"]  # seeded
    assert stats["rows"] == RECORDINGS * KEEP and clean["retries"] == 0
    assert proxy.fault_share() >= 0.2 and len(proxy.faults) >= 4, proxy.faults
    assert stats["retries"] == sum(proxy.faults.values())  # each injected fault: one counted retry
    assert stats["api_calls"] == proxy.requests and stats["answers_asked"] == TOTAL
    assert len(proxy.delivered_digests) == TOTAL
    with JsonlCache(faulty_out.with_name("train.jsonl.cache") / "synth.jsonl") as cache:
        assert len(cache) == TOTAL and cache.duplicates == 0
    assert json.loads(stats_path(faulty_out).read_text())["retries_by_error"] == stats["retries_by_error"]
    print(f"synth: {proxy.requests} requests, faults {dict(proxy.faults)}, retries {stats['retries_by_error']}")


def test_killed_synth_under_faults_resumes_asking_only_for_what_is_missing(tmp_path, recordings):
    out = tmp_path / "out" / "train.jsonl"
    cache_file = out.with_name("train.jsonl.cache") / "synth.jsonl"
    with serve_in_thread(ScriptedChatBackend(ScriptedLLM(), delay=0.05)) as url, faulty(url) as proxy:
        command = [sys.executable, "-m", "speechsum.cli", "synth", *synth_argv(proxy.url, recordings, out), "--no-progress"]
        cached = kill_once_cached(command, cache_file, lines=6)
    assert not out.exists() and 6 <= cached < TOTAL

    llm = ScriptedLLM()
    with serve_in_thread(ScriptedChatBackend(llm)) as url, faulty(url) as proxy:
        stats = synth(proxy.url, recordings, out)
    assert len(proxy.delivered_digests) == proxy.delivered == TOTAL - cached == stats["answers_asked"]
    assert sum(llm.calls.values()) == proxy.delivered + proxy.faults["truncated_body"]  # cut answers were computed
    assert stats["answers_cached"] == cached and stats["retries"] == sum(proxy.faults.values())
    with JsonlCache(cache_file) as cache:
        assert len(cache) == TOTAL and cache.duplicates == 0
    clean_out = tmp_path / "clean" / "train.jsonl"
    with serve_in_thread(ScriptedChatBackend(ScriptedLLM())) as url:
        synth(url, recordings, clean_out)
    assert out.read_bytes() == clean_out.read_bytes()


def test_malformed_bodies_retried_in_vain_stop_synth_with_the_resume_hint(tmp_path, recordings):
    out = tmp_path / "out" / "train.jsonl"
    with serve_in_thread(ScriptedChatBackend(ScriptedLLM())) as url, FaultProxy(
            url, seed=0, rate=1.0, kinds=("malformed_json",), max_faults_per_request=99) as proxy:
        with pytest.raises(SystemExit, match="JSONDecodeError.*rerun the same command"):
            synth(proxy.url, recordings, out)
    assert not out.exists() and proxy.delivered == 0 and proxy.requests >= 3

"""The rubric judge (as `speechsum evaluate` uses it) and the pairwise judge inside `speechsum pairs`
through the fault proxy: the same verdicts and pairs as a fault-free run, nothing lost or doubled,
every retry counted, and a rerun after a stopped run asks only for what is missing."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import asdict

import pytest

from speechsum.judges.pairwise import OpenAIJudge
from speechsum.judges.rubric import RubricItem, RubricJudge
from speechsum.pairs import build_parser, run_pairs
from speechsum.serving.protocol import APIError
from speechsum.utils.remote import JsonlCache
from tests.fault_proxy import FaultProxy
from tests.servers import ScriptedChatBackend, prompt_text, serve_in_thread
from tests.test_pairs import shorter_wins

TIMEOUT = 2.0  # the client's: far above a scripted answer's time even on a busy machine; the proxy hangs longer
ITEMS = [RubricItem(f"Summarise call {i}.", "word " * (i + 1), f"Call {i}: " + "word " * 9) for i in range(14)]


def rubric_reply(messages: list[dict]) -> str:
    """A deterministic rubric verdict: the score depends on the candidate's length."""
    words = len(prompt_text(messages).split("CANDIDATE:\n")[1].split())
    score = words % 7 + 1
    return json.dumps({"accuracy": score, "coherence": 7, "score": score, "reasons": f"{words} words"})


def faulty(url: str, seed: int) -> FaultProxy:
    return FaultProxy(url, seed=seed, rate=0.45, max_faults_per_request=2, hang_seconds=TIMEOUT + 0.3)


def rubric_judge(url: str, cache_path) -> RubricJudge:
    return RubricJudge("scripted", base_url=url, cache_path=cache_path, max_workers=3, timeout=TIMEOUT,
                       request_attempts=3, backoff_seconds=0.01)


def test_rubric_judge_through_faults_equals_the_fault_free_run(tmp_path):
    with serve_in_thread(ScriptedChatBackend(rubric_reply)) as url:
        clean = rubric_judge(url, tmp_path / "clean.jsonl").score(ITEMS)
    backend = ScriptedChatBackend(rubric_reply)
    with serve_in_thread(backend) as url, faulty(url, seed=5) as proxy:
        judge = rubric_judge(proxy.url, tmp_path / "faulty.jsonl")
        verdicts = judge.score(ITEMS)
    assert [asdict(v) for v in verdicts] == [asdict(v) for v in clean] and all(v.judged for v in verdicts)
    assert proxy.fault_share() >= 0.2 and len(proxy.faults) >= 4, proxy.faults
    usage = judge.usage()
    assert usage["retries"] == sum(proxy.faults.values()) and usage["api_calls"] == proxy.requests
    assert len(proxy.delivered_digests) == len(ITEMS) and usage["malformed_answers"] == 0
    with JsonlCache(tmp_path / "faulty.jsonl") as cache:
        assert len(cache) == len(ITEMS) and cache.duplicates == 0
    print(f"rubric: {proxy.requests} requests, faults {dict(proxy.faults)}, retries {usage['retries_by_error']}")


def test_stopped_rubric_run_resumes_asking_only_for_what_is_missing(tmp_path):
    lock, answered = threading.Lock(), []

    def dies_after_six(messages: list[dict]) -> str:
        with lock:
            if len(answered) >= 6:
                raise APIError(503, "the judge server went down")
            answered.append(1)
        return rubric_reply(messages)

    cache_path = tmp_path / "judge.jsonl"
    with serve_in_thread(ScriptedChatBackend(dies_after_six)) as url, faulty(url, seed=6) as proxy:
        with pytest.raises(Exception, match="went down"):  # exhausted retries stop the evaluation
            rubric_judge(proxy.url, cache_path).score(ITEMS)
    with JsonlCache(cache_path) as cache:
        cached = len(cache)
    assert 0 < cached <= 6  # a truncated answer was computed upstream but never arrived

    backend = ScriptedChatBackend(rubric_reply)
    with serve_in_thread(backend) as url, faulty(url, seed=7) as proxy:
        judge = rubric_judge(proxy.url, cache_path)
        verdicts = judge.score(ITEMS)
    assert len(proxy.delivered_digests) == proxy.delivered == len(ITEMS) - cached  # only the missing ones
    assert backend.count == proxy.delivered + proxy.faults["truncated_body"]  # cut answers were computed too
    assert judge.usage()["retries"] == sum(proxy.faults.values())
    with serve_in_thread(ScriptedChatBackend(rubric_reply)) as url:
        clean = rubric_judge(url, tmp_path / "clean.jsonl").score(ITEMS)
    assert [asdict(v) for v in verdicts] == [asdict(v) for v in clean]


# -- the pairwise judge in `speechsum pairs` ----------------------------------------------------------
def pair_args(student, out, url: str):
    return build_parser().parse_args([
        "--ckpt", str(student["ckpt"]), "--config", str(student["config"]), "--manifest", str(student["manifest"]),
        "--out", str(out), "--num-samples", "3", "--max-new-tokens", "10", "--batch-size", "4", "--judge", "openai",
        "--judge-model", "scripted", "--judge-base-url", url, "--concurrency", "3"])


def pair_judge(url: str) -> OpenAIJudge:
    return OpenAIJudge("scripted", base_url=url, request_attempts=3, backoff_seconds=0.01, timeout=TIMEOUT)


def test_pairs_through_faults_equal_the_fault_free_run(student, tmp_path):
    clean_out, faulty_out = tmp_path / "clean" / "pairs.jsonl", tmp_path / "faulty" / "pairs.jsonl"
    with serve_in_thread(ScriptedChatBackend(shorter_wins)) as url:
        clean = run_pairs(pair_args(student, clean_out, url), judge=pair_judge(url))
    samples = faulty_out.with_name("pairs.jsonl.cache") / "samples.jsonl"
    samples.parent.mkdir(parents=True)
    shutil.copy(clean_out.with_name("pairs.jsonl.cache") / "samples.jsonl", samples)  # the same samples

    backend = ScriptedChatBackend(shorter_wins)
    with serve_in_thread(backend) as url, faulty(url, seed=3) as proxy:
        judge = pair_judge(proxy.url)
        summary = run_pairs(pair_args(student, faulty_out, proxy.url), judge=judge)
    assert faulty_out.read_bytes() == clean_out.read_bytes() and summary["pairs"] == clean["pairs"] > 0
    assert summary["unjudged"] == 0 and summary["sampled_now"] == 0
    assert proxy.fault_share() >= 0.2 and len(proxy.faults) >= 4, proxy.faults
    usage = judge.usage()
    assert usage["retries"] == sum(proxy.faults.values()) and usage["api_calls"] == judge.calls == proxy.requests
    verdicts = faulty_out.with_name("pairs.jsonl.cache") / "verdicts.jsonl"
    with JsonlCache(verdicts) as cache, JsonlCache(clean_out.with_name("pairs.jsonl.cache") / "verdicts.jsonl") as ref:
        assert cache.duplicates == 0 and {k: cache.get(k) for k in cache.keys()} == {k: ref.get(k) for k in ref.keys()}
        assert proxy.delivered == len(proxy.delivered_digests) == 2 * len(cache)  # both orders, each once
        assert backend.count == proxy.delivered + proxy.faults["truncated_body"]
    print(f"pairs: {proxy.requests} requests, faults {dict(proxy.faults)}, retries {usage['retries_by_error']}")

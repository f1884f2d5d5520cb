"""The KD teacher (OpenAICompatibleTeacher) against `speechsum serve` through the fault proxy:
token-level scores identical to a fault-free run, every retry counted (its log lines), and the
sequence-level summary cache asks a restarted run only for what is missing."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from speechsum.data.batch import SpeechBatch
from speechsum.models.tokenizer import build_byte_tokenizer
from speechsum.serving.cli import HFBackend
from speechsum.stages.kd.teachers import OpenAICompatibleTeacher
from speechsum.utils.remote import JsonlCache
from tests.fault_proxy import FaultProxy
from tests.servers import serve_in_thread

TIMEOUT = 2.0  # a CPU forward of the tiny teacher takes well under this
WORDS = "do re mi fa sol la ti".split()


@pytest.fixture
def batch_and_completion(tiny_composed):
    """Eight examples, each its own transcript and completion."""
    processor = tiny_composed.processor
    transcripts = [" ".join(WORDS[i % 7 : i % 7 + 3] + WORDS[: i % 3 + 1]) for i in range(8)]
    completions = [" ".join(t.split()[: 1 + i % 4]) for i, t in enumerate(transcripts)]
    instructions = [f"Say the first {1 + i % 4} words." for i in range(8)]
    waveforms = [np.random.default_rng(i).standard_normal(4000).astype(np.float32) * 0.1 for i in range(8)]
    prompts = processor.encode_prompts(waveforms, instructions)
    batch = SpeechBatch(ids=[f"e{i}" for i in range(8)], audio=prompts.audio, audio_seconds=torch.full((8,), 0.25),
                        prompt_ids=prompts.prompt_ids, prompt_mask=prompts.prompt_mask, instructions=instructions,
                        transcripts=transcripts, references=completions)
    ids, mask = processor.encode_responses(completions)
    return batch, ids, mask


def retries_logged(caplog) -> int:
    """with_retries logs one warning per retry: the teacher's retry count."""
    return sum("retrying in" in r.getMessage() for r in caplog.records if r.name == "speechsum.utils.remote")


def teacher(url: str, teacher_dir, **options) -> OpenAICompatibleTeacher:
    remote = OpenAICompatibleTeacher("tiny-teacher", base_url=url, tokenizer=str(teacher_dir), top_k=5,
                                     timeout=TIMEOUT, attempts=3, max_workers=4, **options)
    remote.attach(build_byte_tokenizer(extra_special_tokens=("<|audio|>",)), "<|im_end|>")
    return remote


@pytest.mark.parametrize("scoring", ["echo", "prompt_logprobs"])
def test_teacher_scores_through_faults_equal_the_fault_free_run(teacher_dir, batch_and_completion, scoring, caplog):
    caplog.set_level(logging.WARNING, logger="speechsum.utils.remote")
    batch, ids, mask = batch_and_completion
    backend = HFBackend(teacher_dir)
    with serve_in_thread(backend) as url:
        clean = teacher(url, teacher_dir, scoring=scoring).score(batch, ids, mask)
        assert retries_logged(caplog) == 0
        with FaultProxy(url, seed=4, rate=0.45, hang_seconds=TIMEOUT + 0.3) as proxy:
            scores = [teacher(proxy.url, teacher_dir, scoring=scoring).score(batch, ids, mask) for _ in range(2)]
    for got in scores:
        for name in ("token_log_probs", "topk_log_probs", "topk_ids"):
            assert torch.equal(getattr(got, name), getattr(clean, name)), name
    assert proxy.fault_share() >= 0.2 and len(proxy.faults) >= 3, proxy.faults
    assert retries_logged(caplog) == sum(proxy.faults.values())
    assert proxy.delivered == 2 * len(ids)  # each example scored once per call: none lost, none doubled
    print(f"kd {scoring}: {proxy.requests} requests, faults {dict(proxy.faults)}, {retries_logged(caplog)} retries")


def test_sequence_kd_cache_under_faults_asks_a_restarted_run_only_for_what_is_missing(
        teacher_dir, batch_and_completion, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="speechsum.utils.remote")
    batch, _, _ = batch_and_completion
    first_half = SpeechBatch(**{**batch.__dict__, "ids": batch.ids[:4], "instructions": batch.instructions[:4],
                                "transcripts": batch.transcripts[:4]})
    cache_path = tmp_path / "seq_kd.jsonl"
    backend = HFBackend(teacher_dir)
    with serve_in_thread(backend) as url:
        clean = teacher(url, teacher_dir, scoring="none").write_summaries(batch, max_new_tokens=8)
        # one proxy for both runs: the cache key holds the endpoint URL, and a new proxy has a new port
        with FaultProxy(url, seed=9, rate=0.45, hang_seconds=TIMEOUT + 0.3) as proxy:
            first = teacher(proxy.url, teacher_dir, scoring="none", cache_path=str(cache_path))
            assert first.write_summaries(first_half, max_new_tokens=8) == clean[:4]  # then the run is "killed"
            delivered_before = proxy.delivered
            restarted = teacher(proxy.url, teacher_dir, scoring="none", cache_path=str(cache_path))
            assert restarted.write_summaries(batch, max_new_tokens=8) == clean
    assert delivered_before == 4 and proxy.delivered - delivered_before == len(clean) - 4  # only the missing four
    assert proxy.fault_share() >= 0.2 and retries_logged(caplog) == sum(proxy.faults.values())
    with JsonlCache(cache_path) as cache:
        assert len(cache) == len(clean) and cache.duplicates == 0

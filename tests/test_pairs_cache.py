"""`speechsum pairs` reading its resumable caches back: an entry of the wrong shape (hand-edited,
another tool's) stops the run naming the file and key, instead of a KeyError traceback, a
winner "C" counted as B, or a text judged letter by letter as if it were a list of summaries."""

from __future__ import annotations

import json

import pytest

from speechsum.judges.pairwise import JudgeInput, PairVerdict, PairwiseJudge
from speechsum.pairs import cached_samples, judge_example, judged_input_hash, text_hash
from speechsum.utils.remote import JsonlCache, cache_key


class ShorterWins(PairwiseJudge):
    """An offline judge: the shorter summary wins; counts its calls."""

    name = "shorter"

    def __init__(self) -> None:
        self.calls = 0

    def compare(self, item: JudgeInput, a: str, b: str) -> PairVerdict:
        self.calls += 1
        return PairVerdict("A" if len(a) < len(b) else "B" if len(b) < len(a) else "tie", "length")


ITEM = JudgeInput("ex-1", "Summarise.", "a transcript")
SAMPLES = ["short", "a longer one"]


def verdict_key(judge: PairwiseJudge) -> str:
    return cache_key("pair", ITEM.id, judged_input_hash(ITEM), text_hash(SAMPLES[0]), text_hash(SAMPLES[1]),
                     judge.identity)


def cache_holding(tmp_path, key: str, value: dict) -> JsonlCache:
    path = tmp_path / "verdicts.jsonl"
    path.write_text(json.dumps({"key": key, "value": value}) + "\n")
    return JsonlCache(path)


@pytest.mark.parametrize("value, shown", [
    ({"winner": "C", "reasons": "", "details": {}}, '{"winner": "C", "reasons": "", "details": {}}'),
    ({"reasons": "no winner"}, '{"reasons": "no winner"}'),
    ({"winner": "A", "reasons": 3}, '{"winner": "A", "reasons": 3}'),
    ({"winner": "tie", "details": []}, '{"winner": "tie", "details": []}'),
])
def test_a_malformed_cached_verdict_is_named_with_its_file_and_key(tmp_path, value, shown):
    judge = ShorterWins()
    key = verdict_key(judge)
    with cache_holding(tmp_path, key, value) as cache, pytest.raises(ValueError) as caught:
        judge_example(judge, cache, ITEM, SAMPLES, "round-robin")
    assert str(caught.value) == (
        f"{tmp_path / 'verdicts.jsonl'}: the entry with key {key}: not a pair verdict (expected winner A, B or tie, "
        f"text reasons and an object details), got {shown}. Remove that line or the file to rebuild the cache.")
    assert judge.calls == 0


def test_a_cached_verdict_without_reasons_or_details_is_still_used(tmp_path):
    judge = ShorterWins()
    with cache_holding(tmp_path, verdict_key(judge), {"winner": "B"}) as cache:
        result = judge_example(judge, cache, ITEM, SAMPLES, "round-robin")
    assert (result["kind"], result["chosen"], result["rejected"], judge.calls) == ("pair", "a longer one", "short", 0)


@pytest.mark.parametrize("samples, shown", [("oops", '"oops"'), ([], "[]"), (["a", 2], '["a", 2]'), (None, "null")])
def test_cached_samples_that_are_no_list_of_texts_are_refused(tmp_path, samples, shown):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"key": "k1", "value": {"id": "ex-1", "samples": samples}}) + "\n")
    with JsonlCache(path) as cache, pytest.raises(ValueError) as caught:
        cached_samples(cache, "k1")
    assert str(caught.value) == (f"{path}: the entry with key k1: samples must be a list of summary texts, got {shown}. "
                                 "Remove that line or the file to rebuild the cache.")


def test_cached_samples_are_returned_as_a_new_list(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"key": "k1", "value": {"id": "ex-1", "samples": ["a", "b"]}}) + "\n")
    with JsonlCache(path) as cache:
        samples = cached_samples(cache, "k1")
        samples.append("reference")
        assert cache.get("k1")["samples"] == ["a", "b"]


def test_a_sample_of_only_invisible_characters_is_no_candidate(tmp_path):
    """Before: a sample of zero-width spaces (kept by str.strip) was judged, won here as the shortest, and was
    written as the chosen summary of a pair DPO's loader refuses ("only invisible characters")."""
    judge = ShorterWins()
    with JsonlCache(tmp_path / "verdicts.jsonl") as cache:
        result = judge_example(judge, cache, ITEM, ["a longer one", "\u200b\u200b", "short"], "round-robin")
        assert (result["kind"], result["chosen"], result["rejected"], judge.calls) == ("pair", "short", "a longer one", 1)
        assert judge_example(judge, cache, ITEM, ["short", "\ufeff \u200b"], "round-robin") == {"kind": "identical"}

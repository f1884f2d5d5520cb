"""Pairwise judges: OpenAIJudge against speechsum serve's real HTTP stack on loopback (scripted
answers: valid, position-biased, malformed, HTTP 500s), verdict parsing, and the fact judge."""

from __future__ import annotations

import itertools
import re

import openai
import pytest

from speechsum.judges.pairwise import (
    PROMPT_VERSION,
    FactPairJudge,
    JudgeInput,
    MalformedVerdict,
    OpenAIJudge,
    parse_pair_verdict,
)
from speechsum.serving.protocol import APIError
from speechsum.utils.chat_json import DOWN_AFTER
from tests.servers import ScriptedChatBackend, prompt_text, serve_in_thread

ITEM = JudgeInput("doc-1", "Summarise the call.", "Ana: the budget is 40,000 euros.", None)
GOOD, BAD = "The budget is 40,000 euros.", "The budget is 45,000 euros, says Kevin."


def summaries(messages: list[dict]) -> tuple[str, str]:
    user = prompt_text(messages)
    a = re.search(r"SUMMARY A:\n(.*?)\n\nSUMMARY B:", user, re.DOTALL).group(1)
    b = re.search(r"SUMMARY B:\n(.*)$", user, re.DOTALL).group(1)
    return a, b


def faithful_judge(messages: list[dict]) -> str:
    """Prefers the summary with the transcript's number, wherever it is shown."""
    a, b = summaries(messages)
    winner = "A" if "40,000" in a and "40,000" not in b else "B" if "40,000" in b and "40,000" not in a else "tie"
    return f'```json\n{{"winner": "{winner}", "reasons": "faithfulness"}}\n```'


def judge_for(url: str, **options) -> OpenAIJudge:
    return OpenAIJudge("scripted", base_url=url, backoff_seconds=0.01, **options)


def test_parse_pair_verdict():
    assert parse_pair_verdict('{"winner": "A", "reasons": "x"}') == ("A", "x")
    assert parse_pair_verdict('Sure:\n```json\n{"winner": "tie", "reasons": ["a", "b"]}\n```') == ("tie", '["a", "b"]')
    assert parse_pair_verdict('{"winner": "b"}') == ("B", "")
    for bad in ("A is better", '{"winner": "C"}', '{"score": 3}', '{"winner": "A",}', ""):
        with pytest.raises(MalformedVerdict):
            parse_pair_verdict(bad)


def test_valid_verdicts_in_both_orders_are_parsed():
    backend = ScriptedChatBackend(faithful_judge)
    with serve_in_thread(backend) as url:
        judge = judge_for(url)
        assert judge.compare(ITEM, GOOD, BAD).winner == "A"
        verdict = judge.compare(ITEM, BAD, GOOD)
    assert verdict.winner == "B" and verdict.details["ab"] == "B" and verdict.details["ba"] == "A"
    assert backend.count == 4  # two orders per pair
    first, second = (summaries(r.messages) for r in backend.requests[2:4])
    assert first == (BAD, GOOD) and second == (GOOD, BAD)  # the second ask swaps the order
    system = backend.requests[0].messages[0]
    assert system["role"] == "system" and "faithfulness" in system["content"]
    assert "TRANSCRIPT:\nAna: the budget" in backend.requests[0].messages[1]["content"]
    assert judge.identity == f"openai:scripted|{PROMPT_VERSION}"


def test_position_bias_disagreement_is_a_tie():
    backend = ScriptedChatBackend(lambda messages: '{"winner": "A", "reasons": "first is best"}')
    with serve_in_thread(backend) as url:
        verdict = judge_for(url).compare(ITEM, GOOD, BAD)
    assert verdict.winner == "tie" and "disagreement" in verdict.reasons
    assert backend.count == 2


def test_malformed_verdicts_are_retried_then_unjudged():
    replies = (f"I think A is better ({n})." for n in itertools.count())  # the same reply twice: not asked a third time
    backend = ScriptedChatBackend(lambda messages: next(replies))
    with serve_in_thread(backend) as url:
        judge = judge_for(url, parse_attempts=3)
        verdict = judge.compare(ITEM, GOOD, BAD)
    assert verdict.winner is None and not verdict.judged and "malformed" in verdict.reasons
    assert backend.count == 3 and judge.malformed == 3  # asked three times, then given up: no guess

    answers = iter(["not json", '{"winner": "A"}', '{"winner": "B"}'])
    backend = ScriptedChatBackend(lambda messages: next(answers))
    with serve_in_thread(backend) as url:
        judge = judge_for(url, parse_attempts=3)
        assert judge.compare(ITEM, GOOD, BAD).winner == "A"  # A, then B after the swap: agreement
    assert backend.count == 3 and judge.malformed == 1


def test_server_errors_are_retried_and_exhausted_retries_count_as_unjudged():
    backend = ScriptedChatBackend(faithful_judge, fail_first_n=2, fail_status=500)
    with serve_in_thread(backend) as url:
        judge = judge_for(url)
        assert judge.compare(ITEM, GOOD, BAD).winner == "A"
    assert [r.status for r in backend.requests] == [500, 500, 200, 200]
    assert judge.retries.retries == 2

    backend = ScriptedChatBackend(faithful_judge, fail_every=1, fail_status=503)
    with serve_in_thread(backend) as url:
        verdict = judge_for(url, request_attempts=2).compare(ITEM, GOOD, BAD)
    assert verdict.winner is None and "request failed" in verdict.reasons
    assert backend.count == 2


def test_a_judge_that_went_down_stops_the_run_instead_of_failing_every_item_in_turn():
    """Before: every pair after the outage was retried and given up in turn (a dead server asked 4 times per
    pair, hours of timeouts for a large run) and the run ended as if done, those pairs unjudged."""
    down = []

    def goes_down(messages: list[dict]) -> str:
        if down:
            raise APIError(503, "the judge server went down")
        return faithful_judge(messages)

    backend = ScriptedChatBackend(goes_down)
    with serve_in_thread(backend) as url:
        judge = judge_for(url, request_attempts=2)
        assert judge.compare(ITEM, GOOD, BAD).winner == "A"
        down.append(True)
        assert [judge.compare(ITEM, GOOD, BAD).winner for _ in range(DOWN_AFTER - 1)] == [None] * (DOWN_AFTER - 1)
        with pytest.raises(openai.InternalServerError, match="went down"):
            judge.compare(ITEM, GOOD, BAD)
    assert backend.count == 2 + 2 * DOWN_AFTER  # two orders answered, then 2 attempts per ask until it stopped


def test_items_given_up_between_answers_do_not_stop_the_run():
    """An isolated pair given up after its retries stays unjudged: only asks failing in a row mean a dead endpoint."""
    number = [0]

    def fails_every_other_pair(messages: list[dict]) -> str:
        number[0] += 1
        if number[0] % 4 in (1, 2):  # the first order of every other pair, both attempts: given up
            raise APIError(503, "overloaded")
        return faithful_judge(messages)

    with serve_in_thread(ScriptedChatBackend(fails_every_other_pair)) as url:
        judge = judge_for(url, request_attempts=2)
        assert [judge.compare(ITEM, GOOD, BAD).winner for _ in range(2 * DOWN_AFTER)] == [None, "A"] * DOWN_AFTER


def test_api_key_from_environment_and_auth_errors_stop(monkeypatch):
    backend = ScriptedChatBackend(faithful_judge)
    with serve_in_thread(backend, api_key="sk-judge-test") as url:
        monkeypatch.setenv("JUDGE_KEY", "sk-judge-test")
        assert OpenAIJudge("scripted", base_url=url, api_key_env="JUDGE_KEY").compare(ITEM, GOOD, BAD).winner == "A"
        monkeypatch.setenv("JUDGE_KEY", "wrong")
        with pytest.raises(openai.AuthenticationError):
            OpenAIJudge("scripted", base_url=url, api_key_env="JUDGE_KEY").compare(ITEM, GOOD, BAD)


def test_fact_pair_judge_prefers_the_faithful_summary():
    meta = {
        "style": "one_sentence",
        "facts": [{"kind": "number", "text": "The budget is 40,000 euros", "keys": ["budget", "40000"]}],
        "required_facts": [0],
        "entities": ["ana", "40,000"],
        "speakers": ["Ana"],
    }
    judge = FactPairJudge()
    item = JudgeInput("doc-1", "Summarise the call in one sentence.", None, meta)
    verdict = judge.compare(item, GOOD, BAD)
    assert verdict.winner == "A" and verdict.details["score_a"] > verdict.details["score_b"]
    assert judge.compare(item, BAD, GOOD).winner == "B"
    assert judge.compare(item, GOOD, GOOD).winner == "tie"
    assert judge.calls == 3 and judge.identity == "fact-judge-v2"
    with pytest.raises(ValueError, match="meta"):
        judge.compare(JudgeInput("x", "Summarise.", None, None), GOOD, BAD)

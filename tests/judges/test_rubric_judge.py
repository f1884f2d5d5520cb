"""The LLM rubric judge against the real `speechsum serve` HTTP stack (scripted answers)."""

from __future__ import annotations

import itertools
import json

import pytest

from speechsum.judges.rubric import (
    RUBRIC_VERSION,
    MalformedVerdict,
    RubricItem,
    RubricJudge,
    parse_verdict,
    user_message,
)
from tests.servers import JSONServer, ScriptedChatBackend, serve_in_thread

VALID = {"accuracy": 6, "coherence": 7, "style": 5, "hallucination": 7, "instruction_following": 6,
         "score": 6, "reasons": "Accurate and concise."}
ITEM = RubricItem(instruction="Summarise the call in one sentence.", prediction="Ana will send the budget on Friday.",
                  source="Ana: I'll send the budget on Friday.", reference="Ana sends the budget on Friday.")


def judge(url: str, tmp_path, **kwargs) -> RubricJudge:
    options = {"backoff_seconds": 0.01, "max_workers": 2, "cache_path": tmp_path / "judge_cache.jsonl"}
    return RubricJudge("scripted", base_url=url, **(options | kwargs))


def test_parse_verdict_accepts_valid_and_fenced_json():
    verdict = parse_verdict("```json\n" + json.dumps(VALID) + "\n```")
    assert verdict.score == 6 and verdict.criteria["style"] == 5 and verdict.reasons == "Accurate and concise."
    assert parse_verdict('{"score": 3.0}').score == 3


@pytest.mark.parametrize(
    "text",
    ["Great summary, 6/7.", '{"score": 8}', '{"score": 0}', '{"score": "six"}', '{"score": true}',
     '{"score": 5.5}', '{"accuracy": 6}', '{"score": 5, "accuracy": 9}', '{"score": 5,'],
)
def test_parse_verdict_rejects_malformed(text):
    with pytest.raises(MalformedVerdict):
        parse_verdict(text)


def test_prompt_has_rubric_sections_and_candidate_last():
    message = user_message(ITEM)
    assert message.index("INSTRUCTION:") < message.index("TRANSCRIPT:") < message.index("REFERENCE:") < message.index("CANDIDATE:")
    assert RUBRIC_VERSION.startswith("rubric-v1-")


def test_valid_answer_is_parsed_and_cached(tmp_path):
    backend = ScriptedChatBackend(lambda messages: json.dumps(VALID))
    with serve_in_thread(backend) as url:
        verdicts = judge(url, tmp_path).score([ITEM, RubricItem("Title?", "A title.", "text")])
        assert [v.score for v in verdicts] == [6, 6] and verdicts[0].criteria["coherence"] == 7
        assert backend.count == 2
        users = sorted(r.messages[1]["content"] for r in backend.requests)
        assert "1–7" in backend.requests[0].messages[0]["content"]
        assert any(u.endswith("CANDIDATE:\nAna will send the budget on Friday.") for u in users)
        again = judge(url, tmp_path).score([ITEM])  # a new judge on the same cache file: no request
        assert again[0].score == 6 and backend.count == 2


def test_malformed_answer_is_retried_then_unjudged(tmp_path):
    replies = (f"It is a good summary, I'd say 6 ({n})." for n in itertools.count())  # the same twice: asked no more
    backend = ScriptedChatBackend(lambda messages: next(replies))
    with serve_in_thread(backend) as url:
        verdict = judge(url, tmp_path, parse_attempts=3).score_one(ITEM)
    assert verdict.score is None and not verdict.judged and verdict.attempts == 3
    assert "malformed" in verdict.error and backend.count == 3
    assert not (tmp_path / "judge_cache.jsonl").read_text().strip()  # unjudged verdicts are not cached


def test_malformed_then_valid_answer_counts_on_second_attempt(tmp_path):
    answers = iter(['{"score": 9}', json.dumps(VALID)])
    backend = ScriptedChatBackend(lambda messages: next(answers))
    with serve_in_thread(backend) as url:
        verdict = judge(url, tmp_path).score_one(ITEM)
    assert verdict.score == 6 and verdict.attempts == 2 and backend.count == 2


def test_server_errors_are_retried(tmp_path):
    backend = ScriptedChatBackend(lambda messages: json.dumps(VALID), fail_first_n=2, fail_status=500)
    with serve_in_thread(backend) as url:
        verdict = judge(url, tmp_path).score_one(ITEM)
    assert verdict.score == 6 and backend.count == 3
    assert [r.status for r in backend.requests] == [500, 500, 200]


def test_api_key_from_env_is_sent_and_never_stored(tmp_path, monkeypatch):
    secret = "sk-test-rubric-judge-secret-123"
    monkeypatch.setenv("JUDGE_KEY_FOR_TEST", secret)
    backend = ScriptedChatBackend(lambda messages: json.dumps(VALID))
    with serve_in_thread(backend, api_key=secret) as url:
        assert judge(url, tmp_path, api_key_env="JUDGE_KEY_FOR_TEST").score_one(ITEM).score == 6
        monkeypatch.setenv("JUDGE_KEY_FOR_TEST", "wrong-key")
        with pytest.raises(Exception, match="401|[Uu]nauthori|[Ii]ncorrect|[Ii]nvalid"):
            judge(url, tmp_path, api_key_env="JUDGE_KEY_FOR_TEST", cache_path=None).score_one(ITEM)
    assert secret not in (tmp_path / "judge_cache.jsonl").read_text()


def test_a_judge_that_refuses_every_request_stops_the_evaluation_naming_why(tmp_path):
    """Before: every answer was left unjudged with one warning that did not say why (a judge model that
    takes no temperature 0 answers each request 400), and the evaluation went on without the metric."""
    from speechsum.cli import known_error
    from speechsum.utils.replies import EndpointError

    backend = ScriptedChatBackend(lambda messages: json.dumps(VALID), fail_every=1, fail_status=400)
    items = [ITEM, RubricItem("Title?", "A title.", "text")]
    with serve_in_thread(backend) as url:
        with pytest.raises(EndpointError) as error:
            judge(url, tmp_path, max_workers=1).score(items)
        assert backend.count == 2  # a 400 is not retried
    answers = iter([json.dumps(VALID)])  # one judged answer: the run goes on, the other unjudged
    partly = ScriptedChatBackend(lambda messages: next(answers, "no json"))
    assert str(error.value) == (
        f"{url}/: the LLM judge refused all 2 requests (the first: request failed: BadRequestError: Error code: 400 "
        "- scripted failure of request 1); check the judge's model 'scripted', max_tokens and temperature (some "
        "reasoning models take no temperature 0), then rerun")
    assert known_error("evaluate", error.value) == (str(error.value), 2)
    with serve_in_thread(partly) as url:
        verdicts = judge(url, tmp_path, parse_attempts=1, max_workers=1, cache_path=None).score(items)
    assert [v.score for v in verdicts] == [6, None]


def test_a_key_the_server_echoes_in_a_refusal_is_masked_in_the_kept_verdict(tmp_path, monkeypatch):
    """Before: a 400 quoting the key ("Incorrect API key provided: sk-…") went into the unjudged verdict's
    error as it was, and from there into predictions.jsonl and the logs."""
    secret = "sk-test-echoed-0123456789"
    monkeypatch.setenv("JUDGE_KEY_FOR_TEST", secret)
    with JSONServer(lambda request: (400, {"error": {"message": f"Incorrect API key provided: {secret}"}})) as server:
        verdict = judge(server.url, tmp_path, api_key_env="JUDGE_KEY_FOR_TEST").score_one(ITEM)
    assert (verdict.score, verdict.error) == (  # the judge's URL named (it was not), never the key
        None, f"request failed at {server.url}/: BadRequestError: Error code: 400 - Incorrect API key provided: ***")

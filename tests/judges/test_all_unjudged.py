"""A judge whose every answer cannot be read (a model that answers in prose, or is cut at
max_tokens) stops the run naming why, as one refusing every request does: `evaluate` went on
without the metric and `pairs` wrote an empty pairs file, both with exit 0."""

from __future__ import annotations

import json

import pytest

from speechsum.judges.rubric import RubricItem
from speechsum.utils.chat_json import check_not_all_refused
from speechsum.utils.replies import EndpointError
from tests.judges.test_rubric_judge import ITEM, VALID, judge
from tests.servers import ScriptedChatBackend, serve_in_thread

PROSE = "I think it is a good summary."


def test_a_judge_answering_every_item_in_prose_stops_the_evaluation(tmp_path):
    items = [ITEM, RubricItem("Title?", "A title.", "text")]
    with serve_in_thread(ScriptedChatBackend(lambda messages: PROSE)) as url:
        with pytest.raises(EndpointError) as error:
            judge(url, tmp_path, parse_attempts=1, max_workers=1).score(items)
    assert str(error.value) == (
        f"{url}/: the LLM judge gave no usable answer for any of the 2 items (the first: malformed answer after 1 "
        f"attempts: no JSON object with 'score' in the answer: '{PROSE}'); check the judge's model 'scripted' (one "
        "that answers in the JSON asked for) and max_tokens (reasoning models need thousands), then rerun")


def test_one_usable_answer_keeps_the_run_going():
    check_not_all_refused(["malformed answer after 3 attempts: x", None], "http://judge/v1/", "m", "the pair judge")
    check_not_all_refused([], "http://judge/v1/", "m", "the pair judge")


def test_refusals_mixed_with_unreadable_answers_stop_it_too():
    with pytest.raises(EndpointError) as error:
        check_not_all_refused(["request failed: BadRequestError: 400", "malformed answer after 3 attempts: x"],
                              "http://judge/v1/", "m", "the pair judge")
    assert str(error.value).startswith("http://judge/v1/: the pair judge gave no usable answer for any of the 2 items "
                                       "(the first: request failed: BadRequestError: 400); ")


def test_a_cached_verdict_counts_as_an_answer(tmp_path):
    """A rerun whose verdicts come from the cache is not stopped by a judge now answering in prose."""
    with serve_in_thread(ScriptedChatBackend(lambda messages: json.dumps(VALID))) as url:
        assert [v.score for v in judge(url, tmp_path, max_workers=1).score([ITEM])] == [6]
    with serve_in_thread(ScriptedChatBackend(lambda messages: PROSE)) as url:
        assert [v.score for v in judge(url, tmp_path, max_workers=1).score([ITEM])] == [6]

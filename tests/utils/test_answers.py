"""speechsum.utils.answers: the helper's own edges (the answer shapes of real judge models are
table-tested through the judges' parsers in tests/judges/test_judge_answers.py)."""

from __future__ import annotations

import pytest

from speechsum.utils.answers import final_answer, first_json_object, json_objects, whole_number


class Refused(ValueError):
    """A caller's error class: first_json_object raises it."""


def test_final_answer_drops_reasoning_and_refuses_an_unclosed_block():
    assert final_answer("<think>a</think> b <THINKING>c</THINKING> d") == " d"
    assert final_answer("template opened it {1}</think>answer") == "answer"
    assert final_answer(None) == "" and final_answer("no reasoning") == "no reasoning"
    with pytest.raises(Refused, match="<reasoning> never closes"):
        final_answer("<reasoning>still thinking", Refused)


def test_json_objects_skip_what_is_inside_an_invalid_object():
    text = '{"a": {"b": 1}} {bad {"c": 2}} {"x": "a \\" }", bad} {"d": 3} {"cut": {"e": 4}, "f'
    assert json_objects(text) == [{"a": {"b": 1}}, {"d": 3}]


def test_first_json_object_with_and_without_a_key():
    assert first_json_object('x {"queries": [{"a": 1}]} y {"b": 2}') == {"queries": [{"a": 1}]}  # as before
    assert first_json_object('<think>{"b": 2}</think>{"summary": "s"}') == {"summary": "s"}
    assert first_json_object('{"n": 1} {"score": 6, "r": 1} i.e. {"score": 6}', key="score") == {"score": 6, "r": 1}
    assert first_json_object('{"r": "the “x” line", "score": 2}', key="score") == {"r": "the “x” line", "score": 2}
    with pytest.raises(Refused, match=r"no JSON object in the answer: '\{\"queries\": "):
        first_json_object('{"queries": [{"a": 1}, {"b"', Refused)  # nothing inside a cut object is taken
    with pytest.raises(Refused, match=r"ambiguous answer: 2 JSON objects with different 'score' \(3, 5\)"):
        first_json_object('{"score": 3} or rather {"score": 5}', Refused, key="score")


def test_a_score_quoted_as_a_superscript_digit_is_refused_by_the_callers_error():
    """Before: int('²') raised its own ValueError ("invalid literal for int() with base 10"), naming no score."""
    with pytest.raises(Refused) as refused:
        whole_number("²", "score", 1, 7, Refused)
    assert str(refused.value) == "'score' must be an integer 1-7, got '²'"
    assert whole_number(" 6 ", "score", 1, 7, Refused) == 6

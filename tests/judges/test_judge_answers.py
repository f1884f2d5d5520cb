"""The LLM judges on the answer shapes real judge models give (GPT-4.1/4o, Llama-3, Qwen2.5, Qwen3 and
DeepSeek-R1 with reasoning, refusals, out-of-range scores, cut answers), parsers table-driven, then end
to end through loopback servers: the right score, or a counted failure — never a silently wrong score."""

from __future__ import annotations

import json

import pytest

from speechsum.judges.pairwise import JudgeInput, MalformedVerdict, OpenAIJudge, parse_pair_verdict
from speechsum.judges.rubric import MalformedVerdict as MalformedRubric
from speechsum.judges.rubric import RubricItem, RubricJudge, parse_verdict
from tests.servers import JSONServer, ScriptedChatBackend, prompt_text, serve_in_thread

FULL = {"accuracy": 6, "coherence": 7, "style": 5, "hallucination": 7, "instruction_following": 6, "score": 6,
        "reasons": "Accurate."}
V = json.dumps(FULL)
CRITERIA = {k: v for k, v in FULL.items() if k not in ("score", "reasons")}

RUBRIC_SCORED = {  # answer → (score, criteria)
    "clean JSON (GPT-4.1)": (V, (6, CRITERIA)),
    "```json fence (GPT-4o)": ("```json\n" + V + "\n```", (6, CRITERIA)),
    "prose, then JSON (Llama-3)": ("Here is my evaluation of the candidate:\n\n" + V, (6, CRITERIA)),
    "JSON, then an explanation with braces (Qwen2.5)": (V + "\n\nNote: the {budget} figure matches.", (6, CRITERIA)),
    "<think> with JSON-looking text (Qwen3)": ('<think>Rubric: {"score": 2}? It is better.</think>\n\n' + V, (6, CRITERIA)),
    "<think> with numbers (DeepSeek-R1)": ("<think>accuracy 3? score 3?</think>" + V, (6, CRITERIA)),
    "closing </think> only (R1 template)": ('hmm {"score": 3}</think>\n' + V, (6, CRITERIA)),
    "rubric template echoed, then the answer": ('{"accuracy": <1-7>, "score": <1-7>}\n' + V, (6, CRITERIA)),
    "unicode quotes": ("{“score”: 5, “reasons”: “Gut.”}", (5, {})),
    "reasons in another language": ('{"score": 4, "reasons": "Die Zusammenfassung ist zu lang."}', (4, {})),
    "quoted integer": ('{"score": "6"}', (6, {})),
    "6.0": ('{"score": 6.0}', (6, {})),
}

RUBRIC_REFUSED = {  # answer → what the error says; the judge asks again, then counts it unjudged
    "prose score (Llama-3)": ("Score: 6/7\nThe summary is accurate.", "no JSON object with 'score'"),
    "markdown rating": ("**Rating:** 5", "no JSON object with 'score'"),
    "refusal": ("I can't evaluate this summary.", "no JSON object with 'score'"),
    "JSON only inside <think>": ('<think>{"score": 2}</think>\nOverall: 6', "no JSON object with 'score'"),
    "<think> cut before the answer": ('<think>the score could be {"score": 4} but', "never closes"),
    "cut JSON (finish_reason length)": ('{"accuracy": 6, "coherence": 7, "sco', "no JSON object with 'score'"),
    "revised score": ('Initially {"score": 3}; on reflection {"score": 5}', "ambiguous"),
    # a key given twice: read as the last before (7), silently
    "score given twice": ('{"score": 2, "reasons": "wrong figure", "score": 7}', "ambiguous answer: the key 'score' is "
                                                                              r"given twice with different values \(2, 7\)"),
    "criterion given twice": ('{"accuracy": 2, "accuracy": 6, "score": 5}', "the key 'accuracy' is given twice"),
    "0": ('{"score": 0}', "in 1..7"), "8": ('{"score": 8}', "in 1..7"), "10 (out of 10)": ('{"score": 10}', "in 1..7"),
    "6.5": ('{"score": 6.5}', "integer"), "six": ('{"score": "six"}', "integer"),
    "criterion out of range": ('{"score": 5, "accuracy": 9}', "in 1..7"),
    "Infinity": ('{"score": Infinity}', "'score' must be an integer 1-7, got inf"),
    "1e400 (read as infinity)": ('{"score": 1e400}', "'score' must be an integer 1-7, got inf"),
    "NaN": ('{"score": NaN}', "'score' must be an integer 1-7, got nan"),
    "-Infinity criterion": ('{"score": 5, "style": -Infinity}', "'style' must be an integer 1-7, got -inf"),
}

PAIR_SCORED = {  # answer → winner
    "clean": ('{"winner": "A", "reasons": "x"}', "A"),
    "fenced, lower case": ('```json\n{"winner": "b", "reasons": "x"}\n```', "B"),
    "prose then JSON": ('Summary B invents a name.\n{"winner": "A", "reasons": "x"}', "A"),
    "<think> holding another verdict": ('<think>{"winner": "B"}? No.</think>{"winner": "A", "reasons": "x"}', "A"),
    "prompt format echoed": ('{"winner": "A" | "B" | "tie"}\n{"winner": "tie", "reasons": "x"}', "tie"),
    "'Summary A'": ('{"winner": "Summary A", "reasons": "x"}', "A"),
    "winner repeated alike": ('{"winner": "A", "reasons": "x", "winner": "A"}', "A"),
    "unicode quotes": ("{“winner”: “B”, “reasons”: “x”}", "B"),
}

PAIR_REFUSED = {
    "prose verdict": ("**Winner:** A", "no JSON object with 'winner'"),
    "refusal": ("I cannot compare these summaries.", "no JSON object with 'winner'"),
    "verdict only inside <think>": ('<think>{"winner": "B"}</think> A is better.', "no JSON object with 'winner'"),
    "two verdicts": ('{"winner": "A"} Alternatively {"winner": "B"}', "ambiguous"),
    "winner given twice": ('{"winner": "A", "reasons": "x", "winner": "B"}', "ambiguous answer: the key 'winner' is "
                                                                            r'given twice with different values \("A", "B"\)'),
    "C": ('{"winner": "C"}', "must be A, B or tie"),
}


@pytest.mark.parametrize("name", RUBRIC_SCORED)
def test_rubric_parser_scores(name):
    text, (score, criteria) = RUBRIC_SCORED[name]
    verdict = parse_verdict(text)
    assert (verdict.score, verdict.criteria) == (score, criteria)


@pytest.mark.parametrize("name", RUBRIC_REFUSED)
def test_rubric_parser_refuses(name):
    text, message = RUBRIC_REFUSED[name]
    with pytest.raises(MalformedRubric, match=message):
        parse_verdict(text)


@pytest.mark.parametrize("name", PAIR_SCORED)
def test_pair_parser_reads_the_winner(name):
    text, winner = PAIR_SCORED[name]
    assert parse_pair_verdict(text)[0] == winner


@pytest.mark.parametrize("name", PAIR_REFUSED)
def test_pair_parser_refuses(name):
    text, message = PAIR_REFUSED[name]
    with pytest.raises(MalformedVerdict, match=message):
        parse_pair_verdict(text)


def completion(content: str | None, finish_reason: str = "stop", **message) -> dict:
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": finish_reason,
                         "message": {"role": "assistant", "content": content, **message}}]}


ITEM = RubricItem("Summarise the call.", "Ana sends the budget.", "Ana: I'll send the budget.")
SERVED = {  # a 200 body → (score, requests made, words the error names)
    "answer after a <think> block": (completion('<think>{"score": 2}</think>' + V), 6, 1, ""),
    "answer beside reasoning_content": (completion(V, reasoning_content='{"score": 3}'), 6, 1, ""),
    "reasoning_content, null content": (completion(None, reasoning_content='{"score": 3}'), None, 2, "only reasoning"),
    "cut at max_tokens": (completion('{"score": 6, "rea', "length"), None, 2,  # the setting unnamed before 2026-12-07
                          "cut at max_tokens=256: raise the judge's max_tokens (--judge-max-tokens of speechsum pairs "
                          "and evaluate)"),
    "<think> cut at max_tokens": (completion('<think>{"score": 4} but', "length"), None, 2, "never closes"),
    "Infinity as the score": (completion('{"score": Infinity}'), None, 2, "must be an integer 1-7, got inf"),
    "refusal, null content": (completion(None, refusal="I can't help with that."), None, 1,  # not asked again
                              "no JSON object with 'score' in the answer: '' (the model refused: \"I can't help with that.\")"),
    "tool call, null content": (completion(None, tool_calls=[{"id": "t1", "type": "function", "function": {
        "name": "score", "arguments": '{"score": 6}'}}]), None, 2,
        "(the reply is a tool call, not text: serve the model without tools or tool_choice for it)"),
    "content filter, null content": (completion(None, "content_filter"), None, 1,  # not asked again
                                     "(stopped by the endpoint's content filter (finish_reason content_filter))"),
}


@pytest.mark.parametrize("name", SERVED)
def test_rubric_judge_over_http_scores_or_counts_never_guesses(name):
    body, score, requests, error = SERVED[name]
    with JSONServer(lambda request: body) as server:
        judge = RubricJudge("m", base_url=server.url, parse_attempts=2, backoff_seconds=0.01)
        verdict = judge.score_one(ITEM)
    assert (verdict.score, server.requests) == (score, requests)
    assert error in (verdict.error or "") and judge.usage()["malformed_answers"] == (requests if score is None else 0)


def test_pairwise_judge_reads_past_reasoning_and_counts_position_bias():
    item, good, bad = JudgeInput("doc-1", "Summarise.", "Ana: 40,000 euros."), "40,000 euros.", "45,000 euros."

    def reasoning_judge(messages: list[dict]) -> str:  # the faithful answer, after reasoning naming the other
        a_is_good = "SUMMARY A:\n40,000" in prompt_text(messages)
        right, wrong = ("A", "B") if a_is_good else ("B", "A")
        return f'<think>{{"winner": "{wrong}"}} looks right... no.</think>\n{{"winner": "{right}", "reasons": "x"}}'

    with serve_in_thread(ScriptedChatBackend(reasoning_judge)) as url:
        judge = OpenAIJudge("scripted", base_url=url, backoff_seconds=0.01)
        assert [judge.compare(item, good, bad).winner, judge.compare(item, bad, good).winner] == ["A", "B"]
    assert judge.usage()["malformed_answers"] == 0 and judge.usage()["order_disagreements"] == 0
    with serve_in_thread(ScriptedChatBackend(lambda messages: '{"winner": "A", "reasons": "first"}')) as url:
        judge = OpenAIJudge("scripted", base_url=url, backoff_seconds=0.01)
        verdict = judge.compare(item, good, bad)  # A in both orders: position bias
    assert verdict.winner == "tie" and verdict.details["ab"] == verdict.details["ba"] == "A"
    assert judge.usage()["order_disagreements"] == 1


def test_judge_max_tokens_option_reaches_the_pair_judge():
    """Reasoning judges need thousands of tokens: `speechsum pairs` and `evaluate` take --judge-max-tokens."""
    from speechsum.evaluation.cli import evaluate_parser
    from speechsum.pairs import build_judge, build_parser

    paths = ["--ckpt", "c", "--config", "c", "--manifest", "m", "--out", "o", "--judge", "openai", "--judge-base-url",
             "http://127.0.0.1:1/v1"]
    assert build_judge(build_parser().parse_args(paths)).asker.max_tokens == 256
    assert build_judge(build_parser().parse_args([*paths, "--judge-max-tokens", "4096"])).asker.max_tokens == 4096
    assert evaluate_parser().parse_args(["--out", "o", "--judge-max-tokens", "4096"]).judge_max_tokens == 4096

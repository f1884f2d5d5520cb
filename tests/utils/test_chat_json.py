"""speechsum.utils.chat_json's :class:`ChatJsonAsker` against real loopback servers: a reply that is
no readable answer, or no chat completion at all, is asked again, then fails cleanly."""

from __future__ import annotations

import json
import re

import openai
import pytest

from speechsum.utils.chat_json import ChatJsonAsker, correction_turn
from speechsum.utils.remote import MalformedReply, openai_client
from tests.servers import JSONServer, ScriptedChatBackend, serve_in_thread

MESSAGES = [{"role": "user", "content": "Summarise: the meeting moved to Friday."}]


def _parse_number(text: str) -> int:
    """A parse function for ChatJsonAsker: {"n": <int>} or ValueError."""
    value = json.loads(text)["n"] if text.strip().startswith("{") else None
    if not isinstance(value, int):
        raise ValueError(f"no integer 'n' in {text[:40]!r}")
    return value


def test_chat_json_asker_reasks_malformed_and_handles_http_outcomes():
    answers = iter(["seven", '{"n": "x"}', '{"n": 7}'])
    backend = ScriptedChatBackend(lambda messages: next(answers), fail_first_n=1, fail_status=500)
    with serve_in_thread(backend) as url:
        asker = ChatJsonAsker(openai_client(url), "scripted", parse_attempts=3, backoff_seconds=0.01)
        answer = asker.ask(MESSAGES, _parse_number, label="doc-1")
    assert answer.ok and (answer.value, answer.attempts, answer.error) == (7, 3, "")
    assert (asker.calls, asker.malformed, asker.retries.retries, backend.count) == (4, 2, 1, 4)
    bad_x = '{"n": "x"}'
    assert [request.messages for request in backend.requests[1:]] == [  # a re-ask shows the last bad reply
        MESSAGES,
        [*MESSAGES, {"role": "assistant", "content": "seven"}, correction_turn("no integer 'n' in 'seven'")],
        [*MESSAGES, {"role": "assistant", "content": bad_x}, correction_turn(f"no integer 'n' in {bad_x!r}")],
    ]
    assert correction_turn("e")["content"] == (
        "Your answer could not be read (e). Answer again, following the instructions above, with only the JSON "
        "object they ask for and no other text.")

    # a deterministic judge, which repeats itself given the same messages, answers once told what was wrong
    backend = ScriptedChatBackend(lambda messages: '{"n": 3}' if len(messages) > 1 else "Score: 3")
    with serve_in_thread(backend) as url:
        answer = ChatJsonAsker(openai_client(url), "scripted", parse_attempts=2).ask(MESSAGES, _parse_number)
    assert (answer.value, answer.attempts, backend.count) == (3, 2, 2)

    backend = ScriptedChatBackend(lambda messages: "never valid")
    with serve_in_thread(backend) as url:
        answer = ChatJsonAsker(openai_client(url), "scripted", parse_attempts=2).ask(MESSAGES, _parse_number)
    assert answer.value is None and answer.attempts == 2 and "malformed" in answer.error and backend.count == 2

    for status, outcome in ((400, "unjudged"), (503, "unjudged"), (404, openai.NotFoundError)):
        backend = ScriptedChatBackend(lambda messages: '{"n": 1}', fail_every=1, fail_status=status)
        with serve_in_thread(backend) as url:
            asker = ChatJsonAsker(openai_client(url), "scripted", request_attempts=2, backoff_seconds=0.01)
            if outcome == "unjudged":
                answer = asker.ask(MESSAGES, _parse_number)
                assert answer.value is None and answer.error.startswith("request failed") and answer.attempts == 1
            else:
                with pytest.raises(outcome):
                    asker.ask(MESSAGES, _parse_number)
        assert backend.count == (2 if status == 503 else 1)  # only 5xx is retried

    backend = ScriptedChatBackend(lambda messages: '{"n": 1}', fail_every=1, fail_status=503)
    with serve_in_thread(backend) as url:
        asker = ChatJsonAsker(openai_client(url), "scripted", request_attempts=2, backoff_seconds=0.01,
                              give_up_after_retries=False)
        with pytest.raises(openai.InternalServerError):
            asker.ask(MESSAGES, _parse_number)


WRONG_SHAPES = {  # 200 bodies that are no chat completion, and what the error names
    "empty choices": ({"choices": []}, "an empty choices array"),
    "no choices": ({"id": "x", "object": "chat.completion"}, "no choices"),
    "null choices": ({"choices": None}, "no choices"),
    "error object": ({"error": {"message": "internal"}}, "an error instead of choices: {'message': 'internal'}"),
    "message a string": ({"choices": [{"index": 0, "message": "hi"}]}, "choices[0].message is a string"),
    "content a list": ({"choices": [{"index": 0, "message": {"role": "assistant", "content": [{"text": "x"}]}}]},
                       "choices[0].message.content[0] has no type: a content part is an object such as"),
    "content a number": ({"choices": [{"index": 0, "message": {"role": "assistant", "content": 7}}]},
                         "choices[0].message.content is a number, not a string or an array of parts"),
    "text part not text": ({"choices": [{"index": 0, "message": {"role": "assistant", "content": [
        {"type": "text", "text": None}]}}]}, "choices[0].message.content[0] is a text part whose text is null"),
    "an array": ([1, 2], "the reply is an array"),
    "choices an object": ({"choices": {"0": {}}}, "choices is an object"),
    # bodies the client cannot decode: a bare UnicodeDecodeError before (not retried, no endpoint named)
    "not UTF-8": (b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "caf\xe9"}}]}',
                  "the reply body is not UTF-8 text (UnicodeDecodeError: 'utf-8' codec can't decode byte 0xe9 in "
                  "position 74: invalid continuation byte)"),
    "empty body": (b"", "the reply body is not JSON (JSONDecodeError: Expecting value: line 1 column 1 (char 0))"),
}


@pytest.mark.parametrize("name", WRONG_SHAPES)
def test_chat_json_asker_asks_again_then_fails_cleanly_on_wrongly_shaped_replies(name):
    body, what = WRONG_SHAPES[name]
    with JSONServer(lambda request: body) as server:
        asker = ChatJsonAsker(openai_client(server.url), "m", request_attempts=2, backoff_seconds=0.001)
        answer = asker.ask(MESSAGES, _parse_number)
        assert answer.value is None and server.requests == 2  # asked again, then given up
        assert answer.error.startswith("request failed: MalformedReply") and server.url in answer.error
        assert what in answer.error and asker.retries.by_error == {"MalformedReply": 1}
        strict = ChatJsonAsker(openai_client(server.url), "m", request_attempts=1, give_up_after_retries=False)
        with pytest.raises(MalformedReply, match=re.escape(what)):
            strict.ask(MESSAGES, _parse_number)


def _parts_reply(*parts: dict) -> dict:
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": list(parts)}}]}


def test_content_sent_as_parts_is_read_from_its_text_parts():
    """Before: a gateway's content as a list of parts was refused as malformed, asked again, then given up."""
    thinking = {"type": "thinking", "thinking": [{"type": "text", "text": '{"n": 1}'}]}  # reasoning: never the answer
    reply = _parts_reply(thinking, {"type": "text", "text": '{"n": '}, {"type": "text", "text": "7}"})
    with JSONServer(lambda request: reply) as server:
        answer = ChatJsonAsker(openai_client(server.url), "m", request_attempts=2).ask(MESSAGES, _parse_number)
    assert (answer.value, answer.attempts, server.requests) == (7, 1, 1)
    refused = _parts_reply({"type": "refusal", "refusal": "I cannot help with that."})
    with JSONServer(lambda request: refused) as server:
        answer = ChatJsonAsker(openai_client(server.url), "m", parse_attempts=1).ask(MESSAGES, _parse_number)
    assert answer.value is None and answer.error == ("malformed answer after 1 attempts: no integer 'n' in '' (the "
                                                     "model refused: 'I cannot help with that.')")


def _chat_reply(content: str | None, finish_reason: str = "stop", **message: object) -> dict:
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", "content": content, **message}}]}


@pytest.mark.parametrize(("reply", "what"), [
    (_chat_reply(None, refusal="I cannot help with that."), "the model refused: 'I cannot help with that.'"),
    (_chat_reply(None, "content_filter"), "stopped by the endpoint's content filter (finish_reason content_filter)"),
])
def test_a_refusal_is_not_asked_again(reply, what):
    """Before: a refusal (the model's, a content filter's), which a re-ask of the same content gets again, was asked
    ``parse_attempts`` times, each a paid request."""
    with JSONServer(lambda request: reply) as server:
        answer = ChatJsonAsker(openai_client(server.url), "m", parse_attempts=3).ask(MESSAGES, _parse_number)
    assert (answer.value, answer.attempts, server.requests) == (None, 1, 1)
    assert answer.error == f"malformed answer after 1 attempts: no integer 'n' in '' ({what}) (a refusal, not asked again)"


def test_the_same_malformed_reply_twice_at_temperature_0_is_not_asked_a_third_time():
    """Before: asked ``parse_attempts`` times, although the third request was the second one again (the same
    messages, the same reply in them, the same correction), which a judge at temperature 0 answers alike."""
    backend = ScriptedChatBackend(lambda messages: "Score: three")
    with serve_in_thread(backend) as url:
        answer = ChatJsonAsker(openai_client(url), "scripted", parse_attempts=4).ask(MESSAGES, _parse_number)
        assert (answer.value, answer.attempts, backend.count) == (None, 2, 2)
        assert answer.error == ("malformed answer after 2 attempts: no integer 'n' in 'Score: three' (the same answer "
                                "as the last, at temperature 0: asked again, it would be given again)")
        sampled = ChatJsonAsker(openai_client(url), "scripted", parse_attempts=4, temperature=0.7)
        assert sampled.ask(MESSAGES, _parse_number).attempts == 4  # sampled: another ask may answer otherwise

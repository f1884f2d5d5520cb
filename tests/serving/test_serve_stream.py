"""``stream: true`` on ``speechsum serve``: OpenAI's server-sent events, read by the official client."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse

from speechsum.utils.remote import openai_client
from tests.servers import ScriptedChatBackend, serve_in_thread

MODEL = "scripted"
USER = [{"role": "user", "content": "hi"}]
REPLY = "héllo 😀"


def test_a_streamed_chat_completion_reads_as_the_unstreamed_one():
    """Before: every ``stream: true`` request was a 400, so clients that stream by default (chat UIs,
    LangChain's streaming models) could not use the server at all."""
    with serve_in_thread(ScriptedChatBackend(lambda messages: REPLY)) as url:
        client = openai_client(url)
        whole = client.chat.completions.create(model=MODEL, messages=USER, n=2)
        chunks = list(client.chat.completions.create(model=MODEL, messages=USER, n=2, stream=True,
                                                     stream_options={"include_usage": True}))
    texts = {i: "".join(c.choices[0].delta.content or "" for c in chunks[:-1] if c.choices[0].index == i)
             for i in (0, 1)}
    finished = {c.choices[0].index: c.choices[0].finish_reason for c in chunks[:-1] if c.choices[0].finish_reason}
    assert texts == {0: REPLY, 1: REPLY} and finished == {0: "stop", 1: "stop"}
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-1].choices == []
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_a_streamed_completion_and_its_event_framing():
    with serve_in_thread(ScriptedChatBackend(lambda messages: REPLY)) as url:
        chunks = list(openai_client(url).completions.create(model=MODEL, prompt="hi", stream=True))
        parsed = urlparse(url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        connection.request("POST", "/v1/chat/completions", json.dumps({"messages": USER, "stream": True}),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
    assert [(c.object, c.choices[0].text, c.choices[0].finish_reason) for c in chunks] == [
        ("text_completion", REPLY, "stop")]
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    events = body.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""] and all(e.startswith("data: {") for e in events[:-2])
    assert "usage" not in json.loads(events[0].removeprefix("data: "))  # only with stream_options.include_usage

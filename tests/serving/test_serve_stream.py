"""``stream: true`` on ``speechsum serve``: OpenAI's server-sent events, read by the official client."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
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


def test_a_generation_stops_once_its_client_is_gone(model_dir, caplog):
    """Before: a client gone mid-stream (a Ctrl-C, a timeout) held the model until max_tokens for nobody, the
    requests behind it waiting. The 3rd decoding step waits until the client has closed its connection."""
    from speechsum.serving.hf_backend import HFBackend

    backend = HFBackend(model_dir, served_model_name="tiny")
    steps, closed = [], threading.Event()

    def step(module, args, kwargs):
        steps.append(1)
        if len(steps) == 3:
            assert closed.wait(10)
            time.sleep(0.1)  # its end reaches the server

    backend.model.register_forward_pre_hook(step, with_kwargs=True)
    body = json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 60, "stream": True, "temperature": 0}).encode()
    with serve_in_thread(backend) as url, caplog.at_level(logging.INFO, logger="speechsum.serving.cli"):
        parts = urlparse(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            deadline = time.monotonic() + 10
            while len(steps) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
        closed.set()
        deadline = time.monotonic() + 10
        while '"POST /v1/completions" 499' not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "the client closed its connection while its answer was generated; stopped after 3 tokens (1 so far)" \
            in caplog.text
        assert len(steps) == 3
        served = openai_client(url).completions.create(model="tiny", prompt="hi", max_tokens=4, temperature=0)
    assert served.usage.completion_tokens == 4  # the model is free again


def test_openai_stream_options_of_newer_clients_are_accepted(caplog):
    """``include_obfuscation`` (OpenAI's, on by default there: random padding of each chunk) and a null
    ``include_usage`` were a 400 "takes only include_usage", so a client that sends its defaults could not
    stream; now the text streams as before, no padding added, and the log line names the option ignored."""
    with serve_in_thread(ScriptedChatBackend(lambda messages: REPLY)) as url:
        client = openai_client(url)
        with caplog.at_level(logging.INFO, logger="speechsum.serving.cli"):
            with_usage = list(client.chat.completions.create(
                model=MODEL, messages=USER, stream=True,
                stream_options={"include_usage": True, "include_obfuscation": False}))
            plain = list(client.chat.completions.create(
                model=MODEL, messages=USER, stream=True, stream_options={"include_usage": None, "include_obfuscation": True}))
            deadline = time.monotonic() + 10.0  # the server thread logs each request after its reply is written
            while len(lines := [r.getMessage() for r in caplog.records if '" 200 ' in r.getMessage()]) < 2:
                assert time.monotonic() < deadline, "no request log lines"
                time.sleep(0.01)
    assert "".join(c.choices[0].delta.content or "" for c in with_usage[:-1]) == REPLY
    assert with_usage[-1].choices == [] and with_usage[-1].usage is not None
    assert "".join(c.choices[0].delta.content or "" for c in plain) == REPLY and all(c.usage is None for c in plain)
    assert all(line.endswith(" ignored=stream_options.include_obfuscation") for line in lines)

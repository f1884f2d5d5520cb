"""``stream: true`` answers sent as they are generated, by a text LM and by a speech student, and a speech
student's stop strings ending its generation (before 2026-12-07: the whole answer in one chunk after
generation; a student generated to max_tokens, then its text was cut)."""

from __future__ import annotations

import json
import socket
import threading
from urllib.parse import urlparse

import openai
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from speechsum.models.tokenizer import build_byte_tokenizer
from speechsum.serving import speech_backend
from speechsum.serving.cli import build_server
from speechsum.serving.hf_backend import HFBackend
from speechsum.serving.streaming import settled
from speechsum.utils.remote import openai_client
from tests.servers import ThreadedServer, serve_in_thread
from tests.serving.export_fixtures import audio_request

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def letters():
    """A tiny random Llama (byte tokenizer) whose head scores only lower-case letters and the space: readable
    text, so a stream holds more than held-back incomplete characters."""
    tokenizer = build_byte_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    others = torch.ones(len(tokenizer), dtype=torch.bool)
    others[tokenizer.encode("abcdefghijklmnopqrstuvwxyz ", add_special_tokens=False)] = False
    with torch.no_grad():
        model.lm_head.weight[others] = 0.0
        model.lm_head.weight[~others] *= 20.0
    return HFBackend.from_objects(model, tokenizer, "letters")


def _texts(chunks, chat: bool) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            piece = (choice.delta.content if chat else choice.text) or ""
            texts[choice.index] = texts.get(choice.index, "") + piece
    return texts


def _finishes(chunks) -> dict[int, str]:
    return {c.index: c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason}


@pytest.mark.parametrize("stop", [None, ["q"], ["zz", " "]])
def test_a_text_lms_stream_is_its_unstreamed_answer_in_pieces(letters, stop):
    with serve_in_thread(letters) as url:
        client = openai_client(url)
        chat = dict(model="letters", messages=USER, max_tokens=60, temperature=0, n=2, stop=stop)
        whole = client.chat.completions.create(**chat)
        chunks = list(client.chat.completions.create(**chat, stream=True))
        plain = dict(model="letters", prompt=["hello", "a b"], max_tokens=50, temperature=0, n=2, stop=stop)
        completed = client.completions.create(**plain)
        pieces = list(client.completions.create(**plain, stream=True))
        sampled = dict(model="letters", prompt="x", max_tokens=50, temperature=1.0, seed=5, n=3, stop=stop)
        samples = client.completions.create(**sampled)
        sample_pieces = list(client.completions.create(**sampled, stream=True))
    assert _texts(chunks, chat=True) == {c.index: c.message.content for c in whole.choices}
    assert _finishes(chunks) == {c.index: c.finish_reason for c in whole.choices}
    assert _texts(pieces, chat=False) == {c.index: c.text for c in completed.choices}
    assert _finishes(pieces) == {c.index: c.finish_reason for c in completed.choices}
    assert _texts(sample_pieces, chat=False) == {c.index: c.text for c in samples.choices}
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2  # not one chunk at the end
    assert len(pieces) > 2 * len(completed.choices)


def test_a_text_lms_stream_arrives_while_it_is_generated(letters):
    """The 20th decoding step waits until the client has read a piece of text (before: none came until the end)."""
    steps, read, waited = [], threading.Event(), []

    def step(module, args, kwargs):
        steps.append(1)
        if len(steps) == 20:
            waited.append(read.wait(10))

    hook = letters.model.register_forward_pre_hook(step, with_kwargs=True)
    try:
        with serve_in_thread(letters) as url:
            for chunk in openai_client(url).chat.completions.create(model="letters", messages=USER, max_tokens=40,
                                                                    temperature=0, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    read.set()
    finally:
        hook.remove()
    assert waited == [True]


def _student_text(client, **options) -> tuple:
    kw = dict(model="student", messages=audio_request("hi"), max_tokens=40, **options)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True))
    return whole, chunks


def test_a_speech_students_stream_is_its_unstreamed_answer_in_pieces(student_backend):
    with serve_in_thread(student_backend) as url:
        client = openai_client(url)
        whole, chunks = _student_text(client, temperature=0, n=2)
        text = whole.choices[0].message.content
        stop = [next(c for c in text[10:] if c.isalnum() and text.index(c) >= 10)]
        stopped, stopped_chunks = _student_text(client, temperature=0, stop=stop)
        sampled, sampled_chunks = _student_text(client, temperature=1.0, seed=3, n=3, stop=stop)
        unstopped = client.chat.completions.create(model="student", messages=audio_request("hi"), max_tokens=40,
                                                   temperature=1.0, seed=3, n=3)
    for reply, streamed in ((whole, chunks), (stopped, stopped_chunks), (sampled, sampled_chunks)):
        assert _texts(streamed, chat=True) == {c.index: c.message.content for c in reply.choices}
        assert _finishes(streamed) == {c.index: c.finish_reason for c in reply.choices}
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2
    assert stopped.choices[0].message.content == whole.choices[0].message.content.split(stop[0])[0]
    # the rows that met the stop string ended, the others drew the same tokens: each text as cut from the whole
    assert [c.message.content for c in sampled.choices] == [c.message.content.split(stop[0])[0]
                                                            for c in unstopped.choices]


def test_a_speech_student_stops_at_its_stop_string(student_backend, monkeypatch):
    """Before: it generated all max_tokens, then cut its text at the stop string."""
    steps = []
    generate = speech_backend.summarize_waveforms

    def counted(*args, step_check, **kwargs):
        def check(*tokens):
            steps.append(1)
            return step_check(*tokens)
        return generate(*args, step_check=check, **kwargs)

    monkeypatch.setattr(speech_backend, "summarize_waveforms", counted)
    with serve_in_thread(student_backend) as url:
        client = openai_client(url)
        kw = dict(model="student", messages=audio_request("hi"), max_tokens=40, temperature=0)
        whole = client.chat.completions.create(**kw).choices[0].message.content
        steps.clear()
        stop = next(c for c in whole[10:] if c.isalnum() and whole.index(c) >= 10)  # first seen mid-answer
        reply = client.chat.completions.create(**kw, stop=[stop])
    assert reply.choices[0].message.content == whole.split(stop)[0]
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens < len(steps) < 40  # to the stop string's last token, then a stop token


def test_a_failure_mid_stream_ends_it_with_an_error_event(letters, caplog):
    """A backend failure after text was sent (here the 10th decoding step's) cannot change the 200 already sent:
    the stream ends with vLLM's error event, which the openai client raises, the traceback in the server log."""
    steps = []

    def step(module, args, kwargs):
        steps.append(1)
        if len(steps) == 10:
            raise RuntimeError("the device fell off")

    hook = letters.model.register_forward_pre_hook(step, with_kwargs=True)
    received = []
    try:
        with serve_in_thread(letters) as url, pytest.raises(openai.APIError) as caught:
            for chunk in openai_client(url).chat.completions.create(model="letters", messages=USER, max_tokens=40,
                                                                    temperature=0, stream=True):
                received.append(chunk)
    finally:
        hook.remove()
    assert caught.value.message == "Internal server error; see the server log."
    assert received and "RuntimeError: the device fell off" in caplog.text


def test_an_http_1_0_stream_ends_with_its_connection(letters):
    """HTTP/1.0 has no chunked bodies: the stream is the bytes up to the connection's close."""
    body = json.dumps({"model": "letters", "prompt": "hi", "max_tokens": 20, "temperature": 0, "stream": True})
    with serve_in_thread(letters) as url:
        whole = openai_client(url).completions.create(model="letters", prompt="hi", max_tokens=20, temperature=0)
        parts = urlparse(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d"
                         b"\r\n\r\n%s" % (len(body), body.encode()))
            answer = b""
            while part := sock.recv(65536):
                answer += part
    head, _, events = answer.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK") and "Transfer-Encoding" not in head and "Connection: close" in head
    assert events.endswith("\n\ndata: [DONE]\n\n")
    chunks = [json.loads(e.removeprefix("data: ")) for e in events.split("\n\n")[:-2]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole.choices[0].text and len(chunks) > 2


def test_a_stream_its_client_does_not_read_does_not_hold_the_model(letters):
    """A streamed answer is written by a thread of its own: a client that stops reading (its socket buffers full)
    does not hold the model, which the request behind it gets once the answer is generated (written while the model
    was held, it would wait for the connection's timeout, 300 s)."""
    server = build_server(letters, host="127.0.0.1", port=0)
    accept = server.get_request

    def small_buffers():
        connection, address = accept()
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return connection, address

    server.get_request = small_buffers
    steps, started = [], threading.Event()
    hook = letters.model.register_forward_pre_hook(lambda *_: (steps.append(1), started.set()) and None)
    body = json.dumps({"model": "letters", "prompt": "hi", "max_tokens": 250, "temperature": 0, "stream": True})
    try:
        with ThreadedServer(server), socket.socket() as stalled:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect(server.server_address[:2])
            stalled.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode()))
            assert started.wait(10)
            reply = openai_client(server.base_url, timeout=30).completions.create(model="letters", prompt="x",
                                                                                  max_tokens=3, temperature=0)
    finally:
        hook.remove()
    assert reply.usage.completion_tokens == 3 and len(steps) == 250 + 3


def test_streamed_text_stays_a_start_of_the_answer_when_spaces_are_cleaned_up():
    """A tokenizer that cleans up spaces (``clean_up_tokenization_spaces``: a WordPiece one, or a BPE one forced to)
    decodes "It '" as it is, then "It 's" as "It's": the streamed "It '" would not start the answer."""
    tokenizer = build_byte_tokenizer()
    ids = tokenizer.encode("It 's fine , is it ? I 'm sure .", add_special_tokens=False)

    def decode(span: list[int]) -> str:  # transformers' own clean-up, as decode applies it
        return tokenizer.clean_up_tokenization(tokenizer.decode(span))

    final = decode(ids)
    assert final == "It's fine, is it? I'm sure."
    for end in range(len(ids) + 1):
        assert final.startswith(settled(decode(ids[:end]), []))

"""What a request waiting for the speech student holds and does: its client gone while it waited
for another request's audio decode, it is not decoded; its features are computed one request at a
time; its body and their JSON are let go once parsed. Real servers on loopback."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import tracemalloc
from urllib.parse import urlparse

import pytest

from speechsum.serving import speech_backend
from speechsum.serving.cli import build_server
from speechsum.serving.protocol import ChatOutput, ChatRequest, Generation
from speechsum.utils.remote import openai_client
from tests.servers import ThreadedServer, serve_in_thread
from tests.serving.export_fixtures import audio_request, sine_wav


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


@pytest.mark.parametrize(("lock", "work", "max_tokens"), [
    # waiting for another request's audio decode (one at a time): before, decoded once its turn came
    ("_decoding", "decode_audio", 2),
    # a max_tokens past the context by the placeholder count: the pass that counts its positions waits for the
    # model; before, run once its turn came
    ("_lock", "prompt_positions", 2040),
])
def test_a_request_whose_client_left_while_it_waited_is_not_worked_on(student_backend, monkeypatch, caplog, lock,
                                                                       work, max_tokens):
    """Before: a request whose client had closed its connection while it waited for a lock was decoded (or its
    positions counted) once the lock was free; only the generation was skipped."""
    done = []
    original = getattr(speech_backend, work)
    monkeypatch.setattr(speech_backend, work, lambda *a, **k: done.append(1) or original(*a, **k))
    body = json.dumps({"model": "student", "max_tokens": max_tokens, "messages": audio_request("hi")}).encode()
    with serve_in_thread(student_backend) as url, caplog.at_level(logging.INFO, logger="speechsum.serving.cli"):
        parts = urlparse(url)
        with getattr(student_backend, lock):  # another request holds it
            with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                             b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                time.sleep(0.3)  # the request now waits for the lock
            # its client gave up before the lock was free
        _wait_for(lambda: '"POST /v1/chat/completions" 499' in caplog.text)
        assert done == []
        assert "the client closed its connection while its request waited; dropped unserved (1 so far)" in caplog.text
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:  # a client that stays
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            answer = sock.recv(64)
    assert answer.startswith(b"HTTP/1.1 200" if max_tokens == 2 else b"HTTP/1.1 400") and done == [1]


def test_waiting_requests_compute_their_features_one_at_a_time(student_backend, monkeypatch):
    """Before: each request counted its prompt from its clip's log-mel features (~200 MB for 600 s) outside
    any lock, so every request waiting for the model held them at once (6 clips of 600 s: +2.4 GB)."""
    encode, running, most = student_backend.model.processor.encode_prompts, [0], [0]

    def counted(*args):
        running[0] += 1
        most[0] = max(most[0], running[0])
        time.sleep(0.1)
        try:
            return encode(*args)
        finally:
            running[0] -= 1

    monkeypatch.setattr(student_backend.model.processor, "encode_prompts", counted)
    server = build_server(student_backend, port=0)
    client = openai_client(server.base_url)
    replies = []
    ask = lambda: replies.append(client.chat.completions.create(model="student", max_tokens=2,  # noqa: E731
                                                                 messages=audio_request("hi")))
    with ThreadedServer(server):
        with student_backend._lock:  # the model busy with another request: these three wait
            threads = [threading.Thread(target=ask) for _ in range(3)]
            for thread in threads:
                thread.start()
            _wait_for(lambda: server.queue.admitted == 3)
            time.sleep(0.5)  # each has counted its prompt by now
            assert most == [1]
        for thread in threads:
            thread.join(timeout=30)
    assert [reply.choices[0].finish_reason in ("stop", "length") for reply in replies] == [True] * 3


class _MemoryBackend:
    """Reads audio; answers "ok" after noting the memory in use while the request is served."""

    reads_audio, model_name, max_model_len = True, "probe", None

    def __init__(self) -> None:
        self.held: list[int] = []

    def chat(self, request: ChatRequest) -> ChatOutput:
        self.held.append(tracemalloc.get_traced_memory()[0])
        return ChatOutput(1, [Generation("ok", "stop", None, 1)])


def test_a_request_waiting_for_the_model_holds_its_audio_once():
    """Before: the request's body and its JSON (each the size of the base64 audio) stayed referenced while it
    waited for and was served by the model: 3.7x the file instead of 1x."""
    backend = _MemoryBackend()
    wav = sine_wav(seconds=60.0)  # 1.9 MB
    with serve_in_thread(backend) as url:
        body = json.dumps({"model": "probe", "messages": audio_request("hi", wav)}).encode()
        parts = urlparse(url)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                del body
                answer = b""
                while part := sock.recv(65536):
                    answer += part
        finally:
            tracemalloc.stop()
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert len(wav) < backend.held[0] - before < 1.5 * len(wav)


def test_a_speech_answer_stops_once_its_client_is_gone(student_backend, monkeypatch, caplog):
    """Before: a client gone mid-generation (a Ctrl-C, a client timeout) held the model until max_tokens for nobody,
    the requests behind it waiting. The 3rd token's step waits until the client has closed its connection."""
    steps, closed = [], threading.Event()
    generate = speech_backend.summarize_waveforms

    def stepped(*args, step_check, **kwargs):
        def check(tokens):
            steps.append(1)
            if len(steps) == 3:
                assert closed.wait(10)
                time.sleep(0.1)  # its end reaches the server
            return step_check(tokens)
        return generate(*args, step_check=check, **kwargs)

    monkeypatch.setattr(speech_backend, "summarize_waveforms", stepped)
    body = json.dumps({"model": "student", "max_tokens": 40, "temperature": 0, "stream": True,
                       "messages": audio_request("hi")}).encode()
    with serve_in_thread(student_backend) as url, caplog.at_level(logging.INFO, logger="speechsum.serving.cli"):
        parts = urlparse(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            _wait_for(lambda: len(steps) >= 3)
        closed.set()
        _wait_for(lambda: '"POST /v1/chat/completions" 499' in caplog.text)
        assert "the client closed its connection while its answer was generated; stopped after 2 tokens (1 so far)" \
            in caplog.text
        assert len(steps) == 3
        steps.clear()
        reply = openai_client(url).chat.completions.create(model="student", max_tokens=40, temperature=0,
                                                           messages=audio_request("hi"))
    assert reply.usage.completion_tokens == 40 and len(steps) == 40  # the model is free again

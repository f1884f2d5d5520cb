"""A speech student decodes one request's audio at a time: a clip's samples at its own rate (a small FLAC of
600 s at 655 kHz decodes to 1.5 GB) are in memory once, not once per request waiting for the model (before
2026-12-07 every waiting request decoded at once). Concurrent requests on the real server on loopback."""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
import time
from urllib.parse import urlparse

import numpy as np
import soundfile as sf

import speechsum.serving.speech_backend as speech_backend


def _body() -> str:
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * 440 * np.arange(8_000) / 16_000), 16_000, format="WAV")
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(buffer.getvalue()).decode(), "format": "wav"}}
    return json.dumps({"model": "student", "max_tokens": 1, "messages": [{"role": "user", "content": [part]}]})


def test_concurrent_requests_decode_their_audio_one_at_a_time(speech_url, monkeypatch):
    decoding, most, lock = 0, 0, threading.Lock()
    load_audio = speech_backend.load_audio

    def counted(*args, **kwargs):
        nonlocal decoding, most
        with lock:
            decoding += 1
            most = max(most, decoding)
        time.sleep(0.3)  # a long clip's decode
        try:
            return load_audio(*args, **kwargs)
        finally:
            with lock:
                decoding -= 1

    monkeypatch.setattr(speech_backend, "load_audio", counted)
    parsed, body, statuses = urlparse(speech_url), _body(), []

    def post() -> None:
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        statuses.append(connection.getresponse().status)
        connection.close()

    threads = [threading.Thread(target=post) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert (sorted(statuses), most) == ([200, 200, 200], 1)

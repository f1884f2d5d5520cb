"""A speech student's reply to audio the model hears nothing in: a 200 with the summary, as before, and a
``warnings`` entry the client can read (before 2026-12-07 only the server's log said so)."""

from __future__ import annotations

import base64
import json
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from speechsum.utils.remote import openai_client

MODEL = "student"
PARAM = "messages[0].content[0].input_audio"
SILENT = (f"{PARAM} (a wav file): every sample is 0 (digital silence, 0.50 s): there is no speech in it to summarise; "
          "check the recording (a muted or failed capture?) or drop it")


@pytest.fixture(scope="module")
def url(speech_url):
    return speech_url


def _messages(samples: np.ndarray, tmp_path) -> list[dict]:
    path = tmp_path / "clip.wav"
    sf.write(path, samples, 16_000, subtype="PCM_16")
    data = base64.b64encode(path.read_bytes()).decode()
    return [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}]}]


def test_silent_audio_is_answered_with_a_warning_the_client_sees(url, tmp_path) -> None:
    reply = openai_client(url).chat.completions.create(model=MODEL, messages=_messages(np.zeros(8_000), tmp_path),
                                                       max_tokens=2, temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length")  # still answered, in OpenAI's shape
    assert reply.model_extra["warnings"] == [{"code": "silent_audio", "param": PARAM, "message": SILENT}]


def test_a_streamed_reply_carries_the_warning_in_its_first_chunk(url, tmp_path) -> None:
    stream = openai_client(url).chat.completions.create(model=MODEL, messages=_messages(np.zeros(8_000), tmp_path),
                                                        max_tokens=2, temperature=0, stream=True)
    chunks = list(stream)
    assert [c.model_extra.get("warnings") for c in chunks] == [[{"code": "silent_audio", "param": PARAM,
                                                                   "message": SILENT}], None]


def test_audio_with_sound_has_no_warnings_field(url, tmp_path) -> None:
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8_000) / 16_000)
    body = json.dumps({"model": MODEL, "messages": _messages(tone, tmp_path), "max_tokens": 2}).encode()
    request = urllib.request.Request(f"{url}/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.loads(response.read())
    assert set(reply) == {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}

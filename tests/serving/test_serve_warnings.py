"""A speech student's reply to audio the model hears nothing in, or whose ``format`` is not its file's: a 200
with the summary, as before, and a ``warnings`` entry the client can read (before 2026-12-07 only the server's
log said so, or, of a wrong format, nothing)."""

from __future__ import annotations

import base64
import json
import urllib.request

import numpy as np
import soundfile as sf

from speechsum.utils.remote import openai_client

MODEL = "student"
PARAM = "messages[0].content[0].input_audio"
SILENT = (f"{PARAM} (a wav file): every sample is 0 (digital silence, 0.50 s): there is no speech in it to summarise; "
          "check the recording (a muted or failed capture?) or drop it")


def _messages(samples: np.ndarray, tmp_path, file: str = "clip.wav", fmt: str = "wav",
              subtype: str = "PCM_16") -> list[dict]:
    path = tmp_path / file
    sf.write(path, samples, 16_000, subtype=subtype)
    data = base64.b64encode(path.read_bytes()).decode()
    return [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": fmt}}]}]


TONE = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8_000) / 16_000)


def test_silent_audio_is_answered_with_a_warning_the_client_sees(speech_url, tmp_path) -> None:
    raw = openai_client(speech_url).chat.completions.with_raw_response.create(
        model=MODEL, messages=_messages(np.zeros(8_000), tmp_path), max_tokens=2, temperature=0)
    reply = raw.parse()
    assert reply.choices[0].finish_reason in ("stop", "length")  # still answered, in OpenAI's shape
    assert reply.model_extra["warnings"] == [{"code": "silent_audio", "param": PARAM, "message": SILENT}]
    assert raw.headers["warning"] == f'199 speechsum-serve "silent_audio: {SILENT}"'  # curl -i shows it too


def test_a_streamed_reply_carries_the_warning_in_its_first_chunk(speech_url, tmp_path) -> None:
    raw = openai_client(speech_url).chat.completions.with_raw_response.create(
        model=MODEL, messages=_messages(np.zeros(8_000), tmp_path), max_tokens=12, temperature=0, stream=True)
    chunks = list(raw.parse())
    assert [c.model_extra.get("warnings") for c in chunks] == [[{"code": "silent_audio", "param": PARAM,
                                                                   "message": SILENT}]] + [None] * (len(chunks) - 1)
    assert raw.headers["warning"] == f'199 speechsum-serve "silent_audio: {SILENT}"'  # sent as the text is generated


def test_float_audio_far_over_full_scale_is_answered_with_a_loud_audio_warning(speech_url, tmp_path) -> None:
    """A manifest load warned about a float clip peaking at 4 (12 dB over full scale); serve read it without a word."""
    loud = (TONE * 4 / 0.3).astype(np.float32)
    reply = openai_client(speech_url).chat.completions.create(
        model=MODEL, messages=_messages(loud, tmp_path, subtype="FLOAT"), max_tokens=2, temperature=0)
    assert reply.model_extra["warnings"] == [{
        "code": "loud_audio", "param": PARAM,
        "message": f"{PARAM} (a wav file): float samples up to 4, 12 dB over full scale (1.0): read as they are, louder "
                   "than any recording; normalise it (e.g. `sox --norm in.wav out.wav`) if that was not meant"}]


def test_audio_with_sound_has_no_warnings_field(speech_url, tmp_path) -> None:
    body = json.dumps({"model": MODEL, "messages": _messages(TONE, tmp_path), "max_tokens": 2}).encode()
    request = urllib.request.Request(f"{speech_url}/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.loads(response.read())
        assert response.headers["Warning"] is None
    assert set(reply) == {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}


def test_a_format_that_is_not_the_files_is_read_as_its_bytes_with_a_warning(speech_url, tmp_path) -> None:
    client = openai_client(speech_url)
    reply = client.chat.completions.create(model=MODEL, messages=_messages(TONE, tmp_path, "clip.flac", "wav"),
                                           max_tokens=2, temperature=0)
    expected = client.chat.completions.create(model=MODEL, messages=_messages(TONE, tmp_path, "clip.flac", "flac"),
                                              max_tokens=2, temperature=0)
    assert reply.choices[0].message.content == expected.choices[0].message.content  # the same audio was read
    assert "warnings" not in expected.model_extra
    assert reply.model_extra["warnings"] == [{
        "code": "format_mismatch", "param": f"{PARAM}.format",
        "message": f"{PARAM}: sent as wav ({PARAM}.format), but the file is FLAC audio: it was read as FLAC, as its "
                   "bytes say; send the file's own format."}]


def test_an_audio_url_whose_media_type_is_not_its_files_names_the_url(speech_url, tmp_path) -> None:
    data = _messages(TONE, tmp_path)[0]["content"][0]["input_audio"]["data"]
    part = {"type": "audio_url", "audio_url": {"url": f"data:audio/mpeg;base64,{data}"}}
    reply = openai_client(speech_url).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": [part]}], max_tokens=2)
    where = "messages[0].content[0].audio_url"
    assert reply.model_extra["warnings"] == [{
        "code": "format_mismatch", "param": f"{where}.url",
        "message": f"{where}: sent as mp3 ({where}.url), but the file is WAV audio: it was read as WAV, as its bytes "
                   "say; send the file's own format."}]


def test_the_warning_header_quotes_each_warning_in_ascii() -> None:
    from speechsum.serving.openai_format import warning_header

    assert warning_header([]) == {}
    assert warning_header([{"code": "a", "message": 'say "hi" \\ é\n'}, {"code": "b", "message": "x"}]) == {
        "Warning": '199 speechsum-serve "a: say \\"hi\\" \\\\ ??", 199 speechsum-serve "b: x"'}

"""Content parts of a chat message with a field their type does not take: a 400 naming it (before
2026-12-07 the field was dropped unread: a text part's ``input_audio`` lost its audio, an
``input_audio.sample_rate`` was not applied); an ``audio_url`` of no stated media type, read by its bytes;
against the tiny student on loopback."""

from __future__ import annotations

import base64
import http.client
import io
import json
from urllib.parse import urlparse

import numpy as np
import pytest
import soundfile as sf

MODEL = "student"


def _wav_base64() -> str:
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * 440 * np.arange(8_000) / 16_000), 16_000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


AUDIO = {"data": _wav_base64(), "format": "wav"}


def _post(url: str, parts: list[dict]) -> tuple[int, dict]:
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    body = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": parts}]}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.status, json.loads(response.read())
    connection.close()
    return answer


@pytest.mark.parametrize(("parts", "param", "message"), [
    ([{"type": "text", "text": "Summarize", "input_audio": AUDIO}], "messages[0].content[0].input_audio",
     'messages[0].content[0] has an unrecognized field "input_audio": a text part takes type, text; remove it.'),
    ([{"type": "input_audio", "input_audio": AUDIO, "text": "Summarize"}], "messages[0].content[0].text",
     'messages[0].content[0] has an unrecognized field "text": an input_audio part takes type, input_audio; remove it.'),
    ([{"type": "input_audio", "input_audio": {**AUDIO, "sample_rate": 8000}}],
     "messages[0].content[0].input_audio.sample_rate",
     'messages[0].content[0].input_audio has an unrecognized field "sample_rate": an input_audio object takes data, '
     "format; remove it."),
    ([{"type": "text", "text": "hi"}, {"type": "audio_url", "audio_url": {"url": f"data:audio/wav;base64,{AUDIO['data']}",
                                                                            "format": "mp3"}}],
     "messages[0].content[1].audio_url.format",
     'messages[0].content[1].audio_url has an unrecognized field "format": an audio_url object takes url; remove it.'),
])
def test_a_part_field_its_type_does_not_take_is_a_400_naming_it(speech_url, parts, param, message):
    assert _post(speech_url, parts) == (400, {"error": {"message": message, "type": "invalid_request_error",
                                                        "param": param, "code": None}})


@pytest.mark.parametrize(("data", "got"), [([82, 73, 70, 70], "an array"), (5, "a number"),
                                           ({"base64": "UklGRg=="}, "an object")])
def test_input_audio_data_that_is_not_a_string_is_named(speech_url, data, got):
    """Before: "messages[0].content[0].input_audio must be an object with 'data' …" of an object with data."""
    param = "messages[0].content[0].input_audio.data"
    assert _post(speech_url, [{"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}]) == (400, {
        "error": {"message": f"{param} must be a string (the file's bytes in base64, e.g. `base64 -w0 clip.wav`), got "
                             f"{got}.", "type": "invalid_request_error", "param": param, "code": None}})


def test_parts_with_only_their_fields_are_answered(speech_url):
    status, reply = _post(speech_url, [{"type": "input_audio", "input_audio": AUDIO}, {"type": "text", "text": "hi"}])
    assert (status, reply["object"], len(reply["choices"])) == (200, "chat.completion", 1)


@pytest.mark.parametrize("media_type", ["application/octet-stream", ""])
def test_an_audio_url_of_no_stated_type_is_read_by_its_bytes(speech_url, media_type):
    """A browser's readAsDataURL of a Blob without a type; before: a 400 "media type … is not audio"."""
    url = f"data:{media_type};base64,{AUDIO['data']}"
    status, reply = _post(speech_url, [{"type": "audio_url", "audio_url": {"url": url}}])
    assert (status, reply["object"], "warnings" in reply) == (200, "chat.completion", False)  # read as the WAV it is


def test_an_audio_url_of_no_stated_type_that_is_no_audio_is_a_400(speech_url):
    field = "messages[0].content[0].audio_url.url"
    url = f"data:application/octet-stream;base64,{base64.b64encode(b'hello, world').decode()}"
    assert _post(speech_url, [{"type": "audio_url", "audio_url": {"url": url}}]) == (400, {"error": {
        "message": f"{field}: media type 'application/octet-stream' does not say the format, and the bytes are not WAV, "
                   "MP3, FLAC or OGG audio; send one of those as audio/wav, audio/mpeg, audio/flac or audio/ogg.",
        "type": "invalid_request_error", "param": field, "code": None}})


@pytest.mark.parametrize("data, problem", [
    ("UklG!kYA", 'character "!" at position 4 (from 0) is not a base64 character'),
    ("UklG\nRkY-_A==", 'character "-" at position 8 (from 0) is not a base64 character (URL-safe base64: encode with + and / '
                     "instead of - and _)"),
    ("UklGRg==UklGRg==", "the '=' padding at position 6 is followed by more data at position 8 (two encodings joined, or "
                         "'=' inside the text): send one file's base64"),
    ("UklGRkY", "its 7 base64 characters, white space not counted, are not a multiple of 4: it is cut short, or its '=' "
                "padding is missing"),
    ("UklGRg=", "its 6 base64 characters take 2 '=' of padding, not 1"),
])
def test_bad_base64_audio_is_named_with_where_it_goes_wrong(speech_url, data, problem):
    """Before: binascii's words alone ("Only base64 data is allowed", "Incorrect padding"): no position, and the
    usual cause (URL-safe base64, a text cut short, two files joined) unsaid. The audio is the second part."""
    status, body = _post(speech_url, [{"type": "text", "text": "Summarise."},
                                      {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}])
    field = "messages[0].content[1].input_audio.data"
    assert (status, body["error"]["param"]) == (400, field)
    assert body["error"]["message"] == (f"{field} is not valid standard base64 ({problem}): encode the file's bytes "
                                        "with the +/ alphabet and = padding, e.g. `base64 -w0 clip.wav`.")


def test_a_speech_request_without_its_one_audio_message_names_the_message(speech_url):
    """Before: "needs exactly one user message with exactly one input_audio part; got 2 messages and 1 audio parts",
    param 'messages', for both: which message to change was left to guess."""
    audio = {"type": "input_audio", "input_audio": AUDIO}
    status, body = _post(speech_url, [{"type": "text", "text": "Summarise."}])
    assert (status, body["error"]["param"]) == (400, "messages[0].content")
    assert body["error"]["message"].startswith("messages[0].content: model 'student' summarises audio, and this message "
                                               "has no input_audio part; add one")
    parsed = urlparse(speech_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    messages = [{"role": "user", "content": [audio]}, {"role": "user", "content": "Summarise."}]
    connection.request("POST", "/v1/chat/completions", json.dumps({"model": MODEL, "messages": messages}),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    error = json.loads(response.read())["error"]
    connection.close()
    assert (response.status, error["param"]) == (400, "messages[1]")
    assert error["message"] == ("messages[1]: a speech student answers one user message (its input_audio part, and the "
                                "instruction as text parts), and this request has 2; put the input_audio part and the "
                                "instruction in one message.")


def test_a_text_part_holding_a_control_character_is_a_400_naming_it(speech_url):
    """Before: ESC (terminal colour codes) or NUL went into the prompt, which a manifest's instruction may not hold."""
    status, body = _post(speech_url, [{"type": "input_audio", "input_audio": AUDIO},
                                      {"type": "text", "text": "Summarise\x1b[0m."}])
    assert (status, body["error"]["param"]) == (400, "messages[0].content")
    assert body["error"]["message"] == ("messages[0]: the text part holds the control character U+001B at character 9 "
                                        "(a binary file's bytes or terminal colour codes pasted in?): remove it, or "
                                        "replace it with the character meant.")


def test_text_parts_showing_nothing_are_the_default_instruction(speech_url):
    """Zero-width spaces alone are a blank instruction, as white space is; before, they were the prompt's text."""
    _, without = _post(speech_url, [{"type": "input_audio", "input_audio": AUDIO}])
    _, invisible = _post(speech_url, [{"type": "input_audio", "input_audio": AUDIO},
                                      {"type": "text", "text": "\u200b\u200b \ufeff"}])
    assert invisible["usage"]["prompt_tokens"] == without["usage"]["prompt_tokens"]

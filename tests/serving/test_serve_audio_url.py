"""vLLM's ``audio_url`` content part with a ``data:`` URL, served by a speech student as the same file in an
``input_audio`` part (before 2026-12-06 a 400 telling vLLM-style clients to rewrite their request)."""

from __future__ import annotations

import base64

import openai
import pytest

from speechsum.serving.export import load_exported
from speechsum.serving.speech_backend import SpeechBackend
from speechsum.utils.remote import openai_client
from tests.servers import serve_in_thread
from tests.serving.export_fixtures import write_wavs

MODEL = "student"


@pytest.fixture(scope="module")
def served(composed_export, tmp_path_factory):
    wav = write_wavs(tmp_path_factory.mktemp("audio"))[0].read_bytes()
    with serve_in_thread(SpeechBackend(load_exported(composed_export), MODEL), max_audio_bytes=len(wav) + 10) as url:
        yield openai_client(url), wav


def _ask(client, part: dict):
    return client.chat.completions.create(model=MODEL, temperature=0, max_tokens=6, messages=[
        {"role": "user", "content": [part, {"type": "text", "text": "List the action items"}]}])


def test_an_audio_url_data_url_reads_as_the_same_input_audio(served):
    client, wav = served
    encoded = base64.b64encode(wav).decode()
    reference = _ask(client, {"type": "input_audio", "input_audio": {"data": encoded, "format": "wav"}})
    for media_type in ("audio/wav", "audio/x-wav", "AUDIO/WAV"):
        reply = _ask(client, {"type": "audio_url", "audio_url": {"url": f"data:{media_type};base64,{encoded}"}})
        assert reply.choices[0].message.content == reference.choices[0].message.content
        assert reply.usage.model_dump() == reference.usage.model_dump()


URL_FIELD = "messages[0].content[0].audio_url.url"


@pytest.mark.parametrize(("url", "message"), [
    ("https://example.com/a.wav", f"{URL_FIELD}: this server does not download audio (https URL); send the file "
                                  "inline as a data:audio/wav;base64,… URL or an input_audio part."),
    ("data:audio/wav,RIFF", f"{URL_FIELD} must be a base64 data: URL (data:audio/wav;base64,…), got "
                            "'data:audio/wav,RIFF'."),
    # what to do, too (before: only what it takes): a browser's MediaRecorder records webm, a phone m4a
    ("data:audio/webm;base64,UklGRg==", f"{URL_FIELD}: media type 'audio/webm' is not audio this server reads; use "
                                        "audio/wav, audio/mpeg, audio/flac or audio/ogg: webm audio is not read here; "
                                        "convert it first, e.g. `ffmpeg -i clip.webm clip.wav`."),
    ("data:audio/x-m4a;base64,UklGRg==", f"{URL_FIELD}: media type 'audio/x-m4a' is not audio this server reads; use "
                                         "audio/wav, audio/mpeg, audio/flac or audio/ogg: m4a audio is not read here; "
                                         "convert it first, e.g. `ffmpeg -i clip.m4a clip.wav`."),
    # another name of a format read here (before: "ogg audio is not read here; convert it first, e.g. `ffmpeg -i
    # clip.ogg clip.wav`")
    ("data:audio/x-ogg;base64,UklGRg==", f"{URL_FIELD}: media type 'audio/x-ogg' is not audio this server reads; use "
                                         "audio/wav, audio/mpeg, audio/flac or audio/ogg; \"x-ogg\" names Ogg audio, "
                                         "which is read here: send audio/ogg."),
    ("data:text/plain;base64,UklGRg==", f"{URL_FIELD}: media type 'text/plain' is not audio this server reads; use "
                                        "audio/wav, audio/mpeg, audio/flac or audio/ogg."),
    ("data:audio/wav;base64,not base64!", f"{URL_FIELD} is not valid standard base64 (character \"!\" at position 32 "
                                          "(from 0) is not a base64 character): encode the file's bytes with the +/ "
                                          "alphabet and = padding, e.g. `base64 -w0 clip.wav`."),
    # was "… is empty." of a URL that is not, with nothing of what to send
    ("data:audio/wav;base64,", f"{URL_FIELD} holds no audio: its base64 data is empty; send the audio file's bytes "
                               "in base64, e.g. `base64 -w0 clip.wav`."),
])
def test_an_audio_url_this_server_cannot_read_is_named(served, url, message):
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(served[0], {"type": "audio_url", "audio_url": {"url": url}})
    assert (caught.value.body["message"], caught.value.body["param"]) == (message, URL_FIELD)


def test_an_audio_url_over_the_size_limit_is_a_413_before_decoding(served):
    client, wav = served
    with pytest.raises(openai.APIStatusError) as caught:
        _ask(client, {"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64," + "A" * (len(wav) * 2)}})
    assert caught.value.status_code == 413 and caught.value.body["code"] == "audio_too_large"


def test_a_speech_student_refuses_to_leave_out_its_generation_prompt(served):
    client, wav = served
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, max_tokens=2, extra_body={"add_generation_prompt": False},
                                       messages=[{"role": "user", "content": [part]}])
    assert caught.value.body["message"] == ("'add_generation_prompt': false is not supported by a speech student: its "
                                            "prompt format is fixed in training.")


def test_a_second_audio_part_is_named_as_the_one_to_leave_out(served):
    """Before: param "messages" and "got 1 messages and 2 audio parts", which part to drop left to guess."""
    client, wav = served
    encoded = base64.b64encode(wav).decode()
    parts = [{"type": "input_audio", "input_audio": {"data": encoded, "format": "wav"}},
             {"type": "text", "text": "and this one"},
             {"type": "audio_url", "audio_url": {"url": f"data:audio/wav;base64,{encoded}"}}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": parts}])
    assert (caught.value.body["message"], caught.value.body["param"]) == (
        "messages[0].content[2].audio_url: a speech student reads one audio part per request, and this request holds "
        "2; send one clip per request.", "messages[0].content[2].audio_url")

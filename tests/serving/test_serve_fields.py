"""Request fields ``speechsum serve`` would not apply are refused by name, never ignored (no model:
``ScriptedChatBackend``; the official openai client and raw sockets on loopback)."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlparse

import openai
import pytest

from speechsum.utils.remote import openai_client
from tests.servers import ScriptedChatBackend, serve_in_thread

MODEL = "scripted"
USER = [{"role": "user", "content": "hi"}]


def _refusal(create, **kwargs) -> dict:
    with pytest.raises(openai.BadRequestError) as caught:
        create(model=MODEL, **kwargs)
    assert caught.value.status_code == 400
    return caught.value.body


@pytest.mark.parametrize(("chat", "kwargs", "message", "param"), [
    (True, dict(messages=USER, extra_body={"foo": 1}),
     "Unrecognized request argument supplied: 'foo'. speechsum serve does not read it on /v1/chat/completions; "
     "remove it (the fields it reads are listed in docs/serve.md).", "foo"),
    (False, dict(prompt="hi", extra_body={"max_completion_tokens": 2}),  # was ignored: 16 tokens came back
     "Unrecognized request argument supplied: 'max_completion_tokens'. speechsum serve does not read it on "
     "/v1/completions; remove it (the fields it reads are listed in docs/serve.md).", "max_completion_tokens"),
    (True, dict(messages=USER, extra_body={"echo": True}),
     "Unrecognized request argument supplied: 'echo'. speechsum serve does not read it on /v1/chat/completions; "
     "remove it (the fields it reads are listed in docs/serve.md).", "echo"),
    (True, dict(messages=USER, modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"}),
     "'modalities' is not supported by speechsum serve: it answers with text only; leave 'modalities' out or send "
     "[\"text\"]; got [\"text\", \"audio\"].", "modalities"),
    (True, dict(messages=USER, stream_options={"include_usage": True}),
     "'stream_options' is only allowed when 'stream' is true.", "stream_options"),
    (True, dict(messages=USER, stream=True, stream_options={"include_usage": 1}),
     "'stream_options' takes only {\"include_usage\": true or false, \"include_obfuscation\": true or false}; got "
     "{\"include_usage\": 1}.", "stream_options"),
    (True, dict(messages=USER, reasoning_effort="low"),
     "'reasoning_effort' is not supported by speechsum serve: the served model is not an OpenAI reasoning model; "
     "got \"low\".", "reasoning_effort"),
    (False, dict(prompt="hi", extra_body={"stream": 0}), "'stream' must be true or false, got 0.", "stream"),
    (True, dict(messages=USER, max_tokens=0), "'max_tokens' must be at least 1, got 0.", "max_tokens"),
    (True, dict(messages=USER, extra_body={"model": 5}),  # was a 404 "The model '5' does not exist"
     "'model' must be a string (the served model's name, 'scripted'), got a number.", "model"),
    (True, dict(messages=USER, max_completion_tokens=0), "'max_completion_tokens' must be at least 1, got 0.",
     "max_completion_tokens"),
    # both names, two values: max_completion_tokens won unseen (before)
    (True, dict(messages=USER, max_tokens=3, max_completion_tokens=5),
     "'max_completion_tokens' is 5 and 'max_tokens' is 3: send one of them ('max_tokens' is the older name of "
     "'max_completion_tokens').", "max_tokens"),
    # the value sent, in JSON (before: "got a number", "got a string": which number, why a string?)
    (True, dict(messages=USER, max_tokens=2.5), "'max_tokens' must be an integer, got 2.5.", "max_tokens"),
    (True, dict(messages=USER, extra_body={"n": "2"}), "'n' must be an integer, got \"2\".", "n"),
    (True, dict(messages=USER, extra_body={"temperature": "0.7"}), "'temperature' must be a number, got \"0.7\".",
     "temperature"),
    (False, dict(prompt="hi", extra_body={"echo": "yes"}), "'echo' must be true or false, got \"yes\".", "echo"),
    # vLLM's audio part is read (tests/serving/test_serve_audio_url.py); a model without audio says so
    (True, dict(messages=[{"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": "data:audio/wav;"
                                                                                         "base64,UklGRg=="}}]}]),
     "messages[0].content[0].audio_url: this model does not read audio; serve a speech student exported with "
     "`speechsum export` to send input_audio.", "messages[0].content[0].audio_url"),
    # in JSON's words (before: "got None" for a missing role, "got ['user']" for an array)
    (True, dict(messages=[{"content": "hi"}]),
     "messages[0].role must be one of system, developer, user, assistant, tool; 'role' is missing.", "messages[0].role"),
    (True, dict(messages=[{"role": ["user"], "content": "hi"}]),
     "messages[0].role must be one of system, developer, user, assistant, tool; got [\"user\"].", "messages[0].role"),
    (True, dict(messages=[{"role": None, "content": "hi"}]),
     "messages[0].role must be one of system, developer, user, assistant, tool; got null.", "messages[0].role"),
])
def test_fields_the_server_would_not_apply_are_refused_by_name(served, chat, kwargs, message, param):
    backend, url = served
    client = openai_client(url)
    before = backend.count
    body = _refusal(client.chat.completions.create if chat else client.completions.create, **kwargs)
    assert (body["message"], body["param"]) == (message, param)
    assert backend.count == before  # refused before the backend ran


def test_bookkeeping_fields_are_accepted_and_ignored(served):
    _, url = served
    reply = openai_client(url).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi", "name": "ana"}], user="u-1", metadata={"run": "a"},
        store=False, service_tier="auto", modalities=["text"], parallel_tool_calls=False,
        prediction={"type": "content", "content": "ok"})
    assert reply.choices[0].message.content == "ok"
    assert openai_client(url).completions.create(model=MODEL, prompt="hi", user="u-1").choices[0].text == "ok"


@pytest.mark.parametrize(("prompt", "message"), [
    ([1, "a"], "'prompt[1]' must be a token id (an integer), as 'prompt[0]' is; got \"a\"."),
    ([1, 2.0], "'prompt[1]' must be a token id (an integer), as 'prompt[0]' is; got 2.0."),
    (["a", ["b"]], "'prompt[1]' must be a string, as 'prompt[0]' is; got [\"b\"]."),
    ([[1], [2, True]], "'prompt[1][1]' must be a token id (an integer), got true."),
    ([[1], []], "'prompt[1]' is an empty token id array."),
    ([None], "'prompt[0]' must be a string, a token id or a token id array; got null."),
])
def test_a_wrong_prompt_element_is_named(served, prompt, message):
    _, url = served
    body = _refusal(openai_client(url).completions.create, prompt=prompt)
    assert (body["message"], body["param"]) == (message, "prompt")


def test_text_parts_reach_the_model_on_separate_lines_as_vllm_joins_them():
    """Before: joined with nothing, so parts "Summarize the meeting." and "Transcript: we met." reached the
    chat template as "Summarize the meeting.Transcript: we met." (vLLM joins them with a line break)."""
    with serve_in_thread(ScriptedChatBackend(lambda messages: messages[0]["content"])) as url:
        parts = [{"type": "text", "text": "Summarize the meeting."}, {"type": "text", "text": "Transcript: we met."}]
        reply = openai_client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": parts}])
    assert reply.choices[0].message.content == "Summarize the meeting.\nTranscript: we met."


@pytest.mark.parametrize(("part", "what"), [
    ({"type": "image_url", "image_url": {"url": "http://x/y.png"}}, 'type "image_url"'),
    ({"text": "b"}, "of no type (its 'type' is missing)"),  # before: 'is type null', as if null had been sent
])
# a text model was told input_audio and audio_url parts were supported, then refused them: it reads no audio
@pytest.mark.parametrize(("reads_audio", "supported"), [
    (False, "this model reads text parts only"),
    (True, "only text, input_audio and audio_url (a data: URL) parts are supported"),
])
def test_an_unsupported_content_part_is_named(part, what, reads_audio, supported):
    backend = ScriptedChatBackend(lambda messages: "ok")
    backend.reads_audio = reads_audio
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"}, part]}]
    with serve_in_thread(backend) as url:
        body = _refusal(openai_client(url).chat.completions.create, messages=messages)
    assert body["message"] == f"messages[0].content[1] is {what}: {supported}."
    assert body["param"] == "messages[0].content[1].type"


def test_a_body_cut_short_of_its_content_length_is_not_run(served):
    """A client that closed mid-body: the bytes that came parse as a complete request and were run."""
    backend, url = served
    parts = urlparse(url)
    body = json.dumps({"prompt": "hi", "max_tokens": 2}).encode()
    before = backend.count
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (len(body) + 50)
                     + body)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.makefile("rb").read().decode()
    assert answer.startswith("HTTP/1.1 400") and backend.count == before
    message = json.loads(answer.split("\r\n\r\n", 1)[1])["error"]["message"]
    assert message == (f"Request body ended after {len(body)} of the {len(body) + 50} bytes its Content-Length "
                       "announced: send the whole body.")


def test_a_post_without_content_length_is_411_and_its_body_never_runs(served):
    """Before: 400 "Empty request body" (the body was there), and the body was read as the next
    request on the connection."""
    backend, url = served
    parts = urlparse(url)
    before = backend.count
    smuggled = json.dumps({"prompt": "hi"}).encode()
    next_request = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n" + next_request)
        answer = sock.makefile("rb").read().decode()  # the server closes the connection after its 411
    assert answer.startswith("HTTP/1.1 411") and answer.count("HTTP/1.1") == 1 and backend.count == before
    assert json.loads(answer.split("\r\n\r\n", 1)[1])["error"]["message"] == (
        "A POST needs a Content-Length header (the body's size in bytes) or 'Transfer-Encoding: chunked'.")
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:  # not a POST route: its 405
        sock.sendall(b"POST /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" + next_request)
        answer = sock.makefile("rb").read().decode()
    assert answer.startswith("HTTP/1.1 405") and answer.count("HTTP/1.1") == 1 and backend.count == before


def test_a_model_route_names_the_model_and_takes_only_get(served):
    _, url = served
    client = openai_client(url)
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    assert caught.value.body["message"] == "The model 'gpt-4o' does not exist; this server serves 'scripted'."
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.APIStatusError) as caught:
        client.models.delete(MODEL)
    assert caught.value.status_code == 405


@pytest.mark.parametrize(("audio", "message"), [
    ({"data": "UklGRg=="}, "'format' is missing"),  # before: "got None"
    ({"data": "UklGRg==", "format": "m4a"}, 'got "m4a": m4a audio is not read here; convert it first, e.g. '
                                           '`ffmpeg -i clip.m4a clip.wav`'),
    # another name of a format read here: before, "wav audio is not read here; convert it first, e.g. `ffmpeg -i
    # clip.wav clip.wav`" (x-wav), "convert the file to WAV first" (audio/wav, .wav), "mpeg audio is not read here"
    *[({"data": "UklGRg==", "format": label}, f'got "{label}"; "{label}" names {title} audio, which is read here: send '
                                              f'"{name}"')
      for label, title, name in [("x-wav", "WAV", "wav"), ("audio/wav", "WAV", "wav"), (".wav", "WAV", "wav"),
                                 ("mpeg", "MP3", "mp3"), ("opus", "Ogg", "ogg"), ("x-flac", "FLAC", "flac")]],
    # OpenAI's realtime pcm16: no header to read (before: "convert it first, e.g. `ffmpeg -i clip.pcm16 clip.wav`")
    ({"data": "UklGRg==", "format": "pcm16"}, 'got "pcm16"; headerless PCM does not say its rate or sample format: '
                                              'give it a WAV header first, e.g. `ffmpeg -f s16le -ar 24000 -ac 1 -i '
                                              'clip.pcm16 clip.wav` (its own rate: OpenAI\'s pcm16 is 24 kHz)'),
])
def test_an_input_audio_format_is_named_in_jsons_words(audio, message):
    backend = ScriptedChatBackend(lambda messages: "ok")
    backend.reads_audio = True  # parsed as for a speech student: the format is checked before any decoding
    with serve_in_thread(backend) as url:
        body = _refusal(openai_client(url).chat.completions.create,
                        messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": audio}]}])
    param = "messages[0].content[0].input_audio.format"
    assert body == {"message": f"{param} must be one of wav, mp3, flac, ogg (the file's format); {message}.",
                    "type": "invalid_request_error", "param": param, "code": None}


@pytest.mark.parametrize(("chat", "kwargs", "name"), [
    (True, dict(messages=USER, logprobs=True, top_logprobs=10), "top_logprobs"),
    (False, dict(prompt="hi", logprobs=10), "logprobs"),
    (False, dict(prompt="hi", extra_body={"prompt_logprobs": 10}), "prompt_logprobs"),
])
def test_a_top_k_past_the_servers_max_logprobs_names_the_option(chat, kwargs, name):
    """Before: "'top_logprobs' must be between 0 and 5, got 10.", which reads as the API's bound (OpenAI takes up to
    20), not the server's --max-logprobs that its operator may raise."""
    with serve_in_thread(ScriptedChatBackend(lambda messages: "ok"), max_logprobs=5) as url:
        client = openai_client(url)
        body = _refusal(client.chat.completions.create if chat else client.completions.create, **kwargs)
    assert (body["message"], body["param"]) == (f"'{name}' is 10, above this server's limit of 5 (--max-logprobs).", name)

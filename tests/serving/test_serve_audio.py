"""``speechsum serve`` with a speech student: OpenAI ``input_audio`` parts in chat completions,
through the official openai client against the real server on loopback."""

from __future__ import annotations

import base64
import http.client
import json
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import openai
import pytest
import soundfile as sf
import torch

from speechsum.data.audio import load_audio
from speechsum.models.generation import GenerationSettings, generate_texts
from speechsum.serving.cli import build_backend, build_parser
from speechsum.serving.export import export_checkpoint, load_exported
from speechsum.serving.speech_backend import SpeechBackend
from speechsum.utils.remote import openai_client
from tests.servers import ScriptedChatBackend, serve_in_thread
from tests.serving.export_fixtures import batch_for, trained_student, write_wavs

MODEL = "student"
MAX_AUDIO_BYTES = 100_000
INSTRUCTION = "List the action items"


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("student")
    _, ckpt = trained_student("composed_tiny", folder / "run")
    return export_checkpoint(ckpt, folder / "export")


@pytest.fixture(scope="module")
def model(export_dir):
    return load_exported(export_dir)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> list[Path]:
    return write_wavs(tmp_path_factory.mktemp("audio"), rate=22_050, stereo=True)


@pytest.fixture(scope="module")
def url(model):
    with serve_in_thread(SpeechBackend(model, MODEL, max_audio_seconds=5.0), max_audio_bytes=MAX_AUDIO_BYTES) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai_client(url)


def audio_message(data: bytes, fmt: str = "wav", text: str = INSTRUCTION) -> list[dict]:
    parts = [{"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}]
    if text:
        parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]


def expected_text(model, path: Path, instruction: str = INSTRUCTION, max_tokens: int = 6) -> str:
    clip = load_audio(str(path), 16_000)
    settings = GenerationSettings(max_new_tokens=max_tokens)
    return generate_texts(model, batch_for(model, [clip], instruction), settings).texts[0]


def test_chat_with_input_audio_gives_the_students_summary(client, model, wavs) -> None:
    for path in wavs[:2]:
        reply = client.chat.completions.create(model=MODEL, messages=audio_message(path.read_bytes()),
                                               temperature=0, max_tokens=6)
        assert reply.choices[0].message.content == expected_text(model, path)
        assert reply.choices[0].finish_reason in ("stop", "length")
        clip = load_audio(str(path), 16_000)
        assert reply.usage.prompt_tokens == int(batch_for(model, [clip], INSTRUCTION).prompt_mask.sum())
        assert 1 <= reply.usage.completion_tokens <= 6


def test_mp3_and_the_default_instruction(client, model, wavs, tmp_path) -> None:
    data, rate = sf.read(wavs[0])
    mp3 = tmp_path / "clip.mp3"
    sf.write(mp3, data, rate)
    reply = client.chat.completions.create(model=MODEL, messages=audio_message(mp3.read_bytes(), "mp3", text=""),
                                           temperature=0, max_tokens=6)
    from speechsum.serving.summarize import DEFAULT_INSTRUCTION

    assert reply.choices[0].message.content == expected_text(model, mp3, DEFAULT_INSTRUCTION)


def test_base64_with_line_breaks_reads_as_the_same_audio(client, model, wavs) -> None:
    messages = audio_message(wavs[0].read_bytes())
    encoded = messages[0]["content"][0]["input_audio"]["data"]
    messages[0]["content"][0]["input_audio"]["data"] = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    reply = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=6)
    assert reply.choices[0].message.content == expected_text(model, wavs[0])


def test_a_stop_string_counts_only_the_tokens_up_to_it(client, model, wavs) -> None:
    """Before, usage counted every generated token (here 12) however early the stop string cut the text."""
    clip = load_audio(str(wavs[0]), 16_000)
    out = generate_texts(model, batch_for(model, [clip], INSTRUCTION), GenerationSettings(max_new_tokens=12))
    text, ids = out.texts[0], out.ids[0][out.mask[0].bool()]
    cut = next(i for i in range(2, len(text)) if text.find(text[i]) == i and text[i] != "\ufffd")
    reply = client.chat.completions.create(model=MODEL, messages=audio_message(wavs[0].read_bytes()), temperature=0,
                                           max_tokens=12, stop=[text[cut]])
    decode = model.processor.decode_responses
    kept = next(k for k in range(len(ids) + 1) if len(decode(ids[None, :k], torch.ones(1, k))[0]) >= cut)
    assert reply.choices[0].message.content == text[:cut] and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == kept < 12


def test_sampling_n_with_a_seed_is_reproducible(client, wavs) -> None:
    def sample():
        return client.chat.completions.create(model=MODEL, messages=audio_message(wavs[0].read_bytes()),
                                              temperature=1.0, n=3, seed=7, max_tokens=5)

    first, second = sample(), sample()
    assert len(first.choices) == 3
    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]


def test_unseeded_sampling_differs_between_requests(client, wavs) -> None:
    def sample():
        reply = client.chat.completions.create(model=MODEL, messages=audio_message(wavs[0].read_bytes()),
                                               temperature=2.0, n=4, max_tokens=12)
        return [c.message.content for c in reply.choices]

    assert sample() != sample()  # not torch's default seed each time


def bad_request(client, messages, model: str = MODEL, **kwargs) -> str:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model, messages=messages, max_tokens=4, **kwargs)
    assert info.value.status_code == 400
    return info.value.body["message"]


def test_malformed_audio_is_a_clear_400(client, tmp_path) -> None:
    param = "messages[0].content[0].input_audio"
    message = bad_request(client, audio_message(b"RIFF\x00\x00 this is not audio"))
    assert message == (f"{param}: not a readable wav file (it starts as WAV audio but libsndfile cannot read it (Format "
                       "not recognised; the file is 24 bytes): damaged or cut short); re-fetch or re-export it, or drop it.")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(800, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    assert bad_request(client, audio_message(nan.read_bytes())) == (  # before 2026-12-08 no word of what to do
        f"{param}: the audio holds a non-finite sample (NaN or Inf) at frame 0. The file is corrupt: re-export it "
        "and send that.")
    loud = tmp_path / "loud.wav"
    sf.write(loud, np.full(800, 1e30, dtype=np.float32), 16_000, subtype="FLOAT")  # NaN features before
    assert bad_request(client, audio_message(loud.read_bytes())) == (
        f"{param}: the audio holds a sample of magnitude 1e+30 at frame 0. Send float samples within [-1, 1]: "
        "normalise the clip, e.g. `sox --norm in.wav out.wav`.")
    sf.write(loud, np.zeros(70, dtype=np.int16), 7)  # was "... re-export the file or drop it from the manifest"
    assert bad_request(client, audio_message(loud.read_bytes())) == (
        f"{param}: sample rate 7 Hz is outside 1000-1000000 Hz, no recording's (speech is 8-48 kHz): the header is "
        "likely damaged; re-export the file or send another recording.")
    sf.write(loud, np.linspace(-30.0, 30.0, 800, dtype=np.float32), 16_000, subtype="FLOAT")  # served as it was before
    assert bad_request(client, audio_message(loud.read_bytes())) == (
        f"{param}: the audio holds a float sample of 30 (its peak, 30 dB over full scale) at frame 0. Send float "
        "samples within [-1, 1]: normalise the clip, e.g. `sox --norm in.wav out.wav`.")
    for frames, rate in ((0, 16_000), (1, 44_100)):  # was "... no samples at the model's 16000 Hz." and no more
        sf.write(loud, np.zeros(frames, dtype=np.int16), rate)
        assert bad_request(client, audio_message(loud.read_bytes())) == (
            f"{param}: the audio has no samples at the model's 16000 Hz (a file of 0 frames, or of too few to make one "
            "sample there); send a recording.")
    broken = audio_message(b"x")
    for blank in ("", " \n "):  # was "… is empty.", nothing of what to send
        broken[0]["content"][0]["input_audio"]["data"] = blank
        assert bad_request(client, broken) == (f"{param}.data holds no audio: its base64 data is empty; send the audio "
                                               "file's bytes in base64, e.g. `base64 -w0 clip.wav`.")
    broken[0]["content"][0]["input_audio"]["data"] = "not base64!"
    assert bad_request(client, broken).startswith(f"{param}.data is not valid standard base64")
    assert "e.g. `base64 -w0 clip.wav`" in bad_request(client, broken)
    broken[0]["content"][0]["input_audio"]["data"] = "UklGRü=="  # a character outside ASCII: was a 500
    assert bad_request(client, broken) == (f"{param}.data is not valid standard base64 (character \"ü\" at position 5 "
                                           "(from 0) is not a base64 character): encode the file's bytes with the +/ "
                                           "alphabet and = padding, e.g. `base64 -w0 clip.wav`.")
    for url in ("data:audio/wav;base64,UklGRg==", "\n  data:audio/wav;base64,UklGRg=="):  # after a blank: was "not base64"
        broken[0]["content"][0]["input_audio"]["data"] = url
        assert bad_request(client, broken) == (f"{param}.data must be bare base64 (the file's bytes), not a data: "
                                               "URL; drop the 'data:audio/wav;base64,' prefix.")
    wrong = audio_message(b"x")
    for fmt, advice in [("m4a", ': m4a audio is not read here; convert it first, e.g. `ffmpeg -i clip.m4a clip.wav`'),
                        ("WAV", '; formats are lower-case: "wav"'), ("a/b c", "; convert the file to WAV first (e.g. "
                                                                            "with ffmpeg)"), (5, "")]:
        wrong[0]["content"][0]["input_audio"]["format"] = fmt  # before: what it takes, not what to do
        assert bad_request(client, wrong) == (f"{param}.format must be one of wav, mp3, flac, ogg (the file's format); "
                                              f"got {json.dumps(fmt)}{advice}.")


@pytest.mark.parametrize(("name", "container", "subtype", "libsndfile"), [
    ("cut.wav", "WAV", "PCM_16", "its header's data chunk is larger than the file (libsndfile: 'data : 128000 (should be "),
    ("cut.ogg", "OGG", "OPUS", "its Ogg stream ends without its end-of-stream page (libsndfile: 'Ogg : "),
])
def test_a_file_cut_short_is_a_400_not_a_summary_of_its_first_part(client, tmp_path, name, container, subtype,
                                                                   libsndfile) -> None:
    """A truncated upload was summarised as if its first part were the whole recording, without a word."""
    path = tmp_path / name
    sf.write(path, 0.3 * np.sin(np.arange(64_000) / 5), 16_000, format=container, subtype=subtype)
    message = bad_request(client, audio_message(path.read_bytes()[: path.stat().st_size // 2], fmt=name[-3:]))
    assert message.startswith(f"messages[0].content[0].input_audio: {libsndfile}")
    assert "): cut short (a download or copy that stopped?); only its first " in message
    assert message.endswith(" s are read: send the whole file.")


def test_a_wav_whose_header_counts_only_its_first_part_is_a_400(client, tmp_path) -> None:
    """Sizes written at 0.5 s by a recorder that went on to 3 s: the first 0.5 s were summarised as the whole."""
    path = tmp_path / "stopped.wav"
    sf.write(path, 0.3 * np.sin(np.arange(48_000) / 5), 16_000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[40:44] = (16_000).to_bytes(4, "little")  # the data chunk's size, after the canonical 36-byte header
    assert bad_request(client, audio_message(bytes(data))) == (
        "messages[0].content[0].input_audio: its header's data chunk says 16000 bytes, but 80000 bytes that are no "
        "chunk follow it (samples it does not count: a recording whose writer stopped before it wrote the sizes?); "
        "only its first 0.50 s are read: send it with a header that counts all of it (rewrite the header, e.g. "
        "`sox --ignore-length in.wav out.wav`).")


def test_an_ogg_file_damaged_inside_is_a_400_saying_re_export_not_send_the_whole(client, tmp_path) -> None:
    """A whole Opus file whose last page libsndfile cannot read (a byte flipped in it: 4.97 of its 5.20 s read, too
    few lost to refuse at its load): it was told "it is not cut short ... send the whole file", which it was."""
    path = tmp_path / "inside.ogg"
    sf.write(path, 0.3 * np.sin(np.arange(83_200) / 5), 16_000, format="OGG", subtype="OPUS")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    assert bad_request(client, audio_message(bytes(data), fmt="ogg")) == (
        "messages[0].content[0].input_audio: it ends with its end-of-stream page, so it is not cut short, but "
        "libsndfile cannot read a page of it (libsndfile: 'Ogg : Last page lacks an end-of-stream bit.'): damaged "
        "mid-stream; only its first 4.97 s are read: re-export or re-fetch it and send that.")


def test_an_mp3_libsndfile_reads_only_in_part_is_a_400_saying_what_to_do(client, tmp_path) -> None:
    """Two MP3s joined: the first part was summarised as the whole; then "send WAV, MP3, ..." of an MP3."""
    part = tmp_path / "part.mp3"
    sf.write(part, 0.3 * np.sin(np.arange(16_000) / 5), 16_000, format="MP3")
    message = bad_request(client, audio_message(part.read_bytes() * 2, fmt="mp3"))
    assert message.startswith("messages[0].content[0].input_audio: not a readable mp3 file (its MP3 frames hold ")
    assert message.endswith("libsndfile reads only the first 1.00 s (the length its first frame gives: a variable-bitrate "
                            "file without a Xing header, or files joined together)); re-encode it, e.g. `ffmpeg -i "
                            "in.mp3 out.flac`, and use that.")


def test_audio_limits(client, url, tmp_path) -> None:
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(16_000 * 6, dtype=np.int16), 16_000)  # 6 s > 5 s, 192 kB > 100 kB
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=audio_message(long.read_bytes()), max_tokens=4)
    assert info.value.status_code == 413 and "--max-audio-bytes" in info.value.body["message"]
    long.write_bytes(b"")
    sf.write(long, np.zeros(8_000 * 6, dtype=np.int16), 8_000)  # 6 s in 96 kB
    assert "6.00 s of audio exceed the limit of 5 s" in bad_request(client, audio_message(long.read_bytes()))
    sf.write(long, np.zeros(8_000 * 5 + 1, dtype=np.int16), 8_000)  # one sample over: "5.00 s exceed 5 s" before
    assert "5.0001 s of audio exceed the limit of 5 s" in bad_request(client, audio_message(long.read_bytes()))
    # 99 kB under the 100 kB limit, its base64 wrapped at 76 columns as `base64` prints it: the line breaks
    # counted as data made it "about 100302 bytes", a 413
    sf.write(long, np.zeros(49_478, dtype=np.int16), 16_000)
    assert long.stat().st_size == 99_000
    wrapped = audio_message(long.read_bytes())
    encoded = wrapped[0]["content"][0]["input_audio"]["data"]
    wrapped[0]["content"][0]["input_audio"]["data"] = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert client.chat.completions.create(model=MODEL, messages=wrapped, max_tokens=2).choices[0].finish_reason
    # a body larger than the request limit + the audio's base64 is refused from its Content-Length alone
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    connection.putrequest("POST", "/v1/chat/completions")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(20 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    connection.close()


def test_requests_a_speech_student_cannot_answer(client) -> None:
    assert "this message has no input_audio part" in bad_request(client, [{"role": "user", "content": "hi"}])
    system = [{"role": "system", "content": "be brief"}, *audio_message(b"x")]
    assert "'system' messages are not supported" in bad_request(client, system)
    assert "not supported for audio" in bad_request(client, audio_message(b"x"), logprobs=True)
    with pytest.raises(openai.BadRequestError, match="speech model: use /v1/chat/completions"):
        client.completions.create(model=MODEL, prompt="hello", max_tokens=2)


def test_a_text_backend_refuses_input_audio(wavs) -> None:
    with serve_in_thread(ScriptedChatBackend(lambda messages: "ok")) as base:
        message = bad_request(openai_client(base), audio_message(wavs[0].read_bytes()), model="scripted")
    assert "this model does not read audio" in message


def test_cli_serves_exports_and_checkpoints_as_speech_students(export_dir, tmp_path) -> None:
    backend = build_backend(build_parser().parse_args(["--model", str(export_dir), "--max-audio-seconds", "3"]))
    assert isinstance(backend, SpeechBackend) and backend.max_audio_seconds == 3.0
    _, ckpt = trained_student("qwen2_audio_tiny", tmp_path / "run")
    backend = build_backend(build_parser().parse_args(["--model", str(ckpt), "--served-model-name", "q"]))
    assert isinstance(backend, SpeechBackend) and backend.max_audio_seconds == 1.0  # the tiny encoder's limit
    _, text_ckpt = trained_student("text_llm", tmp_path / "text")
    text_export = export_checkpoint(text_ckpt, tmp_path / "text_export", merge_lora=True)
    backend = build_backend(build_parser().parse_args(["--model", str(text_export)]))
    assert type(backend).__name__ == "HFBackend"


def test_a_speech_student_whose_weights_hold_nan_is_not_served(export_dir, monkeypatch) -> None:
    """It answered every request with token 0 repeated ('!!!!'), as summarize wrote it."""
    import torch

    import speechsum.serving.export as export

    load_model = export.load_model

    def diverged(*args, **kwargs):
        model = load_model(*args, **kwargs)
        with torch.no_grad():
            model.get_parameter(diverged.name).view(-1)[0] = float("inf")
        return model

    diverged.name = next(name for name, _ in load_model(export_dir).named_parameters() if "projector" in name)
    monkeypatch.setattr(export, "load_model", diverged)
    with pytest.raises(ValueError) as error:
        build_backend(build_parser().parse_args(["--model", str(export_dir)]))
    assert str(error.value).startswith(f"{export_dir}: the model's weights hold NaN or Inf (first in {diverged.name}),")


def test_the_lms_context_bounds_audio_and_completion(model, wavs) -> None:
    """A prompt whose kept audio positions and instruction fill the LM's context is a 400; a request
    without max_tokens gets the room left; /v1/models reports the context."""
    from speechsum.serving.summarize import prompt_positions

    config = model.causal_lm().config
    saved = config.max_position_embeddings
    clip = load_audio(str(wavs[0]), 16_000)
    positions = prompt_positions(model, clip, INSTRUCTION)
    assert 0 < positions <= int(batch_for(model, [clip], INSTRUCTION).prompt_mask.sum())
    config.max_position_embeddings = positions + 3
    try:
        backend = SpeechBackend(model, MODEL)
        assert backend.max_model_len == model.context_length() == positions + 3
        with serve_in_thread(backend) as base:
            client = openai_client(base)
            assert client.models.list().data[0].model_extra["max_model_len"] == positions + 3
            with pytest.raises(openai.BadRequestError) as info:
                client.chat.completions.create(model=MODEL, messages=audio_message(wavs[0].read_bytes()), max_tokens=4)
            assert info.value.body["code"] == "context_length_exceeded"
            assert f"take {positions} and the completion asks for 4" in info.value.body["message"]
            reply = client.chat.completions.create(model=MODEL, messages=audio_message(wavs[0].read_bytes()),
                                                   temperature=0)
            assert reply.usage.completion_tokens == 3 and reply.choices[0].finish_reason == "length"
        config.max_position_embeddings = positions  # the prompt alone fills the context
        with serve_in_thread(SpeechBackend(model, MODEL)) as base:
            with pytest.raises(openai.BadRequestError, match="Send a shorter clip") as info:
                openai_client(base).chat.completions.create(model=MODEL, messages=audio_message(wavs[0].read_bytes()))
            assert info.value.body["param"] == "messages"
    finally:
        config.max_position_embeddings = saved


def test_a_streamed_flac_without_a_length_is_summarised(client, wavs, tmp_path) -> None:
    """Its header says 2**63 - 1 frames; before, the server refused it as 576460752303423.5 s long."""
    from tests.data.wavs import flac_without_length

    clip, rate = sf.read(wavs[0], dtype="float32")
    flac = flac_without_length(tmp_path / "streamed.flac", clip, rate)
    reply = client.chat.completions.create(model=MODEL, messages=audio_message(flac.read_bytes(), fmt="flac"),
                                           max_tokens=4, temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_a_clip_whose_channels_cancel_is_summarised_with_a_warning_naming_the_part(client, tmp_path, caplog) -> None:
    """Before: logged naming the server's temporary file (or, for opposite phase, not at all)."""
    import logging

    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8_000) / 16_000)).astype(np.float32)
    path = tmp_path / "cancel.wav"
    sf.write(path, np.stack([tone, -tone], axis=1), 16_000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="speechsum.serving.speech_backend"):
        client.chat.completions.create(model=MODEL, messages=audio_message(path.read_bytes()), max_tokens=2)
    assert [r.getMessage() for r in caplog.records if r.name == "speechsum.serving.speech_backend"] == [
        "messages[0].content[0].input_audio (a wav file): its channels cancel when averaged to mono (the mix is to exact "
        "zeros, 0.50 s): one channel is in opposite phase to another, so the model hears (almost) nothing; keep one "
        "channel (e.g. `sox in.wav out.wav remix 1`) or invert one before mixing (`sox in.wav out.wav remix 1,2i`)"]

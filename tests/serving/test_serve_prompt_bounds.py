"""A text far past the model's context is refused by ``speechsum serve`` before it is tokenized
(:mod:`speechsum.serving.token_floor`). Real servers on loopback (the tiny text LM, the tiny composed student)."""

from __future__ import annotations

import openai
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from speechsum.serving.token_floor import TokenFloor
from speechsum.utils.remote import openai_client
from tests.servers import serve_in_thread
from tests.serving.export_fixtures import audio_request
from tests.serving.tiny_lm import MODEL


def test_the_token_floor_of_the_byte_tokenizer(student_backend):
    """The byte tokenizer's longest entry is "<|endoftext|>" (13 characters); whitespace is not counted."""
    floor = TokenFloor(student_backend.model.processor.tokenizer)
    assert floor.chars_per_token == 13
    assert (floor.at_least("word " * 10), floor.at_least("a" * 26), floor.at_least("a" * 27), floor.at_least(" \n")) \
        == (4, 2, 3, 0)


def test_no_floor_where_a_token_may_cover_any_length():
    """A fused unknown run, a pre-tokenizer that drops what it splits on: no bound holds, the text is tokenized."""
    fused = Tokenizer(models.BPE({"a": 0, "<unk>": 1}, [], unk_token="<unk>", fuse_unk=True))
    dropping = Tokenizer(models.BPE({"a": 0}, []))
    dropping.pre_tokenizer = pre_tokenizers.Split("b", "removed")
    assert [TokenFloor(PreTrainedTokenizerFast(tokenizer_object=t)).at_least("x" * 100) for t in (fused, dropping)] \
        == [0, 0]
    assert TokenFloor(object()).at_least("x" * 100) == 0  # a slow tokenizer: no backend to read


@pytest.mark.parametrize(("words", "message"), [
    # before: 17 s (11 s here) tokenizing 8 MB, then "the 0.5 s of audio and the instruction take 8000026 … Send a
    # shorter clip or lower max_tokens."
    (1_600_000, "This model's maximum context length is 2048 tokens; the instruction (the text parts: 7999999 "
                "characters) takes at least 492308. Send a shorter instruction."),
    (10_000, "This model's maximum context length is 2048 tokens; the instruction (the text parts: 49999 characters) "
             "takes at least 3077. Send a shorter instruction."),
])
def test_an_instruction_far_past_the_context_is_refused_before_it_is_tokenized(student_backend, words, message,
                                                                              monkeypatch):
    tokenized = []
    encode = student_backend.model.processor.encode_prompts
    monkeypatch.setattr(student_backend.model.processor, "encode_prompts", lambda *a: tokenized.append(1) or encode(*a))
    with serve_in_thread(student_backend) as url, pytest.raises(openai.BadRequestError) as caught:
        openai_client(url, timeout=60).chat.completions.create(model="student", max_tokens=4,
                                                               messages=audio_request("word " * words))
    error = caught.value.body
    assert (error["message"], error["param"], error["code"]) == (message, "messages", "context_length_exceeded")
    assert tokenized == []  # refused from the floor: the prompt was never tokenized (the speed: no timed assert)


def test_an_instruction_too_long_but_not_past_the_floor_is_told_as_before_and_named(student_backend):
    """Tokenized as before (500 words: at least 193 tokens, 2526 positions with the audio); the advice names the instruction
    too (before: "Send a shorter clip.", whatever took the positions)."""
    with serve_in_thread(student_backend) as url, pytest.raises(openai.BadRequestError) as caught:
        openai_client(url).chat.completions.create(model="student", messages=audio_request("word " * 500))
    assert caught.value.body["message"] == ("This model's maximum context length is 2048 tokens; the 0.5 s of audio "
                                            "and the instruction take 2526. Send a shorter clip or instruction.")


def test_a_prompt_far_past_the_context_is_refused_before_it_is_tokenized(backend):
    """The tiny LM reads 96 positions; 1000 words of 4 letters take at least 4000 / 13 = 308 tokens."""
    with serve_in_thread(backend) as url:
        client = openai_client(url)
        with pytest.raises(openai.BadRequestError) as completion:
            client.completions.create(model=MODEL, prompt="word " * 1000, max_tokens=1)
        with pytest.raises(openai.BadRequestError) as chat:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 1000}])
        with pytest.raises(openai.BadRequestError) as near:  # too long, but not past the floor: tokenized, as before
            client.completions.create(model=MODEL, prompt="ab " * 40, max_tokens=1)
    assert completion.value.body["message"] == ("This model's maximum context length is 96 tokens, but the prompt has "
                                                "at least 308 tokens (5000 characters). Shorten the prompt.")
    assert (chat.value.body["param"], chat.value.body["code"]) == ("messages", "context_length_exceeded")
    assert chat.value.body["message"] == ("This model's maximum context length is 96 tokens, but the prompt has at "
                                          "least 312 tokens (5050 characters). Shorten the prompt.")  # ChatML around it
    assert near.value.body["message"] == ("This model's maximum context length is 96 tokens, but the prompt has 120 "
                                          "tokens. Shorten the prompt.")


@pytest.mark.parametrize(("prompt", "max_tokens", "message"), [
    ([[1, 2], [3, 2 ** 20]], 4, "prompt[1]: Token ids [1048576] are outside this model's vocabulary"),
    (["ab", "x" * 200], 4, "prompt[1]: This model's maximum context length is 96 tokens, but the prompt has"),
    (["ab", "x" * 90], 10, "prompt[1]: This model's maximum context length is 96 tokens. However, you requested 100"),
])
def test_every_prompt_is_checked_before_any_is_generated(model_dir, prompt, max_tokens, message):
    """Before: prompt[0] was generated (and scored), then prompt[1] refused: the work thrown away."""
    from speechsum.serving.hf_backend import HFBackend

    backend = HFBackend(model_dir, served_model_name=MODEL)
    generate, calls = backend.model.generate, []
    backend.model.generate = lambda *args, **kwargs: calls.append(1) or generate(*args, **kwargs)
    with serve_in_thread(backend) as url:
        with pytest.raises(openai.BadRequestError) as raised:
            openai_client(url).completions.create(model=MODEL, prompt=prompt, max_tokens=max_tokens, logprobs=1)
        assert raised.value.body["message"].startswith(message) and calls == []
        openai_client(url).completions.create(model=MODEL, prompt=prompt[:1], max_tokens=2)
    assert calls == [1]  # the counter counts


def test_a_chat_of_many_messages_is_rendered_and_refused_beside_the_models_work(model_dir):
    """Before: its chat template rendered under the model's lock (~3 s for 200k tiny messages), so the 400 waited
    for the request generating, and every request after it waited for the rendering."""
    from speechsum.serving.hf_backend import HFBackend

    backend = HFBackend(model_dir, served_model_name=MODEL)
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 500
    with serve_in_thread(backend) as url, backend._lock:  # the model busy with another request throughout
        client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=10)
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model=MODEL, messages=messages)
    assert raised.value.body["message"] == ("This model's maximum context length is 96 tokens, but the prompt has at "
                                            "least 2271 tokens (31522 characters). Shorten the prompt.")


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens"])
def test_a_completion_past_the_context_names_the_field_the_client_sent(backend, student_backend, field):
    """Before: a request that asked with ``max_completion_tokens`` (OpenAI's current name, the one the openai
    package documents) was told to lower ``max_tokens``, a field it had not sent, with ``param`` "max_tokens"."""
    with serve_in_thread(backend) as url, pytest.raises(openai.BadRequestError) as text:
        openai_client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                   **{field: 90})
    with serve_in_thread(student_backend) as url, pytest.raises(openai.BadRequestError) as speech:
        openai_client(url).chat.completions.create(model="student", messages=audio_request("hi"), **{field: 4000})
    assert text.value.body["message"].endswith(f"Reduce the prompt or {field}.")
    assert speech.value.body["message"].endswith(f"Send a shorter clip or instruction, or lower {field}.")
    assert text.value.body["param"] == speech.value.body["param"] == field

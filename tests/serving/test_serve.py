"""``speechsum serve`` with a tiny random Llama + the byte tokenizer, through the official openai client."""

from __future__ import annotations

import http.client
import json
import socket
import sys
from urllib.parse import urlparse

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM

from speechsum.models.tokenizer import build_byte_tokenizer
from speechsum.serving.cli import HFBackend, build_parser, main
from speechsum.utils.remote import map_concurrent, openai_client
from tests.servers import serve_in_thread
from tests.serving.tiny_lm import CONTEXT, MODEL


@pytest.fixture(scope="module")
def reference(model_dir):
    """The same model loaded independently of the server, for direct forward passes."""
    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), build_byte_tokenizer()


@pytest.fixture(scope="module")
def client(backend):
    with serve_in_thread(backend, max_tokens_limit=64) as url:
        yield openai_client(url)


def direct_logprobs(model, ids: list[int]) -> torch.Tensor:
    """(T-1, V) log p(· | ids[:t]) for t = 1..T-1 from one forward pass."""
    with torch.inference_mode():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].float(), dim=-1)


def direct_greedy(model, ids: list[int], steps: int, stops: set[int]) -> list[int]:
    out = list(ids)
    for _ in range(steps):
        with torch.inference_mode():
            token = int(model(input_ids=torch.tensor([out])).logits[0, -1].argmax())
        if token in stops:
            break
        out.append(token)
    return out[len(ids):]


def ids_of(tokens: list[str]) -> list[int]:
    assert all(t.startswith("token_id:") for t in tokens)
    return [int(t.split(":")[1]) for t in tokens]


def test_models_list(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL] and models[0].object == "model"
    assert models[0].max_model_len == CONTEXT


@pytest.mark.parametrize("as_text", [True, False])
def test_echo_logprobs_equal_a_direct_forward_pass(client, reference, as_text):
    model, tokenizer = reference
    text = "Maria: budget is 40k, due Friday ✓"
    ids = tokenizer(text).input_ids
    reply = client.completions.create(model=MODEL, prompt=text if as_text else ids, echo=True, logprobs=5,
                                      max_tokens=0, extra_body={"return_tokens_as_token_ids": True})
    choice = reply.choices[0]
    lp = choice.logprobs
    assert choice.text == text and ids_of(lp.tokens) == ids
    assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens == 0
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    direct = direct_logprobs(model, ids)
    expected = direct.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    assert torch.allclose(torch.tensor(lp.token_logprobs[1:]), expected, atol=1e-5)
    for position, top in enumerate(lp.top_logprobs[1:]):
        values, indices = direct[position].topk(5)
        chosen = f"token_id:{ids[position + 1]}"
        assert chosen in top and len(top) == (5 if ids[position + 1] in indices.tolist() else 6)
        assert {f"token_id:{i}" for i in indices.tolist()} <= set(top)
        assert torch.allclose(torch.tensor(sorted(top.values(), reverse=True)[:5]), values, atol=1e-5)
    # text_offset indexes into the returned text; tokens as text concatenate to it
    plain = client.completions.create(model=MODEL, prompt=text, echo=True, logprobs=0, max_tokens=0).choices[0]
    assert "".join(plain.logprobs.tokens) == text
    assert plain.logprobs.text_offset == [sum(len(t) for t in plain.logprobs.tokens[:i]) for i in range(len(ids))]
    assert all(top is None or len(top) == 1 for top in plain.logprobs.top_logprobs)


def test_prompt_logprobs_vllm_extension(client, reference):
    model, tokenizer = reference
    ids = tokenizer("Decision: ship on May 3.").input_ids
    reply = client.completions.create(model=MODEL, prompt=ids, echo=True, max_tokens=0,
                                      extra_body={"prompt_logprobs": 2})
    prompt_logprobs = reply.choices[0].prompt_logprobs
    direct = direct_logprobs(model, ids)
    assert prompt_logprobs[0] is None and len(prompt_logprobs) == len(ids)
    for position, entry in enumerate(prompt_logprobs[1:]):
        actual = ids[position + 1]
        assert abs(entry[str(actual)]["logprob"] - float(direct[position, actual])) < 1e-5
        assert entry[str(actual)]["rank"] == int((direct[position] > direct[position, actual]).sum()) + 1
        top_ids = direct[position].topk(2).indices.tolist()
        assert [entry[str(i)]["rank"] for i in top_ids] == [1, 2] and len(entry) in (2, 3)


def test_greedy_generation_is_the_direct_argmax(client, reference, backend):
    model, tokenizer = reference
    ids = tokenizer("Summary:").input_ids
    reply = client.completions.create(model=MODEL, prompt=ids, max_tokens=12, temperature=0, logprobs=1,
                                      extra_body={"return_tokens_as_token_ids": True})
    choice = reply.choices[0]
    expected = direct_greedy(model, ids, 12, set(backend.stop_ids))
    assert ids_of(choice.logprobs.tokens) == expected
    assert choice.text == tokenizer.decode(expected)
    assert choice.finish_reason == ("length" if len(expected) == 12 else "stop")
    direct = direct_logprobs(model, ids + expected)[len(ids) - 1:]
    got = torch.tensor(choice.logprobs.token_logprobs)
    assert torch.allclose(got, direct.gather(1, torch.tensor(expected)[:, None])[:, 0], atol=1e-5)
    assert torch.allclose(got, direct.max(dim=1).values, atol=1e-5)  # greedy: each token is the argmax


def test_backend_from_loaded_objects_scores_the_same(reference, client):
    model, tokenizer = reference
    ids = tokenizer("Action: Lee sends the slides.").input_ids
    with serve_in_thread(HFBackend.from_objects(model, tokenizer, "in-memory")) as url:
        mine = openai_client(url).completions.create(model="in-memory", prompt=ids, echo=True, logprobs=0,
                                                     max_tokens=0).choices[0].logprobs.token_logprobs
    served = client.completions.create(model=MODEL, prompt=ids, echo=True, logprobs=0, max_tokens=0)
    assert mine[0] is None and torch.allclose(torch.tensor(mine[1:]),
                                              torch.tensor(served.choices[0].logprobs.token_logprobs[1:]), atol=1e-6)


def test_sampling_n_seed_and_several_prompts(client):
    kwargs = dict(model=MODEL, prompt=["Alpha", "Beta"], max_tokens=6, temperature=1.0, n=3, seed=7)
    first, again = client.completions.create(**kwargs), client.completions.create(**kwargs)
    assert [c.index for c in first.choices] == list(range(6))
    assert [c.text for c in first.choices] == [c.text for c in again.choices]  # seeded: reproducible
    assert len({c.text for c in first.choices[:3]}) > 1  # n samples differ
    assert first.usage.prompt_tokens == len("Alpha") + len("Beta")
    assert first.usage.completion_tokens <= 6 * 6 and all(c.finish_reason in ("stop", "length") for c in first.choices)


def test_unseeded_sampling_differs_between_requests(client):
    kwargs = dict(model=MODEL, prompt="Alpha", max_tokens=24, temperature=1.0, n=2)  # ~260 ids, near uniform
    first, again = client.completions.create(**kwargs), client.completions.create(**kwargs)
    assert [c.text for c in first.choices] != [c.text for c in again.choices]  # not torch's default seed each time


def test_stop_strings_cut_the_text(client):
    base = client.completions.create(model=MODEL, prompt="Notes:", max_tokens=20, temperature=0).choices[0].text
    assert len(base) > 5 and base[5] != "\ufffd"
    stop = base[5]
    cut = client.completions.create(model=MODEL, prompt="Notes:", max_tokens=20, temperature=0, stop=[stop])
    assert cut.choices[0].text == base[: base.index(stop)] and cut.choices[0].finish_reason == "stop"
    echo = client.completions.create(model=MODEL, prompt="Notes:", echo=True, max_tokens=0)
    assert echo.choices[0].text == "Notes:" and echo.choices[0].finish_reason == "length"


def test_chat_completions_with_logprobs(client, reference, backend):
    model, tokenizer = reference
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise the call."}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=8, temperature=0,
                                           logprobs=True, top_logprobs=3, response_format={"type": "text"})
    ids = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)).input_ids
    expected = direct_greedy(model, ids, 8, set(backend.stop_ids))
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.message.content == tokenizer.decode(expected)
    assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens >= len(expected)
    content = choice.logprobs.content
    assert len(content) == len(expected) and all(len(item.top_logprobs) == 3 for item in content)
    direct = direct_logprobs(model, ids + expected)[len(ids) - 1:]
    for position, item in enumerate(content):
        assert abs(item.logprob - float(direct[position].max())) < 1e-5
        assert abs(item.top_logprobs[0].logprob - item.logprob) < 1e-6


def test_chat_sampling_n(client):
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], n=2,
                                           max_tokens=5, temperature=0.8, top_p=0.9, seed=1)
    assert [c.index for c in reply.choices] == [0, 1] and reply.choices[0].logprobs is None


def test_concurrent_requests_are_served(client):
    texts = map_concurrent(lambda p: client.completions.create(model=MODEL, prompt=p, max_tokens=4,
                                                               temperature=0).choices[0].text,
                           ["a", "b", "a", "b"], max_workers=4, progress=False)
    assert texts[0] == texts[2] and texts[1] == texts[3]


def test_api_key_is_enforced(backend, caplog):
    caplog.set_level("INFO", logger="speechsum.serving.cli")
    with serve_in_thread(backend, api_key="s3cret") as url:
        for key in ("EMPTY", "wrong"):
            with pytest.raises(openai.AuthenticationError) as caught:
                openai.OpenAI(base_url=url, api_key=key, max_retries=0).models.list()
            assert caught.value.status_code == 401
        status, body = _raw(url, "GET", "/v1/models")
        assert status == 401 and "Authorization: Bearer" in body["error"]["message"]
        assert openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0).models.list().data[0].id == MODEL
    lines = [r.getMessage() for r in caplog.records if r.name == "speechsum.serving.cli"]
    assert sum('"GET /v1/models" 401' in line for line in lines) == 3
    assert sum('"GET /v1/models" 200' in line for line in lines) == 1
    assert not any("s3cret" in line or "wrong" in line for line in lines)  # keys never logged


@pytest.mark.parametrize("kind, request_kwargs, message", [
    ("chat", dict(model=MODEL, messages=[]), "'messages' is empty: send at least one message ({role, content})."),
    ("chat", dict(model=MODEL, messages=[{"role": "boss", "content": "x"}]), "messages[0].role"),
    ("chat", dict(model=MODEL, messages=[{"role": "user", "content": "x"}], top_logprobs=2), "requires 'logprobs'"),
    ("completion", dict(model=MODEL, prompt="x", max_tokens=-1), "'max_tokens' must be at least 0"),
    ("completion", dict(model=MODEL, prompt="x", max_tokens=65), "above this server's limit of 64"),
    ("completion", dict(model=MODEL, prompt="x" * 90, max_tokens=10), "maximum context length is 96"),
    ("completion", dict(model=MODEL, prompt="x" * 100, echo=True, max_tokens=0), "prompt has 100 tokens"),
    ("completion", dict(model=MODEL, prompt="x", max_tokens=0), "max_tokens must be at least 1, got 0"),  # as vLLM
    ("completion", dict(model=MODEL, prompt="x", logprobs=21), "'logprobs' is 21, above this server's limit of 20 (--max-logprobs)."),
    ("completion", dict(model=MODEL, prompt="x", logprobs=-1), "'logprobs' must be between 0 and 20"),
    ("completion", dict(model=MODEL, prompt=[1, 999999]), "outside this model's vocabulary"),
    ("completion", dict(model=MODEL, prompt=[[1, 2], [3, -4]], max_tokens=1),
     "prompt[1]: Token ids [-4] are outside this model's vocabulary"),
    ("completion", dict(model=MODEL, prompt=["ab", ""], max_tokens=1), "prompt[1]: The prompt is empty after tokenization."),
    ("completion", dict(model=MODEL, prompt="x", temperature=3), "'temperature' must be in [0.0, 2.0]"),
    ("completion", dict(model=MODEL, prompt="x", temperature=10**400), "'temperature' must be a finite number"),
    ("completion", dict(model=MODEL, prompt="x", frequency_penalty=0.5),
     "'frequency_penalty' is not supported by speechsum serve (only 0, which changes nothing); got 0.5."),
    ("completion", dict(model=MODEL, prompt="x", extra_body={"top_k": 5}), "'top_k' is not supported"),
    ("chat", dict(model=MODEL, messages=[{"role": "user", "content": "x"}], extra_body={"repetition_penalty": 1.2}),
     "'repetition_penalty' is not supported"),
    ("chat", dict(model=MODEL, messages=[{"role": "user", "content": "x"}], extra_body={"ignore_eos": True}),
     "'ignore_eos' is not supported"),
    ("chat", dict(model=MODEL, messages=[{"role": "user", "content": "x"}],
                  tools=[{"type": "function", "function": {"name": "f"}}]), "Tool and function calls are not supported"),
    ("chat", dict(model=MODEL, messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
     "messages[0].content[0].text must be a string, got a number."),
    ("chat", dict(model=MODEL, messages=[{"role": "user", "content": None}]), "messages[0].content is missing or empty"),
    ("chat", dict(model=MODEL, messages=[{"role": "user", "content": []}]), "messages[0].content is missing or empty"),
    ("chat", dict(model=MODEL, messages={"role": "user", "content": "x"}),
     "'messages' must be an array of {role, content} objects, got an object."),
])
def test_bad_requests_get_400_with_a_helpful_message(client, kind, request_kwargs, message):
    create = client.chat.completions.create if kind == "chat" else client.completions.create
    with pytest.raises(openai.BadRequestError) as caught:
        create(**request_kwargs)
    assert message in caught.value.body["message"] and caught.value.status_code == 400


def test_an_unknown_model_is_a_404_as_openai_answers(client):
    """Before: 400 (OpenAI and vLLM answer 404 model_not_found; a 400 reads as a bad request to retry
    item by item, a 404 stops the run)."""
    for create, kwargs in ((client.chat.completions.create, dict(messages=[{"role": "user", "content": "x"}])),
                           (client.completions.create, dict(prompt="x"))):
        with pytest.raises(openai.NotFoundError) as caught:
            create(model="gpt-9", max_tokens=1, **kwargs)
        assert caught.value.body == {"message": f"The model 'gpt-9' does not exist; this server serves '{MODEL}'.",
                                     "type": "invalid_request_error", "param": "model", "code": "model_not_found"}


def test_malformed_bodies_routes_and_size_limit(backend):
    with serve_in_thread(backend, max_request_bytes=2000) as url:
        status, body = _raw(url, "POST", "/v1/completions", b'{"prompt": "x",')
        assert status == 400 and "not valid JSON" in body["error"]["message"]
        status, body = _raw(url, "POST", "/v1/completions", b'["prompt"]')
        assert status == 400 and "must be a JSON object" in body["error"]["message"]
        status, body = _raw(url, "POST", "/v1/completions", json.dumps({"model": MODEL}).encode())
        assert status == 400 and body["error"]["param"] == "prompt"
        status, body = _raw(url, "POST", "/v1/completions", json.dumps({"prompt": "x" * 3000}).encode())
        assert status == 413 and "--max-request-bytes" in body["error"]["message"]
        status, body = _raw(url, "GET", "/v1/engines")
        assert status == 404 and set(body["error"]) == {"message", "type", "param", "code"}
        assert _raw(url, "GET", "/v1/completions")[0] == 405
        assert _raw(url, "GET", "/health") == (200, {"status": "ok"})


def test_cli_help_and_missing_key_env(capsys, monkeypatch, model_dir):
    help_text = build_parser().format_help()
    for option in ("--model", "--host", "--port", "--api-key-env", "--served-model-name", "--max-request-bytes",
                   "--max-tokens-limit", "--dtype", "--device"):
        assert option in help_text
    monkeypatch.delenv("SPEECHSUM_NO_SUCH_KEY", raising=False)
    with pytest.raises(SystemExit, match="SPEECHSUM_NO_SUCH_KEY"):
        main(["--model", str(model_dir), "--api-key-env", "SPEECHSUM_NO_SUCH_KEY"])


def _raw(base_url: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One plain HTTP request (for bodies the openai client would never send); ``({}`` for an
    empty reply body, as HEAD's)."""
    parsed = urlparse(base_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    try:
        sent = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers={**sent, **(headers or {})})
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}
    finally:
        connection.close()


def test_every_method_and_bad_content_length_get_json_errors(backend):
    """Methods the server has no route for, an unknown method and a negative Content-Length get
    the JSON error body every other failure gets, not the standard library's HTML page."""
    with serve_in_thread(backend) as url:
        for method in ("PATCH", "PUT", "DELETE"):
            status, body = _raw(url, method, "/v1/chat/completions")
            assert status == 405 and body["error"]["message"] == (f"Method {method} is not allowed on "
                                                                  "/v1/chat/completions (it takes POST, OPTIONS).")
        status, body = _raw(url, "BREW", "/v1/models")  # a 501 before (tests/serving/test_serve_http.py)
        assert status == 405 and body["error"]["message"] == "Method BREW is not supported by this server."
        assert _raw(url, "HEAD", "/v1/models") == (200, {})  # GET's status, no body
        assert _raw(url, "HEAD", "/v1/completions")[0] == 405
        status, body = _raw(url, "POST", "/v1/completions", b"", headers={"Content-Length": "-5"})
        assert status == 400 and body["error"]["message"].startswith("Invalid Content-Length header '-5'")


def test_unauthorised_requests_are_refused_before_their_body_is_read(backend):
    with serve_in_thread(backend, api_key="s3cret", max_request_bytes=100) as url:
        # a body over the size limit: without a key the answer is 401, not 413 (nothing was read)
        status, body = _raw(url, "POST", "/v1/completions", b"x" * 1000)
        assert status == 401 and body["error"]["code"] == "missing_api_key"


def test_neutral_values_of_unapplied_sampling_options_are_accepted(client):
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=2,
                                           frequency_penalty=0, presence_penalty=0.0,
                                           extra_body={"top_k": -1, "min_p": 0, "repetition_penalty": 1.0})
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_smuggled_bodies_and_huge_numbers_are_refused(backend):
    """A negative or repeated Content-Length, or any Transfer-Encoding, left the body in the stream
    to be run as the next request on the same connection; a 5,000-digit integer was a 500."""
    with serve_in_thread(backend) as url:
        parsed = urlparse(url)
        for headers in ("Content-Length: -1\r\n", "Content-Length: 2\r\nContent-Length: -5\r\n",
                        "Transfer-Encoding: gzip, chunked\r\nContent-Length: 0\r\n", "Content-Length: \r\n",
                        "Content-Length: +0\r\n", "X-Foo : bar\r\nContent-Length: 0\r\n",
                        "no colon here\r\nContent-Length: 0\r\n"):
            with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
                sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\n{headers}\r\n"
                             "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                reply = b""
                while chunk := sock.recv(65536):  # the server closes the connection after its 400
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 400") and reply.count(b"HTTP/1.1") == 1, (headers, reply[:200])
        status, body = _raw(url, "POST", "/v1/completions", b'{"prompt": "x", "max_tokens": 1' + b"0" * 5000 + b"}")
        assert status == 400 and body["error"]["message"] == ("Request body holds a number with more digits than this "
                                                              f"server reads ({sys.get_int_max_str_digits()}).")


def test_a_vanishing_temperature_decodes_greedily(client):
    """Logits divided by 1e-300 overflow float32 (every positive logit becomes +inf): temperatures
    under ``GREEDY_BELOW`` decode greedily, as vLLM does, instead of returning garbage."""
    greedy = client.completions.create(model=MODEL, prompt="ab", max_tokens=6, temperature=0)
    for temperature in (1e-300, 1e-6):
        tiny = client.completions.create(model=MODEL, prompt="ab", max_tokens=6, temperature=temperature, seed=1)
        assert tiny.choices[0].text == greedy.choices[0].text and greedy.choices[0].text


def test_nan_nesting_and_lone_surrogates_are_400_not_500(backend):
    with serve_in_thread(backend, max_request_bytes=500_000) as url:
        nested = b'{"prompt": "x", "logit_bias": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        status, body = _raw(url, "POST", "/v1/completions", nested)
        assert status == 400 and "nested deeper" in body["error"]["message"]
        for field in ("temperature", "top_p"):
            status, body = _raw(url, "POST", "/v1/completions", f'{{"prompt": "x", "{field}": NaN}}'.encode())
            assert status == 400 and body["error"]["message"] == f"'{field}' must be a finite number, got nan."
        for body_text in (b'{"prompt": "x\\ud800"}', b'{"prompt": "x", "model": "\\udfff"}'):
            status, body = _raw(url, "POST", "/v1/completions", body_text)
            assert status == 400 and "lone UTF-16 surrogate" in body["error"]["message"]
        assert _raw(url, "POST", "/v1/completions", b'{"prompt": "x \\ud83d\\ude00", "max_tokens": 1}')[0] == 200


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--port", "70000", "a TCP port is 0-65535, got 70000"),
    ("--port", "-1", "must be at least 0, got -1"),
    ("--max-audio-seconds", "nan", "must be a number of seconds above 0, got nan"),
    ("--max-audio-seconds", "0", "must be a number of seconds above 0, got 0"),
    ("--max-audio-bytes", "0", "must be at least 1, got 0"),
    ("--max-tokens-limit", "0", "must be at least 1, got 0"),
    ("--max-request-bytes", "x", "expected an integer, got 'x'"),
])
def test_serve_options_are_checked_before_the_model_loads(capsys, model_dir, option, value, message):
    with pytest.raises(SystemExit) as stop:
        main(["--model", str(model_dir), option, value])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_busy_port_or_missing_device_is_one_line(model_dir):
    with pytest.raises(SystemExit, match=r"--device cuda:999: "):
        main(["--model", str(model_dir), "--device", "cuda:999"])
    with pytest.raises(SystemExit, match="is not a torch device"):
        main(["--model", str(model_dir), "--device", "banana"])
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit, match=rf"cannot listen on 127.0.0.1:{port}: .*pick another --port"):
            main(["--model", str(model_dir), "--port", str(port)])

"""speechsum.utils.remote against real loopback servers (tests/servers.py): retries, client, concurrency, cache."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import openai
import pytest

from speechsum.utils.chat_json import ChatJsonAsker
from speechsum.utils.remote import (
    JsonlCache,
    RetryCounter,
    backoff_delay,
    cache_key,
    endpoint_failure,
    map_concurrent,
    openai_client,
    refuse_method_changing_redirect,
    with_retries,
)
from tests.servers import JSONServer, ScriptedChatBackend, serve_in_thread

MESSAGES = [{"role": "user", "content": "Summarise: the meeting moved to Friday."}]


def _chat(client: openai.OpenAI, model: str = "scripted") -> str:
    return client.chat.completions.create(model=model, messages=MESSAGES).choices[0].message.content


@pytest.mark.parametrize("status, error_name", [(500, "InternalServerError"), (429, "RateLimitError"),
                                                (503, "InternalServerError"), (408, "APIStatusError")])
def test_with_retries_recovers_and_counts(status, error_name):
    backend = ScriptedChatBackend(lambda m: "echo: " + m[-1]["content"], fail_first_n=2, fail_status=status)
    counter, delays = RetryCounter(), []
    with serve_in_thread(backend) as url:
        client = openai_client(url)
        text = with_retries(lambda: _chat(client), attempts=4, backoff_seconds=0.01, on_retry=counter,
                            sleep=delays.append)
    assert text == "echo: " + MESSAGES[0]["content"]
    assert backend.count == 3 and [r.status for r in backend.requests] == [status, status, 200]
    assert counter.retries == 2 and counter.by_error == {error_name: 2}
    assert len(delays) == 2 and 0.005 <= delays[0] <= 0.01 and 0.01 <= delays[1] <= 0.02  # 0.01·2^(r−1), jittered


def test_with_retries_gives_up_after_attempts_and_reraises_last_error():
    backend = ScriptedChatBackend(lambda m: "never", fail_first_n=100, fail_status=500)
    counter = RetryCounter()
    with serve_in_thread(backend) as url:
        client = openai_client(url)
        with pytest.raises(openai.InternalServerError, match="scripted failure of request 3"):
            with_retries(lambda: _chat(client), attempts=3, backoff_seconds=0.001, on_retry=counter)
    assert backend.count == 3 and counter.retries == 2


def test_with_retries_does_not_retry_client_errors():
    backend = ScriptedChatBackend(lambda m: "x", fail_first_n=5, fail_status=400)
    counter = RetryCounter()
    with serve_in_thread(backend) as url:
        with pytest.raises(openai.BadRequestError):
            with_retries(lambda: _chat(openai_client(url)), attempts=4, backoff_seconds=0.001, on_retry=counter)
    assert backend.count == 1 and counter.retries == 0


def test_with_retries_every_kth_failure_and_retry_after_header():
    backend = ScriptedChatBackend(lambda m: "ok", fail_every=2, fail_status=429, retry_after=0.25)
    delays: list[float] = []
    with serve_in_thread(backend) as url:
        client = openai_client(url)
        answers = [with_retries(lambda: _chat(client), backoff_seconds=0.001, sleep=delays.append) for _ in range(3)]
    assert answers == ["ok"] * 3
    assert [r.status for r in backend.requests] == [200, 429, 200, 429, 200]
    assert delays == [0.25, 0.25]  # the server's Retry-After beats the tiny backoff


def test_with_retries_retries_connection_errors():
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = openai_client(f"http://127.0.0.1:{port}/v1", timeout=2.0)
    counter = RetryCounter()
    with pytest.raises(openai.APIConnectionError):
        with_retries(lambda: _chat(client), attempts=2, backoff_seconds=0.001, on_retry=counter)
    assert counter.retries == 1 and counter.by_error == {"APIConnectionError": 1}


def test_with_retries_retries_timeouts():
    backend = ScriptedChatBackend(lambda m: "slow", delay=0.5)
    counter = RetryCounter()
    with serve_in_thread(backend) as url:
        client = openai_client(url, timeout=0.1)
        with pytest.raises(openai.APITimeoutError):
            with_retries(lambda: _chat(client), attempts=2, backoff_seconds=0.001, on_retry=counter)
    assert counter.by_error == {"APITimeoutError": 1}


def test_backoff_delay_is_exponential_jittered_and_capped():
    for retry in range(1, 8):
        expected = min(2.0, 0.1 * 2 ** (retry - 1))
        delays = [backoff_delay(retry, 0.1, max_backoff=2.0) for _ in range(50)]
        assert all(expected / 2 <= d <= expected for d in delays)
        assert max(delays) - min(delays) > 0  # jitter


def test_openai_client_keys(monkeypatch):
    monkeypatch.delenv("SPEECHSUM_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="SPEECHSUM_TEST_KEY"):
        openai_client(None, "SPEECHSUM_TEST_KEY")
    assert openai_client("http://127.0.0.1:1/v1", "SPEECHSUM_TEST_KEY").api_key == "EMPTY"
    monkeypatch.setenv("SPEECHSUM_TEST_KEY", "sk-test-123")
    client = openai_client("http://127.0.0.1:1/v1", "SPEECHSUM_TEST_KEY", timeout=5.0)
    assert client.api_key == "sk-test-123" and client.max_retries == 0 and client.timeout == 5.0


def test_openai_client_key_reaches_a_keyed_server(monkeypatch):
    monkeypatch.setenv("SPEECHSUM_TEST_KEY", "right-key")
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok"), api_key="right-key") as url:
        assert _chat(openai_client(url, "SPEECHSUM_TEST_KEY")) == "ok"
        monkeypatch.setenv("SPEECHSUM_TEST_KEY", "wrong-key")
        with pytest.raises(openai.AuthenticationError):
            _chat(openai_client(url, "SPEECHSUM_TEST_KEY"))


def test_map_concurrent_keeps_order_and_bounds_concurrency():
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def work(x: int) -> int:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.002 * (x % 5))
        with lock:
            state["now"] -= 1
        return x * x

    calls = []
    results = map_concurrent(work, range(40), max_workers=3, desc="squares", postfix=lambda: calls.append(1) or {})
    assert results == [x * x for x in range(40)]
    assert state["max"] == 3 and calls  # bounded, and the pool was actually used in parallel


def test_map_concurrent_exceptions_returned_or_raised():
    def work(x: int) -> int:
        if x == 3:
            raise RuntimeError("item 3 failed")
        return x

    results = map_concurrent(work, range(6), max_workers=2, return_exceptions=True, progress=False)
    assert results[:3] == [0, 1, 2] and results[4:] == [4, 5] and isinstance(results[3], RuntimeError)
    with pytest.raises(RuntimeError, match="item 3 failed"):
        map_concurrent(work, range(6), max_workers=2, progress=False)


def test_map_concurrent_against_server_is_bounded():
    backend = ScriptedChatBackend(lambda m: m[-1]["content"].upper(), delay=0.05)
    with serve_in_thread(backend) as url:
        client = openai_client(url)

        def ask(word: str) -> str:
            reply = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": word}])
            return reply.choices[0].message.content

        words = [f"w{i}" for i in range(12)]
        assert map_concurrent(ask, words, max_workers=4, progress=False) == [w.upper() for w in words]
    assert 2 <= backend.max_in_flight <= 4


def test_cache_key_is_stable_and_distinguishes_parts():
    assert cache_key("judge-v1", "m", {"b": 1, "a": 2}) == cache_key("judge-v1", "m", {"a": 2, "b": 1})
    assert cache_key("a", "bc") != cache_key("ab", "c")
    assert len(cache_key("x")) == 64


def test_jsonl_cache_resumes_and_ignores_a_truncated_last_line(tmp_path):
    path = tmp_path / "sub" / "cache.jsonl"
    with JsonlCache(path) as cache:
        cache.put("k1", {"score": 1})
        cache.put("k2", {"score": 2, "text": "ü"})
        assert cache.get("k1") == {"score": 1} and cache.get("missing") is None
    with open(path, "a", encoding="utf-8") as handle:  # a crash in the middle of a write
        handle.write('{"key": "k3", "value": {"sco')
    with JsonlCache(path) as cache:
        assert cache.truncated_lines == 1 and len(cache) == 2 and "k3" not in cache
        cache.put("k3", {"score": 3})
        cache.put("k1", {"score": 10})
    with JsonlCache(path) as cache:
        assert cache.truncated_lines == 0 and cache.duplicates == 1
        assert {k: cache.get(k)["score"] for k in cache.keys()} == {"k1": 10, "k2": 2, "k3": 3}
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)


def test_jsonl_cache_keeps_a_complete_last_line_without_newline(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"key": "a", "value": {"x": 1}}', encoding="utf-8")
    with JsonlCache(path) as cache:
        assert cache.get("a") == {"x": 1} and cache.truncated_lines == 0
        cache.put("b", {"x": 2})
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_jsonl_cache_rejects_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"key": "a", "value": {}}\nnot json\n{"key": "b", "value": {}}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"cache.jsonl, line 2"):
        JsonlCache(path)


def test_jsonl_cache_is_thread_safe(tmp_path):
    path = tmp_path / "cache.jsonl"
    with JsonlCache(path) as cache:
        map_concurrent(lambda i: cache.put(cache_key(i), {"i": i}), range(100), max_workers=8, progress=False)
    with JsonlCache(path) as cache:
        assert len(cache) == 100 and cache.duplicates == 0 and cache.truncated_lines == 0
        assert all(cache.get(cache_key(i)) == {"i": i} for i in range(100))


def test_endpoint_failure_names_the_endpoint_and_masks_an_echoed_key(monkeypatch):
    monkeypatch.setenv("SPEECHSUM_TEST_KEY", "sk-echoed-123")
    client = openai_client("http://127.0.0.1:1/v1", "SPEECHSUM_TEST_KEY")
    echoed = openai.OpenAIError("Incorrect API key provided: sk-echoed-123")
    stop = str(endpoint_failure("speechsum x", client, "SPEECHSUM_TEST_KEY", echoed, "c.jsonl"))
    assert stop.startswith("speechsum x: the endpoint http://127.0.0.1:1/v1") and "sk-echoed" not in stop
    assert "$SPEECHSUM_TEST_KEY" in stop and "cached in c.jsonl" in stop
    assert endpoint_failure("speechsum x", client, "SPEECHSUM_TEST_KEY", KeyError("a bug"), "c.jsonl") is None


def test_the_timeout_bounds_a_whole_request_not_each_read():
    """A server dripping its answer a byte every 50 ms never idles past a per-read timeout."""
    class Drip(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 200}}]})
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            try:
                for byte in (head + body).encode():
                    self.wfile.write(bytes([byte]))
                    time.sleep(0.05)
            except OSError:
                pass  # the client gave up

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = openai_client(f"http://127.0.0.1:{server.server_address[1]}/v1", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            _chat(client)
        assert time.monotonic() - started < 1.5  # the drip would take ~14 s
    finally:
        server.shutdown()
        server.server_close()


def test_an_unknown_http_library_layout_keeps_the_per_read_timeout(monkeypatch, caplog):
    """Where the installed openai's transport has no network backend to wrap, the client still works,
    with the default per-operation timeout and one warning (not a crash of every remote command)."""
    from speechsum.utils import deadline

    class NoBackend:
        def __init__(self, seconds):
            raise AttributeError("'ConnectionPool' object has no attribute '_network_backend'")

    deadline._unsupported.cache_clear()
    monkeypatch.setattr(deadline, "_transport_class", lambda: NoBackend)
    with caplog.at_level("WARNING", logger="speechsum.utils.deadline"):
        assert deadline.deadline_http_client(3.0) is None
        with JSONServer(lambda request: {"choices": [{"index": 0, "message": {"role": "assistant", "content": "7"}}]}) as server:
            client = openai_client(server.url, timeout=3.0)
            assert _chat(client) == "7"
    assert "no total time limit per request" in caplog.text
    assert refuse_method_changing_redirect in client._client.event_hooks["response"]  # the redirect check stays


def test_a_http_library_without_the_wrapped_classes_keeps_the_per_read_timeout(monkeypatch, caplog):
    import importlib
    import types

    from speechsum.utils import deadline

    real_import = importlib.import_module
    monkeypatch.setattr(deadline.importlib, "import_module",  # an httpcore without NetworkStream & co.
                        lambda name: types.ModuleType(name) if name.startswith("httpcore") else real_import(name))
    deadline._transport_class.cache_clear()
    deadline._unsupported.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="speechsum.utils.deadline"):
            assert deadline.deadline_http_client(3.0) is None
        assert "no httpx/httpcore layout to build on (AttributeError" in caplog.text
    finally:
        deadline._transport_class.cache_clear()


def test_the_deadline_client_keeps_openais_connection_limits():
    from speechsum.utils.deadline import deadline_http_client

    client = deadline_http_client(3.0)
    pool = client._transport._pool  # the limits a transport-less DefaultHttpxClient would get
    assert (pool._max_connections, pool._max_keepalive_connections) == (1000, 100)


@pytest.mark.parametrize(("base_url", "example"), [("127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
                                                  ("ftp://host/v1", "http://host/v1")])
def test_a_base_url_that_is_no_http_url_is_refused_naming_it(base_url, example):
    """Before: every request failed 'APIConnectionError: Connection error.' (retried in vain), the missing
    http:// said nowhere."""
    from speechsum.utils.arguments import ConfigError

    with pytest.raises(ConfigError) as error:
        openai_client(base_url)
    assert str(error.value) == (f"base_url {base_url!r} is not an http:// or https:// URL; write it whole, e.g. "
                                f"{example}")


def test_a_connection_error_is_shown_with_its_cause():
    """Before: '(APIConnectionError: Connection error.)', whatever the cause (refused, unknown host, TLS)."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nothing listens there once closed
    client = openai_client(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(openai.APIConnectionError) as error:
        _chat(client)
    stop = str(endpoint_failure("speechsum x", client, "OPENAI_API_KEY", error.value, "c.jsonl"))
    assert "failed (APIConnectionError: Connection error. (ConnectError: [Errno 111] Connection refused))" in stop
    answer = ChatJsonAsker(client, "m", request_attempts=1).ask(MESSAGES, lambda text: text)  # a judge's item
    assert answer.error == (f"request failed at http://127.0.0.1:{port}/v1/: APIConnectionError: Connection error. "
                            "(ConnectError: [Errno 111] Connection refused)")  # which endpoint: named since 2026-12-07

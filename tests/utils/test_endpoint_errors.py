"""Endpoint errors over real loopback servers: the server's Retry-After in every form, what each
failure tells the user to do, API keys as people export them, a used-up quota."""

from __future__ import annotations

import email.utils
import time

import openai
import pytest

from speechsum.utils.remote import endpoint_error_text, openai_client, with_retries
from tests.servers import JSONServer, ScriptedChatBackend, serve_in_thread
from tests.utils.test_remote import _chat


@pytest.mark.parametrize(("after", "low", "high"), [
    # an HTTP date 3 s ahead: whole seconds (up to 1 s lost) and the request's own time (a loaded CI
    # machine took 1.97 s from 2.0 once) come off it
    (lambda now: email.utils.formatdate(now + 3, usegmt=True), 1.0, 3.0),
    (lambda now: email.utils.formatdate(now - 60, usegmt=True), 0.0005, 0.001),  # one gone by: the backoff
    (lambda now: "soon", 0.0005, 0.001),  # unreadable: the backoff
    (lambda now: "3600", 30.0, 30.0),  # an hour: capped at max_backoff
])
def test_retry_after_as_an_http_date_or_unreadable_over_http(after, low, high):
    backend = ScriptedChatBackend(lambda m: "ok", fail_first_n=1, fail_status=429, retry_after=after(time.time()))
    delays: list[float] = []
    with serve_in_thread(backend) as url:
        assert with_retries(lambda: _chat(openai_client(url)), backoff_seconds=0.001, sleep=delays.append) == "ok"
    assert len(delays) == 1 and low <= delays[0] <= high, delays


ADVICE = {  # status → what the one-line error says to do
    401: "the API key was missing or refused: export a valid key in the environment variable named by api_key_env / "
         "--api-key-env (a self-hosted server started without a key needs none), then rerun",
    403: "the API key has no access to this model or endpoint: check the key's permissions and the model name, then "
         "rerun",
    404: "no such route or model: check that base_url is the API's root, ending in /v1 (http://HOST:PORT/v1), and "
         "that the endpoint serves the model name (GET base_url/models lists them), then rerun",
    429: "rate-limited after every retry: lower the concurrency or wait (a used-up quota needs the provider's billing), "
         "then rerun",
    502: "the server failed after every retry: check its logs and load, then rerun",
}


@pytest.mark.parametrize("status", ADVICE)
def test_an_endpoint_error_says_what_to_do_for_its_status(status):
    """Before: every status got "check its URL, the model name, and the API key", a 503 or 429 alike."""
    with JSONServer(lambda request: (status, {"error": {"message": "Not Found"}})) as server:
        with pytest.raises(openai.APIStatusError) as error:
            _chat(openai_client(server.url))
    assert endpoint_error_text(error.value) == (
        f"the endpoint {server.url}/chat/completions failed ({type(error.value).__name__}: Error code: {status} - Not "
        f"Found); {ADVICE[status]}")


def test_a_key_read_with_its_line_end_reaches_the_server_and_one_no_header_carries_is_refused(monkeypatch):
    """Before: a key with the CR of a Windows file was refused by the HTTP client with an error quoting the whole key
    (b'Bearer sk-...\\r', not masked), retried as a connection error and ended "unreachable"."""
    from speechsum.utils.arguments import ConfigError

    with serve_in_thread(ScriptedChatBackend(lambda m: "ok"), api_key="sk-right-0123") as url:
        for given in ("sk-right-0123\r\n", "sk-right-0123\n", "  sk-right-0123\t"):
            monkeypatch.setenv("SPEECHSUM_TEST_KEY", given)
            assert _chat(openai_client(url, "SPEECHSUM_TEST_KEY")) == "ok"
        for given, position in (("sk-ri ght-0123", 5), ("sk-r\u00e9ght-0123", 4), ("sk-right\r\n-0123", 8)):
            monkeypatch.setenv("SPEECHSUM_TEST_KEY", given)
            with pytest.raises(ConfigError) as error:
                openai_client(url, "SPEECHSUM_TEST_KEY")
            assert str(error.value) == (
                f"the API key in $SPEECHSUM_TEST_KEY holds a character an HTTP header cannot carry (a space, a line end "
                f"or a non-ASCII letter) at position {position}: export the key exactly as issued")


def test_a_used_up_quota_is_not_retried_and_says_so():
    """OpenAI answers a used-up quota 429 like a rate limit; before, it was retried with backoff every time in vain."""
    quota = {"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota",
                       "code": "insufficient_quota"}}
    with JSONServer(lambda request: (429, quota)) as server:
        with pytest.raises(openai.RateLimitError) as error:
            with_retries(lambda: _chat(openai_client(server.url)), attempts=4, backoff_seconds=0.001)
        assert server.requests == 1
    assert endpoint_error_text(error.value).endswith(
        "You exceeded your current quota.); the account's quota is used up (no retry ends that): add credit with the "
        "provider, or use another key, then rerun")


def test_a_server_failing_every_retry_is_said_with_the_attempts_and_the_time_waited():
    """A 503 storm: before, "failed after every retry", saying neither how many nor how long."""
    backend = ScriptedChatBackend(lambda m: "ok", fail_every=1, fail_status=503, retry_after=1.5)
    delays: list[float] = []
    with serve_in_thread(backend) as url:
        with pytest.raises(openai.InternalServerError) as error:
            with_retries(lambda: _chat(openai_client(url)), attempts=3, backoff_seconds=0.001, sleep=delays.append)
    assert backend.count == 3 and delays == [1.5, 1.5]  # the server's Retry-After
    assert endpoint_error_text(error.value) == (
        f"the endpoint {url}/chat/completions failed (InternalServerError: Error code: 503 - scripted failure of "
        "request 3); the server failed after 3 attempts (3.0 s of waits between): check its logs and load, then rerun")


def test_a_server_closing_before_a_whole_answer_is_not_called_unreachable():
    """Before: "unreachable after every retry: check that a server runs at base_url", for a server that ran."""
    from tests.servers import RawServer

    def cut(handler, body: bytes) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"id\": ")
        handler.close_connection = True

    with RawServer(cut) as server:
        with pytest.raises(openai.APIConnectionError) as error:
            with_retries(lambda: _chat(openai_client(server.url)), attempts=2, backoff_seconds=0.001)
    assert len(server.targets) == 2 and endpoint_error_text(error.value).endswith(
        "(RemoteProtocolError: peer closed connection without sending complete message body (received 7 bytes, "
        "expected 500))); the server took the connection but closed it before a whole answer after 2 attempts "
        f"({error.value.retries_spent[1]:.1f} s of waits between): check its logs (a crash, a restart, a proxy's time "
        "limit) and that base_url's http/https is the server's, then rerun")


def test_a_timeout_names_its_seconds_and_the_setting_that_raises_it():
    """Before: "no answer within the timeout …: raise the timeout", naming neither how long it was nor which
    setting raises it (--judge-timeout, synth's --timeout, the teacher's timeout)."""
    import threading

    from speechsum.utils.remote import endpoint_failure
    from tests.servers import RawServer

    answer = threading.Event()
    with RawServer(lambda handler, body: answer.wait(10)) as silent:  # no first byte before the client gives up
        client = openai_client(silent.url, timeout=0.25)
        with pytest.raises(openai.APITimeoutError) as error:
            with_retries(lambda: _chat(client), attempts=2, backoff_seconds=0.001)
        answer.set()
    assert endpoint_error_text(error.value).endswith(
        "no answer within the timeout of 0.25 s after 2 attempts (0.0 s of waits between): raise it (the setting that "
        "sets it: --judge-timeout of speechsum pairs and evaluate, --timeout of speechsum synth, a remote KD teacher's "
        "model.teacher.init_args.timeout) or lower the concurrency, then rerun")
    assert "within the timeout of 0.25 s after 2 attempts (0.0 s of waits between): raise it (--timeout) or lower" in \
        str(endpoint_failure("speechsum synth", client, "K", error.value, "cache.jsonl"))

"""The fault proxy itself and speechsum.utils.remote's retry policy against each fault kind."""

from __future__ import annotations

import email.utils
import time

import openai
import pytest

from speechsum.utils.chat_json import ChatJsonAsker
from speechsum.utils.remote import RetryCounter, openai_client, with_retries
from tests.fault_proxy import FAULTS, FaultProxy
from tests.servers import ScriptedChatBackend, serve_in_thread

MESSAGES = [{"role": "user", "content": "Summarise: the launch moved to May."}]
CLIENT_TIMEOUT = 0.5
EXPECTED_ERROR = {
    "timeout": "APITimeoutError",
    "rate_limit": "RateLimitError",
    "server_error": "InternalServerError",
    "unavailable": "InternalServerError",
    "malformed_json": "JSONDecodeError",
    "truncated_body": "APIConnectionError",
    "refused": "APIConnectionError",
}


def _chat(client: openai.OpenAI) -> str:
    return client.chat.completions.create(model="scripted", messages=MESSAGES).choices[0].message.content


@pytest.mark.parametrize("kind", list(FAULTS))
def test_each_fault_is_retried_as_transient_and_counted(kind):
    assert set(EXPECTED_ERROR) == set(FAULTS)
    backend = ScriptedChatBackend(lambda m: "ok: " + m[-1]["content"])
    counter, delays = RetryCounter(), []
    with serve_in_thread(backend) as url, FaultProxy(url, seed=0, rate=1.0, kinds=(kind,), max_faults_per_request=1,
                                                     hang_seconds=CLIENT_TIMEOUT + 0.3) as proxy:
        client = openai_client(proxy.url, timeout=CLIENT_TIMEOUT)
        text = with_retries(lambda: _chat(client), attempts=2, backoff_seconds=0.01, on_retry=counter,
                            sleep=delays.append)
    assert text == "ok: " + MESSAGES[0]["content"]
    assert counter.by_error == {EXPECTED_ERROR[kind]: 1} and proxy.faults == {kind: 1}
    assert [r.fault for r in proxy.log] == [kind, ""] and proxy.delivered == 1
    assert backend.count == (2 if kind == "truncated_body" else 1)  # a truncated answer was computed upstream
    if kind == "rate_limit":
        assert delays == [pytest.approx(proxy.retry_after)]  # Retry-After beats the 0.01 s backoff


def test_malformed_and_truncated_answers_leave_a_json_asker_item_unjudged_only_after_all_attempts():
    backend = ScriptedChatBackend(lambda m: '{"n": 1}')
    with serve_in_thread(backend) as url, FaultProxy(url, seed=0, rate=1.0, kinds=("malformed_json", "truncated_body"),
                                                     max_faults_per_request=10) as proxy:
        asker = ChatJsonAsker(openai_client(proxy.url), "scripted", request_attempts=3, backoff_seconds=0.001)
        answer = asker.ask(MESSAGES, lambda text: text)
    assert answer.value is None and answer.error.startswith("request failed") and proxy.requests == 3
    assert asker.retries.retries == 2 and asker.calls == 3  # retried as transient, never a crash


def test_fault_choice_is_deterministic_per_seed_and_bounded_per_request():
    proxy = FaultProxy("http://127.0.0.1:9/v1", seed=7, rate=0.5)
    again = FaultProxy("http://127.0.0.1:9/v1", seed=7, rate=0.5)
    other = FaultProxy("http://127.0.0.1:9/v1", seed=8, rate=0.5)
    plan = [proxy.choose(f"d{i}", k) for i in range(200) for k in range(3)]
    assert plan == [again.choose(f"d{i}", k) for i in range(200) for k in range(3)]
    assert plan != [other.choose(f"d{i}", k) for i in range(200) for k in range(3)]
    assert all(proxy.choose(f"d{i}", 2) == "" for i in range(200))  # max_faults_per_request=2
    first = [proxy.choose(f"d{i}", 0) for i in range(200)]
    assert 0.4 < sum(map(bool, first)) / 200 < 0.6 and set(first) - {""} == set(FAULTS)
    for server in (proxy, again, other):
        server._server.server_close()
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultProxy("http://127.0.0.1:9/v1", seed=0, kinds=("gremlins",))


@pytest.mark.parametrize("header, expected", [
    (3600, 0.2),  # an hour asked, the cap (max_backoff) given
    (0.05, 0.05),
    ("Wed, 21 Oct 2015 07:28:00 GMT", None),  # a date in the past: no wait beyond the backoff
    ("future", 0.2),  # a date 30 s ahead, capped
])
def test_retry_after_is_honoured_but_bounded(header, expected):
    if header == "future":
        header = email.utils.formatdate(time.time() + 30, usegmt=True)
    backend = ScriptedChatBackend(lambda m: "ok", fail_first_n=1, fail_status=429, retry_after=header)
    delays: list[float] = []
    with serve_in_thread(backend) as url:
        assert with_retries(lambda: _chat(openai_client(url)), backoff_seconds=0.001, max_backoff=0.2,
                            sleep=delays.append) == "ok"
    assert len(delays) == 1
    assert delays[0] == pytest.approx(expected) if expected is not None else delays[0] <= 0.001

"""Host-name lookups of the remote client within the whole-request timeout. The system resolver
(``getaddrinfo``) has no timeout: a resolver that hung held every request past its time limit. The
resolver is replaced by one that answers late or not at all; the server is a real one on loopback."""

from __future__ import annotations

import socket
import threading
import time

import openai
import pytest

from speechsum.utils.remote import endpoint_error_text, openai_client
from tests.servers import ScriptedChatBackend, serve_in_thread

MESSAGES = [{"role": "user", "content": "hi"}]
SLOW_HOST = "speechsum-slow-dns.test"


@pytest.fixture
def slow_resolver(monkeypatch):
    """``SLOW_HOST`` resolves to 127.0.0.1 only once the test ends (a resolver that does not answer); other
    names as the system resolves them."""
    answer, system = threading.Event(), socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == SLOW_HOST:
            answer.wait(30)
            host = "127.0.0.1"
        return system(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    answer.set()


def test_a_lookup_that_hangs_ends_within_the_timeout(slow_resolver):
    """Before: the request waited for the resolver (here 30 s), whatever the timeout."""
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok")) as url:
        client = openai_client(url.replace("127.0.0.1", SLOW_HOST), timeout=0.5)
        start = time.monotonic()
        with pytest.raises(openai.APITimeoutError) as error:
            client.chat.completions.create(model="scripted", messages=MESSAGES)
    assert time.monotonic() - start < 2.0
    assert endpoint_error_text(error.value).startswith(
        f"the endpoint {url.replace('127.0.0.1', SLOW_HOST)}/chat/completions failed (APITimeoutError: Request timed "
        f"out. (ConnectTimeout: the host name {SLOW_HOST} was not resolved within the 0.5 s left to the request (the "
        "system's DNS resolver did not answer))); no answer within the timeout")


def test_a_name_is_connected_to_by_each_of_its_addresses(monkeypatch):
    """A name that resolves to an address where nothing listens first, then to the server's: tried in turn."""
    system = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == SLOW_HOST:
            return [*system("127.0.0.2", 1, *args, **kwargs), *system("127.0.0.1", port, *args, **kwargs)]
        return system(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok")) as url:
        client = openai_client(url.replace("127.0.0.1", SLOW_HOST), timeout=5)
        assert client.chat.completions.create(model="scripted", messages=MESSAGES).choices[0].message.content == "ok"


def test_an_unknown_host_is_still_a_connection_error_naming_the_lookup():
    client = openai_client("http://speechsum-no-such-host.invalid:8000/v1", timeout=5)
    with pytest.raises(openai.APIConnectionError) as error:
        client.chat.completions.create(model="scripted", messages=MESSAGES)
    assert not isinstance(error.value, openai.APITimeoutError)
    assert type(error.value.__cause__).__name__ == "ConnectError"

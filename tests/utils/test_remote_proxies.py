"""The environment's HTTP proxies (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``) and the remote client,
with a forward proxy on loopback. The client is given its own transport (the whole-request deadline),
which made httpx ignore the environment: behind a proxy every remote host was unreachable."""

from __future__ import annotations

import importlib.util
import json
import time
from http.server import BaseHTTPRequestHandler

import openai
import pytest

from speechsum.utils.remote import openai_client
from tests.servers import JSONServer, RawServer

MESSAGES = [{"role": "user", "content": "hi"}]
REMOTE = "http://speechsum-proxy-test.invalid:8000/v1"  # a host only the proxy "reaches"
VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def completion(text: str) -> bytes:
    return json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}).encode()


def forward_proxy(drip: bool = False) -> RawServer:
    """A forward proxy answering every request itself (``via proxy``); its ``targets`` are the
    absolute-form URLs it was asked for; ``drip``: the answer a byte every 50 ms."""

    def respond(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        reply = completion("via proxy")
        answer = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(reply)}\r\n\r\n".encode() + reply
        for byte in answer if drip else []:
            handler.wfile.write(bytes([byte]))
            time.sleep(0.05)
        handler.wfile.write(b"" if drip else answer)

    return RawServer(respond)


@pytest.fixture
def proxy_env(monkeypatch):
    """Sets environment proxy variables (both spellings cleared first: ``urllib`` reads either)."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch.setenv


def _chat(client: openai.OpenAI) -> str:
    return client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content


def test_a_remote_host_is_asked_through_the_environment_proxy(proxy_env):
    with forward_proxy() as proxy:
        proxy_env("HTTP_PROXY", proxy.address)
        assert _chat(openai_client(REMOTE)) == "via proxy"
    assert proxy.targets == [f"{REMOTE}/chat/completions"]


def test_a_request_through_a_proxy_keeps_the_whole_request_timeout(proxy_env):
    with forward_proxy(drip=True) as proxy:
        proxy_env("HTTP_PROXY", proxy.address)
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            _chat(openai_client(REMOTE, timeout=0.5))
        assert time.monotonic() - started < 1.5  # the drip would take ~15 s
    assert proxy.targets == [f"{REMOTE}/chat/completions"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_base_url_is_asked_directly_whatever_the_proxy(proxy_env, host):
    """No proxy can reach this machine's loopback (a local vLLM or speechsum serve)."""
    with forward_proxy() as proxy, JSONServer(lambda request: json.loads(completion("direct"))) as server:
        proxy_env("HTTP_PROXY", proxy.address)
        proxy_env("ALL_PROXY", proxy.address)
        assert _chat(openai_client(server.url.replace("127.0.0.1", host))) == "direct"
    assert proxy.targets == [] and server.requests == 1


def test_no_proxy_hosts_are_asked_directly(proxy_env):
    with forward_proxy() as proxy:
        proxy_env("HTTP_PROXY", proxy.address)
        proxy_env("NO_PROXY", "example.org,speechsum-proxy-test.invalid")
        with pytest.raises(openai.APIConnectionError):  # direct: the name resolves nowhere
            _chat(openai_client(REMOTE))
    assert proxy.targets == []


SOCKS_USABLE = importlib.util.find_spec("socksio") is not None


@pytest.mark.parametrize("proxy", ["ftp://127.0.0.1:2121", pytest.param(
    "socks5://127.0.0.1:1080", marks=pytest.mark.skipif(SOCKS_USABLE, reason="httpx's SOCKS extra is installed"))])
def test_a_proxy_the_client_cannot_use_is_said_and_skipped(proxy_env, caplog, proxy):
    """``ALL_PROXY=socks5://…`` without httpx's SOCKS extra, or a scheme it has no transport for: a warning and
    direct requests, not an ImportError or ValueError ending every remote command (loopback ones too)."""
    proxy_env("ALL_PROXY", proxy)
    with JSONServer(lambda request: json.loads(completion("direct"))) as server:
        assert _chat(openai_client(server.url)) == "direct"
    warned = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("remote clients: the environment's proxy for all:// cannot be "
                                                     "used (") and warned[0].endswith("); those requests go direct")

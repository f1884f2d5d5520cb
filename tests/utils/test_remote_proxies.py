"""The environment's HTTP proxies (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``) and the remote client,
with a forward proxy on loopback. The client is given its own transport (the whole-request deadline),
which made httpx ignore the environment: behind a proxy every remote host was unreachable."""

from __future__ import annotations

import importlib.util
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from speechsum.utils.remote import endpoint_error_text, openai_client, with_retries
from tests.servers import JSONServer, RawServer, ThreadedServer

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


class AuthenticatingProxy(ThreadedServer):
    """A forward proxy that answers every request, and every CONNECT (the tunnel of an https:// URL), with 407
    Proxy Authentication Required; ``asked``: how many it was sent."""

    def __init__(self) -> None:
        owner = self
        self.asked = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def refuse(self) -> None:
                owner.asked += 1
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                page = b"<html><body>Proxy Authentication Required</body></html>"
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="corp"')
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            do_CONNECT = do_POST = refuse  # noqa: N815

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        super().__init__(server)
        self.address = f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("remote", [REMOTE, "https://speechsum-proxy-test.invalid/v1"])
def test_a_proxys_407_is_named_with_what_to_set_and_not_retried(proxy_env, remote):
    """Before: "check its URL, the model name, and the API key" (http), or "Connection error." retried as
    unreachable (https, whose tunnel the proxy refused): neither said that a proxy wants credentials."""
    with AuthenticatingProxy() as proxy:
        proxy_env("HTTP_PROXY", proxy.address)
        proxy_env("HTTPS_PROXY", proxy.address)
        client = openai_client(remote)
        with pytest.raises(openai.OpenAIError) as error:
            with_retries(lambda: _chat(client), attempts=3, backoff_seconds=0.01)
    assert proxy.asked == 1
    text = endpoint_error_text(error.value)
    assert text.startswith(f"the endpoint {remote}/chat/completions failed (") and text.endswith(
        "); a proxy between here and the endpoint asks for credentials (407 Proxy Authentication Required): give "
        "them in the environment's proxy URL (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY), as user:password@ before the "
        "proxy's host, or list the endpoint's host in NO_PROXY if it is reached without the proxy, then rerun")

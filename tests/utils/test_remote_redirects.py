"""A remote endpoint that redirects its POSTs, through speechsum.utils.remote's client on loopback."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from speechsum.serving.cli import build_server
from speechsum.utils.remote import endpoint_error_text, openai_client, with_retries
from tests.servers import ScriptedChatBackend, ThreadedServer, serve_in_thread

MESSAGES = [{"role": "user", "content": "hi"}]


class RedirectServer(ThreadedServer):
    """Answers every request with ``status`` and ``Location: target + path``; counts the methods it saw."""

    def __init__(self, status: int, target: str, tls: ssl.SSLContext | None = None) -> None:
        self.methods: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _redirect(self) -> None:
                owner.methods.append(self.command)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(status)
                self.send_header("Location", target + self.path.removeprefix("/v1"))
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _redirect  # noqa: N815

        super().__init__(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.url = f"http{'s' if tls else ''}://127.0.0.1:{self._server.server_address[1]}/v1"


@pytest.fixture
def tls(tmp_path, monkeypatch) -> ssl.SSLContext:
    """A server's TLS context with a certificate for 127.0.0.1 (made by openssl) that the client trusts."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@contextlib.contextmanager
def https_chat_server(context: ssl.SSLContext, api_key: str):
    """``serve_in_thread`` on https: its base URL."""
    server = build_server(ScriptedChatBackend(lambda m: "ok"), host="127.0.0.1", port=0, api_key=api_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with ThreadedServer(server):
        yield server.base_url.replace("http://", "https://")


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_post_redirected_as_a_get_is_named_not_a_405_from_elsewhere(status):
    """Before: the client followed the redirect as a GET and failed with the target's 405 'Method GET
    is not allowed', naming neither the redirect nor base_url."""
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok")) as target, RedirectServer(status, target) as moved:
        with pytest.raises(openai.APIStatusError) as error:
            openai_client(moved.url).chat.completions.create(model="scripted", messages=MESSAGES)
    assert moved.methods == ["POST"] and error.value.status_code == status
    line = endpoint_error_text(error.value)
    assert f"POST {moved.url}/chat/completions was redirected ({status}) to '{target}/chat/completions'" in line
    assert "set base_url to the address the redirect points to" in line and "\n" not in line
    assert line.isprintable()  # one line, no control characters


def test_a_redirect_that_keeps_the_method_is_followed():
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok")) as target, RedirectServer(308, target) as moved:
        reply = openai_client(moved.url).chat.completions.create(model="scripted", messages=MESSAGES)
    assert reply.choices[0].message.content == "ok" and moved.methods == ["POST"]


@pytest.mark.parametrize("status", [307, 308])
def test_a_redirect_elsewhere_that_would_drop_the_key_is_named_not_a_401(monkeypatch, status):
    """Before: followed without the key (clients drop it for another host or port), and the target's 401 said
    to export a valid key, which was there all along."""
    monkeypatch.setenv("SPEECHSUM_REDIRECT_KEY", "sk-redirect-test-1")
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok"), api_key="sk-redirect-test-1") as target, \
            RedirectServer(status, target) as moved:
        with pytest.raises(openai.APIStatusError) as error:
            openai_client(moved.url, "SPEECHSUM_REDIRECT_KEY").chat.completions.create(model="scripted",
                                                                                        messages=MESSAGES)
    assert error.value.status_code == status and moved.methods == ["POST"]
    assert str(error.value) == (
        f"POST {moved.url}/chat/completions was redirected ({status}) to '{target}/chat/completions', another origin "
        "(host, port or scheme), where a client does not send the API key: set base_url to the address the redirect "
        "points to")


def test_a_redirect_elsewhere_of_a_base_url_with_user_password_names_them_not_a_key(monkeypatch):
    """Before: "where a client does not send the API key", for a base_url whose user:password@ (Basic auth), not
    a key, would be dropped there; nothing reaches the other host."""
    monkeypatch.delenv("SPEECHSUM_REDIRECT_KEY", raising=False)
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok")) as target, RedirectServer(307, target) as moved:
        with pytest.raises(openai.APIStatusError) as error:
            openai_client(moved.url.replace("http://", "http://user:pass@"), "SPEECHSUM_REDIRECT_KEY").chat \
                .completions.create(model="scripted", messages=MESSAGES)
    assert moved.methods == ["POST"]
    assert endpoint_error_text(error.value).startswith(
        f"the endpoint {moved.url.replace('http://', 'http://***@')}/chat/completions failed (APIStatusError: POST "
        f"{moved.url.replace('http://', 'http://***@')}/chat/completions was redirected (307) to "
        f"'{target}/chat/completions', another origin (host, port or scheme), where a client does not send the "
        "base_url's user:password@ (Basic auth): set base_url to the address the redirect points to)")


def test_a_redirect_elsewhere_without_a_key_is_followed(monkeypatch):
    """A self-hosted endpoint without a key (the placeholder is sent) loses nothing by the move."""
    monkeypatch.delenv("SPEECHSUM_REDIRECT_KEY", raising=False)
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok")) as target, RedirectServer(307, target) as moved:
        reply = openai_client(moved.url, "SPEECHSUM_REDIRECT_KEY").chat.completions.create(model="scripted",
                                                                                           messages=MESSAGES)
    assert reply.choices[0].message.content == "ok"


def test_a_redirect_loop_is_not_retried_nor_called_unreachable():
    """Before: 4 attempts of 21 requests each, then "unreachable after every retry: check that a server runs"."""
    with RedirectServer(307, "") as looping:  # Location: the request's own path
        with pytest.raises(openai.APIConnectionError) as error:
            with_retries(lambda: openai_client(looping.url).chat.completions.create(model="m", messages=MESSAGES),
                         backoff_seconds=0.001)
    assert looping.methods == ["POST"] * 21  # one attempt: the first request and 20 redirects
    assert endpoint_error_text(error.value).startswith(  # the user:pass@ masked
        f"the endpoint {looping.url}/chat/completions failed (APIConnectionError: Connection error. (TooManyRedirects: "
        "Exceeded maximum allowed redirects.)); the endpoint redirects without end (a loop): set base_url to the API's "
        "own address, past the redirects, then rerun")


def test_a_redirect_from_https_to_plain_http_is_named_so(monkeypatch, tls):
    """Before: called 'another origin' and told to set base_url to the http address, where the key travels
    unencrypted."""
    monkeypatch.delenv("SPEECHSUM_REDIRECT_KEY", raising=False)  # user:pass@ is the credential (with a key: refused)
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok"), api_key="sk-redirect-test-1") as target, \
            RedirectServer(307, target, tls) as moved:
        with pytest.raises(openai.APIStatusError) as error:
            openai_client(moved.url.replace("https://", "https://user:pass@"), "SPEECHSUM_REDIRECT_KEY").chat \
                .completions.create(model="scripted", messages=MESSAGES)
    assert moved.methods == ["POST"]
    assert endpoint_error_text(error.value).startswith(  # the user:pass@ masked
        f"the endpoint {moved.url.replace('https://', 'https://***@')}/chat/completions failed (APIStatusError: POST "
        f"{moved.url.replace('https://', 'https://***@')}/chat/completions was redirected (307) to "
        f"'{target}/chat/completions', from https to plain http, where a client does not send the base_url's "
        "user:password@ (Basic auth) (it would travel unencrypted): check the redirect of the server or the proxy in between (an endpoint behind https "
        "answers on https), or set base_url to the http address if it is meant to be one); ")


def test_an_upgrade_to_https_on_another_port_that_would_drop_the_key_is_named_not_a_401(monkeypatch, tls):
    """Only http's port 80 to https's 443 of the same host keeps the key; before, any upgrade of the same host
    was followed, and the target's 401 said to export a valid key."""
    monkeypatch.setenv("SPEECHSUM_REDIRECT_KEY", "sk-redirect-test-1")
    with https_chat_server(tls, "sk-redirect-test-1") as target, RedirectServer(308, target) as moved:
        with pytest.raises(openai.APIStatusError) as error:
            openai_client(moved.url, "SPEECHSUM_REDIRECT_KEY").chat.completions.create(model="scripted",
                                                                                        messages=MESSAGES)
    assert error.value.status_code == 308 and str(error.value) == (
        f"POST {moved.url}/chat/completions was redirected (308) to '{target}/chat/completions', another origin "
        "(host, port or scheme), where a client does not send the API key: set base_url to the address the redirect "
        "points to")
    with https_chat_server(tls, "sk-redirect-test-1") as target:  # the address it names answers with the key
        reply = openai_client(target, "SPEECHSUM_REDIRECT_KEY").chat.completions.create(model="scripted",
                                                                                       messages=MESSAGES)
    assert reply.choices[0].message.content == "ok"

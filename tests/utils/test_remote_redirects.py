"""A remote endpoint that redirects its POSTs, through speechsum.utils.remote's client on loopback."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from speechsum.utils.remote import endpoint_error_text, openai_client, with_retries
from tests.servers import ScriptedChatBackend, ThreadedServer, serve_in_thread

MESSAGES = [{"role": "user", "content": "hi"}]


class RedirectServer(ThreadedServer):
    """Answers every request with ``status`` and ``Location: target + path``; counts the methods it saw."""

    def __init__(self, status: int, target: str) -> None:
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
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"


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
    assert endpoint_error_text(error.value) == (
        f"the endpoint {looping.url}/chat/completions failed (APIConnectionError: Connection error. (TooManyRedirects: "
        "Exceeded maximum allowed redirects.)); the endpoint redirects without end (a loop): set base_url to the API's "
        "own address, past the redirects, then rerun")

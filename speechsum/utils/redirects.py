"""Redirects of an OpenAI-compatible endpoint that a client must not follow silently (the remote
client's response hooks, :func:`speechsum.utils.remote.openai_client`): a POST turned into a GET
(301/302/303), and a request carrying an API key moved to another origin (307/308), where the key is
dropped. Each is an ``openai.APIStatusError`` naming the redirect and its target (not retried); so is
a redirect loop not retried (:func:`redirect_loop`)."""

from __future__ import annotations

from typing import Any

import openai

PLACEHOLDER_KEY = "EMPTY"  # what vLLM and speechsum serve accept when they run without a key


def refuse_method_changing_redirect(response: Any) -> None:
    """An ``openai.APIStatusError`` (not retried) for a POST answered with a 301, 302 or 303 redirect:
    followed, it arrives as a GET (HTTP clients change the method), whose 404 or 405 named neither the
    redirect nor base_url. 307 and 308 keep the method and body, and are followed (to the same origin, or
    without a key: :func:`refuse_redirect_dropping_key`)."""
    request = response.request
    if request.method != "POST" or response.status_code not in (301, 302, 303):
        return
    target = response.headers.get("location", "")
    response.read()
    raise openai.APIStatusError(
        f"POST {request.url} was redirected ({response.status_code}) to {target!r}, which a client follows as a "
        "GET: set base_url to the address the redirect points to (an http:// base_url behind an https-only "
        "proxy: write https://)", response=response, body=None)


def refuse_redirect_dropping_key(response: Any) -> None:
    """An ``openai.APIStatusError`` (not retried) for a 307/308 redirect of a request carrying an API key to
    another origin (host, port or scheme; an upgrade of the same host from http's port 80 to https's 443
    excepted, where clients keep it): HTTP clients drop the key there, and the target's 401 said to export a
    valid key, which was there all along. One from https to plain http says so (the key would travel
    unencrypted; before 2026-12-07 it was told to set base_url to the http address)."""
    request, location = response.request, response.headers.get("location")
    if response.status_code not in (307, 308) or not location or \
            request.headers.get("authorization", "") in ("", f"Bearer {PLACEHOLDER_KEY}"):
        return
    target = request.url.join(location)
    host = request.url.host  # the key is kept to the same origin, and on an upgrade of port 80 to https's 443
    if _origin(target) == _origin(request.url) or (_origin(request.url), _origin(target)) == (
            ("http", host, 80), ("https", host, 443)):
        return
    response.read()
    sent = "the base_url's user:password@ (Basic auth)" if request.headers.get("authorization", "").lower() \
        .startswith("basic ") else "the API key"  # what the client would drop there
    if (request.url.scheme, target.scheme) == ("https", "http"):
        raise openai.APIStatusError(
            f"{request.method} {request.url} was redirected ({response.status_code}) to {location!r}, from https to "
            f"plain http, where a client does not send {sent} (it would travel unencrypted): check the redirect of "
            "the server or the proxy in between (an endpoint behind https answers on https), or set base_url to the "
            "http address if it is meant to be one", response=response, body=None)
    raise openai.APIStatusError(
        f"{request.method} {request.url} was redirected ({response.status_code}) to {location!r}, another origin "
        f"(host, port or scheme), where a client does not send {sent}: set base_url to the address the redirect "
        "points to",
        response=response, body=None)


def _origin(url: Any) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or {"http": 80, "https": 443}.get(url.scheme)


def redirect_loop(error: BaseException) -> bool:
    """Whether ``error`` is the client giving up on a chain of redirects (``TooManyRedirects``, shown as a
    connection error): not retried, and not "unreachable"."""
    return isinstance(error, openai.APIConnectionError) and type(error.__cause__).__name__ == "TooManyRedirects"

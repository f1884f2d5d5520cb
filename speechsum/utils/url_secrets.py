"""The credentials of a URL masked in what is shown (an error, a log line), whatever the URL's form:
``http://user:password@host``, ``user:password@host:8000/v1`` without a scheme (a base_url written
without ``http://`` was echoed whole in the error that refused it), ``TOKEN@host:8000/v1``, and a
query's secret values (``?api_key=``, ``?key=``, ``?token=``)."""

from __future__ import annotations

import re

# the user:password@ (or token@) of a URL with a scheme: masked like keys wherever an endpoint's URL is shown
URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]+@")
_STARTS = r"(?<![^\s'\"(=,<\[])"  # at the text's start, or after a space, quote, bracket, = or comma
# no scheme: user:password@host (the colon says credentials; an e-mail address has none)
BARE_USER_PASSWORD = re.compile(_STARTS + r"[^\s/?#@'\":]+:[^\s/?#@'\"]*@(?=[\w\[])")
# no scheme: TOKEN@host:PORT or TOKEN@host/path (an e-mail address is followed by neither)
BARE_TOKEN = re.compile(_STARTS + r"[^\s/?#@'\":]+@(?=[\w.-]+(?::\d|/))")
SECRET_NAME = r"[\w.-]*(?:key|token|secret|passw(?:or)?d|pwd|sig|signature|auth|credential)[\w.-]*"
SECRET_QUERY = re.compile(rf"(?i)([?&;]{SECRET_NAME}=)[^&#\s'\")>]+")  # to a bracket closing a message


def without_url_credentials(text: str) -> str:
    """``text`` with the credentials of every URL with a scheme in it masked: ``http://user:password@host`` →
    ``http://***@host`` (what a saved config masks: nothing else of its text changes)."""
    return URL_CREDENTIALS.sub(r"\1***@", text)


def without_url_secrets(text: str, url: str | None = None) -> str:
    """``text`` (a message or log line) with the credentials of every URL in it masked, with a scheme or
    without (:func:`without_url_credentials`, ``user:password@host`` → ``***@host``, ``TOKEN@host:8000`` →
    ``***@host:8000``) and a query's secret values (``?api_key=SECRET`` → ``?api_key=***``); ``url``, the
    URL the message is about, has its user part masked whatever it holds (``TOKEN@host`` without a port)."""
    if url:
        address = url.split("://", 1)[-1].split("?", 1)[0].split("#", 1)[0]
        if "@" in address and address.rsplit("@", 1)[0]:
            text = text.replace(address.rsplit("@", 1)[0] + "@", "***@")
    text = without_url_credentials(text)
    text = BARE_USER_PASSWORD.sub("***@", text)
    text = BARE_TOKEN.sub("***@", text)
    return SECRET_QUERY.sub(r"\1***", text)

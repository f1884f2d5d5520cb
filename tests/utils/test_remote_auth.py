"""base_url forms and credentials the remote client cannot use as given, against real loopback servers
(tests/servers.py): refused before any request, naming the settings, credentials masked."""

from __future__ import annotations

import pytest

from speechsum.stages.kd.teachers import OpenAICompatibleTeacher
from speechsum.utils.arguments import ConfigError
from speechsum.utils.remote import check_key_option, openai_client
from tests.servers import ScriptedChatBackend, serve_in_thread

MESSAGES = [{"role": "user", "content": "Summarise: the meeting moved to Friday."}]
KEY = "sk-basic-and-bearer-1"


@pytest.mark.parametrize("path", ["/v1//", "//v1", "/v1//chat"])
def test_a_base_url_with_an_empty_path_segment_is_refused_with_single_slashes(path):
    """Before: ``…/v1//`` was taken; every request went to ``/v1//chat/completions``, a 404 from speechsum serve
    ("no such route or model") whose cause (the doubled slash) was said nowhere."""
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok")) as url:
        address = url.removesuffix("/v1")
        with pytest.raises(ConfigError) as error:
            openai_client(address + path).chat.completions.create(model="scripted", messages=MESSAGES)
    single = address + path.replace("//", "/")
    assert str(error.value) == (f"base_url {address + path!r} holds an empty path segment (//): write it with single "
                                f"slashes, {single}")


@pytest.mark.parametrize(("end", "problem"), [
    ("/v1?", "holds a query (?), which the client would put inside the path of every request (it adds "
             "/chat/completions after base_url): write the API's root without it, {url} (Azure OpenAI: "
             "https://RESOURCE.openai.azure.com/openai/v1/, which takes no api-version)"),
    ("/v1\\", "holds a backslash: URLs use /, e.g. {url}"),
])
def test_a_base_url_ending_in_an_empty_query_or_a_backslash_is_refused(end, problem):
    """Before: taken; the client asked ``/v1?chat/completions`` or ``/v1\\/chat/completions``, a 404 for every
    request (an empty query passed the check of a query)."""
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok")) as url:
        given = url.removesuffix("/v1") + end
        with pytest.raises(ConfigError) as error:
            openai_client(given).chat.completions.create(model="scripted", messages=MESSAGES)
    assert str(error.value) == f"base_url {given!r} {problem.format(url=url)}"


def test_a_base_url_with_user_password_and_a_key_is_refused_naming_both(monkeypatch):
    """Before: the HTTP client sent the URL's user:password@ as Basic auth in place of the Bearer key, and the
    server (which checks the header) answered 401 "Missing API key" with the key set all along."""
    monkeypatch.setenv("SPEECHSUM_AUTH_TEST_KEY", KEY)
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok"), api_key=KEY) as url:
        with_user = url.replace("http://", "http://alice:pa55word@")
        with pytest.raises(ConfigError) as error:
            openai_client(with_user, "SPEECHSUM_AUTH_TEST_KEY").chat.completions.create(model="scripted",
                                                                                         messages=MESSAGES)
        masked = url.replace("http://", "http://***@")
        assert str(error.value) == (
            f"base_url {masked} holds user:password@ (sent as HTTP Basic auth) and api_key_env SPEECHSUM_AUTH_TEST_KEY "
            "holds an API key (sent as 'Authorization: Bearer'): a request has one Authorization header, and the Basic "
            "one would replace the key, which the server would never get. Keep one: remove user:password@ from "
            "base_url (a server that checks the key), or unset SPEECHSUM_AUTH_TEST_KEY or name in api_key_env a "
            "variable that is not set (a server behind Basic auth alone)")
        with pytest.raises(ConfigError, match=r"^--judge-base-url http://\*\*\*@127.*--api-key-env SPEECHSUM_AUTH"):
            check_key_option("SPEECHSUM_AUTH_TEST_KEY", with_user)  # speechsum pairs / evaluate, before any work
        with pytest.raises(ConfigError, match=r"^OpenAICompatibleTeacher base_url http://\*\*\*@127.*api_key_env "):
            OpenAICompatibleTeacher("scripted", base_url=with_user, api_key_env="SPEECHSUM_AUTH_TEST_KEY")
        # the key alone reaches the server that checks it; the URL's credentials alone go without a key
        reply = openai_client(url, "SPEECHSUM_AUTH_TEST_KEY").chat.completions.create(model="scripted",
                                                                                     messages=MESSAGES)
        assert reply.choices[0].message.content == "ok"
    monkeypatch.delenv("SPEECHSUM_AUTH_TEST_KEY")
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok")) as url:
        reply = openai_client(url.replace("http://", "http://alice:pa55word@"), "SPEECHSUM_AUTH_TEST_KEY") \
            .chat.completions.create(model="scripted", messages=MESSAGES)
    assert reply.choices[0].message.content == "ok"

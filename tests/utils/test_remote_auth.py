"""base_url forms and credentials the remote client cannot use as given, against real loopback servers
(tests/servers.py): refused before any request, or warned about, naming the settings, credentials masked."""

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


def test_a_base_url_with_user_password_and_a_key_is_warned_about_and_its_401_says_why(monkeypatch, caplog):
    """Before: the HTTP client sent the URL's user:password@ as Basic auth in place of the Bearer key without a
    word, and a server that checks the key answered 401 "Missing API key" whose advice said to export the key
    that was set all along. Now the client warns when made, and the 401 names the Basic auth; a server behind
    Basic auth alone keeps working with a key set (an OPENAI_API_KEY exported for other tools)."""
    from speechsum.utils.remote import endpoint_error_text

    monkeypatch.setenv("SPEECHSUM_AUTH_TEST_KEY", KEY)
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok"), api_key=KEY) as url:
        with_user = url.replace("http://", "http://alice:pa55word@")
        with caplog.at_level("WARNING", logger="speechsum.utils.remote"):
            client = openai_client(with_user, "SPEECHSUM_AUTH_TEST_KEY")
            openai_client(with_user, "SPEECHSUM_AUTH_TEST_KEY")  # said once
        masked = url.replace("http://", "http://***@")
        assert [r.getMessage() for r in caplog.records if "Basic" in r.getMessage()] == [
            f"base_url {masked} holds user:password@, sent as HTTP Basic auth in the request's one Authorization "
            "header, so the API key in SPEECHSUM_AUTH_TEST_KEY (api_key_env) is not sent. Fine for a server behind "
            "Basic auth alone; a server that checks the key answers 401 'Missing API key': for it, remove "
            "user:password@ from base_url. (Naming in api_key_env a variable that is not set silences this.)"]
        with pytest.raises(Exception) as refused:
            client.chat.completions.create(model="scripted", messages=MESSAGES)
        text = endpoint_error_text(refused.value)
        assert "401" in text and "pa55word" not in text and "user:password@ as HTTP Basic auth" in text
        check_key_option("SPEECHSUM_AUTH_TEST_KEY", with_user)  # pairs / evaluate: no refusal before any work
        OpenAICompatibleTeacher("scripted", base_url=with_user, api_key_env="SPEECHSUM_AUTH_TEST_KEY")
        # the key alone reaches the server that checks it
        reply = openai_client(url, "SPEECHSUM_AUTH_TEST_KEY").chat.completions.create(model="scripted",
                                                                                     messages=MESSAGES)
        assert reply.choices[0].message.content == "ok"
    with serve_in_thread(ScriptedChatBackend(lambda m: "ok")) as url:  # Basic auth alone, the key set: works
        reply = openai_client(url.replace("http://", "http://alice:pa55word@"), "SPEECHSUM_AUTH_TEST_KEY") \
            .chat.completions.create(model="scripted", messages=MESSAGES)
    assert reply.choices[0].message.content == "ok"

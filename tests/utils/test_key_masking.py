"""Keys are masked in endpoint messages; a short key (``x``, ``dummy``: local servers take anything)
only where it stands alone, so the message stays readable ("E***pecting value" before)."""

from __future__ import annotations

import logging

import pytest

from speechsum.utils import remote


@pytest.mark.parametrize("keys, text, shown", [
    ({"x"}, "the reply body is not JSON (JSONDecodeError: Expecting value: line 1 column 1 (char 0))",
     "the reply body is not JSON (JSONDecodeError: Expecting value: line 1 column 1 (char 0))"),
    ({"x"}, "Incorrect API key provided: x. Bearer x", "Incorrect API key provided: ***. Bearer ***"),
    ({"dummy"}, "key 'dummy' refused; dummy_model ok", "key '***' refused; dummy_model ok"),
    ({"sk-abcdefgh123"}, "Bearer sk-abcdefgh123xyz", "Bearer ***xyz"),  # a long key: wherever it is
    ({"sk-abc", "sk-abcdefgh123"}, "key sk-abcdefgh123 and sk-abc", "key *** and ***"),
])
def test_keys_are_masked_and_short_ones_only_as_whole_words(monkeypatch, keys, text, shown):
    monkeypatch.setattr(remote, "KEYS_IN_USE", set(keys))
    assert remote.without_keys(text) == shown


@pytest.mark.parametrize("text, shown", [
    ("POST http://bob:hunter2@127.0.0.1:8000/v1/chat/completions", "POST http://***@127.0.0.1:8000/v1/chat/completions"),
    ("https://TOKEN123@host/v1 failed", "https://***@host/v1 failed"),
    ("http://host:8000/v1?to=a@b and mail bob@example.com", "http://host:8000/v1?to=a@b and mail bob@example.com"),
    # without a scheme, and secret query values
    ("base_url 'bob:hunter2@host:8000/v1' refused", "base_url '***@host:8000/v1' refused"),
    ("endpoint sk-tok3n9@host:8000/v1 failed", "endpoint ***@host:8000/v1 failed"),
    ("GET http://host/v1/models?api_key=hunter2&x=1 (404)", "GET http://host/v1/models?api_key=***&x=1 (404)"),
    ("GET http://host/v1?access_token=hunter2", "GET http://host/v1?access_token=***"),
    ("mail bob@example.com at 12:30, ratio a:b", "mail bob@example.com at 12:30, ratio a:b"),
])
def test_url_credentials_are_masked(monkeypatch, text, shown):
    monkeypatch.setattr(remote, "KEYS_IN_USE", set())
    assert remote.without_keys(text) == shown


def test_a_base_url_with_credentials_is_masked_in_every_endpoint_message(monkeypatch):
    """A base_url ``http://user:password@host/v1`` (a proxy's basic auth) was shown whole: in the one-line
    error of a refused request, a command's exit message, an item's error and the judge's summary error."""
    from speechsum.utils.chat_json import ChatJsonAsker, check_not_all_refused
    from tests.servers import JSONServer

    monkeypatch.setattr(remote, "KEYS_IN_USE", set())
    with JSONServer(lambda request: (401, {"error": {"message": "who are you?"}})) as refusing:
        url = refusing.url.replace("http://", "http://bob:hunter2@")
        client = remote.openai_client(url)
        asker = ChatJsonAsker(client, "m", request_attempts=1)
        with pytest.raises(Exception) as raised:
            asker.ask([{"role": "user", "content": "hi"}], dict)
        shown = remote.endpoint_error_text(raised.value)
        exit_message = str(remote.endpoint_failure("speechsum synth", client, "K", raised.value, "cache.jsonl"))
    port = refusing.url.split(":")[2].split("/")[0]
    assert shown.startswith(f"the endpoint http://***@127.0.0.1:{port}/v1/chat/completions failed (AuthenticationError")
    assert exit_message.startswith(f"speechsum synth: the endpoint http://***@127.0.0.1:{port}/v1/ failed")
    with JSONServer(lambda request: ["not", "a", "completion"]) as wrong:
        url = wrong.url.replace("http://", "http://bob:hunter2@")
        answer = ChatJsonAsker(remote.openai_client(url), "m", request_attempts=1).ask(
            [{"role": "user", "content": "hi"}], dict)
        port = wrong.url.split(":")[2].split("/")[0]
        assert answer.error == (f"request failed: MalformedReply: http://***@127.0.0.1:{port}/v1/: the reply is an "
                                "array, not a completion object")
        with pytest.raises(Exception) as summary:
            check_not_all_refused([answer.error], url + "/", "m", "the judge")
    assert "hunter2" not in str(summary.value)
    assert str(summary.value).startswith(f"http://***@127.0.0.1:{port}/v1/: the judge refused all 1 requests (the "
                                         "first: request failed: MalformedReply:")


def test_the_http_clients_own_request_log_lines_mask_a_base_urls_credentials(monkeypatch, caplog):
    """httpx (httpx2 with newer openai releases) logs each request at INFO, which ``speechsum pairs``, ``evaluate``
    and ``synth`` show: "HTTP Request: POST http://bob:hunter2@host/v1/chat/completions" went whole into their
    output and the pipeline's stage logs."""
    from tests.servers import JSONServer

    monkeypatch.setattr(remote, "KEYS_IN_USE", set())
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpx2"):  # as the commands leave them (an earlier test may have quieted them)
        caplog.set_level(logging.INFO, logger=name)
    reply = {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}]}
    with JSONServer(lambda request: reply) as server:
        client = remote.openai_client(server.url.replace("http://", "http://bob:hunter2@"))
        assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices
    lines = [record.getMessage() for record in caplog.records]
    port = server.url.split(":")[2].split("/")[0]
    assert f'HTTP Request: POST http://***@127.0.0.1:{port}/v1/chat/completions "HTTP/1.1 200 OK"' in lines
    assert not [line for line in lines if "hunter2" in line]


@pytest.mark.parametrize("url, secret", [
    ("bob:hunter2@127.0.0.1:8000/v1", "hunter2"),  # no scheme: echoed whole before
    ("bob:hunter2@127.0.0.1", "hunter2"),
    ("sk-tok3n9@127.0.0.1:8000/v1", "sk-tok3n9"),  # a token as the user, no scheme
    ("sk-tok3n9@localhost", "sk-tok3n9"),
    ("http://127.0.0.1:8000/v1?api_key=hunter2", "hunter2"),
    ("http://127.0.0.1:8000/v1?api-version=1&key=hunter2", "hunter2"),
    ("https://host/v1/?token=hunter2", "hunter2"),
    ("http://bob:hun ter2@host/v1", "hun"),  # a space inside the password
])
def test_a_refused_base_url_is_shown_with_its_credentials_masked_whatever_its_form(url, secret):
    from speechsum.utils.arguments import base_url_problem, endpoint_url

    problem = base_url_problem(url)
    assert problem and secret not in problem and "***" in problem
    with pytest.raises(Exception) as raised:
        endpoint_url(url)
    assert secret not in str(raised.value)


def test_synth_base_url_without_a_scheme_is_refused_without_its_password(capsys):
    from speechsum.synth.run import main

    with pytest.raises(SystemExit):
        main(["--manifest", "m.jsonl", "--out", "o.jsonl", "--model", "m", "--base-url", "bob:hunter2@host:8000/v1"])
    err = capsys.readouterr().err
    assert "argument --base-url: '***@host:8000/v1' is not an http:// or https:// URL" in err
    assert "hunter2" not in err


def test_debug_logs_of_client_and_server_hold_no_key(monkeypatch, caplog):
    """With every logger at DEBUG (the openai client's, httpx's, httpcore's, ``speechsum serve``'s request log),
    neither the key a request sends (its Authorization header) nor a wrong one, refused, appears in a log line."""
    from tests.servers import ScriptedChatBackend, serve_in_thread

    right, wrong = "sk-LEAKCHECK-right-0123456789", "sk-LEAKCHECK-wrong-0123456789"
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpx2", "httpcore", "httpcore2", "speechsum"):  # an earlier test may quiet some
        caplog.set_level(logging.DEBUG, logger=name)
    with serve_in_thread(ScriptedChatBackend(lambda messages: "ok"), api_key=right) as url:
        for key in (right, wrong):
            monkeypatch.setenv("S9_DEBUG_KEY", key)
            client = remote.openai_client(url, "S9_DEBUG_KEY")
            try:
                client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
            except Exception as err:  # noqa: BLE001  (the wrong key's 401)
                assert key == wrong and "401" in str(err)
    lines = [record.getMessage() for record in caplog.records]
    assert any("POST" in line for line in lines)  # the requests were logged
    assert not [line for line in lines if "LEAKCHECK" in line]


def test_parser_messages_mask_credentials_whatever_the_urls_form():
    """What an argument parser echoes goes through the same URL masking as errors and log lines."""
    from speechsum.utils.arguments import without_secrets

    text = "unrecognized arguments: bob:hunter2@host:8000/v1 http://h/v1?api_key=hunter2 api_key='hunter2'"
    assert without_secrets(text) == "unrecognized arguments: ***@host:8000/v1 http://h/v1?api_key=*** api_key='***'"

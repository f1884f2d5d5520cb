"""The options that point at a judge endpoint and its key (``speechsum pairs`` / ``evaluate``
``--judge-base-url`` and ``--api-key-env``, ``speechsum serve --api-key-env``): a bad value is refused
before any work, naming the option and saying what to write. Before, a URL without a host, with a space
or an impossible port failed only at the first judge call (after sampling), and a key no HTTP header
can carry or an unset one was refused as ``base_url ...`` / ``the API key in $X ...``, naming no option."""

from __future__ import annotations

import pytest

from speechsum.evaluation.cli import evaluate_parser
from speechsum.pairs import build_parser as pairs_parser
from speechsum.pairs import run_pairs
from speechsum.serving.cli import main as serve_main
from speechsum.utils.arguments import ConfigError

BAD_URLS = [
    ("localhost:8000/v1", "'localhost:8000/v1' is not an http:// or https:// URL; write it whole, e.g. "
                          "http://localhost:8000/v1"),
    ("http://", "'http://' names no host: write it whole, e.g. http://127.0.0.1:8000/v1"),
    ("http://judge host/v1", "'http://judge host/v1' holds a space or line end (at character 12): write the URL "
                             "without it"),
    ("http://judge:99999/v1", "'http://judge:99999/v1' has a port that is no number from 1 to 65535: give the "
                              "endpoint's port, e.g. http://judge:8000/v1"),
    ("https://judge:0", "'https://judge:0' has a port that is no number from 1 to 65535: give the endpoint's port, "
                        "e.g. https://judge:8000/v1"),
    # a request URL copied whole: every request went to …/chat/completions/chat/completions, a 404 after sampling
    ("http://judge:8000/v1/chat/completions/", "'http://judge:8000/v1/chat/completions/' ends in /chat/completions, "
     "which the client adds to base_url itself (it would ask /v1/chat/completions/chat/completions): write the API's "
     "root, http://judge:8000/v1"),
    ("http://judge:8000/v1/completions", "'http://judge:8000/v1/completions' ends in /completions, which the client "
     "adds to base_url itself (it would ask /v1/completions/completions): write the API's root, http://judge:8000/v1"),
    # before 2026-12-07 taken: the client asked /v1%20/chat/completions, or could not connect
    ("http://judge:8000/v1 ", "'http://judge:8000/v1 ' holds a space or line end (at character 20): write the URL "
                              "without it"),
    (" http://judge:8000/v1", "' http://judge:8000/v1' holds a space or line end (at character 0): write the URL "
                              "without it"),
    # taken: every request went to /openai/v1/?api-version=2024-02-01chat/completions
    ("https://res.openai.azure.com/openai/v1?api-version=2024-02-01", "'https://res.openai.azure.com/openai/v1?api-"
     "version=2024-02-01' holds a query (?api-version=2024-02-01), which the client would put inside the path of every "
     "request (it adds /chat/completions after base_url): write the API's root without it, https://res.openai.azure."
     "com/openai/v1 (Azure OpenAI: https://RESOURCE.openai.azure.com/openai/v1/, which takes no api-version)"),
    # "GET base_url/models lists them", copied with its route: every request went to /v1/models/chat/completions
    ("http://judge:8000/v1/models", "'http://judge:8000/v1/models' ends in /models, the route that lists the models, "
                                    "which the client adds to base_url itself: write the API's root, http://judge:8000/v1"),
    # its user:password@ was shown whole, on stderr and in the pipeline's stage logs
    ("http://bob:hunter2@judge:99999/v1", "'http://***@judge:99999/v1' has a port that is no number from 1 to 65535: "
                                          "give the endpoint's port, e.g. http://judge:8000/v1"),
]
PAIRS = ["--ckpt", "s.ckpt", "--config", "c.yaml", "--manifest", "m.jsonl", "--out", "p.jsonl", "--judge", "openai"]


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
@pytest.mark.parametrize("command", ["pairs", "evaluate"])
def test_a_judge_base_url_no_client_can_reach_is_a_usage_error_naming_the_option(capsys, command, url, message):
    parser = pairs_parser() if command == "pairs" else evaluate_parser()
    argv = PAIRS if command == "pairs" else ["--student", "s.ckpt", "--test-manifest", "m.jsonl"]
    with pytest.raises(SystemExit) as stop:
        parser.parse_args([*argv, "--judge-base-url", url])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(f"error: argument --judge-base-url: {message}\n")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "https://res.openai.azure.com/openai/v1/",
                                 "http://[::1]:8000/v1", "https://api.openai.com/v1", "http://gateway/completions"])
def test_judge_base_urls_clients_reach_are_kept_as_given(url):
    assert pairs_parser().parse_args([*PAIRS, "--judge-base-url", url]).judge_base_url == url
    assert evaluate_parser().parse_args(["--out", "o", "--judge-base-url", url]).judge_base_url == url


@pytest.mark.parametrize("command", ["pairs", "evaluate"])
def test_a_judge_base_url_is_read_from_the_environment_variable_env_names(capsys, monkeypatch, command):
    """``--judge-base-url env:VAR``: a URL with user:password@ kept off the command line (``ps``), as the
    pipeline passes one; before, only the URL itself was taken, in plain sight."""
    parse = (lambda argv: pairs_parser().parse_args([*PAIRS, *argv])) if command == "pairs" else (
        lambda argv: evaluate_parser().parse_args(["--out", "o", *argv]))
    monkeypatch.setenv("SPEECHSUM_TEST_JUDGE_URL", "http://bob:hunter2@judge:8000/v1")
    assert parse(["--judge-base-url", "env:SPEECHSUM_TEST_JUDGE_URL"]).judge_base_url == "http://bob:hunter2@judge:8000/v1"
    for value, message in [("http://bob:hunter2@judge:99999/v1", "$SPEECHSUM_TEST_JUDGE_URL: 'http://***@judge:99999/v1' "
                            "has a port that is no number from 1 to 65535: give the endpoint's port, e.g. "
                            "http://judge:8000/v1"),
                           (None, "'env:SPEECHSUM_TEST_JUDGE_URL': the environment variable SPEECHSUM_TEST_JUDGE_URL is "
                            "not set: export the endpoint's URL in it (export SPEECHSUM_TEST_JUDGE_URL=http://...)")]:
        if value is None:
            monkeypatch.delenv("SPEECHSUM_TEST_JUDGE_URL")
        else:
            monkeypatch.setenv("SPEECHSUM_TEST_JUDGE_URL", value)
        with pytest.raises(SystemExit):
            parse(["--judge-base-url", "env:SPEECHSUM_TEST_JUDGE_URL"])
        assert capsys.readouterr().err.endswith(f"error: argument --judge-base-url: {message}\n")


@pytest.mark.parametrize(("key", "url", "message"), [
    ("sk-a b", "http://127.0.0.1:9/v1", "--api-key-env SPEECHSUM_JUDGE_KEY: the API key in $SPEECHSUM_JUDGE_KEY holds a "
     "character an HTTP header cannot carry (a space, a line end or a non-ASCII letter) at position 4: export the key "
     "exactly as issued"),
    (None, None, "--api-key-env SPEECHSUM_JUDGE_KEY: that environment variable is not set, and the official API needs a "
     "key: export it (export SPEECHSUM_JUDGE_KEY=...), or give --judge-base-url of a self-hosted endpoint"),
    # exported blank (a key read from an empty file): "not set" before, sending the user after an export that is there
    (" \n", None, "--api-key-env SPEECHSUM_JUDGE_KEY: that environment variable is set but empty, and the official API "
     "needs a key: export it (export SPEECHSUM_JUDGE_KEY=...), or give --judge-base-url of a self-hosted endpoint"),
])
def test_pairs_refuses_a_judge_key_naming_the_option_before_sampling(tmp_path, toy_data, monkeypatch, key, url, message):
    if key is None:
        monkeypatch.delenv("SPEECHSUM_JUDGE_KEY", raising=False)
    else:
        monkeypatch.setenv("SPEECHSUM_JUDGE_KEY", key)
    argv = ["--ckpt", str(tmp_path / "never-loaded.ckpt"), "--config", "none.yaml", "--manifest", str(toy_data["val"]),
            "--out", str(tmp_path / "pairs.jsonl"), "--judge", "openai", "--api-key-env", "SPEECHSUM_JUDGE_KEY"]
    with pytest.raises(ConfigError) as info:
        run_pairs(pairs_parser().parse_args(argv + (["--judge-base-url", url] if url else [])))
    assert str(info.value) == message
    assert not (tmp_path / "pairs.jsonl.cache").exists()


def test_serve_refuses_a_key_no_client_can_send_naming_the_option(tmp_path, monkeypatch):
    """Before: served with it, every request was answered 401 (no client can put a space in its header)."""
    monkeypatch.setenv("SPEECHSUM_SERVE_TEST_KEY", "abc d\u00e9f")
    with pytest.raises(SystemExit) as stop:
        serve_main(["--model", str(tmp_path / "never-loaded"), "--api-key-env", "SPEECHSUM_SERVE_TEST_KEY"])
    assert str(stop.value.code) == (
        "speechsum serve: --api-key-env SPEECHSUM_SERVE_TEST_KEY: the API key in $SPEECHSUM_SERVE_TEST_KEY holds a "
        "character an HTTP header cannot carry (a space, a line end or a non-ASCII letter) at position 3: export the "
        "key exactly as issued")


@pytest.mark.parametrize(("url", "message"), BAD_URLS[1:3])
def test_synth_base_url_is_checked_as_the_judges_are(tmp_path, capsys, url, message):
    from speechsum.synth.run import main as synth_main

    with pytest.raises(SystemExit) as stop:
        synth_main(["--manifest", "m.jsonl", "--out", str(tmp_path / "o.jsonl"), "--model", "m", "--base-url", url])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(f"error: argument --base-url: {message}\n")


def test_synth_refuses_an_unsendable_key_naming_the_option_before_reading_the_manifest(tmp_path, monkeypatch):
    from speechsum.synth.run import main as synth_main

    monkeypatch.setenv("SPEECHSUM_JUDGE_KEY", "sk-\u00e9")
    with pytest.raises(SystemExit) as stop:
        synth_main(["--manifest", str(tmp_path / "never-read.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--model", "m",
                    "--api-key-env", "SPEECHSUM_JUDGE_KEY"])
    assert stop.value.code == ("speechsum synth: --api-key-env SPEECHSUM_JUDGE_KEY: the API key in $SPEECHSUM_JUDGE_KEY "
                               "holds a character an HTTP header cannot carry (a space, a line end or a non-ASCII "
                               "letter) at position 3: export the key exactly as issued")

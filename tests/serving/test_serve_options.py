"""``speechsum serve`` options refused when parsed, before the model loads: an empty ``--host`` or
``--served-model-name`` (taken as the default: every interface, the folder's name) and an
``--allowed-origins`` value no browser sends (it matched no request: CORS failed without a word)."""

from __future__ import annotations

import pytest

from speechsum.serving.cli import build_parser, main


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--host", "", "argument --host: '' is empty or blank: give an address: 127.0.0.1 (this machine only) or 0.0.0.0 "
     "(every interface)\n"),
    ("--served-model-name", " ", "argument --served-model-name: ' ' is empty or blank: give a name, or leave the option "
     "out for the directory's\n"),
    ("--allowed-origins", "http://localhost:3000/", "argument --allowed-origins: 'http://localhost:3000/' is no origin "
     "a browser sends: write scheme://host[:port] in lower case, without a path or a trailing '/' (e.g. "
     "http://localhost:3000), or '*' for any\n"),
    ("--allowed-origins", "HTTP://Example.com", "argument --allowed-origins: 'HTTP://Example.com' is no origin a "
     "browser sends: write scheme://host[:port] in lower case, without a path or a trailing '/' (e.g. "
     "http://localhost:3000), or '*' for any\n"),
])
def test_an_option_that_would_silently_mean_something_else_is_a_usage_error(capsys, tmp_path, option, value, message):
    with pytest.raises(SystemExit) as stop:
        main(["--model", str(tmp_path / "never-loaded"), option, value])
    assert stop.value.code == 2 and capsys.readouterr().err.endswith(message)


def test_origins_browsers_send_are_accepted():
    origins = ["*", "http://localhost:3000", "https://app.example.org:8443", "http://[::1]:3000", "null"]
    assert build_parser().parse_args(["--model", "m", "--allowed-origins", *origins]).allowed_origins == origins

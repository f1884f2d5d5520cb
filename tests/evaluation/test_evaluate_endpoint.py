"""`speechsum evaluate` whose LLM judge endpoint refuses the run (401, its key echoed back): one line
naming the endpoint, the key masked, not a traceback."""

from __future__ import annotations

import pytest

from speechsum.cli import main
from tests.eval_fixtures import save_tiny_text_lm, write_eval_set
from tests.servers import JSONServer

KEY = "sk-PROBE-key-echoed-by-the-server-123"


def refuse_echoing_the_key(request: dict) -> tuple[int, dict]:
    """What some servers send: the rejected key in the message."""
    return 401, {"error": {"message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error",
                           "code": "invalid_api_key"}}


def test_a_judge_endpoint_that_refuses_the_key_is_one_line_without_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("SPEECHSUM_TRACEBACK", raising=False)
    manifests = write_eval_set(tmp_path / "data")
    model = save_tiny_text_lm(tmp_path / "lm", seed=1)
    with JSONServer(refuse_echoing_the_key) as server, pytest.raises(SystemExit) as stop:
        main(["evaluate", "--system", f"text:teacher:{model}", "--manifest", str(manifests["test"]),
              "--out", str(tmp_path / "out"), "--max-new-tokens", "4", "--accelerator", "cpu",
              "--metrics", "rouge,llm_judge", "--judge-base-url", server.url, "--judge-model", "judge",
              "--bootstrap-resamples", "10"])
    assert stop.value.code == 1
    error = capsys.readouterr().err
    assert KEY not in error and "Traceback" not in error
    assert (f"speechsum evaluate: error: the endpoint {server.url}/chat/completions failed (AuthenticationError: "
            "Error code: 401 - Incorrect API key provided: ***.); the API key was missing or refused: export a valid "
            "key in the environment variable named by api_key_env / --api-key-env (a self-hosted server started "
            "without a key needs none), then rerun\n") in error
    for path in (tmp_path / "out").rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path

"""A key given on a command line or in a config is refused without being repeated, and the usage errors of
every command (jsonargparse's, argparse's) show no secret among the values they echo."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers import failed_command
from tests.stages.test_kd import kd_config

KEY = "sk-LEAKCHECK-0123456789"
PASSWORD = "leak-pass-4711"
ADVICE = ("an API key is never taken from the command line or a config file (it would be kept in shell history, the "
          "process list, logs, saved configs, checkpoints and W&B; the value given is not repeated here): export it in "
          "an environment variable and give that variable's name with ")


def remote_kd_config(tmp_path, toy_data, **teacher_args):
    teacher = {"class_path": "speechsum.stages.kd.teachers.OpenAICompatibleTeacher",
               "init_args": {"model": "m", "base_url": "http://127.0.0.1:9/v1", "scoring": "none", **teacher_args}}
    return kd_config(tmp_path, toy_data, teacher=teacher, seq_kd=True, lmbda=0.0)


@pytest.mark.parametrize("given", [["--model.init_args.teacher.init_args.api_key", KEY],
                                   [f"--model.init_args.teacher.init_args.api_key={KEY}"],
                                   ["--trainer.logger.init_args.api_key", KEY]])
def test_a_key_on_the_fit_command_line_is_refused_unrepeated(tmp_path, toy_data, capsys, given):
    """Before: jsonargparse's error ("Given value: NestedArg(key='teacher.init_args.api_key', val='sk-…')")
    repeated it into the terminal and the pipeline's stage logs."""
    config = remote_kd_config(tmp_path, toy_data)
    code, error = failed_command(["fit", "--config", str(config), *given], capsys)
    option = given[0].split("=")[0]
    assert code == 2 and error == f"error: {option}: {ADVICE}api_key_env (e.g. OPENAI_API_KEY; W&B reads WANDB_API_KEY)\n"
    assert not (tmp_path / "run").exists()


def test_a_key_in_a_fit_config_is_refused_with_its_line_unrepeated(tmp_path, toy_data, capsys):
    """Before: jsonargparse's error dumped the whole model section, the key in it."""
    config = remote_kd_config(tmp_path, toy_data, api_key=KEY)
    line = next(number for number, text in enumerate(config.read_text().splitlines(), 1) if "api_key:" in text)
    code, error = failed_command(["fit", "--config", str(config)], capsys)
    assert code == 2 and KEY not in error
    assert error.startswith(f"error: {config}:{line}: model.init_args.teacher.init_args.api_key: {ADVICE}api_key_env")


def test_a_fit_usage_error_masks_a_teacher_urls_credentials(tmp_path, toy_data, capsys):
    """jsonargparse's error about another setting of the section dumped its values, a base_url's password too."""
    config = remote_kd_config(tmp_path, toy_data, base_url=f"http://teacher:{PASSWORD}@127.0.0.1:9/v1", top_kk=3)
    code, error = failed_command(["fit", "--config", str(config)], capsys)
    assert code == 2 and "(did you mean 'top_k'?)" in error
    assert "'base_url': 'http://***@127.0.0.1:9/v1'" in error and PASSWORD not in error
    assert yaml.safe_load(config.read_text())["model"]["init_args"]["teacher"]["init_args"]["top_kk"] == 3


@pytest.mark.parametrize("given, shown", [
    (["--api_key", KEY], f"--api_key: {ADVICE}--api-key-env"),
    ([f"--openai-api-key={KEY}"], f"--openai-api-key: {ADVICE}--api-key-env"),
    ([f"--judge-base-url=http://u:{PASSWORD}@h/v1", "--judge-base-url", f"http://u:{PASSWORD}@h2/v1"],
     "--judge-base-url: given twice, 'http://***@h/v1' and then 'http://***@h2/v1'; give it once"),
    (["--judge-base-url", "http://127.0.0.1:9/v1", "--bogus", f"http://u:{PASSWORD}@h/v1"],
     "unrecognized arguments: --bogus http://***@h/v1"),
])
def test_a_tools_usage_error_repeats_no_secret(tmp_path, capsys, given, shown):
    """Before: argparse said "unrecognized arguments: --api_key sk-…" and repeated a URL option's password."""
    required = ["--ckpt", "c", "--config", "c", "--manifest", "m", "--out", str(tmp_path / "out")]
    code, error = failed_command(["pairs", *required, *given], capsys)
    assert code == 2 and f"speechsum pairs: error: {shown}" in error
    assert KEY not in error and PASSWORD not in error


def test_a_command_without_a_key_option_names_where_keys_are_named():
    from speechsum.utils.arguments import key_option_problem

    assert key_option_problem(["x", "--api-key", KEY], None) == (
        f"--api-key: {ADVICE}the setting that takes one (api_key_env in a YAML, --api-key-env of a tool)")
    assert key_option_problem(["--api-key-env", "MY_KEY", "--base-url", "u"], "--api-key-env") is None


def test_a_traceback_asked_for_masks_the_key_an_endpoint_echoed(tmp_path, monkeypatch, capsys):
    """``SPEECHSUM_TRACEBACK=1`` (or an error no command ends plainly): Python printed the traceback of the
    judge's 401, "Incorrect API key provided: sk-…" in it, whole (the one-line error masked it)."""
    import sys

    from speechsum.cli import main
    from tests.eval_fixtures import save_tiny_text_lm, write_eval_set
    from tests.servers import JSONServer

    monkeypatch.setenv("S9_JUDGE_KEY", KEY)
    monkeypatch.setenv("SPEECHSUM_TRACEBACK", "1")
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # main installs its own: put back after the test
    manifests = write_eval_set(tmp_path / "data")
    model = save_tiny_text_lm(tmp_path / "lm", seed=1)
    refusing = {"error": {"message": f"Incorrect API key provided: {KEY}.", "code": "invalid_api_key"}}
    with JSONServer(lambda request: (401, refusing)) as server, pytest.raises(Exception) as raised:
        main(["evaluate", "--system", f"text:lm:{model}", "--manifest", str(manifests["test"]), "--out",
              str(tmp_path / "out"), "--max-new-tokens", "4", "--accelerator", "cpu", "--metrics", "llm_judge",
              "--judge-base-url", server.url.replace("http://", f"http://judge:{PASSWORD}@"), "--judge-model", "j",
              "--api-key-env", "S9_JUDGE_KEY", "--bootstrap-resamples", "10"])
    capsys.readouterr()
    sys.excepthook(raised.type, raised.value, raised.tb)  # what the interpreter does with it
    error = capsys.readouterr().err
    assert error.startswith("Traceback (most recent call last):") and "Incorrect API key provided: ***." in error
    assert KEY not in error and PASSWORD not in error

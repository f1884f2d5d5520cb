"""What a rerun of the pipeline on an edited run folder or with other options does (the real
scheduler and planner, stand-in stage commands): a stage whose outputs were deleted runs again, a
``--teacher`` flag counts as a change of the KD stage's settings, and endpoint settings the KD and
judging stages would fail on are refused before any stage runs."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

import speechsum.pipeline.cli as pipeline
from speechsum.pipeline.config import load_pipeline_config
from speechsum.pipeline.runner import StageContext
from speechsum.pipeline.table import PIPELINE, STAGES, StageTable
from speechsum.pipeline.teacher_server import SERVE_KEY_ENV, teacher_server
from tests.conftest import REPO
from tests.pipeline.test_scheduler import run_in_process, skipped_with_changed_settings, stand_in_stages

TINY = REPO / "configs" / "pipeline" / "tiny.yaml"


def output_writing_stages() -> StageTable:
    """The pipeline with stages that each run one subprocess writing ``RUN/<stage>/out.txt`` (their output)."""
    def stage_function(stage: str):
        def run(ctx) -> list[Path]:
            out = ctx.run_dir / stage / "out.txt"
            ctx.run([sys.executable, "-c", f"import pathlib; p = pathlib.Path({str(out)!r}); "
                     "p.parent.mkdir(parents=True, exist_ok=True); p.write_text('done')"])
            return [out]
        return run
    return PIPELINE.with_runs({stage: stage_function(stage) for stage in STAGES})


def ran(summary: dict) -> list[str]:
    return [stage for stage, entry in summary["stages"].items() if entry["status"] == "ran"]


def test_a_stage_whose_outputs_were_deleted_runs_again_with_what_is_built_on_it(tmp_path, capsys):
    """Deleting ``RUN/sft/`` left its marker: SFT was skipped and KD was handed a missing checkpoint."""
    table, run = output_writing_stages(), tmp_path / "run"
    run_in_process(run, table)
    shutil.rmtree(run / "sft")
    capsys.readouterr()
    summary = run_in_process(run, table)
    assert ran(summary) == ["sft", "kd", "pairs", "evaluate_sft", "evaluate_kd", "dpo", "evaluate_dpo", "report"]
    assert f"[7/14] sft … runs again: its output {run}/sft/out.txt is gone\n" in capsys.readouterr().out
    assert (run / "sft" / "out.txt").read_text() == "done"
    assert ran(run_in_process(run, table)) == []  # everything is there again


def report_writing_stages() -> StageTable:
    """The pipeline with stages that each write ``RUN/<stage>/out.txt`` in process (no command: fast), the
    report ``RUN/report.md``, as the real one does."""
    def stage_function(stage: str):
        def run(ctx) -> list[Path]:
            out = ctx.run_dir / ("report.md" if stage == "report" else f"{stage}/out.txt")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("done")
            return [out]
        return run
    return PIPELINE.with_runs({stage: stage_function(stage) for stage in STAGES})


def test_a_report_whose_inputs_run_again_is_removed_not_left_looking_current(tmp_path, capsys):
    """``--from dpo --until dpo`` (or a run stopped before the report) left the earlier RUN/report.md, of the
    numbers before the rerun, until the report stage itself ran again."""
    table, run = report_writing_stages(), tmp_path / "run"
    run_in_process(run, table)
    assert (run / "report.md").is_file()
    assert ran(run_in_process(run, table, "--until", "evaluate_dpo")) == []
    assert (run / "report.md").is_file()  # nothing it is made from ran: it stays
    capsys.readouterr()
    assert ran(run_in_process(run, table, "--from", "dpo", "--until", "dpo")) == ["dpo"]
    assert not (run / "report.md").exists()
    assert f"removed {run}/report.md: what it was made from runs again" in capsys.readouterr().out
    assert ran(run_in_process(run, table))[-1] == "report" and (run / "report.md").read_text() == "done"


def test_a_folder_another_pipeline_holds_is_refused_as_that_before_its_markers_are_read(tmp_path):
    """``--from dpo`` while another pipeline was still training on the folder (its pairs not complete
    yet) was refused as "pairs … not complete in --run-dir": the user was sent after a missing stage."""
    table, run = report_writing_stages(), tmp_path / "run"
    run_in_process(run, table, "--until", "kd", "--no-warm-start")
    with pipeline.run_dir_lock(run):
        with pytest.raises(RuntimeError, match=rf"^another speechsum pipeline \(pid {os.getpid()}\) is running in "
                                               rf"{run}: wait for it to finish or stop it, or give this run another"):
            run_in_process(run, table, "--from", "dpo", "--no-warm-start")
    with pytest.raises(ValueError, match="--from dpo: pairs, which it is built on, is not complete"):
        run_in_process(run, table, "--from", "dpo", "--no-warm-start")  # the lock is free again: the folder itself is looked at
    new = tmp_path / "new"
    with pytest.raises(ValueError, match="--from dpo: benchmark, "):
        run_in_process(new, table, "--from", "dpo", "--no-warm-start")
    assert not new.exists()  # nothing made for a refused run


def test_a_moved_run_folder_is_not_redone(tmp_path):
    """The markers name their outputs by absolute path: a moved folder's are not counted as gone."""
    table = output_writing_stages()
    run_in_process(tmp_path / "run", table)
    (tmp_path / "run").rename(tmp_path / "moved")
    assert ran(run_in_process(tmp_path / "moved", table)) == []


def test_a_teacher_flag_counts_as_a_changed_kd_setting_and_is_recorded(tmp_path, capsys):
    """``--teacher serve`` on a run whose KD trained in-process: KD was skipped without a word and
    ``pipeline_config.yaml`` said ``mode: inprocess``."""
    table, run = stand_in_stages(tmp_path / "pids"), tmp_path / "run"
    run_in_process(run, table)
    run_in_process(run, table, "--teacher", "inprocess")  # the YAML's own mode: nothing to point out
    assert skipped_with_changed_settings(capsys.readouterr().out) == (set(STAGES), set())
    summary = run_in_process(run, table, "--teacher", "serve")
    assert ran(summary) == []
    assert skipped_with_changed_settings(capsys.readouterr().out) == (
        set(STAGES), {"kd", "pairs", "dpo", "evaluate_kd", "evaluate_dpo", "report"})
    assert yaml.safe_load((run / "pipeline_config.yaml").read_text())["teacher"] == {"mode": "serve"}


def edited_tiny(tmp_path: Path, **sections: dict) -> Path:
    config = yaml.safe_load(TINY.read_text())
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump({**config, **sections}))
    return edited


def test_an_edited_stage_config_file_counts_as_a_changed_setting_of_that_stage(tmp_path, capsys):
    """SFT's own config file (``stages.sft.config``) edited between two runs: SFT and what is built on it
    were kept without a word, as if trained with the new settings (an edited ``overrides:`` was said)."""
    stage_config = tmp_path / "my_sft.yaml"
    stage_config.write_text((REPO / "configs" / "sft.yaml").read_text())
    tiny = yaml.safe_load(TINY.read_text())
    config = edited_tiny(tmp_path, stages={**tiny["stages"], "sft": {**tiny["stages"]["sft"], "config": str(stage_config)}})
    table, run = report_writing_stages(), tmp_path / "run"
    argv = ["--config", str(config), "--run-dir", str(run), "--no-warm-start"]
    pipeline.run_pipeline(pipeline.build_parser().parse_args(argv), table)
    stage_config.write_text(stage_config.read_text() + "# a comment changes no setting\n")
    capsys.readouterr()
    pipeline.run_pipeline(pipeline.build_parser().parse_args(argv), table)
    assert skipped_with_changed_settings(capsys.readouterr().out) == (set(STAGES), set())
    settings = yaml.safe_load(stage_config.read_text())
    settings["model"]["init_args"]["learning_rate"] *= 2
    stage_config.write_text(yaml.safe_dump(settings))
    assert ran(pipeline.run_pipeline(pipeline.build_parser().parse_args(argv), table)) == []
    out = capsys.readouterr().out
    assert skipped_with_changed_settings(out) == (
        set(STAGES), {"sft", "kd", "pairs", "evaluate_sft", "evaluate_kd", "dpo", "evaluate_dpo", "report"})
    assert "note: sft, kd, pairs, evaluate_sft, evaluate_kd, dpo, evaluate_dpo, report kept from an earlier run" in out


@pytest.mark.parametrize(("sections", "extra", "message"), [
    ({}, ["--teacher", "remote"], "teacher.mode remote needs teacher.base_url and teacher.model (the endpoint's URL, "
     "e.g. http://localhost:8000/v1, and the model name it serves); or use --teacher inprocess / serve"),
    ({"teacher": {"mode": "remote", "base_url": "http://127.0.0.1:9/v1"}}, [],
     "teacher.mode remote needs teacher.model (the endpoint's URL, e.g. http://localhost:8000/v1, and the model name "
     "it serves); or use --teacher inprocess / serve"),
    ({"judge": {"kind": "openai", "api_key_env": "SPEECHSUM_TEST_UNSET_KEY"}}, [],
     "judge.kind openai asks api.openai.com (judge.base_url is null), which needs a key, but judge.api_key_env "
     "SPEECHSUM_TEST_UNSET_KEY is not set: export SPEECHSUM_TEST_UNSET_KEY=... before the run, or set judge.base_url "
     "to a self-hosted endpoint"),
])
def test_endpoint_settings_the_kd_or_judge_stages_would_fail_on_are_refused_first(tmp_path, capsys, monkeypatch,
                                                                                   sections, extra, message):
    """These failed only once KD, the baselines or the pairs started (after the training stages before them)."""
    monkeypatch.delenv("SPEECHSUM_TEST_UNSET_KEY", raising=False)
    monkeypatch.setenv("SPEECHSUM_TEST_SET_KEY", "sk-pipeline-test-5813")
    config = edited_tiny(tmp_path, **sections)
    with pytest.raises(SystemExit) as stop:
        pipeline.main(["--config", str(config), "--run-dir", str(tmp_path / "run"), *extra])
    assert stop.value.code == f"speechsum pipeline: {config}: {message}"
    assert not (tmp_path / "run").exists()


def test_a_judge_with_its_key_set_or_a_self_hosted_url_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHSUM_TEST_KEY", "sk-test")
    table = stand_in_stages(tmp_path / "pids")
    for number, judge in enumerate([{"kind": "openai", "api_key_env": "SPEECHSUM_TEST_KEY"},
                                    {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "UNSET_X"}]):
        config = edited_tiny(tmp_path, judge=judge)
        args = pipeline.build_parser().parse_args(["--config", str(config), "--run-dir", str(tmp_path / f"run{number}"),
                                                   "--until", "benchmark"])
        assert ran(pipeline.run_pipeline(args, table)) == ["benchmark"]
    assert "sk-test" not in (tmp_path / "run0" / "pipeline_config.yaml").read_text()


def test_a_teacher_server_that_refuses_its_options_is_named_with_its_error(tmp_path):
    """``teacher.serve_args: [--bogus-flag]`` ended the run with ``speechsum serve exited with code 2;
    see LOG``: no stage, no setting, no reason."""
    ctx = StageContext(tmp_path, {}, "kd", wandb=False, verbose=False, teacher_mode="serve")
    with pytest.raises(RuntimeError) as error, teacher_server(ctx, str(tmp_path / "model"), ["--bogus-flag"]):
        pass
    log = tmp_path / "logs" / "kd_teacher_server.log"
    assert str(error.value) == ("stage kd: the teacher server (speechsum serve, extra options from teacher.serve_args: "
                                "['--bogus-flag']) exited with code 2: speechsum serve: error: unrecognized arguments: "
                                f"--bogus-flag (log {log})")
    assert SERVE_KEY_ENV not in os.environ


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("evaluate", "systems", None, "evaluate.systems: expected list like the default ['teacher', 'backbone', 'cascade', "
     "'sft', 'kd', 'dpo'], got None (leave the key out for the default)"),
    ("evaluate", "metrics", None, "evaluate.metrics: expected str like the default 'rouge,fact_judge', got None (leave "
     "the key out for the default)"),
    ("judge", "api_key_env", None, "judge.api_key_env: expected str like the default 'OPENAI_API_KEY', got None (leave "
     "the key out for the default)"),
    ("teacher", "serve_args", None, "teacher.serve_args: expected list like the default [], got None (leave the key "
     "out for the default)"),
    ("evaluate", "systems", [], "evaluate.systems: empty, so the report would have no row; list some of teacher, "
     "backbone, cascade, sft, kd, dpo (or end the run before the evaluations with --until dpo)"),
])
def test_a_null_setting_or_no_evaluated_system_is_refused_on_load(tmp_path, section, key, value, message):
    """Accepted on load, these crashed a stage with a TypeError traceback (``evaluate.systems: null``:
    'NoneType' object is not iterable in the baselines stage) or failed the report at the very end."""
    preset = yaml.safe_load(TINY.read_text())
    config = edited_tiny(tmp_path, **{section: {**(preset.get(section) or {}), key: value}})
    args = pipeline.build_parser().parse_args(["--config", str(config), "--run-dir", str(tmp_path / "run")])
    with pytest.raises(ValueError) as error:
        pipeline.run_pipeline(args, stand_in_stages(tmp_path / "pids"))
    assert str(error.value) == f"{config}: {message}" and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("text_lms", "message"), [
    # the typo was dropped: the backbone trained the base YAML's 300 steps instead of the 3 asked for
    ({"backbone": {"config": "configs/benchmark/text_lm.yaml", "overides": {"trainer": {"max_steps": 3}}}},
     "text_lms.backbone: expected a mapping with config, overrides; unknown key(s) ['overides']"),
    ({"teachr": {}}, "text_lms.teachr: unknown stage; allowed: backbone, teacher"),
    ({"teacher": {"config": "configs/benchmark/nope.yaml"}},
     "text_lms.teacher.config: no such config file 'configs/benchmark/nope.yaml' (relative paths are read from the "
     "working folder {cwd})"),
    (True, "text_lms: expected a mapping of stage (backbone, teacher) to its settings, got True"),
])
def test_text_lm_settings_are_checked_on_load_as_the_student_stages_are(tmp_path, text_lms, message):
    config = edited_tiny(tmp_path, text_lms=text_lms)
    with pytest.raises(ValueError) as error:
        load_pipeline_config(config)
    assert str(error.value) == f"{config}: {message.format(cwd=Path.cwd())}"


def test_a_stage_command_is_logged_with_its_urls_credentials_masked(tmp_path):
    """A judge.base_url ``http://user:password@host/v1`` went whole into the stage log and the stage marker."""
    (tmp_path / "logs").mkdir()
    ctx = StageContext(tmp_path, {}, "pairs", wandb=False, verbose=False, teacher_mode=None)
    ctx.run([sys.executable, "-c", "pass", "--judge-base-url", "http://bob:hunter2@judge:8000/v1"])
    shown = f"{sys.executable} -c pass --judge-base-url http://***@judge:8000/v1"
    assert ctx.commands == [shown]
    assert (tmp_path / "logs" / "pairs.log").read_text().startswith(f"[pipeline] $ {shown}  (OMP_NUM_THREADS=1)\n")


SECRET_URL = "http://teacher-user:secret-pass-4711@127.0.0.1:9/v1"


def test_url_credentials_in_the_pipeline_yaml_are_masked_in_the_run_folder_and_off_the_command_line(tmp_path,
                                                                                                   monkeypatch):
    """Before: RUN/pipeline_config.yaml and the KD stage's RUN/kd/config.yaml held the user:password@ whole; then
    ``speechsum fit`` got the URL on its command line (seen by every user in ``ps``), and a URL inside a list (a
    logger's) was saved whole. Now fit reads them from a second --config, 0600 in RUN/.state, deleted after."""
    teacher = {"mode": "remote", "base_url": SECRET_URL, "model": "m"}
    tiny = yaml.safe_load(TINY.read_text())
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
              "init_args": {"save_dir": "s3://tb-key:tb-secret-99@logs.example/kd"}}
    tiny["stages"]["kd"]["overrides"]["trainer"]["logger"] = [logger]
    config = edited_tiny(tmp_path, teacher=teacher, judge={"kind": "openai", "base_url": SECRET_URL},
                         stages=tiny["stages"])
    args = pipeline.build_parser().parse_args(["--config", str(config), "--run-dir", str(tmp_path / "run"),
                                               "--until", "benchmark"])
    assert ran(pipeline.run_pipeline(args, stand_in_stages(tmp_path / "pids"))) == ["benchmark"]
    saved = yaml.safe_load((tmp_path / "run" / "pipeline_config.yaml").read_text())
    assert saved["teacher"]["base_url"] == saved["judge"]["base_url"] == "http://***@127.0.0.1:9/v1"

    from speechsum.pipeline import stages

    ctx = StageContext(tmp_path / "run", load_pipeline_config(config), "kd", wandb=False, verbose=False,
                       teacher_mode="remote")
    given: list[tuple[list[str], int, dict]] = []

    def fit(command: list[str]) -> None:  # stands in for speechsum fit: what it is given, and its outputs
        secret = Path(command[command.index(str(tmp_path / "run" / "kd" / "config.yaml")) + 2])
        given.append((command, secret.stat().st_mode & 0o777, yaml.safe_load(secret.read_text())))
        (tmp_path / "run" / "kd" / "checkpoints").mkdir(parents=True)
        (tmp_path / "run" / "kd" / "checkpoints" / "last.ckpt").write_bytes(b"")

    monkeypatch.setattr(ctx, "run", fit)
    stale = tmp_path / "run" / ".state" / "kd.credentials.killed.yaml"  # what a run killed outright left
    stale.write_text("secret")
    stages.run_fit(ctx, stages.kd_teacher(ctx.config["teacher"], "remote", ""))
    assert not stale.exists()
    stage_config = (tmp_path / "run" / "kd" / "config.yaml").read_text()
    assert "secret-pass-4711" not in stage_config and "tb-secret-99" not in stage_config
    masked = yaml.safe_load(stage_config)
    assert masked["model"]["init_args"]["teacher"]["init_args"]["base_url"] == "http://***@127.0.0.1:9/v1"
    assert masked["trainer"]["logger"][0]["init_args"]["save_dir"] == "s3://***@logs.example/kd"
    [(command, mode, credentials)] = given
    assert not any("secret" in part for part in command)
    assert command[-2] == "--config" and Path(command[-1]).parent == tmp_path / "run" / ".state" and mode == 0o600
    assert credentials == {"trainer": {"logger": [logger]},
                           "model": {"init_args": {"teacher": {"init_args": {"base_url": SECRET_URL}}}}}
    assert not Path(command[-1]).exists()  # deleted once fit ended


def test_a_judge_base_url_with_credentials_reaches_the_judging_command_in_its_environment_not_its_arguments(tmp_path):
    """Before: ``speechsum pairs``/``evaluate`` got it as ``--judge-base-url http://user:password@…``, which every
    user of the machine sees in ``ps``."""
    from speechsum.pipeline.stage_secrets import JUDGE_URL_VARIABLE, judge_url_options

    (tmp_path / "logs").mkdir()
    ctx = StageContext(tmp_path, {}, "pairs", wandb=False, verbose=False, teacher_mode=None)
    assert judge_url_options(ctx, "http://judge:8000/v1") == ["--judge-base-url", "http://judge:8000/v1"]
    assert judge_url_options(ctx, None) == [] and ctx.secret_env == {}
    options = judge_url_options(ctx, SECRET_URL)
    assert options == ["--judge-base-url", f"env:{JUDGE_URL_VARIABLE}"]
    check = (f"import os, sys; print('child sees it:', os.environ[{JUDGE_URL_VARIABLE!r}] == {SECRET_URL!r}, "
             "'in argv:', any('secret-pass' in a for a in sys.argv))")
    ctx.run([sys.executable, "-c", check, *options])
    log = (tmp_path / "logs" / "pairs.log").read_text()
    assert "child sees it: True in argv: False" in log and "secret-pass-4711" not in log

"""The pipeline's scheduler on quick stand-in commands: stages at the same time with the threads
split (the same count for a stage whatever runs beside it), the longest chain first and the students evaluated in the free lane, a failure or SIGTERM
stopping the other stages, and what reruns after a stage runs again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import speechsum.pipeline.cli as pipeline
from speechsum.pipeline.cli import read_marker
from speechsum.pipeline.runner import STOPPED_NOTE, StageFailed, marker_path
from speechsum.pipeline.table import PIPELINE, STAGES, StageTable
from tests.conftest import REPO
from tests.helpers import with_options

STAND_IN = """\
import json, os, pathlib, signal, sys, time
if {term_exits_0!r}:  # as `speechsum fit` did: Lightning stops on SIGTERM with exit code 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
pathlib.Path({pid_file!r}).write_text(str(os.getpid()))
print("threads", os.environ["OMP_NUM_THREADS"], flush=True)
deadline = time.monotonic() + 20
while not all(pathlib.Path(p).exists() for p in {wait_for!r}) and time.monotonic() < deadline:
    time.sleep(0.01)  # until the stages named have started (so a failure meets them running)
time.sleep({seconds})
sys.exit({code})
"""


def stand_in_stages(pids: Path, seconds: dict[str, float] | None = None, fail: str | None = None,
                    fail_after: tuple[str, ...] = (), term_exits_0: bool = False) -> StageTable:
    """The pipeline with stage functions that each run one real subprocess (writes its pid, sleeps, exits);
    the ``fail`` stage exits with code 3, once the stages in ``fail_after`` have written their pids."""
    pids.mkdir(parents=True, exist_ok=True)

    def stage_function(stage: str):
        def run(ctx) -> list[Path]:
            waits = [str(pids / other) for other in fail_after] if stage == fail else []
            code = STAND_IN.format(pid_file=str(pids / stage), seconds=(seconds or {}).get(stage, 0.0),
                                   code=3 if stage == fail else 0, wait_for=waits, term_exits_0=term_exits_0)
            ctx.run([sys.executable, "-c", code])
            return []
        return run

    return PIPELINE.with_runs({stage: stage_function(stage) for stage in STAGES})


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def run_in_process(run_dir: Path, table: StageTable, *extra: str) -> dict:
    args = pipeline.build_parser().parse_args(["--preset", "tiny", "--run-dir", str(run_dir), *extra])
    return pipeline.run_pipeline(args, table)


def test_independent_stages_run_at_once_with_the_threads_split(tmp_path):
    table = stand_in_stages(tmp_path / "pids", {
        "text_lm": 0.6, "align": 0.6, "text_teacher": 1.0, "baselines": 1.0, "sft": 0.5})
    summary = run_in_process(tmp_path / "run", table, "--threads", "2")
    stages = summary["stages"]
    assert all(s["status"] == "ran" for s in stages.values()) and set(stages) == set(STAGES)
    for stage in PIPELINE:  # nothing started before what it needs had finished
        assert all(stages[need]["end_s"] <= stages[stage.name]["start_s"] for need in stage.needs), stage.name
    overlap = min(stages["text_lm"]["end_s"], stages["text_teacher"]["end_s"]) - max(
        stages["text_lm"]["start_s"], stages["text_teacher"]["start_s"])
    assert overlap > 0.4  # the teacher trained while the backbone did
    assert stages["baselines"]["start_s"] < stages["sft"]["end_s"]  # baselines evaluated while the student trains
    assert summary["wall_s"] < summary["stages_s"] - 1.0
    assert stages["benchmark"]["threads"] == 2 and stages["text_lm"]["threads"] == 1
    assert stages["text_teacher"]["threads"] == 1
    log = (tmp_path / "run" / "logs" / "text_teacher.log").read_text()
    assert "OMP_NUM_THREADS=1" in log and "threads 1" in log  # what the child saw

    # one lane: one stage after the other, each with every thread
    summary = run_in_process(tmp_path / "serial", table, "--threads", "2", "--lanes", "1")
    spans = sorted((s["start_s"], s["end_s"]) for s in summary["stages"].values())
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    assert {s["threads"] for s in summary["stages"].values()} == {2}


def test_the_critical_chain_goes_first_and_the_students_are_evaluated_beside_the_baselines(tmp_path):
    """Baselines that hold one lane long after the teacher: the student's chain (kd, pairs) takes the
    other lane before evaluate_sft, which was ready since SFT ended; the SFT and KD evaluations follow
    in that lane while the baselines still run, each with one thread; DPO starts once the pairs
    exist, before the evaluations it is ready with (a longer chain), beside the baselines, with one
    thread like its evaluation; only the report runs alone, with both threads."""
    table = stand_in_stages(tmp_path / "pids", {
        "text_teacher": 0.5, "baselines": 4.0, "sft": 0.8, "kd": 0.3, "pairs": 0.3, "dpo": 0.3})
    stages = run_in_process(tmp_path / "run", table, "--threads", "2")["stages"]
    for stage in PIPELINE:
        assert all(stages[need]["end_s"] <= stages[stage.name]["start_s"] for need in stage.waits_for), stage.name
    assert stages["baselines"]["start_s"] < stages["sft"]["end_s"]  # so one lane is free when SFT ends
    assert stages["kd"]["start_s"] < stages["evaluate_sft"]["start_s"]  # ready together: kd first
    assert stages["pairs"]["end_s"] <= stages["dpo"]["start_s"] < stages["evaluate_sft"]["start_s"]
    assert stages["evaluate_sft"]["start_s"] < stages["evaluate_kd"]["start_s"] < stages["baselines"]["end_s"]
    assert stages["dpo"]["end_s"] < stages["baselines"]["end_s"]  # DPO does not wait for the baselines
    assert {s: stages[s]["threads"] for s in ("evaluate_sft", "evaluate_kd", "dpo", "evaluate_dpo", "report")} == {
        "evaluate_sft": 1, "evaluate_kd": 1, "dpo": 1, "evaluate_dpo": 1, "report": 2}

    summary = run_in_process(tmp_path / "run", table, "--from", "evaluate_sft,evaluate_kd")
    assert [s for s, v in summary["stages"].items() if v["status"] == "ran"] == ["evaluate_sft", "evaluate_kd", "report"]
    with pytest.raises(SystemExit):
        pipeline.build_parser().parse_args(["--from", "evaluate_sft,nope"])


def test_a_stage_gets_the_same_threads_whether_or_not_another_runs_beside_it(tmp_path):
    """Baselines that end at once leave the student's chain (kd, pairs) alone in the machine: each
    still gets threads // lanes (its numbers must not depend on the timing), DPO too; the benchmark
    and the report, which nothing can run beside, get every thread; a --from rerun of dpo or kd keeps 2."""
    alone = ["benchmark", "report"]
    assert [s for s in STAGES if PIPELINE.runs_alone(s)] == alone
    table = stand_in_stages(tmp_path / "pids", {"baselines": 0.0, "sft": 0.3, "kd": 0.3, "evaluate_kd": 0.6})
    stages = run_in_process(tmp_path / "run", table, "--threads", "4")["stages"]
    assert stages["baselines"]["end_s"] <= stages["kd"]["start_s"]  # kd and pairs ran with nothing beside
    assert stages["pairs"]["end_s"] <= stages["dpo"]["start_s"] < stages["evaluate_kd"]["end_s"]  # beside it
    assert {s: v["threads"] for s, v in stages.items()} == {s: 4 if s in alone else 2 for s in STAGES}
    log = (tmp_path / "run" / "logs" / "dpo.log").read_text()
    assert "OMP_NUM_THREADS=2" in log and "threads 2" in log
    log = (tmp_path / "run" / "logs" / "report.log").read_text()
    assert "OMP_NUM_THREADS=4" in log and "threads 4" in log
    rerun = run_in_process(tmp_path / "run", table, "--threads", "4", "--from", "dpo", "--until", "dpo")["stages"]
    assert rerun["dpo"]["status"] == "ran" and rerun["dpo"]["threads"] == 2
    rerun = run_in_process(tmp_path / "run", table, "--threads", "4", "--from", "kd", "--until", "kd")["stages"]
    assert rerun["kd"]["status"] == "ran" and rerun["kd"]["threads"] == 2
    serial = run_in_process(tmp_path / "serial", table, "--threads", "4", "--lanes", "1", "--until", "sft")["stages"]
    assert {v["threads"] for v in serial.values()} == {4}


def test_after_orders_stages_without_pulling_them_into_until(tmp_path):
    """``after`` is an order, not a dependency: --until evaluate_sft runs it and what it is built
    from, not ``features``, which it waits for when that runs; a table whose ``after`` names a later
    stage is refused."""
    table = stand_in_stages(tmp_path / "pids")
    stages = run_in_process(tmp_path / "run", table, "--threads", "2", "--until", "evaluate_sft")["stages"]
    assert set(stages) == {"benchmark", "text_lm", "align", "sft", "evaluate_sft"}
    assert stages["evaluate_sft"]["threads"] == 1
    stages = run_in_process(tmp_path / "both", table, "--threads", "2", "--until", "evaluate_sft,features")["stages"]
    assert stages["features"]["end_s"] <= stages["evaluate_sft"]["start_s"]
    with pytest.raises(ValueError, match="not listed before it"):
        StageTable([replace(PIPELINE["benchmark"], after=("report",)), *PIPELINE.stages[1:]])


def test_a_failing_stage_stops_the_other_running_stage(tmp_path, capsys):
    """text_teacher fails while text_lm runs (60 s): text_lm is stopped at once, no marker for
    either, the error names text_teacher's log; the rerun runs both and all after them."""
    pids = tmp_path / "pids"
    run = tmp_path / "run"
    started = time.monotonic()
    with pytest.raises(StageFailed, match=r"(?s)stage text_teacher:.*exited with code 3") as error:
        run_in_process(run, stand_in_stages(pids, {"text_lm": 60}, fail="text_teacher", fail_after=("text_lm",)))
    assert time.monotonic() - started < 30
    assert str(run / "logs" / "text_teacher.log") in str(error.value)
    assert not alive(int((pids / "text_lm").read_text()))
    out = capsys.readouterr().out
    assert "[4/14] text_teacher … FAILED" in out and "[2/14] text_lm … stopped" in out
    assert [s for s in STAGES if read_marker(run, s)] == ["benchmark"]
    # its log ended mid-output, as a crash's: it now says the stage was stopped
    assert (run / "logs" / "text_lm.log").read_text().splitlines()[-1] == f"[pipeline] {STOPPED_NOTE}"

    summary = run_in_process(run, stand_in_stages(pids))
    assert [s for s, v in summary["stages"].items() if v["status"] == "skipped"] == ["benchmark"]
    assert all(read_marker(run, s) for s in STAGES)


def test_a_stage_that_runs_again_reruns_the_stages_built_on_it(tmp_path):
    table = stand_in_stages(tmp_path / "pids")
    run = tmp_path / "run"  # the pids are beside it
    run_in_process(run, table)
    marker_path(run, "text_teacher").unlink()  # e.g. lost, or broken by a crash
    summary = run_in_process(run, table)
    ran = [s for s, v in summary["stages"].items() if v["status"] == "ran"]
    assert ran == ["text_teacher", "baselines", "kd", "pairs", "evaluate_kd", "dpo", "evaluate_dpo", "report"]
    summary = run_in_process(run, table, "--from", "align", "--until", "sft")
    assert [s for s, v in summary["stages"].items() if v["status"] == "ran"] == ["align", "sft"]
    assert [s for s in STAGES if not read_marker(run, s)] == [
        "kd", "pairs", "evaluate_sft", "evaluate_kd", "dpo", "evaluate_dpo", "report"]


def skipped_with_changed_settings(out: str) -> tuple[set[str], set[str]]:
    """(stages skipped, those of them whose settings changed) from a run's event lines."""
    skipped = {line.split("] ", 1)[1].split(" … ")[0] for line in out.splitlines() if "complete, skipped" in line}
    changed = {line.split("] ", 1)[1].split(" … ")[0] for line in out.splitlines() if "data changed since: --from to redo" in line}
    return skipped, changed


@pytest.mark.parametrize(("section", "change", "flagged"), [
    ("stages", {"dpo": {"overrides": {"trainer": {"max_steps": 3}}}}, {"dpo", "evaluate_dpo", "report"}),
    ("judge", {"kind": "fact", "model": "other"},
     {"baselines", "pairs", "dpo", "evaluate_sft", "evaluate_kd", "evaluate_dpo", "report"}),
    ("text_lms", {"teacher": {"overrides": {"trainer": {"max_steps": 3}}}},
     {"text_teacher", "baselines", "kd", "pairs", "dpo", "evaluate_kd", "evaluate_dpo", "report"}),
])
def test_a_changed_setting_is_pointed_out_on_its_stage_and_those_built_on_it_only(tmp_path, capsys, section,
                                                                                  change, flagged):
    table = stand_in_stages(tmp_path / "pids")
    run_in_process(tmp_path / "run", table)
    run_in_process(tmp_path / "run", table)  # the same preset: nothing to point out
    out = capsys.readouterr().out
    skipped, changed = skipped_with_changed_settings(out)
    assert skipped == set(STAGES) and not changed and "with other settings" not in out

    preset = yaml.safe_load((REPO / "configs" / "pipeline" / "tiny.yaml").read_text())
    merged = {**preset[section], **{key: ({**preset[section][key], **value} if isinstance(value, dict) else value)
                                    for key, value in change.items()}}
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump({**preset, section: merged}))
    args = pipeline.build_parser().parse_args(["--config", str(edited), "--run-dir", str(tmp_path / "run")])
    summary = pipeline.run_pipeline(args, table)
    assert all(s["status"] != "ran" for s in summary["stages"].values())  # pointed out, not rerun
    out = capsys.readouterr().out
    skipped, changed = skipped_with_changed_settings(out)
    assert skipped == set(STAGES) and changed == flagged
    # the run ended on the (old) report and totals alone: its last line now says whose results they are
    assert out.strip().splitlines()[-1] == (f"note: {', '.join(s for s in STAGES if s in flagged)} kept from an "
                                            "earlier run with other settings (RUN/pipeline_config.yaml names the "
                                            "YAML of each): their results are not of these settings; --from STAGE "
                                            "or a new --run-dir redoes them")


@pytest.mark.parametrize("term_exits_0", [False, True], ids=["killed", "exits-0"])
def test_sigterm_stops_the_running_stages_and_a_rerun_finishes(tmp_path, term_exits_0):
    """`kill PID` of the pipeline while the backbone and the teacher train: both commands end,
    neither gets a marker (also when a command stopped by SIGTERM exits 0), the exit code is
    128 + SIGTERM; the next run does the rest."""
    pids, run = tmp_path / "pids", tmp_path / "run"
    script = tmp_path / "stand_in_pipeline.py"
    script.write_text(
        "import sys\nsys.path.insert(0, sys.argv[1])\n"
        "from pathlib import Path\nimport speechsum.pipeline.cli as pipeline\n"
        "from tests.pipeline.test_scheduler import stand_in_stages\n"
        "pipeline.main(sys.argv[3:], stand_in_stages(Path(sys.argv[2]), {'text_lm': 120, 'text_teacher': 120}, "
        f"term_exits_0={term_exits_0}))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(script), str(REPO), str(pids), "--preset", "tiny", "--run-dir",
                                str(run)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not ((pids / "text_lm").is_file() and (pids / "text_teacher").is_file()):
            assert time.monotonic() < deadline and process.poll() is None, "the two text LM stages never started"
            time.sleep(0.1)
        time.sleep(0.3)  # the pid files are written first thing: let both children settle
        children = [int((pids / name).read_text()) for name in ("text_lm", "text_teacher")]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert "[2/14] text_lm … running" in out and "text_lm … done" not in out
        assert process.returncode == 128 + signal.SIGTERM
        # it ended without a word: now the stages stopped and how to go on are said
        assert "interrupted: stopping text_lm, text_teacher: no marker" in out
        assert "speechsum pipeline: interrupted (SIGTERM); the same command continues" in err
        assert not any(alive(pid) for pid in children)
    finally:
        process.kill()
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert [s for s in STAGES if read_marker(run, s)] == ["benchmark"]
    summary = run_in_process(run, stand_in_stages(pids))
    assert [s for s, v in summary["stages"].items() if v["status"] == "skipped"] == ["benchmark"]


def test_a_stage_whose_commands_wrote_nothing_fails_and_is_not_marked_complete(tmp_path):
    """A command that ended with code 0 without writing an output its stage lists gave the stage a
    marker (the stages built on it then failed on the missing file); now the stage fails, naming the
    output and the last lines of its log, and has no marker."""
    run = tmp_path / "run"

    def writes_nothing(ctx) -> list[Path]:
        ctx.run([sys.executable, "-c", "print('nothing written')"])
        return [ctx.run_dir / "text_lm" / "model" / "config.json"]

    table = stand_in_stages(tmp_path / "pids").with_runs({"text_lm": writes_nothing})
    with pytest.raises(StageFailed, match=r"stage text_lm: .* its output .*config\.json is gone") as info:
        run_in_process(run, table, "--lanes", "1")
    assert "logs/text_lm.log" in str(info.value) and "nothing written" in str(info.value)
    assert read_marker(run, "text_lm") is None and read_marker(run, "benchmark") is not None


def test_a_second_pipeline_on_the_same_run_dir_is_refused_and_touches_nothing(tmp_path):
    """Two pipelines on one folder deleted each other's stage outputs; the second is now refused
    while the first holds the folder's lock (freed when its process ends, however it ends)."""
    table = stand_in_stages(tmp_path / "pids")
    run = tmp_path / "run"  # the pids are beside it
    run_in_process(run, table)
    markers = {s: marker_path(run, s).read_bytes() for s in STAGES}
    with pipeline.run_dir_lock(run):
        with pytest.raises(RuntimeError, match=rf"^another speechsum pipeline \(pid {os.getpid()}\) is running in "
                                               rf"{run}: wait for it"):
            run_in_process(run, table, "--from", "benchmark")
    assert {s: marker_path(run, s).read_bytes() for s in STAGES} == markers
    assert run_in_process(run, table)["stages"]["report"]["status"] == "skipped"  # the lock is free again


def test_from_a_stage_until_does_not_run_is_refused_before_anything_is_cleared(tmp_path):
    table = stand_in_stages(tmp_path / "pids")
    run = tmp_path / "run"  # the pids are beside it
    run_in_process(run, table)
    with pytest.raises(ValueError, match="--from sft is not among the stages --until text_lm runs"):
        run_in_process(run, table, "--from", "sft", "--until", "text_lm")
    assert all(read_marker(run, s) for s in STAGES)  # SFT and what is built on it were kept


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--lanes", "0", "argument --lanes: must be at least 1, got 0"),
    ("--lanes", "257", "argument --lanes: must be at most 256, got 257"),  # stages at once: no thread pool of 10**9
    ("--threads", "-3", "argument --threads: must be at least 1, got -3"),
    ("--checkpoint-every", "nan", "argument --checkpoint-every: must be a number of seconds at least 0"),
    # a usage error (exit 2) like the others, not a runtime one (exit 1) after the arguments were taken
    ("--preset", "bogus", "argument --preset: no configs/pipeline/bogus.yaml; presets: default, full, large, tiny"),
    ("--preset", "mine.yaml", "argument --preset: no configs/pipeline/mine.yaml.yaml; presets: default, full, large, "
                              "tiny; a YAML of your own goes to --config mine.yaml"),
])
def test_bad_options_are_refused_before_the_run_dir_is_made(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as stop:
        pipeline.main(with_options(["--preset", "tiny", "--run-dir", str(tmp_path / "run")], option, value))
    assert stop.value.code == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_an_order_through_a_stage_left_out_still_holds(tmp_path):
    """align waits for text_lm (``after``), which waits for the benchmark: with --until benchmark,align
    text_lm does not run, yet align still starts after the benchmark (it counts as running alone)."""
    stand_ins = stand_in_stages(tmp_path / "pids", {"benchmark": 0.5})
    table = StageTable(replace(stage, needs=(), after=("text_lm",)) if stage.name == "align" else stage
                       for stage in stand_ins)
    assert table.before("align") == {"text_lm", "benchmark"} and table.runs_alone("align") is False
    stages = run_in_process(tmp_path / "run", table, "--threads", "2", "--until", "benchmark,align")["stages"]
    assert set(stages) == {"benchmark", "align"}
    assert stages["benchmark"]["end_s"] <= stages["align"]["start_s"]


def test_a_run_dir_holding_other_files_is_refused_before_anything_is_deleted(tmp_path):
    """``--run-dir .`` or a project folder: the benchmark stage deleted its ``data/`` (its output)."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "keep.txt").write_text("mine")
    (project / "notes.txt").write_text("mine too")
    with pytest.raises(ValueError) as error:
        run_in_process(project, stand_in_stages(tmp_path / "pids"), "--until", "benchmark")
    assert str(error.value) == (f"--run-dir {project} holds files (data, notes.txt) but no earlier pipeline run (no "
                                ".state/); the stages delete and replace their folders there: give a new or empty folder")
    assert (project / "data" / "keep.txt").read_text() == "mine" and sorted(p.name for p in project.iterdir()) == [
        "data", "notes.txt"]
    run_in_process(tmp_path / "run", stand_in_stages(tmp_path / "pids"), "--until", "benchmark")
    run_in_process(tmp_path / "run", stand_in_stages(tmp_path / "pids"), "--until", "benchmark")  # an earlier run's


def test_a_data_manifest_edited_in_place_is_pointed_out_on_every_stage(tmp_path, capsys, toy_data):
    """`data:` names the same files, their lines changed: every stage said complete, nothing more."""
    data = tmp_path / "data"
    shutil.copytree(toy_data["train"].parent, data)
    preset = yaml.safe_load((REPO / "configs" / "pipeline" / "tiny.yaml").read_text())
    own = {**preset, "benchmark": None, "text_lms": None, "backbone": None, "teacher_model": str(tmp_path),
           "data": {"train": str(data / "train.jsonl"), "val": str(data / "val.jsonl"),
                    "tests": {"test": str(data / "test.jsonl")}}}
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(own))
    args = pipeline.build_parser().parse_args(["--config", str(tmp_path / "own.yaml"), "--run-dir", str(tmp_path / "run")])
    table = stand_in_stages(tmp_path / "pids")
    ran = [s for s, v in pipeline.run_pipeline(args, table)["stages"].items() if v["status"] == "ran"]
    pipeline.run_pipeline(args, table)
    skipped, changed = skipped_with_changed_settings(capsys.readouterr().out)
    assert skipped == set(ran) and not changed
    lines = (data / "train.jsonl").read_text().splitlines(keepends=True)
    (data / "train.jsonl").write_text("".join(lines[:-1]))
    summary = pipeline.run_pipeline(args, table)
    assert all(s["status"] != "ran" for s in summary["stages"].values())  # pointed out, not rerun
    skipped, changed = skipped_with_changed_settings(capsys.readouterr().out)
    assert skipped == changed == set(ran)

"""How a failed stage ends the pipeline (the real scheduler, stand-in stage commands): its command
killed by a signal is named as that (the out-of-memory killer, another user's ``kill``), and the run's
last line says what to do."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import speechsum.pipeline.cli as pipeline
from speechsum.pipeline.runner import exit_text
from speechsum.pipeline.table import PIPELINE, STAGES, StageTable


def test_a_command_ended_by_a_signal_names_the_signal_and_who_sends_it():
    assert exit_text(1) == "exited with code 1"
    assert exit_text(2) == "exited with code 2"
    assert exit_text(-9) == ("was killed by SIGKILL (signal 9), sent by the kernel's out-of-memory killer (`dmesg` "
                             "says so; fewer --lanes or a smaller batch needs less memory) or a `kill -9`")
    assert exit_text(-15) == "was killed by SIGTERM (signal 15), sent by another process or the system, not the pipeline"
    # a speechsum command stopped by Ctrl-C or SIGTERM ends with 128 + the signal (speechsum/cli.py)
    assert exit_text(143) == ("exited with code 143: stopped by SIGTERM (signal 15), sent by another process or the "
                              "system, not the pipeline")
    assert exit_text(130).startswith("exited with code 130: stopped by SIGINT (signal 2)")


def killed_stage(stage: str) -> StageTable:
    """The pipeline whose ``stage`` command kills itself with SIGKILL (as the OOM killer does); the
    other stages write ``RUN/<stage>/out.txt`` in process."""
    def stage_function(name: str):
        def run(ctx) -> list[Path]:
            if name == stage:
                ctx.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
            out = ctx.run_dir / name / "out.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("done")
            return [out]
        return run
    return PIPELINE.with_runs({name: stage_function(name) for name in STAGES})


@pytest.mark.parametrize("extra", [(), ("--from", "text_lm")])
def test_a_stage_killed_by_sigkill_is_named_as_that_and_the_run_says_how_to_continue(tmp_path, extra):
    """It was ``exited with code -9`` and the log's tail, which (cut off by the kill) said nothing."""
    run = tmp_path / "run"
    argv = ["--preset", "tiny", "--run-dir", str(run), "--no-warm-start", "--lanes", "1"]
    if extra:
        pipeline.run_pipeline(pipeline.build_parser().parse_args(argv), killed_stage("none"))
    with pytest.raises(SystemExit) as stop:
        pipeline.main([*argv, *extra], killed_stage("sft"))
    message = str(stop.value.code)
    assert "` was killed by SIGKILL (signal 9), sent by the kernel's out-of-memory killer" in message
    again = "the same command without --from" if extra else "the same command"
    assert message.splitlines()[-1] == (
        f"Once that is fixed, {again} continues: the complete stages are kept, a training stage resumes from its "
        "newest checkpoint (its settings unchanged) and the others start over")

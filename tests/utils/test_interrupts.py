"""Ctrl-C and SIGTERM: a command stops at once with one short line and a non-zero exit code, and
no thread it started (remote calls still in flight) keeps the process alive."""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L
import pytest
import yaml

from speechsum.cli import main
from speechsum.utils.remote import map_concurrent
from tests.helpers import run_config

ROOT = Path(__file__).resolve().parents[2]


def test_ctrl_c_in_map_concurrent_does_not_wait_for_the_calls_in_flight():
    started = threading.Event()

    def slow(x: int) -> int:
        started.set()
        time.sleep(30)  # a remote call that will not answer soon
        return x

    def interrupt_once_waiting() -> None:  # the main thread is waiting for a result by then
        if started.wait(10):
            time.sleep(0.5)
            _thread.interrupt_main()

    threading.Thread(target=interrupt_once_waiting, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        map_concurrent(slow, range(8), max_workers=4, progress=False)
    assert time.monotonic() - start < 5


def run_and_signal(code: str, sig: int, marker: str = "started") -> tuple[subprocess.CompletedProcess, float]:
    """Run ``python -c code``, send ``sig`` once it prints ``marker``; (the result, seconds to exit)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, cwd=ROOT)
    assert process.stdout.readline().strip() == marker
    sent = time.monotonic()
    process.send_signal(sig)
    try:
        out, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), time.monotonic() - sent


SLOW_TOOL = """
import sys, time
import speechsum.cli
from speechsum.utils.remote import map_concurrent

def slow(x):
    print("started", flush=True) if x == 0 else None
    time.sleep(30)

def tool(argv):
    map_concurrent(slow, range(4), max_workers=2, progress=False)

speechsum.cli.TOOLS["slowtool"] = "__main__:tool"
speechsum.cli.main(["slowtool"])
"""


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_tool_stopped_by_a_signal_exits_at_once_with_one_line(sig, code):
    result, seconds = run_and_signal(SLOW_TOOL, sig)
    assert seconds < 10, "a thread kept the process alive"
    assert result.returncode == code
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("speechsum slowtool: interrupted")


class TermAtBatch(L.Callback):
    """Sends this process SIGTERM (a scheduler's stop) when training batch ``batch`` starts."""

    def __init__(self, batch: int = 1):
        self.batch = batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


def test_fit_stopped_by_sigterm_exits_143_not_0(tmp_path, toy_data):
    """Lightning stops at the batch's end by raising a SystemExit with no code: exit 0, as if training
    had finished (the pipeline then took a half-trained stage for complete)."""
    config = run_config(tmp_path, toy_data, max_epochs=3)
    data = yaml.safe_load(config.read_text())
    data["trainer"]["callbacks"].append({"class_path": "tests.utils.test_interrupts.TermAtBatch", "init_args": {"batch": 1}})
    config.write_text(yaml.safe_dump(data))
    # a process of its own: signal handlers other tests installed in this one must not decide the outcome
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "speechsum", "fit", "--config", str(config)], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-2000:]
    assert "speechsum fit: interrupted (SIGTERM); --ckpt_path last resumes" in result.stderr


class CtrlCAtBatch(TermAtBatch):
    """Ctrl-C (SIGINT, which Python raises as KeyboardInterrupt) when training batch ``batch`` starts."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGINT)


def test_fit_stopped_by_ctrl_c_exits_130_not_1(tmp_path, toy_data, capsys):
    """Lightning's own Ctrl-C handling ends with sys.exit(1), the code of a failure."""
    config = run_config(tmp_path, toy_data, max_epochs=3)
    data = yaml.safe_load(config.read_text())
    data["trainer"]["callbacks"].append({"class_path": f"{__name__}.CtrlCAtBatch", "init_args": {"batch": 1}})
    config.write_text(yaml.safe_dump(data))
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stop:
            main(["fit", "--config", str(config)])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    assert stop.value.code == 128 + signal.SIGINT
    assert "speechsum fit: interrupted (Ctrl-C); --ckpt_path last resumes" in capsys.readouterr().err


PARENT = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "SPEECHSUM_DIE_WITH_PARENT": str(os.getpid())})
assert child.stdout.readline().strip() == "started"
print(child.pid, flush=True)
child.wait()
"""


def test_a_pipeline_command_ends_when_the_pipeline_is_killed(tmp_path):
    """SIGKILL (the OOM killer, kill -9) of the pipeline: its running command must not go on as an
    orphan writing into the run folder that a rerun redoes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, SLOW_TOOL], stdout=subprocess.PIPE, text=True, env=env,
                              cwd=ROOT)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the command outlived the pipeline that started it")


ALIVE_PARENT_IS_PID_1 = """
import os
os.getppid = lambda: 1  # started by a pipeline that is pid 1 (a container's command), still running
os.environ["SPEECHSUM_DIE_WITH_PARENT"] = "1"
from speechsum.utils.processes import die_with_parent
die_with_parent()
print("running", flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_pipeline_command_runs_when_the_pipeline_is_pid_1():
    """A pipeline run as a container's command is pid 1: its commands, whose parent pid is then 1,
    must not take it for a dead parent (they all ended at once with SIGTERM)."""
    result = subprocess.run([sys.executable, "-c", ALIVE_PARENT_IS_PID_1], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "running"), result.stderr


DEAD_PARENT = """
import os
os.environ["SPEECHSUM_DIE_WITH_PARENT"] = str(os.getppid() + 1)  # a parent that has already gone
from speechsum.utils.processes import die_with_parent
die_with_parent()
print("running", flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_pipeline_command_whose_pipeline_died_before_it_started_ends():
    result = subprocess.run([sys.executable, "-c", DEAD_PARENT], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=60)
    assert result.returncode == -signal.SIGTERM and not result.stdout

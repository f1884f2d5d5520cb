"""Warm starts (utils/warm_start.py): a command forked from the server sees and does what a fresh
``python -m`` process does, trains the same weights, and ends with whoever started it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from speechsum.pipeline.stages import WARM_MODULES
from speechsum.utils.warm_server import torch_threads
from speechsum.utils.warm_start import LENGTH, WarmStarter, wait_with_peak_rss
from tests.helpers import run_config

PROBE = "tests.utils.warm_probe"
MODULES = ["torch", "tests.utils.warm_probe_import"]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", **extra}


def fresh(module: str, args: list[str], env: dict[str, str]) -> tuple[int, str]:
    process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env)
    with process.stdout:
        output = process.stdout.read()
    return wait_with_peak_rss(process)[0], output


def warm(starter: WarmStarter, module: str, args: list[str], env: dict[str, str]) -> tuple[int, str]:
    process = starter.start(module, args, env)
    with process.stdout:
        output = process.stdout.read()
    return process.wait(), output


def seen(output: str) -> dict:
    return json.loads(output.splitlines()[0])


@pytest.fixture
def starter():
    with WarmStarter(MODULES) as started:
        yield started


@pytest.mark.parametrize("threads", [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
                                     {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "1"}], ids=["same", "mkl-over-omp"])
def test_a_warm_command_sees_what_a_fresh_one_sees(starter, threads):
    env = environment(WARM_PROBE="x", WARM_PROBE_IMPORT="at import", **threads)
    results = [fresh(PROBE, ["exit", "0", "more"], env), warm(starter, PROBE, ["exit", "0", "more"], env)]
    expected = {"argv": ["exit", "0", "more"], "argv0": "warm_probe.py", "name": "__main__", "cwd": os.getcwd(),
                "probe_env": "x", "at_import": "at import", "threads": int(threads["MKL_NUM_THREADS"]), "stdin": ""}
    for code, output in results:
        assert code == 0
        assert {k: v for k, v in seen(output).items() if k not in ("pid", "ppid")} == expected
        assert "to stderr" in output


@pytest.mark.parametrize(("args", "code", "text"), [
    (["exit", "3"], 3, None),
    (["exit", "300"], 300 & 0xFF, None),
    (["exit", "-2"], 254, None),
    (["exit", str(2**64)], 255, None),  # beyond a C long: the interpreter's exit(-1)
    (["exit-text"], 1, "a message for stderr"),
    (["raise"], 1, "ValueError: raised by the probe"),
    (["raise-hooked"], 1, "hooked ValueError: raised by the probe"),  # printed by the traceback module before
    (["interrupt"], -signal.SIGINT, "KeyboardInterrupt"),  # the interpreter ends itself with SIGINT
])
def test_exit_codes_and_errors_are_a_fresh_process_s(starter, args, code, text):
    for got, output in (fresh(PROBE, args, environment()), warm(starter, PROBE, args, environment())):
        assert got == code
        assert text is None or text in output


def test_a_signal_ends_it_and_wait_can_time_out_and_wait_again(starter):
    process = starter.start(PROBE, ["sleep", "60"], environment())
    assert seen(process.stdout.readline())["pid"] == process.pid
    for timeout in (0.2, 0):  # 0: a poll, as Popen's
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    process.terminate()
    assert process.wait(timeout=20) == -signal.SIGTERM
    process.stdout.close()


def test_peak_rss_is_the_command_s_own(starter):
    env = environment()
    small = starter.start(PROBE, ["exit", "0"], env)
    small.stdout.read()
    _, base_kib = small.wait_with_peak_rss()
    big = starter.start(PROBE, ["allocate", "300"], env)
    big.stdout.read()
    code, peak_kib = big.wait_with_peak_rss()
    assert code == 0
    assert 280 * 1024 < peak_kib - base_kib < 400 * 1024
    small.stdout.close()
    big.stdout.close()


def test_the_server_restarts_when_what_its_imports_read_has_changed(starter):
    first = seen(warm(starter, PROBE, ["exit", "0"], environment(WARM_PROBE_IMPORT="a"))[1])
    per_command = seen(warm(starter, PROBE, ["exit", "0"],
                            environment(WARM_PROBE_IMPORT="a", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                                        SPEECHSUM_ANY="y"))[1])
    changed = seen(warm(starter, PROBE, ["exit", "0"], environment(WARM_PROBE_IMPORT="b"))[1])
    assert (first["at_import"], per_command["at_import"], changed["at_import"]) == ("a", "a", "b")
    assert first["ppid"] == per_command["ppid"] != changed["ppid"]  # one server, then a new one
    assert per_command["threads"] == 1


def test_warm_up_starts_the_server_that_the_first_command_then_runs_in(monkeypatch):
    """The pipeline warms up before it imports Lightning, which sets two variables; its commands'
    environments then have them, and still run in the warmed-up server (whose own imports set them)."""
    monkeypatch.delenv("PYTORCH_NVML_BASED_CUDA_CHECK", raising=False)  # as before importing Lightning
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    with WarmStarter(MODULES) as starter:
        starter.warm_up(environment(WARM_PROBE_IMPORT="a"))
        server = starter._server
        assert server is not None and server.poll() is None  # started before any command
        after_imports = {"PYTORCH_NVML_BASED_CUDA_CHECK": "1", "TORCHINDUCTOR_CACHE_DIR": "/tmp/torchinductor_x"}
        probe = seen(warm(starter, PROBE, ["exit", "0"], environment(
            WARM_PROBE_IMPORT="a", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **after_imports))[1])
        assert (probe["ppid"], probe["at_import"], probe["threads"]) == (server.pid, "a", 1)
        changed = seen(warm(starter, PROBE, ["exit", "0"], environment(WARM_PROBE_IMPORT="a", OTHER="1"))[1])
        assert changed["ppid"] != server.pid  # any other variable still means a new server
    assert server.returncode == 0  # told to end, it ended on its own


def test_close_does_not_wait_for_a_warmed_up_server_that_ran_no_command():
    """A pipeline whose checks fail right after warming up ends at once, not after the imports."""
    starter = WarmStarter(MODULES)
    starter.warm_up(environment(WARM_PROBE_IMPORT="slow"))
    server = starter._server
    starter.close()
    assert server.returncode == -signal.SIGKILL  # not 0: told to end, it would have ended after its imports
    starter.close()  # twice is fine


def test_close_stops_the_commands_still_running():
    starter = WarmStarter(MODULES)
    process = starter.start(PROBE, ["sleep", "60"], environment())
    process.stdout.readline()
    starter.close()
    assert process.wait(timeout=20) == -signal.SIGTERM
    process.stdout.close()


def ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_server_and_its_commands_end_when_the_starting_process_is_killed():
    script = (
        "import json, os, signal, sys\n"
        "from speechsum.utils.warm_start import WarmStarter\n"
        f"starter = WarmStarter({MODULES!r})\n"
        f"process = starter.start({PROBE!r}, ['sleep', '60'], dict(os.environ))\n"
        "process.stdout.readline()\n"
        "print(json.dumps([starter._server.pid, process.pid, starter._folder]), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=os.getcwd(),
                            timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    *pids, folder = json.loads(result.stdout)
    deadline = time.monotonic() + 30
    while not all(ended(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(ended(pid) for pid in pids)
    assert not Path(folder).exists()  # the server took its socket's folder with it


def test_fit_forked_from_the_server_trains_the_weights_a_fresh_process_trains(tmp_path, toy_data):
    env = environment(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with WarmStarter(WARM_MODULES) as pipeline_starter:
        states = {}
        for name, launch in (("fresh", fresh), ("warm", lambda *a: warm(pipeline_starter, *a))):
            config = run_config(tmp_path / name, toy_data, max_steps=3)
            code, output = launch("speechsum.cli", ["fit", "--config", str(config)], env)
            assert code == 0, output[-2000:]
            checkpoint = tmp_path / name / "run" / "checkpoints" / "last.ckpt"
            states[name] = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert states["warm"].keys() == states["fresh"].keys()
    assert all(torch.equal(states["warm"][key], value) for key, value in states["fresh"].items())


def test_a_server_that_dies_fails_its_start_and_the_pipeline_starts_the_command_fresh(tmp_path):
    from speechsum.pipeline.runner import StageContext

    with WarmStarter(MODULES) as starter:
        with pytest.raises(RuntimeError, match="warm starts failed: the (warm-start )?server"):
            starter.start(PROBE, ["exit", "0"], environment(WARM_PROBE_IMPORT="die"))
        with pytest.raises(RuntimeError, match="warm starts failed"):  # no second try
            starter.start(PROBE, ["exit", "0"], environment())
        (tmp_path / "logs").mkdir()
        ctx = StageContext(tmp_path, {}, "probe", wandb=False, verbose=False, teacher_mode=None, starter=starter)
        ctx.run([sys.executable, "-m", PROBE, "exit", "0"])
    log = ctx.log_file.read_text()
    assert "warm starts failed" in log and "starting the command as a fresh process" in log
    assert '"argv": ["exit", "0"]' in log and ctx.peak_rss_gib > 0


@pytest.mark.parametrize(("env", "threads"), [({}, 0), ({"OMP_NUM_THREADS": "3"}, 3), ({"MKL_NUM_THREADS": "2"}, 2),
                                              ({"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "2"}, 2),
                                              ({"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "0"}, 3),
                                              ({"OMP_NUM_THREADS": "x"}, 0)])
def test_torch_threads_follows_aten_s_rule(env, threads):
    assert torch_threads(env) == threads


def test_a_new_environment_leaves_the_old_server_s_running_command_alone(starter):
    first = starter.start(PROBE, ["sleep", "2"], environment(WARM_PROBE_IMPORT="a"))
    old_server = seen(first.stdout.readline())["ppid"]
    code, output = warm(starter, PROBE, ["exit", "0"], environment(WARM_PROBE_IMPORT="b"))
    assert code == 0 and seen(output)["ppid"] != old_server
    assert first.wait(timeout=30) == 0  # not stopped: the retired server let it finish
    first.stdout.close()
    deadline = time.monotonic() + 20
    while not ended(old_server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ended(old_server)  # and then ended


def test_a_bad_request_s_output_pipe_is_closed_by_the_server(starter):
    warm(starter, PROBE, ["exit", "0"], environment())  # the server is up
    read_end, write_end = os.pipe()
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(os.path.join(starter._folder, "socket"))
        socket.send_fds(connection, [LENGTH.pack(100) + b"{"], [write_end])
        connection.shutdown(socket.SHUT_WR)  # the request ends early
        os.close(write_end)
        connection.settimeout(20)
        assert connection.recv(64) == b""  # the server dropped it
    code, _ = warm(starter, PROBE, ["exit", "0"], environment())  # and a later command does not hold it either
    with os.fdopen(read_end, "rb") as output:
        os.set_blocking(read_end, False)
        assert code == 0 and output.read() == b""  # end of file: no write end left open


def test_a_server_that_dies_under_a_command_fails_its_wait_and_leaves_no_file_open(starter):
    warm(starter, PROBE, ["exit", "0"], environment())  # the server is up
    open_before = set(os.listdir("/proc/self/fd"))
    process = starter.start(PROBE, ["sleep", "60"], environment())
    process.stdout.readline()
    os.kill(starter._server.pid, signal.SIGKILL)
    process.kill()  # its parent has gone: nobody else ends it
    process.stdout.read()
    for _ in range(2):  # the wait, then stop_process's
        with pytest.raises(RuntimeError, match="the warm-start server ended before"):
            process.wait(timeout=20)
    process.stdout.close()
    assert set(os.listdir("/proc/self/fd")) == open_before


def test_a_command_keeps_sigint_ignored_when_its_starter_was_started_so():
    script = (  # a background job of a non-interactive shell starts with SIGINT ignored; its children too
        "import os, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "from speechsum.utils.warm_start import WarmStarter\n"
        f"with WarmStarter({MODULES!r}) as starter:\n"
        f"    process = starter.start({PROBE!r}, ['sleep', '60'], dict(os.environ))\n"
        "    process.stdout.readline()\n"
        "    process.send_signal(signal.SIGINT)\n"
        "    try:\n"
        "        process.wait(timeout=2)\n"
        "        print('ended by SIGINT')\n"
        "    except Exception:\n"
        "        print('ignored SIGINT')\n"
        "        process.kill()\n"
        "        process.wait()\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ignored SIGINT", result.stderr

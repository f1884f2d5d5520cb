"""The KD stage's teacher behind ``speechsum serve`` on loopback (``--teacher serve``), and stopping
a stage's process (:mod:`speechsum.pipeline.runner`)."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

SPEECHSUM = [sys.executable, "-m", "speechsum.cli"]  # a speechsum command, as the stages run it
SERVE_KEY_ENV = "SPEECHSUM_PIPELINE_TEACHER_KEY"  # the key of the teacher server the KD stage starts


def stop_process(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s`` seconds; waits for the process to end."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quiet_unless_given(extra_args: list[str]) -> list[str]:
    """``--log-level WARNING``, the server's log level in the pipeline, unless ``teacher.serve_args``
    give one (``[--log-level, INFO]``): theirs is used. ``speechsum serve`` refuses an option given
    twice with different values; the pipeline gave both and the last won."""
    from speechsum.pipeline.command_args import serve_parser
    from speechsum.utils.repeated_options import option_action

    parser = serve_parser()
    level = parser._option_string_actions["--log-level"]
    given = any((found := option_action(parser, arg)) is not None and found[0] is level for arg in extra_args)
    return [] if given else ["--log-level", "WARNING"]


@contextlib.contextmanager
def teacher_server(ctx, model: str, extra_args: list[str], timeout: float = 300.0) -> Iterator[str]:
    """Run ``speechsum serve`` for ``model`` on a free loopback port; yield its base URL once
    ``/v1/models`` answers; always stop it (its log: RUN/logs/kd_teacher_server.log). The server
    wants a fresh random key, held in the environment variable :data:`SERVE_KEY_ENV` of this process
    and its children only (never written anywhere)."""
    port = free_port()
    os.environ[SERVE_KEY_ENV] = secrets.token_hex(16)
    base_url = f"http://127.0.0.1:{port}/v1"
    log_path = ctx.run_dir / "logs" / "kd_teacher_server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [*SPEECHSUM, "serve", "--model", model, "--port", str(port), "--served-model-name", "teacher",
               "--api-key-env", SERVE_KEY_ENV, *quiet_unless_given(list(map(str, extra_args))), *map(str, extra_args)]
    ctx.note(f"teacher server: {base_url} (log {log_path})")
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=ctx.environment())
        try:
            deadline = time.monotonic() + timeout
            while True:
                ctx.check_stop()
                if process.poll() is not None:
                    last = (log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines() or [""])[-1]
                    raise RuntimeError(f"stage {ctx.stage}: the teacher server (speechsum serve, extra options from "
                                       f"teacher.serve_args: {extra_args}) exited with code {process.returncode}: "
                                       f"{last.strip()} (log {log_path})")
                request = urllib.request.Request(f"{base_url}/models",
                                                 headers={"Authorization": f"Bearer {os.environ[SERVE_KEY_ENV]}"})
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"speechsum serve did not answer {base_url}/models within {timeout:.0f} s; "
                                       f"see {log_path}")
                time.sleep(0.5)
            yield base_url
        finally:
            os.environ.pop(SERVE_KEY_ENV, None)
            stop_process(process)

"""Warm starts: run ``python -m MODULE ARGS`` as a process forked from a server that has already
imported the heavy libraries, instead of a fresh interpreter importing them again (torch, Lightning,
transformers and torchmetrics take about 6 s of CPU per command on a 2-core CPU; ``speechsum
pipeline`` runs about 15 commands).

:class:`WarmStarter` starts the server (``python -m speechsum.utils.warm_server``: it imports the
modules it is given, then waits) on first use and hands it each command over a Unix socket in a
private folder: module, arguments, environment, working folder, and the write end of a pipe for the
command's output (stdout and stderr). The server forks; the child takes that pipe as fd 1 and 2,
that environment and folder, sets torch's thread count from ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``
(read by OpenMP only when torch was first imported, in the server), and runs the module as
``__main__`` (``runpy``), as ``python -m`` does; its exit code and peak RSS (``wait4``) come back over the socket.

Modules imported in the server read the environment at import time, so a command whose environment
differs from the server's in anything but the per-command settings (:data:`PER_COMMAND`,
``SPEECHSUM_*``) or whose folder differs gets a new server; the old one is told ``retire`` on its
stdin, finishes the commands it runs and ends. A server ends at once when its stdin closes: when
the :class:`WarmStarter` is closed or its process dies (also by SIGKILL); it then stops the commands
still running (SIGTERM, SIGKILL after 15 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence

PER_COMMAND = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # and every SPEECHSUM_* variable
# set by importing Lightning (lightning.fabric) and torch's inductor in any process, the server's too: a
# command's environment that has them only because the pipeline imported Lightning after warm_up is the same
SET_BY_IMPORTS = ("PYTORCH_NVML_BASED_CUDA_CHECK", "TORCHINDUCTOR_CACHE_DIR")
LENGTH = struct.Struct("!I")
FOLDER_PREFIX = "speechsum-warm-"  # the private folder of a server's socket


def speechsum_own(name: str) -> bool:
    """A speechsum variable (a key's value, the pipeline's pid): per command, never the server's."""
    return name.startswith("SPEECHSUM_")


def server_key(env: dict[str, str], cwd: str) -> tuple:
    """What a server's imports may have read: its environment without the per-command settings and
    :data:`SET_BY_IMPORTS`, and its working folder (``sys.path[0]`` of ``python -m``)."""
    kept = {k: v for k, v in env.items() if k not in PER_COMMAND + SET_BY_IMPORTS and not speechsum_own(k)}
    return tuple(sorted(kept.items())), cwd


class WarmProcess:
    """A command the server forked: ``pid``, ``stdout`` (its output lines, stdout and stderr
    together), ``returncode`` once waited for; ``terminate``/``kill``/``wait`` as ``subprocess.Popen``'s,
    and :meth:`wait_with_peak_rss`."""

    def __init__(self, connection: socket.socket, stdout, command: str):
        self.stdout, self.returncode, self.peak_rss_kib = stdout, None, 0
        self._connection, self._command, self._buffer = connection, command, b""
        reply = self._reply(None)
        if len(reply) != 2 or reply[0] != "pid":
            connection.close()
            stdout.close()
            raise RuntimeError(f"the warm-start server did not start `{command}` (it ended; see the stderr above)")
        self.pid = int(reply[1])

    def _reply(self, timeout: float | None) -> list[str]:
        """The server's next line, split; [] when the server has gone."""
        if self._connection.fileno() == -1:  # closed: the server had gone
            return []
        self._connection.settimeout(timeout)
        while b"\n" not in self._buffer:
            try:
                data = self._connection.recv(4096)
            except (TimeoutError, BlockingIOError):  # BlockingIOError: timeout 0
                raise subprocess.TimeoutExpired(self._command, timeout) from None
            if not data:
                return []
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("ascii").split()

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # it has just ended
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait_with_peak_rss(self, timeout: float | None = None) -> tuple[int, int]:
        """(exit code, negative for a signal as Popen's; peak RSS in KiB, ``ru_maxrss``)."""
        if self.returncode is None:
            reply = self._reply(timeout)
            if len(reply) != 3 or reply[0] != "exit":
                self._connection.close()
                raise RuntimeError(f"the warm-start server ended before `{self._command}` (pid {self.pid}) did")
            self.returncode, self.peak_rss_kib = int(reply[1]), int(reply[2])
            self._connection.close()
        return self.returncode, self.peak_rss_kib

    def wait(self, timeout: float | None = None) -> int:
        return self.wait_with_peak_rss(timeout)[0]


def wait_with_peak_rss(process: subprocess.Popen | WarmProcess) -> tuple[int, int]:
    """Wait for a ``subprocess.Popen`` or a :class:`WarmProcess`: (exit code, peak RSS in KiB of the
    process and the children it waited for)."""
    if isinstance(process, WarmProcess):
        return process.wait_with_peak_rss()
    _, status, usage = os.wait4(process.pid, 0)  # wait4, not wait: the resource usage of this child alone
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss


class WarmStarter:
    """Starts ``python -m MODULE ARGS`` commands from a server that has imported ``modules`` (names
    that fail to import are skipped: the command meets the error itself). Thread-safe; ``close``
    (or the ``with`` block's end) ends the server. Once a start has failed (the server could not
    start or died), every later ``start`` raises ``RuntimeError`` at once: start the command fresh."""

    def __init__(self, modules: Sequence[str]):
        self.modules = list(modules)
        self._lock = threading.Lock()
        self._server: subprocess.Popen | None = None
        self._folder: str | None = None
        self._key: tuple | None = None
        self._retired: list[subprocess.Popen] = []  # servers finishing their commands (another environment)
        self._idle: set[subprocess.Popen] = set()  # servers that have started no command yet
        self.failure = ""  # why a start failed: no further tries

    def __enter__(self) -> WarmStarter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _address(self, env: dict[str, str], cwd: str, for_command: bool = True) -> str:
        """The socket of a running server whose imports saw ``env`` and ``cwd``; started if needed
        (``for_command``: a command is about to be sent to it)."""
        with self._lock:
            self._retired = [server for server in self._retired if server.poll() is None]  # reaps the ended
            key = server_key(env, cwd)
            if self._server is not None and self._server.poll() is None and self._key == key:
                if for_command:
                    self._idle.discard(self._server)
                return os.path.join(self._folder, "socket")
            self._retire_server()
            self._folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)  # mode 0700: our user's only
            address = os.path.join(self._folder, "socket")
            with socket.socket(socket.AF_UNIX) as listener:
                listener.bind(address)
                listener.listen(16)
                self._server = subprocess.Popen(
                    [sys.executable, "-m", "speechsum.utils.warm_server", str(listener.fileno()), *self.modules],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=[listener.fileno()], cwd=cwd,
                    env={k: v for k, v in env.items() if not speechsum_own(k)})  # keys stay with the commands
            self._key = key
            if not for_command:
                self._idle.add(self._server)
            return address

    def warm_up(self, env: dict[str, str], cwd: str | None = None) -> None:
        """Start the server for commands run with ``env`` in ``cwd`` now, so that its imports run while
        this process does other work instead of delaying the first :meth:`start`."""
        if self.failure:
            return
        try:
            self._address(env, cwd or os.getcwd(), for_command=False)
        except OSError as err:
            self.failure = f"warm starts failed: the server could not start ({err})"

    def start(self, module: str, args: Sequence[str], env: dict[str, str], cwd: str | None = None) -> WarmProcess:
        """Run ``python -m module *args`` with ``env`` in ``cwd`` (default: this process's folder)."""
        if self.failure:
            raise RuntimeError(self.failure)
        cwd = cwd or os.getcwd()
        try:
            return self._start(module, args, env, cwd)
        except (OSError, RuntimeError) as err:
            reason = f"the server went away ({err})" if isinstance(err, OSError) else str(err)
            self.failure = f"warm starts failed: {reason}"
            raise RuntimeError(self.failure) from err

    def _start(self, module: str, args: Sequence[str], env: dict[str, str], cwd: str) -> WarmProcess:
        address = self._address(env, cwd)
        read_end, write_end = os.pipe()
        connection = socket.socket(socket.AF_UNIX)
        try:
            connection.connect(address)
            payload = json.dumps({"module": module, "args": list(args), "env": env, "cwd": cwd}).encode()
            socket.send_fds(connection, [LENGTH.pack(len(payload)) + payload], [write_end])
        except BaseException:
            connection.close()
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        command = " ".join(["python", "-m", module, *args])
        stdout = open(read_end, encoding="utf-8", errors="replace")  # noqa: SIM115 (the caller reads and closes it)
        return WarmProcess(connection, stdout, command)

    def _retire_server(self) -> None:
        """Let the current server finish the commands it runs, then end; it takes no new ones."""
        if self._server is not None:
            with contextlib.suppress(OSError):  # it has died
                self._server.stdin.write(b"retire\n")
                self._server.stdin.flush()
            self._retired.append(self._server)
            self._server = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def close(self) -> None:
        """End every server; commands still running are stopped (SIGTERM, SIGKILL after 15 s)."""
        with self._lock:
            self._retire_server()
            for server in self._retired:
                if server in self._idle:  # nothing of it to finish: not worth waiting for its imports
                    server.kill()
                with contextlib.suppress(OSError):
                    server.stdin.close()  # the signal to end now
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            self._retired, self._idle = [], set()

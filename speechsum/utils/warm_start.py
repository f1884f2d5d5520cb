"""Warm starts: run ``python -m MODULE ARGS`` as a process forked from a server that has already
imported the heavy libraries, instead of a fresh interpreter importing them again (torch, Lightning,
transformers and torchmetrics take about 6 s of CPU per command on a 2-core CPU; ``speechsum
pipeline`` runs about 15 commands).

:class:`WarmStarter` starts the server (``python -m speechsum.utils.warm_start``: it imports the
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
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

PER_COMMAND = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # and every SPEECHSUM_* variable
LENGTH = struct.Struct("!I")
FOLDER_PREFIX = "speechsum-warm-"  # the private folder of a server's socket


def server_key(env: dict[str, str], cwd: str) -> tuple:
    """What a server's imports may have read: its environment without the per-command settings, and
    its working folder (``sys.path[0]`` of ``python -m``)."""
    kept = {k: v for k, v in env.items() if k not in PER_COMMAND and not k.startswith("SPEECHSUM_")}
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
        self.failure = ""  # why a start failed: no further tries

    def __enter__(self) -> WarmStarter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _address(self, env: dict[str, str], cwd: str) -> str:
        """The socket of a running server whose imports saw ``env`` and ``cwd``; started if needed."""
        with self._lock:
            self._retired = [server for server in self._retired if server.poll() is None]  # reaps the ended
            key = server_key(env, cwd)
            if self._server is not None and self._server.poll() is None and self._key == key:
                return os.path.join(self._folder, "socket")
            self._retire_server()
            self._folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)  # mode 0700: our user's only
            address = os.path.join(self._folder, "socket")
            with socket.socket(socket.AF_UNIX) as listener:
                listener.bind(address)
                listener.listen(16)
                self._server = subprocess.Popen(
                    [sys.executable, "-m", __name__, str(listener.fileno()), *self.modules],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=[listener.fileno()], cwd=cwd,
                    env={k: v for k, v in env.items() if not k.startswith("SPEECHSUM_")})
            self._key = key
            return address

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
                with contextlib.suppress(OSError):
                    server.stdin.close()  # the signal to end now
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            self._retired = []


# -- the server ---------------------------------------------------------------------------------
def _receive(connection: socket.socket) -> tuple[dict, int]:
    """A request and the command's output fd (closed if the request is bad)."""
    data, fds, _, _ = socket.recv_fds(connection, 1 << 16, 1)
    try:
        while len(data) < LENGTH.size or len(data) < LENGTH.size + LENGTH.unpack_from(data)[0]:
            more = connection.recv(1 << 16)
            if not more:
                raise EOFError("the request ended early")
            data += more
        return json.loads(data[LENGTH.size:]), fds[0]
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _exit_code(stop: SystemExit) -> int:
    """The exit status ``python`` gives for an uncaught ``SystemExit``."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):  # a C long, else -1 (exit status 255)
        return stop.code & 0xFF if -(2**63) <= stop.code < 2**63 else 255
    print(stop.code, file=sys.stderr)
    return 1


def run_as_main(module: str, args: list[str]) -> int:
    """Run ``module`` as ``python -m module *args`` would, up to the interpreter's exit; its code
    (``-SIGINT``: an uncaught KeyboardInterrupt, which the interpreter ends by killing itself with SIGINT)."""
    import atexit
    import runpy
    import traceback

    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 (printed, as the interpreter does)
        traceback.print_exc()
        code = 1
    finally:
        threading._shutdown()  # noqa: SLF001 (what the interpreter does at exit: join non-daemon threads)
        atexit._run_exitfuncs()  # noqa: SLF001
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    return code


def torch_threads(env: dict[str, str]) -> int:
    """The intra-op thread count a fresh torch takes from ``env`` (ATen's
    ``intraop_default_num_threads``: ``MKL_NUM_THREADS`` over ``OMP_NUM_THREADS``); 0: neither set."""
    threads = 0
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = env.get(name, "")
        if value.isdigit() and int(value) > 0:
            threads = int(value)
    return threads


def _child(request: dict, output: int, server_fds: list[int]) -> None:
    """In the forked child: close the server's files, become the command, run it, exit (never returns)."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in server_fds:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        for fd, source in ((0, devnull), (1, output), (2, output)):
            os.dup2(source, fd)
        os.close(devnull)
        os.close(output)
        os.chdir(request["cwd"])
        env = dict(request["env"])
        if "SPEECHSUM_DIE_WITH_PARENT" in env:  # its parent is this server now (utils/processes.py)
            env["SPEECHSUM_DIE_WITH_PARENT"] = str(os.getppid())
        os.environ.clear()
        os.environ.update(env)
        threads = torch_threads(env)
        if "torch" in sys.modules and threads:
            sys.modules["torch"].set_num_threads(threads)
        code = run_as_main(request["module"], request["args"])
        if code < 0:  # ended by a signal, as the interpreter ends an uncaught KeyboardInterrupt
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
            code = 128 - code  # still alive (the signal blocked): the interpreter's fallback
    except BaseException:  # noqa: BLE001 (setting up the command failed: said on its output)
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 4096):
                return
        except BlockingIOError:
            return


def serve(listener_fd: int, modules: Sequence[str]) -> None:
    """Import ``modules``, then fork one child per request on the listening socket ``listener_fd``
    until stdin closes (then SIGTERM the children still running). Each child's exit code and peak
    RSS go back over its request's connection once it has ended."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the commands (same process group), not us
    # an import asking torch.cuda.is_available() must not initialise the CUDA driver here: a forked child
    # could not use it (NVML answers instead; the children get their own environment back)
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 (the command meets it itself, with its own message)
            print(f"warm-start server: import {name} failed ({type(err).__name__}: {err}); the commands "
                  "import it themselves", file=sys.stderr)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # a forked child could not use CUDA
        print("warm-start server: an import initialised CUDA; the commands start fresh", file=sys.stderr)
        return
    sys.stderr.flush()
    listener = socket.socket(fileno=listener_fd)
    address = listener.getsockname()  # in the starter's private folder
    wake_read, wake_write = os.pipe()  # SIGCHLD wakes the select below
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    selector.register(0, selectors.EVENT_READ)
    running: dict[int, socket.socket] = {}
    retiring = False
    while True:
        for key, _ in selector.select():
            if key.fd == 0:
                if not os.read(0, 64):  # the starter closed stdin, or died (and left its folder behind)
                    _stop_all(running)
                    with contextlib.suppress(OSError):  # already removed by the starter
                        os.unlink(address)
                        os.rmdir(os.path.dirname(address))
                    return
                selector.unregister(listener)  # "retire": no new commands; end after the running ones
                listener.close()
                retiring = True
            if key.fd == wake_read:
                _drain(wake_read)
            elif not retiring and key.fd == listener.fileno():
                connection, _ = listener.accept()
                try:
                    request, output = _receive(connection)
                except (OSError, EOFError, ValueError, IndexError) as err:
                    print(f"warm-start server: a bad request ({err}); ignored", file=sys.stderr)
                    connection.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    _child(request, output, [listener.detach(), selector.fileno(), wake_read, wake_write,
                                             connection.detach(), *(c.detach() for c in running.values())])
                os.close(output)
                with contextlib.suppress(OSError):  # the starter went away
                    connection.sendall(f"pid {pid}\n".encode())
                running[pid] = connection
        _reap(running)
        if retiring and not running:
            return


def _reap(running: dict[int, socket.socket], block: bool = False) -> None:
    """Tell each ended child's starter its exit code and peak RSS (``block``: wait for one first)."""
    while running:
        pid, status, usage = os.wait4(-1, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        block = False
        connection = running.pop(pid, None)
        if connection is not None:
            with contextlib.suppress(OSError):  # the starter went away
                connection.sendall(f"exit {os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}\n".encode())
            connection.close()


def _stop_all(running: dict[int, socket.socket], grace_s: float = 15.0) -> None:
    """SIGTERM the children still running, SIGKILL what is left after ``grace_s``; each reported."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while running and time.monotonic() < deadline:
            _reap(running)
            time.sleep(0.05)


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2:])

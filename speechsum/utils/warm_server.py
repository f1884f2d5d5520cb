"""The warm-start server (``python -m speechsum.utils.warm_server LISTENER_FD MODULE...``, started by
:class:`speechsum.utils.warm_start.WarmStarter`): imports the modules, then forks one child per
request on the listening socket; the child becomes the command (its output pipe as fd 1 and 2, its
environment, folder and thread count) and runs the module as ``__main__``; its exit code and peak
RSS go back to the starter. Ends when stdin closes (stopping the commands still running), or, told
``retire``, once its running commands have ended."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence

from speechsum.utils.processes import DIE_WITH_PARENT
from speechsum.utils.warm_start import LENGTH

# SIGINT as this process got it (Python's handler, or ignored when the starter ran with SIGINT ignored,
# as a background job of a script does): the commands get it back
INHERITED_SIGINT = signal.default_int_handler


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

    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())  # the command's own hook (speechsum's masks keys), as the interpreter does
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 (printed, as the interpreter does)
        sys.excepthook(*sys.exc_info())
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
        signal.signal(signal.SIGINT, INHERITED_SIGINT)  # what a fresh interpreter started here would have
        for fd in server_fds:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        for fd, source in ((0, devnull), (1, output), (2, output)):
            os.dup2(source, fd)
        os.close(devnull)
        os.close(output)
        os.chdir(request["cwd"])
        env = dict(request["env"])
        if DIE_WITH_PARENT in env:  # its parent is this server now
            env[DIE_WITH_PARENT] = str(os.getppid())
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

    global INHERITED_SIGINT
    INHERITED_SIGINT = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the commands, not us
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
    # its commands have ended and been reported: skip the interpreter's teardown of torch & co.
    # (about 2 s that the pipeline waited for at its end)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(0)

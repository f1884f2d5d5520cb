"""A command for tests/utils/test_warm_start.py: ``python -m tests.utils.warm_probe ACTION [ARG]``
prints what it sees as one JSON line, then does ACTION: ``exit CODE``, ``exit-text``, ``raise``,
``raise-hooked`` (through its own ``sys.excepthook``), ``interrupt``, ``sleep``, ``allocate MIB``."""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from tests.utils import warm_probe_import

seen = {"argv": sys.argv[1:], "argv0": os.path.basename(sys.argv[0]), "name": __name__, "cwd": os.getcwd(),
        "probe_env": os.environ.get("WARM_PROBE"), "at_import": warm_probe_import.AT_IMPORT,
        "threads": torch.get_num_threads(), "stdin": sys.stdin.read(), "pid": os.getpid(), "ppid": os.getppid()}
print(json.dumps(seen), flush=True)
print("to stderr", file=sys.stderr, flush=True)
action, argument = sys.argv[1], (sys.argv[2:] or [""])[0]
if action == "exit":
    raise SystemExit(int(argument))
if action == "exit-text":
    raise SystemExit("a message for stderr")
if action == "raise":
    raise ValueError("raised by the probe")
if action == "raise-hooked":  # a command's own hook prints its uncaught error (speechsum's masks keys)
    sys.excepthook = lambda kind, error, trace: print(f"hooked {kind.__name__}: {error}", file=sys.stderr)
    raise ValueError("raised by the probe")
if action == "interrupt":  # an uncaught Ctrl-C
    raise KeyboardInterrupt
if action == "sleep":
    time.sleep(float(argument or 60))
if action == "allocate":
    block = bytearray(int(argument) * 2**20)
    block[::4096] = b"x" * len(block[::4096])

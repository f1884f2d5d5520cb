"""How a speechsum command ends on signals: SIGTERM as an exception (so ``finally`` blocks run), and
the pipeline's children ending with it (Linux ``PR_SET_PDEATHSIG``)."""

from __future__ import annotations

import os
import signal
import sys


class Terminated(SystemExit):
    """SIGTERM (a scheduler's stop, ``kill PID``) as an exception, so ``finally`` blocks run: atomic
    writes remove their temporary files and caches are closed, as on Ctrl-C."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def raise_terminated(*_: object) -> None:
    raise Terminated


DIE_WITH_PARENT = "SPEECHSUM_DIE_WITH_PARENT"  # the pipeline's pid, set for the commands it runs


def die_with_parent() -> None:
    """Under ``SPEECHSUM_DIE_WITH_PARENT=<the parent's pid>`` (Linux): get SIGTERM when the process
    that started this one dies, also by SIGKILL (the OOM killer, ``kill -9``), so no orphan goes on
    writing into a run folder that a rerun is redoing. The variable is taken out of the environment:
    it is for the pipeline's own children only. The parent is known by its pid, not by "my parent is
    now init": a pipeline that is itself pid 1 (a container's command) is alive, and an orphan may be
    adopted by a subreaper instead of pid 1."""
    parent = os.environ.pop(DIE_WITH_PARENT, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)

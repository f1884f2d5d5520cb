"""Ctrl-C and SIGTERM: a command stops at once with one short line and a non-zero exit code, and
no thread it started (remote calls still in flight) keeps the process alive."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

from speechsum.utils.remote import map_concurrent


def test_ctrl_c_in_map_concurrent_does_not_wait_for_the_calls_in_flight():
    started = threading.Event()

    def slow(x: int) -> int:
        started.set()
        time.sleep(30)  # a remote call that will not answer soon
        return x

    threading.Thread(target=lambda: started.wait(10) and _thread.interrupt_main(), daemon=True).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        map_concurrent(slow, range(8), max_workers=4, progress=False)
    assert time.monotonic() - start < 5

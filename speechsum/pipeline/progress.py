"""The console of ``speechsum pipeline``: event lines (:func:`say`) and the live progress of the
running stages. A fit stage's ``[progress] step=3 total=8 train/loss=4.541`` lines
(:mod:`speechsum.pipeline.progress_callback`) give step/total, ETA and the latest metrics; any
other stage shows its latest output line. In a terminal one status line under the event lines is
redrawn every second; otherwise each running stage prints a plain line at most every
:data:`PLAIN_EVERY_S` seconds."""

from __future__ import annotations

import shutil
import sys
import threading
import time

PREFIX = "[progress]"  # starts the lines progress_callback.progress_line writes (this module imports no Lightning)

PLAIN_EVERY_S = 30.0
_lock = threading.Lock()
_status = ""  # the status line now drawn under the event lines (terminal only)


def _draw(text: str) -> None:
    """Replace the status line with ``text`` (the lock is held)."""
    global _status
    if _status or text:
        sys.stdout.write("\r\033[K" + text)
        sys.stdout.flush()
    _status = text


def say(text: str) -> None:
    """Print one event line (stages running at the same time print from their own threads)."""
    with _lock:
        status = _status
        _draw("")
        print(text, flush=True)
        _draw(status)


def echo(text: str) -> None:
    """Write raw output (``--verbose``) as it comes."""
    with _lock:
        sys.stdout.write(text)
        sys.stdout.flush()


def clock(seconds: float) -> str:
    """``0:07``, ``12:05``, ``1:02:03``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def parse_progress(line: str) -> dict[str, str] | None:
    """``{"step": "3", "total": "8", "train/loss": "4.541"}`` from a progress line, else None."""
    if not line.startswith(PREFIX):
        return None
    fields = dict(part.split("=", 1) for part in line[len(PREFIX):].split() if "=" in part)
    return fields if fields.get("step", "").isdigit() and fields.get("total", "").isdigit() else None


class StageProgress:
    """What one running stage has shown so far; :meth:`status` is its one-line summary."""

    def __init__(self, started: float):
        self.started = started
        self.first: tuple[float, int] | None = None  # (time, step) of this run's first progress line
        self.latest: tuple[float, dict[str, str]] | None = None
        self.last_output = ""

    def update(self, line: str, now: float) -> None:
        fields = parse_progress(line.strip())
        if fields is None:
            if line.strip():
                self.last_output = line.strip()
            return
        if self.first is None:
            self.first = (now, int(fields["step"]))
        self.latest = (now, fields)

    def eta(self, now: float) -> float | None:
        """Seconds left at the pace since the first progress line (None before two steps apart)."""
        if self.first is None or self.latest is None:
            return None
        (start, first_step), (at, fields) = self.first, self.latest
        step, total = int(fields["step"]), int(fields["total"])
        if step <= first_step or at <= start or total <= 0:
            return None
        return max(0.0, (total - step) * (at - start) / (step - first_step) - (now - at))

    def status(self, now: float, width: int = 100) -> str:
        """``step 3/8 · 0:42 · ETA 1:10 · train/loss=4.541`` (a fit stage), else
        ``0:42 · <latest output line>``; cut to ``width`` characters."""
        parts = []
        if self.latest is not None:
            fields = self.latest[1]
            total = fields["total"] if fields["total"] != "0" else "?"
            parts.append(f"step {fields['step']}/{total}")
        parts.append(clock(now - self.started))
        eta = self.eta(now)
        if eta is not None:
            parts.append(f"ETA {clock(eta)}")
        if self.latest is not None:
            parts += [f"{name}={value}" for name, value in self.latest[1].items() if name not in ("step", "total")]
        elif self.last_output:
            parts.append(self.last_output)
        text = " · ".join(parts)
        return text if len(text) <= width else text[: width - 1] + "…"


class ProgressBoard:
    """The live progress of the running stages (thread-safe: stages report from their threads,
    the scheduler calls :meth:`tick` about every second)."""

    def __init__(self, interactive: bool):
        self.interactive = interactive
        self.stages: dict[str, StageProgress] = {}
        self.printed: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self, stage: str, now: float) -> None:
        with self._lock:
            self.stages[stage] = StageProgress(now)
            self.printed[stage] = now

    def update(self, stage: str, line: str, now: float | None = None) -> None:
        with self._lock:
            if stage in self.stages:
                self.stages[stage].update(line, time.monotonic() if now is None else now)

    def finish(self, stage: str) -> None:
        with self._lock:
            self.stages.pop(stage, None)
            empty = not self.stages
        if self.interactive and empty:
            with _lock:
                _draw("")

    def close(self) -> None:
        """Forget every stage and clear the status line."""
        with self._lock:
            self.stages.clear()
        with _lock:
            _draw("")

    def tick(self, now: float) -> None:
        """Redraw the status line (terminal), or print the plain lines that are due."""
        with self._lock:
            if self.interactive:
                width = shutil.get_terminal_size().columns - 1
                each = max(20, width // max(1, len(self.stages)) - 3)
                line = " | ".join(f"{name} {p.status(now, each)}" for name, p in self.stages.items())
                with _lock:
                    _draw(line[:width])
                return
            due = [name for name in self.stages if now - self.printed[name] >= PLAIN_EVERY_S]
            lines = [f"      [{name}] {self.stages[name].status(now)}" for name in due]
            self.printed.update(dict.fromkeys(due, now))
        for line in lines:
            say(line)

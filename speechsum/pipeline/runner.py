"""Runs the planned stages of ``speechsum pipeline``: each stage in a thread of its own that drives
its speechsum commands as subprocesses (output to ``RUN/logs/<stage>.log``), started once the stages
it needs are done, at most N (``--lanes``) at once, the head of the longest chain first, with the CPU
threads shared out between the lanes (``OMP_NUM_THREADS`` of each command, :func:`stage_threads`). The first failure
stops the other running stages (SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`) and is raised
once they have ended. A stage's marker ``RUN/.state/<stage>.json`` is written atomically only after
its outputs, so a stage that was stopped or failed has none and runs again next time (a fit stage
from its newest checkpoint, see :mod:`speechsum.pipeline.resume`). Each command's output lines also feed the live progress
(:mod:`speechsum.pipeline.progress`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from speechsum.pipeline.progress import ProgressBoard, echo, say
from speechsum.pipeline.resume import CHECKPOINT_EVERY_S, lost_outputs
from speechsum.pipeline.stages import delete_outputs
from speechsum.pipeline.table import Stage, StageTable
from speechsum.pipeline.teacher_server import stop_process
from speechsum.training.trainer_settings import usable_cpus
from speechsum.utils.arguments import MAX_THREADS
from speechsum.utils.io import write_atomic
from speechsum.utils.processes import DIE_WITH_PARENT
from speechsum.utils.url_secrets import without_url_secrets
from speechsum.utils.warm_start import WarmProcess, WarmStarter, wait_with_peak_rss

STOP_GRACE_S = 15.0  # SIGTERM, then SIGKILL after this long
STOPPED_NOTE = "stopped (Ctrl-C, SIGTERM or another stage's failure): no marker, so this stage runs again next time"

# the last line of a failed run ({again}: the command to rerun)
AFTER_A_FAILURE = ("Once that is fixed, {again} continues: the complete stages are kept, a training stage resumes "
                   "from its newest checkpoint (its settings unchanged) and the others start over")


class StageFailed(RuntimeError):
    """A stage's command failed; the message names the command and its log."""


class StageStopped(RuntimeError):
    """A stage was stopped because another stage failed or the pipeline was interrupted."""


def format_duration(seconds: float) -> str:
    """``42s``, ``1m12s``, ``1h02m03s``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def write_json_atomic(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def default_threads() -> int:
    """The CPU threads the pipeline shares out: ``$OMP_NUM_THREADS`` if set (of OpenMP's nested list
    ``4,2`` the first), else the CPUs this process may run on. A value that is no count of threads
    (``abc``, ``0``) is refused: it was ignored without a word, and every CPU used."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value:
        first = value.split(",")[0].strip()
        if not first.isdigit() or not 1 <= int(first) <= MAX_THREADS:
            raise ValueError(f"OMP_NUM_THREADS={value!r} is not a number of threads (1 to {MAX_THREADS}): set it to "
                             "one, unset it (every CPU this process may use), or give --threads N")
        return int(first)
    return usable_cpus()


def marker_path(run_dir: Path, stage: str) -> Path:
    """``RUN/.state/<stage>.json``: present only once the stage is complete."""
    return run_dir / ".state" / f"{stage}.json"


def exit_text(code: int) -> str:
    """How a stage's command ended, for its failure: ``exited with code 1``; a command ended by a signal
    (a negative code, ``exited with code -9`` before) or stopped by one it ends plainly on (130, 143)
    names the signal and who sends it, so the user looks at memory or at other users, not at the log."""
    number = -code if code < 0 else code - 128 if code in (128 + signal.SIGINT, 128 + signal.SIGTERM) else 0
    if not number:
        return f"exited with code {code}"
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    who = ("the kernel's out-of-memory killer (`dmesg` says so; fewer --lanes or a smaller batch needs less "
           "memory) or a `kill -9`" if number == signal.SIGKILL else "another process or the system, not the pipeline")
    how = "was killed by" if code < 0 else f"exited with code {code}: stopped by"
    return f"{how} {name} (signal {number}), sent by {who}"


# -- one stage's context ------------------------------------------------------------------------
class StageContext:
    """What a stage function sees: the run folder, the pipeline config, and ``run`` for commands
    (with ``threads`` CPU threads each). ``stop`` is shared by the stages of a run: once set, no new
    command starts, and :meth:`kill` ends the running one. ``resume``: a fit stage may continue an
    interrupted run (the planner says no when what it is built from runs again, or with ``--from``)
    that started after ``needs_finished`` (the newest marker time of the stages it needs)."""

    def __init__(self, run_dir: Path, config: dict, stage: str, wandb: bool, verbose: bool,
                 teacher_mode: str | None, threads: int = 1, stop: threading.Event | None = None,
                 resume: bool = False, needs_finished: float = 0.0, checkpoint_every_s: float = CHECKPOINT_EVERY_S,
                 starter: WarmStarter | None = None, config_record: Path | None = None):
        self.run_dir, self.config, self.stage = run_dir, config, stage
        self.config_record = config_record  # the pipeline YAML this stage runs with, kept in RUN/.state/configs/
        self.starter = starter  # warm starts for ``python -m`` commands (utils/warm_start.py); None: fresh ones
        self.wandb, self.verbose, self.teacher_mode = wandb, verbose, teacher_mode
        self.threads, self.checkpoint_every_s = threads, checkpoint_every_s
        self.resume, self.needs_finished = resume, needs_finished
        self.stop = stop or threading.Event()
        self.commands: list[str] = []
        self.secret_env: dict[str, str] = {}  # given to its commands, never on their command lines (ps) or in logs
        self.on_output: Callable[[str], None] | None = None  # each output line (the live progress)
        self.peak_rss_gib = 0.0  # the largest of this stage's commands (and their own children)
        self.log_file = self.log_path(stage)
        self._process: subprocess.Popen | WarmProcess | None = None
        self._lock = threading.Lock()

    def log_path(self, stage: str) -> Path:
        return self.run_dir / "logs" / f"{stage}.log"

    def note(self, message: str) -> None:
        say(f"      [{self.stage}] {message}")
        with self.log_file.open("a", encoding="utf-8") as log:
            log.write(f"[pipeline] {message}\n")

    def environment(self) -> dict[str, str]:
        """The environment of this stage's commands (:func:`stage_environment`)."""
        return {**stage_environment(self.threads), **self.secret_env}

    def check_stop(self) -> None:
        """Raise :class:`StageStopped` once the run is stopping, saying so at the end of the stage log
        (which ended mid-output, as a crash's does)."""
        if self.stop.is_set():
            with contextlib.suppress(OSError), self.log_file.open("a", encoding="utf-8") as log:
                log.write(f"[pipeline] {STOPPED_NOTE}\n")
            raise StageStopped(f"stage {self.stage}: stopped")

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the running command, if any (called from the scheduling thread)."""
        with self._lock:
            if self._process is not None:
                with contextlib.suppress(ProcessLookupError):  # it has just ended
                    os.kill(self._process.pid, sig)

    def launch(self, command: list[str]) -> subprocess.Popen | WarmProcess:
        """Start ``command`` with :meth:`environment`, its output (stdout and stderr) in ``.stdout``:
        forked from the warm-start server when there is one and the command is ``python -m ...``."""
        if self.starter is not None and command[:2] == [sys.executable, "-m"] and len(command) > 2:
            try:
                return self.starter.start(command[2], command[3:], self.environment())
            except RuntimeError as err:
                self.note(f"{err}; starting the command as a fresh process")
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=self.environment())

    def run(self, command: list[str]) -> None:
        """Run ``command``; its output goes to the stage log (and the console with --verbose)."""
        line = without_url_secrets(shlex.join(command))  # a --judge-base-url's user:password@: not in logs
        self.commands.append(line)
        with self.log_file.open("a", encoding="utf-8") as log:
            log.write(f"[pipeline] $ {line}  (OMP_NUM_THREADS={self.threads})\n")
            log.flush()
            with self._lock:  # a stop either finds this process or keeps it from starting
                self.check_stop()
                process = self.launch(command)
                self._process = process
            try:
                for text in process.stdout:
                    log.write(text)
                    if self.verbose:
                        echo(f"[{self.stage}] {text}")
                    if self.on_output is not None:
                        self.on_output(text)
                _, peak_rss_kib = wait_with_peak_rss(process)
            except BaseException:
                stop_process(process)
                raise
            finally:
                with self._lock:
                    self._process = None
                process.stdout.close()
        self.peak_rss_gib = max(self.peak_rss_gib, peak_rss_kib / 2**20)
        # stopped because the run is stopping: not this stage's failure, and not its success either
        # (a command may end a SIGTERM with exit code 0, as Lightning's fit did)
        self.check_stop()
        if process.returncode != 0:
            raise StageFailed(f"stage {self.stage}: `{line}` {exit_text(process.returncode)}.\n{self.log_tail()}")

    def log_tail(self, count: int = 15) -> str:
        """``Last lines of <log>:`` and the stage log's last ``count`` lines, indented."""
        tail = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-count:]
        return f"Last lines of {self.log_file}:\n  " + "\n  ".join(tail)


# -- running the stages -------------------------------------------------------------------------
def run_stage(stage: Stage, ctx: StageContext, config_digest: str) -> dict:
    """Run one stage: from scratch (its outputs deleted, its log emptied), or, for a resuming fit
    stage, with its folder and log left to its run function; its marker, written once the stage
    function has returned its outputs, is returned."""
    ctx.log_file.parent.mkdir(parents=True, exist_ok=True)
    if not (stage.resumes and ctx.resume):
        delete_outputs(stage.outputs(ctx))
        ctx.log_file.write_text("", encoding="utf-8")
    start = time.monotonic()
    outputs = stage.run(ctx)
    missing = lost_outputs({"outputs": [str(p) for p in outputs]}, ctx.run_dir)
    if missing:  # a command that ended with code 0 without writing what the stage lists: no marker
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise StageFailed(f"stage {stage.name}: its commands ended without an error, but its output {missing[0][0]} "
                          f"{missing[0][1]}{more}; not marked complete, so it runs again next time.\n{ctx.log_tail()}")
    marker = {"stage": stage.name, "elapsed_s": round(time.monotonic() - start, 2), "commands": ctx.commands,
              "threads": ctx.threads, "peak_rss_gib": round(ctx.peak_rss_gib, 3),
              "outputs": [str(p) for p in outputs], "log": str(ctx.log_file), "config_hash": config_digest,
              "pipeline_config": str(ctx.config_record) if ctx.config_record else None,
              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(marker_path(ctx.run_dir, stage.name), marker)
    return marker


def remove_stale_results(table: StageTable, make_context: Callable[..., StageContext]) -> list[Path]:
    """Delete the outputs of every stage no other stage is built on (the report) whose marker is gone (cleared
    as what it is built from runs again, ``--from``, also beyond ``--until``), and return them: its
    ``RUN/report.md`` stayed until the stage itself ran again, looking current when the run stopped before
    it. A resuming (fit) stage keeps its folder."""
    removed = []
    for stage in table:
        if stage.resumes or table.downstream(stage.name):
            continue
        ctx = make_context(stage.name, 1, threading.Event())
        if not marker_path(ctx.run_dir, stage.name).exists():
            removed += [path for path in stage.outputs(ctx) if path.exists() or path.is_symlink()]
    delete_outputs(removed)
    return removed


def stage_environment(threads: int) -> dict[str, str]:
    """The environment of a stage's commands: this process's, with the thread count set."""
    count = str(threads)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": count, "MKL_NUM_THREADS": count,
            DIE_WITH_PARENT: str(os.getpid())}  # a pipeline killed with SIGKILL leaves no stage running (utils/processes.py)


def stage_threads(table: StageTable, stage: str, lanes: int, threads: int) -> int:
    """``OMP_NUM_THREADS`` for ``stage``'s commands: every thread for a stage no other stage can run
    beside (:meth:`StageTable.runs_alone`) or with one lane, else ``max(1, threads // lanes)``. Fixed by
    the table rather than by the stages running at the moment: matrix products split their sums by
    thread count, so a count that followed the machine's timing would change a run's numbers."""
    if lanes <= 1 or table.runs_alone(stage):
        return threads
    return max(1, threads // lanes)


def run_stages(planned: list[str], table: StageTable,
               make_context: Callable[[str, int, threading.Event], StageContext],
               digests: dict[str, str], lanes: int, threads: int, start: float,
               board: ProgressBoard | None = None) -> dict[str, dict]:
    """Run ``planned``: each stage in a thread of its own once the stages it needs are done, at most
    ``lanes`` at once; of the stages ready together, those with the longest chain of stages still to
    come (:meth:`StageTable.chain`; ties: table order) first. Each gets :func:`stage_threads`: a count
    that depends on the table alone, never on which stages happen to run beside it, so a stage's
    arithmetic (and its result) is the same on a busy machine, an idle one and in a ``--from`` rerun.
    The first failure stops the other running stages (no marker for them) and is raised once they
    have ended.
    ``make_context(stage, threads, stop)`` builds a stage's :class:`StageContext`; ``digests`` are
    the stages' settings digests their markers keep (:meth:`StageTable.config_digests`); ``start`` is the
    ``time.monotonic()`` the returned markers' ``start_s``/``end_s`` count from; ``board`` shows
    the running stages' live progress."""
    results: queue.Queue = queue.Queue()
    running: dict[str, tuple[StageContext, threading.Thread, float]] = {}
    finished: dict[str, dict] = {}
    pending = list(planned)
    stop = threading.Event()
    failure: BaseException | None = None
    stopped_at: float | None = None

    def work(stage: str, ctx: StageContext) -> None:
        try:
            results.put((stage, run_stage(table[stage], ctx, digests[stage]), None))
        except BaseException as error:  # handed to the scheduling thread
            results.put((stage, None, error))

    def stop_all(sig: int = signal.SIGTERM) -> None:
        stop.set()
        for ctx, _, _ in running.values():
            ctx.kill(sig)

    try:
        while pending or running:
            ready = table.start_order(s for s in pending if all(need in finished or need not in planned
                                                                for need in table.before(s)))
            starting = [] if stop.is_set() else ready[: max(0, lanes - len(running))]
            for stage in starting:
                ctx = make_context(stage, stage_threads(table, stage, lanes, threads), stop)
                plural = "s" * (ctx.threads > 1)
                say(f"{table.label(stage)} … running: {table[stage].describe} "
                    f"(log {ctx.log_file}, {ctx.threads} thread{plural})")
                if board is not None:
                    board.start(stage, time.monotonic())
                    ctx.on_output = functools.partial(board.update, stage)
                thread = threading.Thread(target=work, args=(stage, ctx), name=f"stage-{stage}", daemon=True)
                running[stage] = (ctx, thread, time.monotonic())
                pending.remove(stage)
                thread.start()
            if not running:
                if pending and not stop.is_set():
                    raise RuntimeError(f"stages {pending} cannot start: what they need is neither complete nor planned")
                break
            try:
                stage, marker, error = results.get(timeout=1.0)
            except queue.Empty:
                if board is not None:
                    board.tick(time.monotonic())
                if stopped_at is not None and time.monotonic() - stopped_at > STOP_GRACE_S:
                    stop_all(signal.SIGKILL)
                continue
            ctx, thread, started = running.pop(stage)
            thread.join()
            if board is not None:
                board.finish(stage)
            now = time.monotonic()
            if error is None:
                finished[stage] = {**marker, "start_s": round(started - start, 2), "end_s": round(now - start, 2)}
                say(f"{table.label(stage)} … done in {format_duration(marker['elapsed_s'])} "
                    f"(total {format_duration(now - start)})")
            elif isinstance(error, StageStopped):
                say(f"{table.label(stage)} … stopped after {format_duration(now - started)} (log {ctx.log_file})")
            else:
                say(f"{table.label(stage)} … FAILED after {format_duration(now - started)} (log {ctx.log_file})")
                if failure is None:
                    failure, stopped_at = error, now
                    if running:
                        say(f"      stopping {', '.join(running)}: no marker, so they run again next time")
                    stop_all()
    except BaseException:  # Ctrl-C / SIGTERM: stop every running command, write no marker for them
        if board is not None:
            board.close()
        if running:
            say(f"      interrupted: stopping {', '.join(running)}: no marker, so they run again next time")
        stop_all()  # SIGTERM
        deadline = time.monotonic() + STOP_GRACE_S
        for _, thread, _ in running.values():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stop_all(signal.SIGKILL)  # what is left; each stage's thread then stops its own helpers (a teacher server)
        for _, thread, _ in running.values():
            thread.join(timeout=STOP_GRACE_S + 5)
        raise
    if failure is not None:
        raise failure
    return finished


def peak_at_once(stages: dict[str, dict]) -> float:
    """An upper bound of the memory held at once: the largest sum of the peak RSS of stages that
    ran at the same time."""
    spans = [(s["start_s"], s["end_s"], s["peak_rss_gib"]) for s in stages.values() if "start_s" in s]
    return max((sum(peak for begin, end, peak in spans if begin <= at < end) for at, _, _ in spans), default=0.0)

"""The run folder's state and the checks of ``speechsum pipeline``'s options against it: the stage
markers (``RUN/.state/<stage>.json``), the lock one run holds on its folder, and what ``--run-dir``,
``--from`` and ``--until`` must find there before anything is deleted."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from speechsum.pipeline.resume import lost_outputs
from speechsum.pipeline.runner import marker_path
from speechsum.pipeline.table import PIPELINE, StageTable


def read_marker(run_dir: Path, stage: str) -> dict | None:
    """The stage's marker, or None when the stage is not complete (a broken marker counts as none: also
    one that is not a mapping with its ``elapsed_s``, edited by hand or written by another program,
    which ended the rerun with a KeyError or AttributeError traceback)."""
    try:
        marker = json.loads(marker_path(run_dir, stage).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(marker, dict):
        return None
    elapsed, outputs = marker.get("elapsed_s"), marker.get("outputs") or []
    whole = isinstance(elapsed, int | float) and not isinstance(elapsed, bool) and isinstance(outputs, list) \
        and all(isinstance(output, str) for output in outputs)
    return marker if whole else None



def clear_markers_from(run_dir: Path, stage: str, table: StageTable = PIPELINE) -> list[str]:
    """Delete the markers of ``stage`` and of every stage built on it; returns the stages cleared."""
    cleared = []
    for name in [stage, *table.downstream(stage)]:
        path = marker_path(run_dir, name)
        if path.exists():
            path.unlink()
            cleared.append(name)
    return cleared


LOCK_FILE = Path(".state") / "pipeline.lock"


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN/.state/pipeline.lock`` for the run (an advisory lock the OS frees when this process
    ends, also when it is killed): a second pipeline on the same folder would delete the outputs of
    stages the first one is writing, so it is refused."""
    if fcntl is None:  # Windows: no advisory locks; one run per folder is then up to the user
        yield
        return
    path = run_dir / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        _lock_or_refuse(handle, run_dir)
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def check_no_other_run(run_dir: Path) -> None:
    """Refuse at once a ``--run-dir`` whose lock another pipeline holds (:func:`run_dir_lock` takes it
    later, after the config checks): the refusal came after importing Lightning for them, and a ``--from``
    while the other run had not completed its stages yet was refused as not complete in --run-dir
    instead. Creates nothing (a new folder has no lock)."""
    if fcntl is None:
        return
    try:
        handle = open(run_dir / LOCK_FILE, encoding="utf-8")  # noqa: SIM115  (closed below: the lock is freed)
    except OSError:  # none yet, or not readable: run_dir_lock decides
        return
    with handle:
        _lock_or_refuse(handle, run_dir)


def _lock_or_refuse(handle: IO[str], run_dir: Path) -> None:
    """Lock ``handle`` (the run folder's lock file), or say which pipeline holds it."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip()
        raise RuntimeError(f"another speechsum pipeline{f' (pid {owner})' if owner else ''} is running in {run_dir}: "
                           "wait for it to finish or stop it, or give this run another --run-dir") from None


def check_run_dir_is_a_run(run_dir: Path) -> None:
    """Refuse an existing ``--run-dir`` that holds files but no earlier run (no ``.state/``): the
    stages delete and rewrite their folders there (``data/``, ``sft/``, ``evaluate/``, …) and stale
    temporaries anywhere below, so ``--run-dir .`` or a project folder would lose what it keeps."""
    if not run_dir.is_dir() or (run_dir / ".state").is_dir():
        return
    kept = sorted(path.name for path in run_dir.iterdir() if path.name != "logs")
    if kept:
        shown = ", ".join(kept[:5]) + (", …" if len(kept) > 5 else "")
        raise ValueError(f"--run-dir {run_dir} holds files ({shown}) but no earlier pipeline run (no .state/); the "
                         "stages delete and replace their folders there: give a new or empty folder")


def check_from_until(from_stages: list[str] | None, until: list[str] | None, table: StageTable) -> None:
    """Refuse ``--from`` stages that ``--until`` would not run: their markers would be deleted (the
    finished work thrown away) and nothing redone."""
    if not from_stages or not until:
        return
    outside = [s for s in from_stages if s not in table.until(until)]
    if outside:
        raise ValueError(f"--from {','.join(outside)} is not among the stages --until {','.join(until)} runs (those "
                         "and what they are built from): nothing would be redone. Drop --until, or --from a stage "
                         "it runs")


def check_from_inputs(run_dir: Path, from_stages: list[str] | None, table: StageTable) -> None:
    """Refuse ``--from`` a stage whose inputs are not there: the stages it is built on (and not redone
    by this ``--from``) have no marker in ``run_dir``, so the run would build them first, from scratch
    (the whole pipeline for ``--from dpo`` in a new folder, or a mistyped ``--run-dir``)."""
    redone = {name for stage in from_stages or [] for name in (stage, *table.downstream(stage))}
    for stage in from_stages or []:
        missing = [name for name in table.names if name in table.upstream(stage) and name not in redone
                   and not _complete(run_dir, name)]
        if missing:
            raise ValueError(f"--from {stage}: {', '.join(missing)}, which it is built on, "
                             f"{'is' if len(missing) == 1 else 'are'} not complete in --run-dir {run_dir}: give the "
                             "folder of an earlier run, or leave out --from to build them first")


def _complete(run_dir: Path, stage: str) -> bool:
    """Whether ``stage`` has a marker and every output it lists is still whole (else the planner
    runs it again): a marker whose checkpoint was deleted to save space passed ``--from``'s check, and
    the run rebuilt that stage and all after it."""
    marker = read_marker(run_dir, stage)
    return marker is not None and not lost_outputs(marker, run_dir)

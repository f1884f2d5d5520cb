"""Chaos test for ``speechsum pipeline``: SIGKILL the whole pipeline at seeded random moments,
rerun it after each kill until it completes, and check that nothing was lost.

1. A reference run: the same command, uninterrupted (or ``--reference DIR``, a finished one).
2. A chaos run in a fresh run dir: the command starts in its own process group, which is
   SIGKILLed (the pipeline and every stage command at once, no chance to clean up) after a seeded
   delay; kill ``i`` lands near progress point ``p_i``, the ``i``-th of ``--kills`` sorted uniform
   samples in (0, reference wall), so the kills spread over every stage. Then one last rerun.
3. Checks: (a) report.md / report.csv / paired.csv and every ``predictions.jsonl`` under
   baselines/ and evaluate/ equal the reference's cell for cell (run-dir paths and timing fields
   ignored); (b) nothing is half-written: no ``*.tmp`` file or ``.*.tmp-*`` / ``.*.old-*`` folder, every
   ``.jsonl`` parses, every ``.ckpt`` loads with ``torch.load(weights_only=True)``; (c) every
   training stage started again with a whole checkpoint of an interrupted run logged "resuming
   from" (and none "starting over" for any reason but having no whole checkpoint); (d) the time
   lost per kill: (chaos wall - reference wall) / kills.

Prints a JSON summary (also ``--out``); exits 1 when a check fails. docs/reliability.md has figures.

    .venv/bin/python benchmarks/chaos_pipeline.py --kills 4 --seed 0 --work-dir /tmp/chaos
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from speechsum.pipeline.cli import read_marker  # noqa: E402
from speechsum.pipeline.config import TRAINING_STAGES  # noqa: E402
from speechsum.pipeline.resume import newest_checkpoint  # noqa: E402
from speechsum.pipeline.table import STAGES  # noqa: E402

REPORT_FILES = ("report.md", "report.csv", "paired.csv")
PREDICTION_FOLDERS = ("baselines", "evaluate")
TIMING_KEY = re.compile(r"(^|_)(time|times|seconds|secs|elapsed|latency|duration|wall)($|_)|_s$|_ms$")
RUNNING_LINE = re.compile(r"^\[\d+/\d+\] (\w+) … running")
RESUMING = "[pipeline] resuming from "
STARTING_OVER = "[pipeline] starting over: "
NO_CHECKPOINT = "the interrupted run left no whole checkpoint"  # the one good reason to start over
MIN_DELAY_S = 3.0  # a kill never comes sooner than this after a start


# -- running the pipeline -----------------------------------------------------------------------
def pipeline_command(run_dir: Path, preset: str, threads: int, checkpoint_every: float) -> list[str]:
    return [sys.executable, "-m", "speechsum.cli", "pipeline", "--preset", preset, "--run-dir", str(run_dir),
            "--threads", str(threads), "--checkpoint-every", f"{checkpoint_every:g}"]


def start(command: list[str], output: Path, threads: int) -> subprocess.Popen:
    """Start ``command`` in a process group of its own (its pid is the group id), output to ``output``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with output.open("a", encoding="utf-8") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group of ``process`` (the pipeline and every stage command) and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def run_to_end(command: list[str], output: Path, threads: int, timeout_s: float) -> tuple[int, float]:
    """(exit status, wall seconds) of an uninterrupted run; killed after ``timeout_s``."""
    started = time.monotonic()
    process = start(command, output, threads)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(process)
    return process.returncode, time.monotonic() - started


def kill_delays(kills: int, reference_wall_s: float, seed: int) -> list[float]:
    """Seconds to wait before each kill: kill ``i`` lands near the ``i``-th of ``kills`` sorted
    seeded uniform progress points in (0, reference wall), were no work lost to earlier kills."""
    rng = random.Random(seed)
    points = sorted(rng.uniform(0.0, reference_wall_s) for _ in range(kills))
    return [max(MIN_DELAY_S, now - before) for before, now in zip([0.0, *points], points)]


def incomplete_with_checkpoint(run_dir: Path) -> set[str]:
    """Training stages without a marker that have a whole checkpoint to resume from."""
    return {stage for stage in TRAINING_STAGES
            if read_marker(run_dir, stage) is None and newest_checkpoint(run_dir / stage) is not None}


def started_stages(output: Path, offset: int) -> list[str]:
    """Stages whose "running" line the pipeline printed in ``output`` after byte ``offset``."""
    with output.open(encoding="utf-8", errors="replace") as out:
        out.seek(offset)
        return [m.group(1) for line in out if (m := RUNNING_LINE.match(line))]


def chaos_run(command: list[str], run_dir: Path, output: Path, threads: int, delays: list[float],
              timeout_s: float) -> dict:
    """Start ``command`` again and again, SIGKILLing it after each delay, then once to the end."""
    attempts, expected_resumes = [], {stage: 0 for stage in TRAINING_STAGES}
    started = time.monotonic()
    for delay in [*delays, None]:
        resumable = incomplete_with_checkpoint(run_dir)
        offset = output.stat().st_size if output.exists() else 0
        attempt_start = time.monotonic()
        process = start(command, output, threads)
        try:
            process.wait(timeout=timeout_s if delay is None else delay)
            killed = False
        except subprocess.TimeoutExpired:
            kill_group(process)
            killed = True
        stages = started_stages(output, offset)
        for stage in resumable & set(stages):
            expected_resumes[stage] += 1
        running = [s for s in stages if read_marker(run_dir, s) is None]
        attempts.append({"delay_s": delay, "killed": killed, "wall_s": round(time.monotonic() - attempt_start, 1),
                         "returncode": process.returncode, "stages_started": stages,
                         "killed_during": running if killed else []})
        if not killed and process.returncode == 0:
            break
    return {"attempts": attempts, "wall_s": time.monotonic() - started, "expected_resumes": expected_resumes}


# -- comparing the results ----------------------------------------------------------------------
def without_run_dir(value, run_dir: Path):
    """``value`` with the run dir in every string replaced by ``RUN`` and timing fields dropped."""
    if isinstance(value, str):
        return value.replace(str(run_dir), "RUN")
    if isinstance(value, list):
        return [without_run_dir(item, run_dir) for item in value]
    if isinstance(value, dict):
        return {key: without_run_dir(item, run_dir) for key, item in value.items() if not TIMING_KEY.search(key)}
    return value


def table_cells(path: Path, run_dir: Path) -> list[list[str]]:
    """The cells of a CSV file, or of a text file (one cell per line), run dir replaced."""
    text = path.read_text(encoding="utf-8").replace(str(run_dir), "RUN")
    if path.suffix == ".csv":
        return list(csv.reader(text.splitlines()))
    return [[line] for line in text.splitlines()]


def compare_cells(name: str, ours: list[list], reference: list[list]) -> list[str]:
    """One line per cell (or row) that differs."""
    problems = [] if len(ours) == len(reference) else [f"{name}: {len(ours)} rows, reference {len(reference)}"]
    for row, (a, b) in enumerate(zip(ours, reference)):
        if len(a) != len(b):
            problems.append(f"{name} row {row}: {a!r} != {b!r}")
            continue
        problems += [f"{name} row {row} col {col}: {x!r} != {y!r}" for col, (x, y) in enumerate(zip(a, b)) if x != y]
    return problems


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def compare_results(run_dir: Path, reference: Path) -> tuple[list[str], int]:
    """(every difference from the reference's report and predictions, prediction rows lost)."""
    problems, lost = [], 0
    for name in REPORT_FILES:
        if not (reference / name).is_file():
            continue
        if not (run_dir / name).is_file():
            problems.append(f"{name}: missing")
            continue
        problems += compare_cells(name, table_cells(run_dir / name, run_dir), table_cells(reference / name, reference))
    for folder in PREDICTION_FOLDERS:
        for ref_path in sorted((reference / folder).rglob("predictions.jsonl")):
            relative = ref_path.relative_to(reference)
            ours_path = run_dir / relative
            ref_rows = [without_run_dir(row, reference) for row in read_jsonl(ref_path)]
            rows = [without_run_dir(row, run_dir) for row in read_jsonl(ours_path)] if ours_path.is_file() else []
            lost += max(0, len(ref_rows) - len(rows))
            problems += [f"{relative} row {i}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}"
                         for i, (a, b) in enumerate(zip(rows, ref_rows)) if a != b]
            if len(rows) != len(ref_rows):
                problems.append(f"{relative}: {len(rows)} rows, reference {len(ref_rows)}")
    return problems, lost


def half_written(run_dir: Path) -> list[str]:
    """Temporary files left behind, ``.jsonl`` files that do not parse, checkpoints that do not load."""
    import torch

    leftovers = [*run_dir.rglob("*.tmp"), *run_dir.rglob(".*.tmp-*"), *run_dir.rglob(".*.old-*")]  # atomic writes
    problems = [f"temporary file left: {p}" for p in leftovers]
    for path in run_dir.rglob("*.jsonl"):
        try:
            read_jsonl(path)
        except (ValueError, UnicodeDecodeError) as error:
            problems.append(f"{path}: does not parse ({error})")
    for path in run_dir.rglob("*.ckpt"):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any failure to load is the finding
            problems.append(f"{path}: does not load ({type(error).__name__}: {error})")
    return problems


def resume_problems(run_dir: Path, expected: dict[str, int]) -> tuple[list[str], dict[str, int]]:
    """Training stages that started over, or resumed fewer times than a whole checkpoint allowed."""
    problems, seen = [], {}
    for stage in TRAINING_STAGES:
        log = run_dir / "logs" / f"{stage}.log"
        text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
        seen[stage] = text.count(RESUMING)
        problems += [f"{stage}: {line.strip()} ({log})" for line in text.splitlines()
                     if line.startswith(STARTING_OVER) and NO_CHECKPOINT not in line]
        if seen[stage] < expected.get(stage, 0):
            problems.append(f"{stage}: resumed {seen[stage]} times, {expected[stage]} expected ({log})")
    return problems, seen


# -- the whole test -------------------------------------------------------------------------------
def chaos_test(work_dir: Path, kills: int, seed: int, preset: str = "tiny", threads: int = 1,
               checkpoint_every: float = 0.0, reference: Path | None = None, timeout_s: float = 1800.0) -> dict:
    """Run the reference (unless given) and the chaos run under ``work_dir``; the JSON summary."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if reference is None:
        reference = work_dir / "reference"
        if reference.exists():  # a rerun there would skip every stage: no reference wall time
            raise SystemExit(f"{reference} exists: pass it as --reference or use a fresh --work-dir")
        command = pipeline_command(reference, preset, threads, checkpoint_every)
        code, _ = run_to_end(command, work_dir / "reference.out", threads, timeout_s)
        if code != 0:
            raise RuntimeError(f"the reference run failed ({code}): see {work_dir / 'reference.out'}")
    reference_wall = json.loads((reference / "pipeline_summary.json").read_text())["wall_s"]
    run_dir, output = work_dir / "chaos", work_dir / "chaos.out"
    if run_dir.exists() or output.exists():
        raise SystemExit(f"{run_dir} or {output} exists: use a fresh --work-dir")
    delays = kill_delays(kills, reference_wall, seed)
    chaos = chaos_run(pipeline_command(run_dir, preset, threads, checkpoint_every), run_dir, output, threads,
                      delays, timeout_s)
    completed = read_marker(run_dir, STAGES[-1]) is not None
    killed = sum(a["killed"] for a in chaos["attempts"])
    mismatches, lost = compare_results(run_dir, reference) if completed else (["the chaos run never completed"], 0)
    broken = half_written(run_dir)
    not_resumed, resumes = resume_problems(run_dir, chaos["expected_resumes"])
    return {
        "preset": preset, "seed": seed, "threads": threads, "checkpoint_every_s": checkpoint_every,
        "reference": str(reference), "run_dir": str(run_dir), "completed": completed,
        "kills": killed, "reference_wall_s": round(reference_wall, 1), "chaos_wall_s": round(chaos["wall_s"], 1),
        "lost_s_per_kill": round((chaos["wall_s"] - reference_wall) / killed, 1) if killed else 0.0,
        "items_lost": lost, "mismatches": mismatches, "half_written": broken, "resume_problems": not_resumed,
        "resumes": resumes, "expected_resumes": chaos["expected_resumes"], "attempts": chaos["attempts"],
        "ok": completed and not (mismatches or broken or not_resumed or lost),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/chaos"),
                        help="reference/ and chaos/ (must not exist yet) go here (default /tmp/chaos)")
    parser.add_argument("--kills", type=int, default=4, help="SIGKILLs before the last rerun (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    parser.add_argument("--preset", default="tiny", help="pipeline preset (default tiny)")
    parser.add_argument("--threads", type=int, default=1, help="the pipeline's --threads (default 1)")
    parser.add_argument("--checkpoint-every", type=float, default=0.0,
                        help="the pipeline's --checkpoint-every, for both runs (default 0: every step)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="a finished run of the same command to compare with, instead of running one")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed for one run (default 1800)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON summary here")
    args = parser.parse_args(argv)
    summary = chaos_test(args.work_dir, args.kills, args.seed, args.preset, args.threads, args.checkpoint_every,
                         args.reference, args.timeout)
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""``speechsum pipeline``: the whole recipe in one command, resumable stage by stage.

    speechsum pipeline                      # the default preset on the bundled benchmark -> runs/pipeline
    speechsum pipeline --preset tiny --run-dir runs/tiny
    speechsum pipeline --from dpo           # redo DPO, its evaluation and the report
    speechsum pipeline --from evaluate      # re-evaluate every student (evaluate_sft,evaluate_kd,evaluate_dpo)

The stages, what each needs and runs: :data:`speechsum.pipeline.table.PIPELINE`. Each runs
speechsum commands as subprocesses (logs in ``RUN/logs/<stage>.log``; :mod:`speechsum.pipeline.runner`
runs them, this module is the command: options, which stages to run, the summary). A stage starts as soon as the stages it needs are complete, so
independent ones run at the same time (``--lanes``, default 2: the text teacher trains while the
backbone trains and aligns; the baselines, and each student as soon as it exists, are evaluated while
the student trains on; the stage heading the longest chain starts first); the CPU threads
(``--threads``) are split between the lanes, the same for a stage in every run. A stage is complete only when its
marker ``RUN/.state/<stage>.json`` exists — written atomically after its outputs. A rerun skips
complete stages, deletes a stage's partial outputs before running it again (a ``speechsum fit``
stage interrupted with the same config resumes from its newest checkpoint instead), and runs again
every stage built on a stage that runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Collection
from datetime import datetime, timezone
from pathlib import Path

from speechsum.pipeline.command_args import check_command_args
from speechsum.pipeline.config import load_pipeline_config, preset_path, section_options
from speechsum.pipeline.config_record import keep_config, other_settings, write_run_config
from speechsum.pipeline.progress import ProgressBoard, say
from speechsum.pipeline.resume import CHECKPOINT_EVERY_S, lost_outputs
from speechsum.pipeline.run_folder import (
    check_from_inputs,
    check_from_until,
    check_no_other_run,
    check_run_dir_is_a_run,
    clear_markers_from,
    read_marker,
    run_dir_lock,
)
from speechsum.pipeline.runner import (
    AFTER_A_FAILURE,
    StageContext,
    StageFailed,
    default_threads,
    format_duration,
    marker_path,
    peak_at_once,
    remove_stale_results,
    run_stages,
    stage_environment,
    write_json_atomic,
)
from speechsum.pipeline.stages import WARM_MODULES
from speechsum.pipeline.table import PIPELINE, STAGE_GROUPS, StageTable
from speechsum.utils.arguments import MAX_THREADS, MAX_WORKERS, at_least, number, unset_text
from speechsum.utils.io import check_output_path
from speechsum.utils.processes import Terminated, raise_terminated
from speechsum.utils.repeated_options import OnceParser
from speechsum.utils.temp_owner import remove_stale_temporaries
from speechsum.utils.warm_start import WarmStarter

EPILOG = f"""\
stages, in order (those whose needs are complete run at the same time, --lanes; the longest chain first):
{PIPELINE.epilog()}
Presets (configs/pipeline/): tiny (tests, minutes), default (9-15 min on a 2-core CPU: 9 with AMX, 13-15 without),
large (the default's students on 3x the test examples), full (the default until 2026-12-04: the full world, 22 min).
Real models, your manifests, a vLLM teacher, an LLM judge: docs/pipeline.md.
"""


RUNS_ALONE = [name for name in PIPELINE.names if PIPELINE.runs_alone(name)]  # all threads (--threads)


# -- the run ------------------------------------------------------------------------------------
def stage_list(text: str) -> list[str]:
    """``--from``/``--until``: one stage or several, comma-separated, each a stage of the table or a
    group of :data:`STAGE_GROUPS` (``evaluate``: the three student evaluations)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PIPELINE.names and name not in STAGE_GROUPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {unknown or text!r}; stages: {', '.join(PIPELINE.names)}, "
                                         f"or {', '.join(STAGE_GROUPS)}")
    return list(dict.fromkeys(stage for name in names for stage in STAGE_GROUPS.get(name, (name,))))


def preset_name(name: str) -> str:
    """argparse ``type=`` of ``--preset``: a preset that is not there is a usage error (exit 2)."""
    try:
        preset_path(name)
    except FileNotFoundError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(f"--preset {name}: ")) from None
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = OnceParser(
        prog="speechsum pipeline", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Run the whole recipe end to end: build the benchmark, train the text backbone and teacher, "
        "align the student's projector, SFT, on-policy KD, preference pairs, DPO, evaluate every stage and the "
        "text/cascade baselines, report. Rerunning continues after the last complete stage.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", type=preset_name, default="default",
                        help="configs/pipeline/NAME.yaml: tiny, default, large or full (presets, below) (default: default)")
    source.add_argument("--config", metavar="FILE", help="a pipeline YAML of your own (docs/pipeline.md)")
    parser.add_argument("--run-dir", default="runs/pipeline",
                        help="where everything goes: a new or empty folder, or an earlier run's, which the run "
                        "continues (a folder of other files is refused; one pipeline per folder at a time) "
                        "(default runs/pipeline)")
    parser.add_argument("--from", dest="from_stage", type=stage_list, metavar="STAGE[,STAGE…]",
                        help="re-run these stages and every stage built on them (deletes their markers; no "
                        f"resuming); stages: {', '.join(PIPELINE.names)}; evaluate = the three student evaluations")
    parser.add_argument("--until", type=stage_list, metavar="STAGE[,STAGE…]",
                        help="run only these stages and the stages they are built from")
    parser.add_argument("--lanes", type=at_least(1, MAX_WORKERS), default=2, metavar="N",
                        help="run up to N independent stages at the same time (default 2; 1 = one after the other)")
    parser.add_argument("--threads", type=at_least(1, MAX_THREADS), default=None, metavar="N",
                        help="CPU threads shared out between the lanes: each command gets max(1, N // lanes) as "
                        f"OMP_NUM_THREADS, all N for a stage nothing can run beside ({', '.join(RUNS_ALONE)}) or with "
                        "--lanes 1; fixed per stage, so a run's numbers do not depend on the machine's load "
                        "(default: $OMP_NUM_THREADS if set, else the CPUs this process may use)")
    parser.add_argument("--teacher", choices=["inprocess", "serve", "remote"], default=None,
                        help="KD teacher: inprocess (HFTeacher in the training process), serve (start `speechsum serve` "
                        "for the teacher on a free loopback port for the KD stage), remote (the endpoint in the "
                        "YAML's teacher: section). Default: the YAML's teacher.mode, else inprocess")
    parser.add_argument("--checkpoint-every", type=number(0.0, 1e7, what="a number of seconds"), default=CHECKPOINT_EVERY_S, metavar="SECONDS",
                        help="seconds of training between the resume checkpoints of the fit stages: a killed "
                        f"stage redoes at most this much when rerun (default {CHECKPOINT_EVERY_S:g}; 0 = every step)")
    parser.add_argument("--no-warm-start", action="store_true",
                        help="start every command as a fresh Python process, each importing torch, Lightning and "
                        "transformers again (about 6 s of CPU each on a 2-core CPU); by default they are forked "
                        "from one process that has imported them once (same results; Linux only)")
    parser.add_argument("--wandb", action="store_true",
                        help="keep the stages' W&B loggers and log evaluation tables (offline unless WANDB_MODE=online)")
    parser.add_argument("--verbose", action="store_true",
                        help="stream every stage's raw output to the console (each line prefixed with [stage]) "
                        "instead of the live progress line")
    return parser


def plan_stages(run_dir: Path, digests: dict[str, str], until: Collection[str] | None, redo: Collection[str] = (),
                table: StageTable = PIPELINE) -> tuple[list[str], dict[str, dict], set[str]]:
    """(the stages to run, in order; the markers of the complete ones kept; the planned stages that
    must start from scratch). A stage runs when its marker is missing, an output its marker lists is gone
    (:func:`~speechsum.pipeline.resume.lost_outputs`) or a stage it needs runs; the
    markers of what runs and of every stage built on it are deleted now, so an interrupted run never
    leaves a stage on top of outputs it was not built from. A planned stage may resume an interrupted
    run unless a stage it needs runs too or it is in ``redo`` (``--from``)."""
    wanted = table.until(until)
    planned: list[str] = []
    kept: dict[str, dict] = {}
    fresh: set[str] = set()
    for stage in wanted:  # the table lists every stage after the stages it needs
        rebuilt = any(need in planned for need in table[stage].needs)
        marker = read_marker(run_dir, stage)
        gone = lost_outputs(marker, run_dir) if marker is not None else []
        if gone:
            say(f"{table.label(stage)} … runs again: its output {gone[0][0]} {gone[0][1]}"
                + (f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""))
        if marker is not None and not rebuilt and not gone:
            changed = " (its config or data changed since: --from to redo)" if marker.get("config_hash") != digests[stage] else ""
            say(f"{table.label(stage)} … complete, skipped (took {format_duration(marker['elapsed_s'])}){changed}")
            kept[stage] = marker
            continue
        planned.append(stage)
        if rebuilt or stage in redo:
            fresh.add(stage)
        later = [name for name in clear_markers_from(run_dir, stage, table) if name != stage]
        if later:
            say(f"{table.label(stage)} … runs again, so {', '.join(later)} will too")
    return planned, kept, fresh


def with_teacher_mode(config: dict, mode: str | None) -> dict:
    """``config`` with ``--teacher`` as its ``teacher.mode`` when that differs: the mode the KD stage
    runs with is then the one its marker's settings digest and ``RUN/pipeline_config.yaml`` record
    (a flag left out of both let a KD trained against another teacher be reused without a word)."""
    if mode is None or mode == section_options(config, "teacher")["mode"]:
        return config
    return {**config, "teacher": {**(config.get("teacher") or {}), "mode": mode}}


def check_endpoints(config: dict, path: Path) -> None:
    """Refuse, before any stage runs, an endpoint setting the KD or judging stages would fail on only
    after the stages before them: a remote teacher without its URL or model name, and a judge on
    api.openai.com whose key variable is not set (a self-hosted ``judge.base_url`` needs no key)."""
    teacher = section_options(config, "teacher")
    missing = [f"teacher.{key}" for key in ("base_url", "model") if teacher["mode"] == "remote" and not teacher[key]]
    if missing:
        raise ValueError(f"{path}: teacher.mode remote needs {' and '.join(missing)} (the endpoint's URL, e.g. "
                         "http://localhost:8000/v1, and the model name it serves); or use --teacher inprocess / serve")
    judge = section_options(config, "judge")
    variable = judge["api_key_env"]  # not null: checked on load
    if judge["kind"] == "openai" and not judge["base_url"] and not os.environ.get(variable, "").strip():
        raise ValueError(f"{path}: judge.kind openai asks api.openai.com (judge.base_url is null), which needs a key, "
                         f"but judge.api_key_env {variable} {unset_text(variable)}: export {variable}=... before the run, or "
                         "set judge.base_url to a self-hosted endpoint")


def run_pipeline(args: argparse.Namespace, table: StageTable = PIPELINE) -> dict:
    """The whole run (``main`` without parsing) of ``table``'s stages; returns the summary it wrote."""
    threads = args.threads or default_threads()  # --lanes, --threads, --checkpoint-every: checked by argparse
    check_no_other_run(Path(args.run_dir).resolve())  # before anything is loaded or read for a folder another run holds
    check_from_until(args.from_stage, args.until, table)
    config_file = Path(args.config) if args.config else preset_path(args.preset)
    config = with_teacher_mode(load_pipeline_config(config_file), args.teacher)
    check_endpoints(config, config_file)
    run_dir = Path(args.run_dir).resolve()
    warm = not args.no_warm_start and sys.platform.startswith("linux")  # fork after importing torch: Linux only
    with WarmStarter(WARM_MODULES) if warm else contextlib.nullcontext() as starter:
        if starter is not None:  # the server imports torch & co. on the other core while the checks below run
            starter.warm_up(stage_environment(threads))
        from speechsum.pipeline.checks import check_stage_configs  # imports Lightning: after the warm-up

        check_command_args(config, config_file)  # before any stage runs: the stages' options and configs
        check_stage_configs(config, config_file, run_dir, table.until(args.until))
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"--run-dir {run_dir} is a file: give a folder (it is created if missing)")
        check_output_path(run_dir, "--run-dir", folder=True)  # under a file, or where nothing can be created
        check_run_dir_is_a_run(run_dir)
        check_from_inputs(run_dir, args.from_stage, table)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        with run_dir_lock(run_dir):
            return _run_locked(args, table, config_file, config, run_dir, threads, starter)


def _run_locked(args: argparse.Namespace, table: StageTable, config_file: Path, config: dict, run_dir: Path,
                threads: int, starter: WarmStarter | None) -> dict:
    remove_stale_temporaries(run_dir)  # no stage runs yet: only what a killed run's atomic writes left
    digests = table.config_digests(config)  # stored in each stage's marker: a changed setting is pointed out
    kept_config = keep_config(run_dir, config_file, config)  # each marker names the YAML its stage ran with
    redo: set[str] = set()
    if args.from_stage:
        cleared: list[str] = []
        for stage in args.from_stage:
            redo |= {stage, *table.downstream(stage)}
            cleared += clear_markers_from(run_dir, stage, table)
        say(f"--from {','.join(args.from_stage)}: cleared {', '.join(cleared) or 'nothing'}")
    say(f"speechsum pipeline: {config_file} -> {run_dir} (up to {args.lanes} stages at once, {threads} threads)")
    start = time.monotonic()
    planned, kept, fresh = plan_stages(run_dir, digests, args.until, redo, table)
    write_run_config(run_dir, config_file, config, kept, digests)

    def make_context(stage: str, stage_threads: int, stop: threading.Event) -> StageContext:
        markers = [marker_path(run_dir, need) for need in table[stage].needs]
        return StageContext(run_dir, config, stage, args.wandb, args.verbose, args.teacher, stage_threads, stop,
                            resume=stage not in fresh, checkpoint_every_s=args.checkpoint_every,
                            needs_finished=max((m.stat().st_mtime for m in markers if m.exists()), default=0.0),
                            starter=starter, config_record=kept_config)

    for path in remove_stale_results(table, make_context):
        say(f"removed {path}: what it was made from runs again (it is written anew by its stage)")
    board = None if args.verbose else ProgressBoard(interactive=sys.stdout.isatty())
    finished = run_stages(planned, table, make_context, digests, args.lanes, threads, start, board)
    if starter is not None:
        starter.close()  # before the summary: its servers' memory is not needed any more
    stages = {}
    for stage in table.names:
        if stage in kept:
            marker = kept[stage]
            stages[stage] = {"status": "skipped", "elapsed_s": marker["elapsed_s"],
                             "peak_rss_gib": marker.get("peak_rss_gib", marker.get("peak_child_rss_gib", 0.0))}
        elif stage in finished:
            stages[stage] = {"status": "ran", **{key: finished[stage][key] for key in (
                "elapsed_s", "start_s", "end_s", "threads", "peak_rss_gib")}}
    # wall_s: this invocation; stages_s: every stage's own time, also those done by earlier runs
    # (more than wall_s when stages ran at the same time).
    summary = {
        "config": str(config_file), "run_dir": str(run_dir), "wall_s": round(time.monotonic() - start, 2),
        "stages_s": round(sum(s["elapsed_s"] for s in stages.values()), 2), "lanes": args.lanes, "threads": threads,
        "stages": stages,
        "peak_child_rss_gib": max([s["peak_rss_gib"] for s in stages.values()], default=0.0),
        "peak_rss_at_once_gib": round(peak_at_once(stages), 3),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(run_dir / "pipeline_summary.json", summary)
    report = run_dir / "report.md"
    if "report" in stages and report.is_file():  # also when an earlier run wrote it
        say("\n" + report.read_text(encoding="utf-8"))
    ran = sum(s["status"] == "ran" for s in stages.values())
    say(f"pipeline: {ran} stage(s) ran, {len(stages) - ran} skipped; wall time {format_duration(summary['wall_s'])} "
        f"(all stages {format_duration(summary['stages_s'])}); peak RSS of a child process "
        f"{summary['peak_child_rss_gib']:.2f} GiB, of the stages that ran at once at most "
        f"{summary['peak_rss_at_once_gib']:.2f} GiB; summary {run_dir / 'pipeline_summary.json'}")
    if older := other_settings(kept, digests):  # the report may be of another preset's run: said last, not only above
        say(f"note: {', '.join(older)} kept from an earlier run with other settings (RUN/pipeline_config.yaml names "
            "the YAML of each): their results are not of these settings; --from STAGE or a new --run-dir redoes them")
    return summary


def main(argv: list[str] | None = None, table: StageTable = PIPELINE) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, raise_terminated)  # stops the running stages too
    again = "the same command without --from" if args.from_stage else "the same command"
    try:
        run_pipeline(args, table)
    except StageFailed as err:  # what to do after it, once: not in each stage's own message
        raise SystemExit(f"speechsum pipeline: {err}\n{AFTER_A_FAILURE.format(again=again)}") from err
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise SystemExit(f"speechsum pipeline: {err}") from err
    except (KeyboardInterrupt, Terminated) as stop:  # SIGTERM (`kill PID`) ended it without a word
        how = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
        print(f"speechsum pipeline: interrupted ({how}); {again} continues where this run stopped", file=sys.stderr)
        raise SystemExit(128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)) from None

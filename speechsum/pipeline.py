"""``speechsum pipeline``: the whole recipe in one command, resumable stage by stage.

    speechsum pipeline                      # the default preset on the bundled benchmark -> runs/pipeline
    speechsum pipeline --preset tiny --run-dir runs/tiny
    speechsum pipeline --from dpo           # redo DPO, evaluation and the report

Stages (:data:`speechsum.pipeline_config.STAGES`): benchmark → text_lm → text_teacher → sft → kd →
pairs → dpo → evaluate → report. Each runs speechsum commands as subprocesses (logs in
``RUN/logs/<stage>.log``). A stage is complete only when its marker ``RUN/.state/<stage>.json``
exists — written atomically after its outputs (elapsed seconds, commands, outputs). A rerun skips
complete stages and deletes a stage's partial outputs before running it again.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from speechsum.evaluation.files import write_atomic
from speechsum.pipeline_config import STAGES, load_pipeline_config, preset_path
from speechsum.pipeline_stages import STAGE_FUNCTIONS, partial_outputs, stop_process
from speechsum.remote import cache_key

EPILOG = """\
stages: benchmark (build + text corpus + tokenizer), text_lm (backbone), text_teacher, sft, kd,
pairs (preference pairs from the KD student), dpo, evaluate (every system on every test split),
report (table + chart in the run folder).
Presets (configs/pipeline/): tiny (tests, minutes), default (~10 min on a 2-core CPU), large.
Real models, your manifests, a vLLM teacher, an LLM judge: docs/pipeline.md.
"""


class StageFailed(RuntimeError):
    """A stage's command failed; the message names the command and its log."""


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


# -- stage markers ----------------------------------------------------------------------------
def marker_path(run_dir: Path, stage: str) -> Path:
    return run_dir / ".state" / f"{stage}.json"


def read_marker(run_dir: Path, stage: str) -> dict | None:
    """The stage's marker, or None when the stage is not complete (a broken marker counts as none)."""
    try:
        return json.loads(marker_path(run_dir, stage).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def clear_markers_from(run_dir: Path, stage: str) -> list[str]:
    """Delete the markers of ``stage`` and every later stage; returns the stages cleared."""
    cleared = []
    for name in STAGES[STAGES.index(stage):]:
        path = marker_path(run_dir, name)
        if path.exists():
            path.unlink()
            cleared.append(name)
    return cleared


def delete_outputs(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


# -- one stage's context ------------------------------------------------------------------------
class StageContext:
    """What a stage function sees: the run folder, the pipeline config, and ``run`` for commands."""

    def __init__(self, run_dir: Path, config: dict, stage: str, wandb: bool, verbose: bool,
                 teacher_mode: str | None):
        self.run_dir, self.config, self.stage = run_dir, config, stage
        self.wandb, self.verbose, self.teacher_mode = wandb, verbose, teacher_mode
        self.commands: list[str] = []
        self.log_file = self.log_path(stage)

    def log_path(self, stage: str) -> Path:
        return self.run_dir / "logs" / f"{stage}.log"

    def note(self, message: str) -> None:
        print(f"      {message}", flush=True)
        with self.log_file.open("a", encoding="utf-8") as log:
            log.write(f"[pipeline] {message}\n")

    def run(self, command: list[str]) -> None:
        """Run ``command``; its output goes to the stage log (and the console with --verbose)."""
        line = shlex.join(command)
        self.commands.append(line)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_file.open("a", encoding="utf-8") as log:
            log.write(f"[pipeline] $ {line}\n")
            log.flush()
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       errors="replace", env=env)
            try:
                for text in process.stdout:
                    log.write(text)
                    if self.verbose:
                        sys.stdout.write(text)
                        sys.stdout.flush()
                process.wait()
            except BaseException:  # Ctrl-C / SIGTERM: stop the child, write no marker
                stop_process(process)
                raise
        if process.returncode != 0:
            tail = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            raise StageFailed(f"stage {self.stage}: `{line}` exited with code {process.returncode}.\n"
                              f"Last lines of {self.log_file}:\n  " + "\n  ".join(tail))


# -- the run ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechsum pipeline", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Run the whole recipe end to end: build the benchmark, train the text backbone and teacher, "
        "SFT, on-policy KD, preference pairs, DPO, evaluate every stage and the text/cascade baselines, report. "
        "Rerunning continues after the last complete stage.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", default="default",
                        help="configs/pipeline/NAME.yaml: tiny (tests, a few minutes), default (~10 min on a 2-core "
                        "CPU), large (clearer numbers) (default: default)")
    source.add_argument("--config", metavar="FILE", help="a pipeline YAML of your own (docs/pipeline.md)")
    parser.add_argument("--run-dir", default="runs/pipeline", help="where everything goes (default runs/pipeline)")
    parser.add_argument("--from", dest="from_stage", choices=STAGES, metavar="STAGE",
                        help=f"re-run from this stage on (deletes its and later stages' markers); one of {', '.join(STAGES)}")
    parser.add_argument("--until", choices=STAGES, metavar="STAGE", help="stop after this stage")
    parser.add_argument("--teacher", choices=["inprocess", "serve", "remote"], default=None,
                        help="KD teacher: inprocess (HFTeacher in the training process), serve (start `speechsum serve` "
                        "for the teacher on a free loopback port for the KD stage), remote (the endpoint in the "
                        "YAML's teacher: section). Default: the YAML's teacher.mode, else inprocess")
    parser.add_argument("--wandb", action="store_true",
                        help="keep the stages' W&B loggers and log evaluation tables (offline unless WANDB_MODE=online)")
    parser.add_argument("--verbose", action="store_true", help="also stream every stage's output to the console")
    return parser


def run_stage(stage: str, ctx: StageContext, config_digest: str) -> dict:
    delete_outputs(partial_outputs(ctx, stage))
    ctx.log_file.parent.mkdir(parents=True, exist_ok=True)
    ctx.log_file.write_text("", encoding="utf-8")
    start = time.monotonic()
    outputs = STAGE_FUNCTIONS[stage](ctx)
    # the largest child process of this pipeline run so far (getrusage cannot tell stages apart)
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    marker = {"stage": stage, "elapsed_s": round(time.monotonic() - start, 2), "commands": ctx.commands,
              "peak_child_rss_gib": round(peak_gib, 3),
              "outputs": [str(p) for p in outputs], "log": str(ctx.log_file), "config_hash": config_digest,
              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(marker_path(ctx.run_dir, stage), marker)
    return marker


def run_pipeline(args: argparse.Namespace) -> dict:
    """The whole run (``main`` without parsing); returns the summary it wrote."""
    config_file = Path(args.config) if args.config else preset_path(args.preset)
    config = load_pipeline_config(config_file)
    run_dir = Path(args.run_dir).resolve()
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    digest = cache_key(config)[:16]  # stored in each marker: a changed config is pointed out
    write_atomic(run_dir / "pipeline_config.yaml", f"# from {config_file}\n" + yaml.safe_dump(config, sort_keys=False))
    if args.from_stage:
        cleared = clear_markers_from(run_dir, args.from_stage)
        print(f"--from {args.from_stage}: cleared {', '.join(cleared) or 'nothing'}")
    last = STAGES.index(args.until) if args.until else len(STAGES) - 1
    print(f"speechsum pipeline: {config_file} -> {run_dir}", flush=True)
    start = time.monotonic()
    stages: dict[str, dict] = {}
    for number, stage in enumerate(STAGES[: last + 1], start=1):
        prefix = f"[{number}/{len(STAGES)}] {stage}"
        marker = read_marker(run_dir, stage)
        if marker is not None:
            changed = " (its config changed since: --from to redo)" if marker.get("config_hash") != digest else ""
            print(f"{prefix} … complete, skipped (took {format_duration(marker['elapsed_s'])}){changed}", flush=True)
            stages[stage] = {"status": "skipped", "elapsed_s": marker["elapsed_s"],
                             "peak_child_rss_gib": marker.get("peak_child_rss_gib", 0.0)}
            continue
        # a stage that runs (again) invalidates every later stage's outputs
        later = [name for name in clear_markers_from(run_dir, stage) if name != stage]
        if later:
            print(f"{prefix} … runs again, so {', '.join(later)} will too", flush=True)
        ctx = StageContext(run_dir, config, stage, args.wandb, args.verbose, args.teacher)
        print(f"{prefix} … running (log {ctx.log_file})", flush=True)
        marker = run_stage(stage, ctx, digest)
        print(f"{prefix} … done in {format_duration(marker['elapsed_s'])} "
              f"(total {format_duration(time.monotonic() - start)})", flush=True)
        stages[stage] = {"status": "ran", "elapsed_s": marker["elapsed_s"],
                         "peak_child_rss_gib": marker["peak_child_rss_gib"]}
    # wall_s: this invocation; stages_s: every stage's own time, also those done by earlier runs.
    summary = {
        "config": str(config_file), "run_dir": str(run_dir), "wall_s": round(time.monotonic() - start, 2),
        "stages_s": round(sum(s["elapsed_s"] for s in stages.values()), 2), "stages": stages,
        "peak_child_rss_gib": max([s["peak_child_rss_gib"] for s in stages.values()], default=0.0),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(run_dir / "pipeline_summary.json", summary)
    report = run_dir / "report.md"
    if "report" in stages and report.is_file():  # also when an earlier run wrote it
        print("\n" + report.read_text(encoding="utf-8"))
    ran = sum(s["status"] == "ran" for s in stages.values())
    print(f"pipeline: {ran} stage(s) ran, {len(stages) - ran} skipped; wall time {format_duration(summary['wall_s'])} "
          f"(all stages {format_duration(summary['stages_s'])}), peak RSS of a child process "
          f"{summary['peak_child_rss_gib']:.2f} GiB; "
          f"summary {run_dir / 'pipeline_summary.json'}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # stop the child too
    try:
        run_pipeline(args)
    except (StageFailed, ValueError, FileNotFoundError, RuntimeError) as err:
        raise SystemExit(f"speechsum pipeline: {err}") from err

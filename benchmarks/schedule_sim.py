"""Replay a pipeline run's stage times through a stage table's schedule: what ``speechsum pipeline``
would have taken with the same stage durations under another table (the scheduler's rule: at most
``lanes`` stages at once, in :meth:`StageTable.start_order`).

A stage's duration is its ``elapsed_s`` in the summary, unless ``--seconds STAGE=S`` gives another
(e.g. DPO's one-thread time where the run gave it two). The simulation ignores start-up costs and the
host's noise, so compare two tables on the same durations, never two runs' walls alone.

    python -m benchmarks.schedule_sim runs/pipeline/pipeline_summary.json
    python -m benchmarks.schedule_sim RUN/pipeline_summary.json --old-dpo --seconds dpo=69 evaluate_dpo=27

It also prints :func:`lower_bound`, the wall no start order can beat on the same durations: how much
a smarter scheduler (by duration instead of chain length) could save at most.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from speechsum.pipeline.table import PIPELINE, StageTable

# the table before 2026-12-07: DPO waited for the baselines and the SFT and KD evaluations (to run alone)
OLD_DPO_AFTER = ("baselines", "evaluate_sft", "evaluate_kd")


def simulate(table: StageTable, seconds: Mapping[str, float], lanes: int = 2) -> dict[str, tuple[float, float]]:
    """(start, end) of every stage of ``table`` when each takes ``seconds[stage]``."""
    done: dict[str, float] = {}
    running: dict[str, float] = {}  # stage -> end
    spans: dict[str, tuple[float, float]] = {}
    now = 0.0
    while len(done) < len(table.names):
        ready = table.start_order(s.name for s in table if s.name not in done and s.name not in running
                                  and all(w in done for w in s.waits_for))
        for name in ready[:max(0, lanes - len(running))]:
            running[name] = now + seconds[name]
            spans[name] = (now, running[name])
        if not running:
            raise ValueError("no stage can start: a stage waits for one that never runs")
        finished = min(running, key=running.get)
        now = running.pop(finished)
        done[finished] = now
    return spans


def lower_bound(table: StageTable, seconds: Mapping[str, float], lanes: int = 2) -> dict[str, float]:
    """What no start order can beat on these durations: the longest path through the table's waits
    (``path_s``), and the work itself (``work_s``): the stages that run alone end to end, the others'
    seconds spread over ``lanes``. ``wall_s`` is the larger of the two."""
    path: dict[str, float] = {}
    for name in table.names:  # table order: every stage after the ones it waits for
        path[name] = seconds[name] + max((path[w] for w in table[name].waits_for), default=0.0)
    alone = [name for name in table.names if table.runs_alone(name)]
    work = sum(seconds[n] for n in alone) + sum(seconds[n] for n in table.names if n not in alone) / lanes
    return {"path_s": max(path.values()), "work_s": work, "wall_s": max(max(path.values()), work)}


def old_dpo_table() -> StageTable:
    """The default table with DPO waiting for the other evaluations, as before 2026-12-07."""
    return StageTable(replace(stage, after=OLD_DPO_AFTER) if stage.name == "dpo" else stage for stage in PIPELINE)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("summary", type=Path, help="a run's pipeline_summary.json (every stage ran)")
    parser.add_argument("--seconds", nargs="*", default=[], metavar="STAGE=S",
                        help="durations that replace the summary's elapsed_s")
    parser.add_argument("--old-dpo", action="store_true", help="simulate the table before 2026-12-07")
    parser.add_argument("--lanes", type=int, default=2)
    args = parser.parse_args(argv)
    stages = json.loads(args.summary.read_text(encoding="utf-8"))["stages"]
    seconds = {name: float(stage["elapsed_s"]) for name, stage in stages.items()}
    for item in args.seconds:
        name, _, value = item.partition("=")
        seconds[name] = float(value)
    table = old_dpo_table() if args.old_dpo else PIPELINE
    spans = simulate(table, seconds, args.lanes)
    for name, (start, end) in spans.items():
        print(f"{name:14s} {seconds[name]:7.1f} s  ({start:.0f}-{end:.0f})")
    wall = max(end for _, end in spans.values())
    print(f"wall {wall:.1f} s ({'old' if args.old_dpo else 'current'} table)")
    bound = lower_bound(table, seconds, args.lanes)
    print(f"no start order ends before {bound['wall_s']:.1f} s (longest chain {bound['path_s']:.1f} s, "
          f"the work on {args.lanes} lanes {bound['work_s']:.1f} s)")
    return {"wall_s": wall, "spans": spans, "bound": bound}


if __name__ == "__main__":
    main()

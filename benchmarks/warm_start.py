"""Start-up cost of a speechsum command: a fresh ``python -m speechsum.cli ...`` against the same
command forked from the pipeline's warm-start server (utils/warm_start.py), alternating, median of
``--repeats`` (the server's own start, once, is left out). Default command: ``speechsum fit
--print_config`` of a stage config, which imports and parses everything a fit does and stops.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.warm_start --config runs/pipeline/sft/config.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from speechsum.pipeline.stages import WARM_MODULES
from speechsum.utils.warm_start import WarmStarter, wait_with_peak_rss


def timed(launch) -> float:
    """Seconds from ``launch()`` (which starts the command) to the command's end."""
    start = time.perf_counter()
    process = launch()
    with process.stdout:
        process.stdout.read()
    code, _ = wait_with_peak_rss(process)
    if code != 0:
        raise SystemExit(f"the command exited with {code}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a stage config (RUN/<stage>/config.yaml of a pipeline run)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    command = ["fit", "--config", args.config, "--print_config"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    times: dict[str, list[float]] = {"fresh": [], "warm": []}
    with WarmStarter(WARM_MODULES) as starter:
        def fresh_command():
            return subprocess.Popen([sys.executable, "-m", "speechsum.cli", *command], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, env=env)

        def warm_command():
            return starter.start("speechsum.cli", command, env)

        timed(warm_command)  # the server's start and imports: not timed
        for _ in range(args.repeats):
            times["fresh"].append(timed(fresh_command))
            times["warm"].append(timed(warm_command))
    fresh, warm = statistics.median(times["fresh"]), statistics.median(times["warm"])
    result = {"command": "speechsum " + " ".join(command), "fresh_s": times["fresh"], "warm_s": times["warm"],
              "fresh_median_s": round(fresh, 3), "warm_median_s": round(warm, 3), "saved_s": round(fresh - warm, 3),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                         f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"}
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()

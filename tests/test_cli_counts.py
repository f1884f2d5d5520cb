"""Counts a user types past what any machine can do are refused with one line naming the option,
before any work: they were taken (``--threads 100000`` gave each stage's command 100,000 OpenMP
threads; ``--bootstrap-resamples 10**12`` ended in a MemoryError traceback after every system ran)."""

from __future__ import annotations

import pytest

from speechsum.cli import main
from speechsum.training.trainer_settings import usable_cpus

BIG = str(10**12)
# each command line ends in a value argparse refuses on any version: were the count taken again, the
# command stops there instead of building a benchmark or running the pipeline in the working folder
SAFE = ["--no-such-option"]
CPUS = usable_cpus()


@pytest.mark.parametrize(("argv", "line"), [
    (["pipeline", "--threads", "100000", *SAFE], "speechsum pipeline: error: argument --threads: must be at most 1024, got 100000"),
    (["benchmark", "build", "--out", "x", "--train-docs", BIG, *SAFE],
     f"speechsum benchmark build: error: argument --train-docs: must be at most 100000, got {BIG}"),
    (["benchmark", "textcorpus", "--data", "d", "--out", "x", "--documents", BIG, *SAFE],
     f"speechsum benchmark textcorpus: error: argument --documents: must be at most 10000000, got {BIG}"),
    (["synth", "--manifest", "m", "--out", "o", "--model", "m", "--num-queries", BIG],
     f"speechsum synth: error: argument --num-queries: must be at most 64, got {BIG}"),
    (["synth", "--manifest", "m", "--out", "o", "--model", "m", "--concurrency", "100000"],
     "speechsum synth: error: argument --concurrency: must be at most 256, got 100000"),
    (["evaluate", "--out", "o", "--bootstrap-resamples", BIG, *SAFE],
     f"speechsum evaluate: error: argument --bootstrap-resamples: must be at most 1000000, got {BIG}"),
    (["evaluate", "--out", "o", "--judge-workers", "100000", *SAFE],
     "speechsum evaluate: error: argument --judge-workers: must be at most 256, got 100000"),
    (["evaluate", "--out", "o", "--max-new-tokens", BIG, *SAFE],
     f"speechsum evaluate: error: argument --max-new-tokens: must be at most 1048576, got {BIG}"),
    (["pairs", "--ckpt", "c", "--manifest", "m", "--out", "o", "--concurrency", "100000"],
     "speechsum pairs: error: argument --concurrency: must be at most 256, got 100000"),
    # a process per device on the CPU: 4096 of them were started
    (["evaluate", "--out", "o", "--accelerator", "cpu", "--devices", "4096"],
     f"speechsum evaluate: error: --devices must be at most {CPUS} on the CPU (--accelerator cpu: one process per "
     f"device, and this machine has {CPUS} CPUs), got 4096"),
])
def test_a_count_past_any_machine_is_refused_naming_the_option(argv, line, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == line

"""`speechsum evaluate` in two CPU DDP processes (gloo) writes what one process writes: every example
once, in manifest order, the same predictions and metrics, with an odd count (the ranks' shares differ
and the sampler pads one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.eval_fixtures import save_tiny_text_lm, write_eval_set


def evaluate(args: list[str], cwd: Path) -> None:
    speechsum = Path(sys.executable).with_name("speechsum")  # the DDP launcher starts rank 1 by this command
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(speechsum), "evaluate", *args], capture_output=True, text=True, timeout=300,
                            cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def test_evaluate_under_two_process_ddp_writes_what_one_process_writes(tmp_path):
    manifests = write_eval_set(tmp_path / "data")
    odd = manifests["test"].with_name("odd.jsonl")
    odd.write_text("".join(manifests["test"].read_text().splitlines(keepends=True)[:3]))
    model = save_tiny_text_lm(tmp_path / "lm", seed=1)
    common = ["--system", f"text:t:{model}", "--manifest", str(odd), "--metrics", "rouge,fact_judge",
              "--max-new-tokens", "4", "--accelerator", "cpu", "--bootstrap-resamples", "5"]
    evaluate([*common, "--out", str(tmp_path / "one")], tmp_path)
    evaluate([*common, "--out", str(tmp_path / "two"), "--devices", "2", "--strategy", "ddp"], tmp_path)

    def rows(out: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / out / "t" / "predictions.jsonl").read_text().splitlines()]

    assert [row["id"] for row in rows("two")] == [json.loads(line)["id"] for line in odd.read_text().splitlines()]
    assert rows("two") == rows("one")
    metrics = {out: json.loads((tmp_path / out / "t" / "metrics.json").read_text()) for out in ("one", "two")}
    assert metrics["two"]["num_examples"] == metrics["one"]["num_examples"] == 3
    assert metrics["two"]["results"] == metrics["one"]["results"]

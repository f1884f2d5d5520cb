"""benchmarks/gpu_check: the same code path on tiny models on a CPU, and the clear exit without a GPU."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch

from benchmarks.gpu_check import STAGES, main
from tests.conftest import REPO


def test_tiny_run_of_every_stage_on_cpu(tmp_path, capsys):
    out = tmp_path / "results.json"
    results = main(["--tiny", "--accelerator", "cpu", "--steps", "3", "--batch-size", "2", "--json", str(out)])
    assert [r["stage"] for r in results] == list(STAGES)
    for r in results:
        assert r["timed_steps"] == 2  # the first step is warm-up
        assert 0 < r["trainable_M"] < r["parameters_M"]  # frozen encoder + LoRA: most weights frozen
        for key in ("s_per_step", "samples_per_s", "tokens_per_s", "peak_rss_GiB"):
            assert math.isfinite(r[key]) and r[key] > 0, key
        assert r["samples_per_s"] == pytest.approx(2 / r["s_per_step"], rel=1e-6)
    assert results[1]["generated_tokens_per_s"] > 0 and "generated_tokens_per_s" not in results[0]
    assert json.loads(out.read_text())["results"] == results
    printed = capsys.readouterr().out
    assert all(f"{stage:>4}: " in printed for stage in STAGES) and "tokens/s" in printed


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_exits_early_with_a_clear_message_without_gpu(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2 and "no CUDA GPU" in capsys.readouterr().err
    shell = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, timeout=60)
    assert shell.returncode == 2 and "no NVIDIA GPU" in shell.stderr


def test_full_size_needs_a_gpu_not_a_cpu(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--accelerator", "cpu"])
    assert exit_info.value.code == 2 and "--tiny" in capsys.readouterr().err

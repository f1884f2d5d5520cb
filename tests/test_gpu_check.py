"""benchmarks/gpu_check: the same code path on tiny models on a CPU, and the clear exit without a GPU."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch

from benchmarks.gpu_check import (
    STAGES,
    TINY_LLM,
    attention_backward_flops,
    attention_flops,
    main,
    peak_tflops,
)
from tests.conftest import REPO


def test_tiny_run_of_every_stage_on_cpu(tmp_path, capsys):
    out = tmp_path / "results.json"
    results = main(["--tiny", "--accelerator", "cpu", "--steps", "3", "--batch-size", "2", "--peak-tflops", "0.5",
                    "--json", str(out)])
    assert [r["stage"] for r in results] == list(STAGES)
    for r in results:
        assert r["timed_steps"] == 2  # the first step is warm-up
        assert 0 < r["trainable_M"] < r["parameters_M"]  # frozen encoder + LoRA: most weights frozen
        for key in ("s_per_step", "samples_per_s", "tokens_per_s", "peak_rss_GiB"):
            assert math.isfinite(r[key]) and r[key] > 0, key
        assert r["samples_per_s"] == pytest.approx(2 / r["s_per_step"], rel=1e-6)
    assert results[1]["generated_tokens_per_s"] > 0 and "generated_tokens_per_s" not in results[0]
    # every token crosses the whole LM forward (2N) and backward to its input (2N): FLOPs/token >= 4N
    h, f, layers, vocab = (TINY_LLM[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size"))
    kv = h * TINY_LLM["num_key_value_heads"] // TINY_LLM["num_attention_heads"]
    lm_matmul_weights = layers * (2 * h * h + 2 * h * kv + 3 * h * f) + h * vocab
    for r in results:
        assert 4 * lm_matmul_weights <= r["flops_per_token"] < 40 * lm_matmul_weights, r["stage"]
        assert r["model_tflops_per_s"] == pytest.approx(r["flops_per_token"] * r["tokens_per_s"] / 1e12)
        assert r["mfu"] == pytest.approx(r["model_tflops_per_s"] / 0.5)
    assert json.loads(out.read_text())["results"] == results
    printed = capsys.readouterr().out
    assert all(f"{stage:>4}: " in printed for stage in STAGES) and "tokens/s" in printed and "MFU" in printed


def test_peak_tflops_of_known_cards():
    assert peak_tflops("NVIDIA H200") == peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and peak_tflops("Some GPU") is None


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


def test_attention_flops_count_grouped_heads_as_the_query_heads():
    # QKᵀ: 2·b·h·s_q·s_k·d_qk and PV: 2·b·h·s_q·s_k·d_v with the query's 4 heads, not the 2 key/value heads
    assert attention_flops((2, 4, 5, 8), (2, 2, 7, 8), (2, 2, 7, 6)) == 2 * 2 * 4 * 5 * 7 * (8 + 6) == 7840
    assert attention_backward_flops((2, 4, 5, 6), (2, 4, 5, 8), (2, 2, 7, 8), (2, 2, 7, 6)) == 2 * 2 * 4 * 5 * 7 * 36
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count  # torch's, without GQA

    shapes = ((3, 4, 5, 8), (3, 4, 7, 8), (3, 4, 7, 8))
    assert attention_flops(*shapes) == sdpa_flop_count(*shapes)
    assert attention_backward_flops((3, 4, 5, 8), *shapes) == sdpa_backward_flop_count((3, 4, 5, 8), *shapes)

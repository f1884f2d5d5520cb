"""Two-process CPU DDP (gloo) fit of the SFT stage through the real CLI."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import torch

from speechsum.data.manifest import load_manifest
from speechsum.data.sampler import DurationBucketBatchSampler
from tests.helpers import run_config


def test_two_process_ddp_fit(tmp_path, toy_data):
    config = run_config(tmp_path, toy_data, max_epochs=1, devices=2, strategy="ddp", limit_val_batches=0)
    speechsum = Path(sys.executable).with_name("speechsum")
    result = subprocess.run(
        [str(speechsum), "fit", "--config", str(config)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # Each rank takes every other batch of one common, duration-bucketed list.
    examples, _ = load_manifest(toy_data["train"])
    sampler = DurationBucketBatchSampler(None, [e.duration for e in examples], 8.0, num_buckets=2, max_batch_size=4)
    expected_steps = math.ceil(len(sampler.global_batches()) / 2)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == expected_steps
    assert "ddp" in result.stderr.lower() or "distributed" in result.stderr.lower()

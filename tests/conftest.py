"""Shared fixtures: a small synthetic data set on disk and the tiny composed backbone."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

# Python installs its Ctrl-C handler (KeyboardInterrupt) only when SIGINT is not ignored at start, and a
# shell starts a background job (`make test &`, nohup) with SIGINT ignored: the Ctrl-C tests then saw no
# KeyboardInterrupt, nor did the commands they start (exec keeps an ignored signal). Every test runs with it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tests pin bf16 code paths on every CPU; speechsum/utils/cpu_bf16.py would run them in float32 on a
# CPU without bf16 instructions (tests/utils/test_cpu_bf16.py tests that with the variable at 0).
os.environ.setdefault("SPEECHSUM_CPU_BF16", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N`: N workers share the cores, one thread each. More threads than cores make
    # OpenMP's spin-waiting workers thrash (tens of times slower). torch is already imported by a
    # plugin here, so the environment alone is too late for this process (it still reaches subprocesses).
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    """Manifests ``train``/``val``/``test`` (24/8/8 examples) of the tone-language set."""
    from speechsum.data.toy import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy"), {"train": 24, "val": 8, "test": 8}, seed=1)


def tiny_backbone_args() -> dict:
    """init_args of the tiny composed backbone in configs/model/composed_tiny.yaml."""
    config = yaml.safe_load((CONFIGS / "model" / "composed_tiny.yaml").read_text())
    return config["model"]["init_args"]["model"]["init_args"]


@pytest.fixture
def tiny_composed():
    from speechsum.models.composed import ComposedSpeechLLM
    from speechsum.models.policy import TrainingPolicy

    args = tiny_backbone_args()
    args["policy"] = TrainingPolicy(**args["policy"])
    return ComposedSpeechLLM(**args)


@pytest.fixture(autouse=True)
def no_wandb_run_left_open():
    """A W&B run left open by one test would be reused by the next test's WandbLogger in the same
    worker process (Lightning reuses a run in progress): finish it after every test."""
    yield
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()

"""Subnormal floats flushed to zero on the CPU (FTZ/DAZ), the default for speechsum's processes.

x86 CPUs run arithmetic with subnormal operands (|x| < 1.18e-38 in fp32 and bf16) through slow
microcode paths: about 120x slower per op on this project's Intel Xeon (benchmarks/RESULTS.md).
Training produces them once a model grows confident: a softmax over a few thousand tokens gives
probabilities near e^-90, and the backward passes of log-softmax and CTC multiply with them. The
default run's alignment stage spent 0.7 s of every 0.9 s step on them. Flushing changes only
values below 1.18e-38, which no loss or update here can resolve.
"""

from __future__ import annotations

import os

import torch

KEEP_ENV = "SPEECHSUM_KEEP_DENORMALS"


def flush_denormals() -> bool:
    """Flush subnormal floats to zero on this thread (threads started later inherit it; torch's
    intra-op threads follow it), unless ``SPEECHSUM_KEEP_DENORMALS=1``. True when flushing is on
    (False on CPUs without the mode, e.g. non-x86)."""
    if os.environ.get(KEEP_ENV, "") not in ("", "0"):
        return False
    return torch.set_flush_denormal(True)

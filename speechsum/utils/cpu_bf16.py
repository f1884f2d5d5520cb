"""Whether this CPU computes in bfloat16 natively, and float32 in its place where it does not.

bf16 matmuls are fast on CPUs with bf16 dot-product instructions (x86 AVX512-BF16 or AMX; an Arm
CPU oneDNN runs bf16 on). Elsewhere torch emulates them or runs its reference kernel: on a 2-core
AVX2-only AMD EPYC (2026-12-07) a 1024² bf16 matmul ran at 0.3 GFLOP/s against 19.4 in float32, and
the text teacher's bf16-mixed training step at 48 real tokens/s against 4,437 on an AVX512-BF16 EPYC,
so the default pipeline would have taken hours. The CPU-speed choices of the shipped configs
(``trainer.precision: bf16-mixed``, ``encoder_dtype: bfloat16``, ``--asr-dtype bfloat16``) therefore
run in float32 on such a CPU, with one warning each. ``SPEECHSUM_CPU_BF16=1`` keeps bf16 anyway;
``SPEECHSUM_CPU_BF16=0`` uses float32 on every CPU.
"""

from __future__ import annotations

import logging
import os
import platform

import torch

log = logging.getLogger(__name__)

ENV = "SPEECHSUM_CPU_BF16"
_warned: set[str] = set()


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 dot-product instructions (see the module docstring)."""
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i686", "i386"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without these probes: assume the slow path
        return False


def cpu_runs_bf16() -> bool:
    """Whether CPU work asked for in bf16 runs in bf16: ``SPEECHSUM_CPU_BF16`` (1 or 0) when set, else
    :func:`cpu_has_native_bf16`."""
    value = os.environ.get(ENV, "").strip()
    if value in ("1", "0"):
        return value == "1"
    if value:
        raise ValueError(f"{ENV}={value!r}: write 1 (keep bf16 on this CPU) or 0 (float32 on every CPU), or unset it")
    return cpu_has_native_bf16()


def _why() -> str:
    if os.environ.get(ENV, "").strip() == "0":
        return f"{ENV}=0"
    return f"this CPU has no bf16 instructions (AVX512-BF16 or AMX), so bf16 runs ~50x slower than float32; {ENV}=1 keeps bf16"


def warn_once(setting: str, used: str) -> None:
    """Log, once per process and setting, that ``setting`` runs as ``used``, and why."""
    if setting not in _warned:
        _warned.add(setting)
        log.warning("%s runs as %s on this CPU: %s", setting, used, _why())


def cpu_dtype_name(dtype: str, setting: str) -> str:
    """``dtype`` ("float32" or "bfloat16") for work on the CPU: "float32" in place of "bfloat16" when
    :func:`cpu_runs_bf16` is False (warned once, naming ``setting``)."""
    if dtype != "bfloat16" or cpu_runs_bf16():
        return dtype
    warn_once(setting, "float32")
    return "float32"


def runs_on_cpu(accelerator: object) -> bool:
    """Whether a Lightning ``trainer.accelerator`` setting resolves to the CPU ("cpu", or "auto"/None on
    a machine without CUDA or MPS); an Accelerator object or another name is not the CPU here."""
    if accelerator is None or accelerator == "auto":
        mps = getattr(torch.backends, "mps", None)
        return not torch.cuda.is_available() and not (mps is not None and mps.is_available())
    return accelerator == "cpu"


def cpu_precision(precision: object, accelerator: object) -> object:
    """A Lightning ``trainer.precision`` to train with: "32-true" in place of a bf16 precision
    ("bf16-mixed", "bf16-true", "bf16", and "16-mixed", which Lightning runs as bf16-mixed on a CPU) on a
    CPU where :func:`cpu_runs_bf16` is False (warned once); any other precision or accelerator unchanged."""
    if str(precision) not in ("bf16-mixed", "bf16-true", "bf16", "16-mixed", "16") or not runs_on_cpu(accelerator):
        return precision
    if cpu_runs_bf16():
        return precision
    warn_once(f"trainer.precision {precision}", "32-true")
    return "32-true"

"""Checking a ``--device`` before minutes of model loading are spent on it."""

from __future__ import annotations


def check_device(name: str, option: str = "--device") -> str:
    """``name`` when torch can place tensors there (``cpu``, ``cuda``, ``cuda:N``, ``mps``, or another
    type whose torch module says it is available); else a ValueError that says what is missing,
    naming the ``option`` (or config setting) that gave it."""
    import torch

    cpu = f"use {option} cpu" if option.startswith("--") else "set it to cpu"

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{option} {name!r} is not a torch device ({err}); use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{option} {name}: this machine has no CUDA device that torch {torch.__version__} can "
                             f"use; {cpu}")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{option} {name}: only {count} CUDA device(s) here (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{option} {name}: MPS is not available on this machine; {cpu}")
    elif device.type != "cpu":  # xpu, …: whatever torch says it has
        backend = getattr(torch, device.type, None)
        if not getattr(backend, "is_available", lambda: False)():
            raise ValueError(f"{option} {name}: torch has no {device.type} device here; {cpu}")
    return name

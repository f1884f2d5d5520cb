"""What every rank of a ``torch.distributed`` run (DDP) must call together."""

from __future__ import annotations

from typing import Any

import torch


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` when no process group is
    initialised). A collective: all ranks must call it, or the callers wait forever."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered

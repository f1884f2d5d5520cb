"""Checkpoints written whole or not at all: Lightning's :class:`TorchCheckpointIO` serialises into a
temporary file in the system's temp folder and then moves it into place (``fsspec``'s local
transaction), so a kill mid-save left that file in ``/tmp`` and, when ``/tmp`` is on another file
system, a move (a copy) cut short left a half-written ``.ckpt`` under its final name.
:class:`AtomicCheckpointIO` writes beside the checkpoint and renames
(:func:`speechsum.utils.io.atomic_path`)."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.plugins.io.wrapper import _WrappingCheckpointIO
from lightning.pytorch.strategies import Strategy

from speechsum.utils.io import atomic_path
from speechsum.utils.temp_owner import remove_dead_writers_temporaries
from speechsum.utils.write_errors import DISK_FULL, WriteError


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` whose local saves go to a temporary file beside the checkpoint
    (named by the writing process), fsynced, then renamed: a crash, a kill or a full disk leaves the
    old checkpoint (or none) under the name, never part of one. Temporaries that a killed run left in
    the folder are removed at the next save there. Remote paths (``s3://``…) are saved as Lightning does."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        if path.parent.is_dir():
            remove_dead_writers_temporaries(path.parent)
        try:
            with atomic_path(path) as temporary, open(temporary, "wb") as file:
                torch.save(checkpoint, file)
        except (OSError, RuntimeError) as err:  # torch's zip writer reports a failed write as a RuntimeError
            failure = err if isinstance(err, OSError) else err.__context__
            if not isinstance(failure, OSError):
                raise
            raise WriteError(failure.errno or errno.EIO, checkpoint_write_text(path, failure)) from err


def checkpoint_write_text(path: Path, failure: OSError) -> str:
    """One line: which checkpoint could not be written, why, and what to do."""
    folder = path.parent
    if failure.errno in DISK_FULL:
        todo = f"free space in {folder} (or give ModelCheckpoint.dirpath on another disk)"
    elif failure.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        todo = f"make {folder} writable (or give ModelCheckpoint.dirpath in a folder you can write)"
    else:
        todo = f"check {folder}"
    return (f"checkpoint {path} could not be written ({failure.strerror or failure}); nothing was left under that "
            f"name and the checkpoints saved before are whole: {todo}, then resume with --ckpt_path last")


def use_atomic_checkpoints(strategy: Strategy) -> None:
    """Give ``strategy`` an :class:`AtomicCheckpointIO` where it would use Lightning's default
    :class:`TorchCheckpointIO` (single device, DDP, FSDP with a full state dict; also inside a
    wrapping IO such as ``AsyncCheckpointIO``). A checkpoint IO the config chose, and strategies that
    save on their own (DeepSpeed, sharded FSDP: folders of shards), are left as they are."""
    configured: CheckpointIO | None = strategy._checkpoint_io
    if configured is None or type(configured) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
    elif isinstance(configured, _WrappingCheckpointIO) and not configured._base_checkpoint_io_configured:
        configured.checkpoint_io = AtomicCheckpointIO()


"""Checkpoints are written beside their final name and renamed: a save that fails (a full disk) or
is killed leaves neither part of a ``.ckpt`` under its name nor a temporary file anywhere."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from speechsum.cli import lightning_cli
from speechsum.training import checkpoint_io
from speechsum.training.checkpoint_io import AtomicCheckpointIO, use_atomic_checkpoints
from speechsum.utils.temp_owner import HOST_TAG
from speechsum.utils.write_errors import WriteError
from tests.helpers import failed_command, run_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_tempdir(tmp_path, monkeypatch) -> Path:
    """The system temp folder, as a fresh folder of this test (Lightning's own IO wrote there)."""
    folder = tmp_path / "systemp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def full_disk(monkeypatch) -> None:
    """torch.save writes some bytes, then the disk is full."""
    def save(obj, file):
        file.write(b"PK\x03\x04 part of a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_io.torch, "save", save)


def test_a_save_that_fails_leaves_the_old_checkpoint_and_no_temporary(tmp_path, own_tempdir, monkeypatch):
    folder = tmp_path / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, folder / "last.ckpt")
    assert io.load_checkpoint(folder / "last.ckpt") == {"step": 1}
    full_disk(monkeypatch)
    for name in ("last.ckpt", "epoch=0-step=2.ckpt"):
        with pytest.raises(WriteError) as info:
            io.save_checkpoint({"step": 2}, folder / name)
        assert info.value.errno == errno.ENOSPC
        assert str(info.value) == (
            f"checkpoint {folder / name} could not be written (No space left on device); nothing was left under that "
            f"name and the checkpoints saved before are whole: free space in {folder} (or give "
            "ModelCheckpoint.dirpath on another disk), then resume with --ckpt_path last")
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert io.load_checkpoint(folder / "last.ckpt") == {"step": 1}
    assert list(own_tempdir.iterdir()) == []


def test_a_save_killed_midway_leaves_no_checkpoint_and_its_temporary_goes_at_the_next_save(tmp_path, own_tempdir):
    """A real SIGKILL while torch.save writes: nothing under the final name; the temporary beside it
    is named by the dead process and the next save into that folder removes it."""
    folder = tmp_path / "checkpoints"
    script = textwrap.dedent(f"""
        import time
        from speechsum.training import checkpoint_io
        def stalled(obj, file):
            file.write(b"PK\\x03\\x04 part of a checkpoint")
            file.flush()
            print("writing", flush=True)
            time.sleep(120)
        checkpoint_io.torch.save = stalled
        checkpoint_io.AtomicCheckpointIO().save_checkpoint({{"step": 1}}, {str(folder / "epoch=0-step=1.ckpt")!r})
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(own_tempdir)})
    try:
        assert child.stdout.readline() == "writing\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    left = [p.name for p in folder.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".epoch=0-step=1.ckpt.{child.pid}.{HOST_TAG}-"), left
    AtomicCheckpointIO().save_checkpoint({"step": 2}, folder / "epoch=0-step=2.ckpt")
    assert [p.name for p in folder.iterdir()] == ["epoch=0-step=2.ckpt"]
    assert list(own_tempdir.iterdir()) == []


def test_the_default_io_is_replaced_and_a_chosen_one_kept():
    default = SingleDeviceStrategy("cpu")
    use_atomic_checkpoints(default)
    assert type(default.checkpoint_io) is AtomicCheckpointIO
    plain = SingleDeviceStrategy("cpu", checkpoint_io=TorchCheckpointIO())
    use_atomic_checkpoints(plain)
    assert type(plain.checkpoint_io) is AtomicCheckpointIO
    ddp = DDPStrategy(accelerator=None)
    use_atomic_checkpoints(ddp)
    assert type(ddp.checkpoint_io) is AtomicCheckpointIO
    wrapped = SingleDeviceStrategy("cpu", checkpoint_io=AsyncCheckpointIO())
    use_atomic_checkpoints(wrapped)
    assert type(wrapped.checkpoint_io.checkpoint_io) is AtomicCheckpointIO

    class ChosenIO(TorchCheckpointIO):
        pass

    chosen = SingleDeviceStrategy("cpu", checkpoint_io=ChosenIO())
    use_atomic_checkpoints(chosen)
    assert type(chosen.checkpoint_io) is ChosenIO


def test_fit_saves_through_it_and_a_full_disk_is_one_line(tmp_path, toy_data, own_tempdir, monkeypatch, capsys):
    config = run_config(tmp_path, toy_data, max_steps=1, limit_val_batches=0)
    cli = lightning_cli(["--config", str(config)], run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    full_disk(monkeypatch)
    code, err = failed_command(["fit", "--config", str(config)], capsys)
    folder = tmp_path / "run" / "checkpoints"
    assert code == 1, err
    assert err.endswith(f"speechsum fit: error: checkpoint {folder / 'epoch=0-step=1.ckpt'} could not be written (No "
                        "space left on device); nothing was left under that name and the checkpoints saved before are "
                        f"whole: free space in {folder} (or give ModelCheckpoint.dirpath on another disk), then resume "
                        "with --ckpt_path last\n(set SPEECHSUM_TRACEBACK=1 for the traceback)\n")
    assert "Traceback" not in err
    assert list(folder.iterdir()) == [] and list(own_tempdir.iterdir()) == []


def test_ctrl_c_mid_save_leaves_the_old_checkpoint_and_no_temporary(tmp_path, own_tempdir, monkeypatch):
    folder = tmp_path / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, folder / "last.ckpt")

    def interrupted(obj, file):
        file.write(b"PK\x03\x04 part of a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_io.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, folder / "last.ckpt")
    monkeypatch.undo()
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"] and list(own_tempdir.iterdir()) == []
    assert io.load_checkpoint(folder / "last.ckpt") == {"step": 1}

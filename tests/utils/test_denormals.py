"""Subnormal floats are flushed to zero in speechsum's processes (utils/denormals.py), unless the
user keeps them; every command and every stage's trainer run turns flushing on."""

from __future__ import annotations

import pytest
import torch

from speechsum import cli
from speechsum.utils.denormals import KEEP_ENV, flush_denormals

SUBNORMAL = 1e-40  # below fp32's smallest normal, 1.18e-38


def survives(value: float = SUBNORMAL) -> float:
    """``value * 1`` computed by torch: 0 when subnormals are flushed."""
    return float(torch.tensor([value]) * 1.0)


@pytest.fixture(autouse=True)
def restore_default_mode():
    supported = torch.set_flush_denormal(True)
    torch.set_flush_denormal(False)
    if not supported:
        pytest.skip("this CPU has no flush-to-zero mode")
    yield
    torch.set_flush_denormal(False)


def test_flushing_zeroes_subnormals_and_keeps_normal_numbers(monkeypatch):
    monkeypatch.delenv(KEEP_ENV, raising=False)
    assert survives() == pytest.approx(SUBNORMAL, rel=1e-4)
    assert flush_denormals() is True
    assert survives() == 0.0 and survives(2e-38) == pytest.approx(2e-38, rel=1e-6)


def test_users_can_keep_subnormals(monkeypatch):
    monkeypatch.setenv(KEEP_ENV, "1")
    assert flush_denormals() is False
    assert survives() == pytest.approx(SUBNORMAL, rel=1e-4)


seen: list[float] = []


def probe(argv: list[str]) -> None:
    seen.append(survives())


def test_every_command_runs_with_subnormals_flushed(monkeypatch):
    monkeypatch.delenv(KEEP_ENV, raising=False)
    monkeypatch.setitem(cli.TOOLS, "probe", f"{__name__}:probe")
    cli.main(["probe"])
    assert seen == [0.0]


def test_a_stage_flushes_when_its_trainer_sets_it_up(monkeypatch):
    from speechsum.stages.base import SpeechStageModule

    monkeypatch.delenv(KEEP_ENV, raising=False)
    SpeechStageModule.setup(None, "fit")  # what Trainer.fit / validate / test / predict call first
    assert survives() == 0.0

"""The Lightning CLI behind ``speechsum fit|validate|test|predict``: stage chosen by ``model.class_path``."""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

import speechsum.stages  # noqa: F401  (every stage module by its short name, see speechsum/stages/__init__.py)
from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.models import import_backbones
from speechsum.stages.base import SpeechStageModule

import_backbones()  # every backbone by its short name (--model.model.help ComposedSpeechLLM)


class SpeechSumCLI(LightningCLI):
    """LightningCLI with the stage module chosen by ``model.class_path`` and one DataModule."""


def lightning_cli(args: list[str] | None = None, run: bool = True) -> SpeechSumCLI:
    return SpeechSumCLI(
        SpeechStageModule,
        SpeechSumDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )

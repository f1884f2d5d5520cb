"""The Lightning CLI behind ``speechsum fit|validate|test|predict``: stage chosen by ``model.class_path``."""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

# Imported so that the CLI knows every stage and backbone by its short name (--model.help SFTModule).
import speechsum.models.composed
import speechsum.models.phi4mm
import speechsum.models.qwen2_audio
import speechsum.models.text_llm
import speechsum.stages  # noqa: F401  (every stage module, see speechsum/stages/__init__.py)
from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.stages.base import SpeechStageModule


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

"""The ``speechsum`` command: Lightning CLI stages (fit/validate/test/predict) plus tools."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from lightning.pytorch.cli import LightningCLI

# Imported so that the CLI knows every stage and backbone by its short name (--model.help SFTModule).
import speechsum.models.composed
import speechsum.models.phi4mm
import speechsum.models.qwen2_audio
import speechsum.stages  # noqa: F401  (every stage module, see speechsum/stages/__init__.py)
from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.stages.base import SpeechStageModule

OVERVIEW = """\
speechsum — train speech LLMs that summarise speech (SFT → on-policy KD → DPO).

Training and inference (PyTorch Lightning CLI; stack configs with several --config):
  speechsum fit      --config configs/trainer/cpu.yaml --config configs/model/composed_tiny.yaml ...
  speechsum validate | test | predict   (same options; --ckpt_path last resumes or evaluates)
  speechsum fit --print_config ...      show the merged config
  speechsum fit --help                  every trainer and data option
  speechsum fit --model.help SFTModule  every option of a stage
  speechsum fit --model.model.help ComposedSpeechLLM   every option of a backbone
Tools:
  speechsum toydata --out DIR           write a tiny synthetic audio-instruction set
  speechsum toyscore PREDICTIONS        score predictions on that set
Run `speechsum <command> --help` for every option of a command.
"""


# Each tool: "module:function", imported only when that tool runs; the function takes argv.
TOOLS: dict[str, str] = {
    "toydata": "speechsum.data.toy:main",
    "toyscore": "speechsum.data.toy:score_main",
    "benchmark": "speechsum.benchmark.cli:main",
    "serve": "speechsum.serve:main",
    "pairs": "speechsum.pairs:main",
    "evaluate": "speechsum.evaluation.cli:evaluate_main",
    "report": "speechsum.evaluation.cli:report_main",
}


def _tool(name: str) -> Callable[[list[str]], None]:
    module_name, function_name = TOOLS[name].split(":")
    return getattr(importlib.import_module(module_name), function_name)


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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in TOOLS:
        _tool(args[0])(args[1:])
        return
    if not args or args[0] in ("-h", "--help"):
        print(OVERVIEW)
        if not args:
            return
    lightning_cli(argv)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()

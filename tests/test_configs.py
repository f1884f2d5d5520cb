"""Every YAML under configs/ goes through the CLI parser, so configs never drift from code."""

from __future__ import annotations

import pytest

from speechsum.cli import SpeechSumCLI
from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.stages.base import SpeechStageModule
from tests.conftest import CONFIGS

ALL_CONFIGS = sorted(CONFIGS.rglob("*.yaml"))
BASE_STACK = [CONFIGS / "trainer" / "cpu.yaml", CONFIGS / "model" / "composed_tiny.yaml", CONFIGS / "data" / "toy.yaml"]
# Built for real in a test: random-init tiny models, nothing to download.
TINY_MODELS = [p for p in ALL_CONFIGS if p.parent.name == "model" and p.stem.endswith("_tiny")]


class ParseOnlyCLI(SpeechSumCLI):
    """Parses and type-checks a config (every class_path and init arg) without building anything."""

    def instantiate_classes(self) -> None:
        pass


def parse(*configs) -> ParseOnlyCLI:
    args = []
    for config in configs:
        args += ["--config", str(config)]
    return ParseOnlyCLI(SpeechStageModule, SpeechSumDataModule, subclass_mode_model=True,
                        auto_configure_optimizers=False, args=args, run=False)


def test_there_are_configs_to_check():
    names = {p.relative_to(CONFIGS).as_posix() for p in ALL_CONFIGS}
    assert {"sft_tiny.yaml", "trainer/cpu.yaml", "trainer/ddp.yaml", "trainer/fsdp.yaml"} <= names
    assert TINY_MODELS


def base_stack_for(config) -> list:
    """A config that picks another stage class (kd.yaml, …) carries its whole model section and is
    parsed on the trainer and data configs only: jsonargparse cannot carry the base stack's backbone
    dataclass arguments (policy, generation) across a change of stage class."""
    import yaml

    stage = (yaml.safe_load(config.read_text()) or {}).get("model", {}).get("class_path", "")
    return BASE_STACK if stage in ("", "speechsum.stages.sft.SFTModule") else [BASE_STACK[0], BASE_STACK[2]]


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_config_parses_on_top_of_the_base_stack(config):
    cli = parse(*base_stack_for(config), config)
    model = cli.config["model"]
    assert model["class_path"].startswith("speechsum.stages.")
    assert model["init_args"]["model"]["class_path"].startswith("speechsum.models.")


@pytest.mark.parametrize("config", TINY_MODELS, ids=lambda p: p.stem)
def test_tiny_model_configs_build(config):
    from speechsum.cli import lightning_cli

    cli = lightning_cli(["--config", str(BASE_STACK[0]), "--config", str(config)], run=False)
    assert cli.model.model.trainable_parameters()


def test_fsdp_policy_picks_transformer_blocks():
    from speechsum.strategies import TransformerBlocks

    cli = parse(*BASE_STACK, CONFIGS / "trainer" / "gpu_bf16.yaml", CONFIGS / "trainer" / "fsdp.yaml")
    strategy = cli.config["trainer"]["strategy"]
    assert strategy["class_path"].endswith("FSDPStrategy")
    policy = TransformerBlocks()
    from transformers.models.llama.modeling_llama import LlamaConfig, LlamaDecoderLayer, LlamaMLP

    config = LlamaConfig(hidden_size=8, intermediate_size=16, num_attention_heads=2, num_key_value_heads=1)
    assert policy(LlamaDecoderLayer(config, 0), recurse=False)
    assert not policy(LlamaMLP(config), recurse=False)
    assert policy(LlamaMLP(config), recurse=True)

"""Every YAML under configs/ goes through the CLI parser, so configs never drift from code."""

from __future__ import annotations

import pytest

from speechsum.cli import SpeechSumCLI
from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.stages.base import SpeechStageModule
from tests.conftest import CONFIGS

# configs/pipeline/ holds `speechsum pipeline` presets, not Lightning configs: each stage config they
# resolve to is parsed by test_pipeline_presets_resolve_to_configs_that_parse below.
PIPELINE_PRESETS = sorted((CONFIGS / "pipeline").glob("*.yaml"))
ALL_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if p not in PIPELINE_PRESETS)
BASE_STACK = [CONFIGS / "trainer" / "cpu.yaml", CONFIGS / "model" / "composed_tiny.yaml", CONFIGS / "data" / "toy.yaml"]
# Built for real in a test: random-init tiny models, nothing to download.
TINY_MODELS = [p for p in ALL_CONFIGS if p.parent.name == "model" and p.stem.endswith("_tiny")]


class ParseOnlyCLI(SpeechSumCLI):
    """Parses and type-checks a config (every class_path and init arg) without building anything, nor
    asking whether this machine has what it needs (the GPU configs parse on a CPU-only machine)."""

    def check_machine(self, trainer) -> None:
        pass

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
    from speechsum.training.strategies import TransformerBlocks

    cli = parse(*BASE_STACK, CONFIGS / "trainer" / "gpu_bf16.yaml", CONFIGS / "trainer" / "fsdp.yaml")
    strategy = cli.config["trainer"]["strategy"]
    assert strategy["class_path"].endswith("FSDPStrategy")
    policy = TransformerBlocks()
    from transformers.models.llama.modeling_llama import LlamaConfig, LlamaDecoderLayer, LlamaMLP

    config = LlamaConfig(hidden_size=8, intermediate_size=16, num_attention_heads=2, num_key_value_heads=1)
    assert policy(LlamaDecoderLayer(config, 0), recurse=False)
    assert not policy(LlamaMLP(config), recurse=False)
    assert policy(LlamaMLP(config), recurse=True)


@pytest.mark.parametrize("preset", PIPELINE_PRESETS, ids=lambda p: p.stem)
def test_pipeline_presets_resolve_to_configs_that_parse(preset, tmp_path):
    """Every training stage of every pipeline preset, as `speechsum pipeline` writes it, type-checks."""
    import yaml

    from speechsum.pipeline.config import TRAINING_STAGES, load_pipeline_config, resolve_stage_config

    config = load_pipeline_config(preset)
    for stage in TRAINING_STAGES:
        for mode in ("inprocess", "serve") if stage == "kd" else ("inprocess",):
            teacher = {"mode": mode, "base_url": "http://127.0.0.1:8000/v1", "model": "teacher"}
            path = tmp_path / f"{stage}-{mode}.yaml"
            path.write_text(yaml.safe_dump(resolve_stage_config(config, stage, tmp_path, teacher=teacher)))
            assert parse(path).config["trainer"]["default_root_dir"] == str(tmp_path / stage)

"""``init_from`` of a checkpoint that cannot start this model: named as the setting, with what to do."""

from __future__ import annotations

import pytest
import torch

from speechsum.models.checkpoint import CheckpointError
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.policy import TrainingPolicy
from speechsum.stages.sft import SFTModule
from tests.conftest import tiny_backbone_args


def lora_checkpoint(path) -> None:
    module = SFTModule(ComposedSpeechLLM(**{**tiny_backbone_args(), "policy": TrainingPolicy()}))
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": {}}
    module.on_save_checkpoint(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)


@pytest.mark.parametrize("llm", ["full", "frozen"])
def test_a_lora_checkpoint_into_a_model_without_adapters_names_the_policy_to_give(tmp_path, llm):
    """Before: "has weights this model lacks (28 under llm …): build the model from the config it was
    trained with", without the option's name, for a model of another training policy only."""
    lora_checkpoint(tmp_path / "lora.ckpt")
    with pytest.raises(CheckpointError) as info:
        SFTModule(ComposedSpeechLLM(**{**tiny_backbone_args(), "policy": TrainingPolicy(llm=llm)}),
                  init_from=str(tmp_path / "lora.ckpt"))
    assert str(info.value).startswith(f"init_from {tmp_path / 'lora.ckpt'}: holds LoRA adapters (28 weights, e.g. ")
    assert str(info.value).endswith("and this model has none: it was trained with policy llm: lora; give this model "
                                    "the same policy (llm: lora and the lora_r, lora_alpha and LoRA targets it was "
                                    "trained with) to start from it")


def test_a_run_folder_as_init_from_names_its_checkpoint(tmp_path):
    """A run folder was told to be replaced by the placeholder RUN/align/checkpoints/last.ckpt."""
    lora_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError) as info:
        SFTModule(ComposedSpeechLLM(**{**tiny_backbone_args(), "policy": TrainingPolicy()}),
                  init_from=str(tmp_path / "run"))
    assert str(info.value) == (f"init_from {tmp_path / 'run'}: Is a directory; give the .ckpt of an earlier stage, "
                               f"e.g. {tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}")


@pytest.mark.parametrize("cut", ["empty", "half"])
def test_an_init_from_checkpoint_cut_short_names_the_setting(tmp_path, cut):
    """Before: '…/last.ckpt: not a readable PyTorch checkpoint …' without the option that named the file (a KD or
    DPO stage started from another stage's checkpoint cut short by a full disk)."""
    lora_checkpoint(tmp_path / "whole.ckpt")
    data = (tmp_path / "whole.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(b"" if cut == "empty" else data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        SFTModule(ComposedSpeechLLM(**{**tiny_backbone_args(), "policy": TrainingPolicy()}),
                  init_from=str(tmp_path / "cut.ckpt"))
    detail = ("EOFError: the file is empty" if cut == "empty" else
              "RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory")
    assert str(info.value) == (
        f"init_from {tmp_path / 'cut.ckpt'}: not a readable PyTorch checkpoint ({detail}): the file ends early (a "
        "save or copy interrupted, a full disk?); copy it again or give the `.ckpt` a stage wrote, e.g. "
        "RUN/sft/checkpoints/last.ckpt")


def test_init_from_a_checkpoint_of_another_random_backbone_config_names_what_differs(tmp_path, toy_data, capsys):
    """A LoRA checkpoint holds its adapters and projector, not the frozen LM they were trained on, which is rebuilt
    from the config: a KD stage whose config gave another vocab_size than the SFT checkpoint's started silently,
    its adapters on another random LM (the shapes of what it holds fit)."""
    from speechsum.cli import main
    from tests.helpers import run_config

    lora_checkpoint(tmp_path / "sft.ckpt")
    checkpoint = torch.load(tmp_path / "sft.ckpt", weights_only=True)
    checkpoint["hyper_parameters"] = {"model": {"class_path": "speechsum.models.composed.ComposedSpeechLLM",
                                                "init_args": tiny_backbone_args()}}
    torch.save(checkpoint, tmp_path / "sft.ckpt")
    config = run_config(tmp_path, toy_data, max_steps=1)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--model.init_args.init_from", str(tmp_path / "sft.ckpt"),
              "--model.init_args.model.init_args.llm.vocab_size", "300"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-2].startswith(
        f"speechsum fit: error: init_from {tmp_path / 'sft.ckpt'}: its model was built with other settings than this "
        "one's (llm.vocab_size: 272 -> 300), and it does not hold the ")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_settings_that_rebuild_weights_are_compared_as_the_model_reads_them():
    from speechsum.models.checkpoint import rebuilt_config_changes

    saved = {"init_args": {"llm": {"vocab_size": 272, "hidden_size": 64}, "init_seed": 0, "stack": 4,
                           "policy": {"llm": "lora"}}}
    same = {"init_args": {"llm": {"vocab_size": "272", "hidden_size": 64}, "init_seed": 0, "stack": 2,
                          "policy": {"llm": "full"}}}  # text from the command line; stack and policy: not rebuilt
    assert rebuilt_config_changes(saved, same) == []
    other = {"init_args": {"llm": {"vocab_size": 300, "hidden_size": 64, "rope_theta": 1.0}, "init_seed": 1}}
    assert rebuilt_config_changes(saved, other) == ["init_seed: 0 -> 1", "llm.rope_theta: None -> 1.0",
                                                    "llm.vocab_size: 272 -> 300"]
    assert rebuilt_config_changes({"init_args": {"llm": {"vocab_size": 272}}}, {"init_args": {"init_seed": 0}}) == []

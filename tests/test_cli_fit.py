"""`speechsum fit/validate/test/predict` through the real Lightning CLI on the tiny config."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from speechsum.cli import lightning_cli, main
from tests.helpers import run_config


def trainable_state(ckpt_path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]


class SimulatedCrash(RuntimeError):
    pass


class CrashAtEpoch(L.Callback):
    """Dies when batch ``batch`` of epoch ``epoch`` starts (0: before the epoch's first batch)."""

    def __init__(self, epoch: int, batch: int = 0):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise SimulatedCrash(f"crash at epoch {self.epoch}, batch {self.batch}")


def checkpoint_every(config_path, steps: int) -> None:
    config = yaml.safe_load(config_path.read_text())
    config["trainer"]["callbacks"][0]["init_args"]["every_n_train_steps"] = steps
    config_path.write_text(yaml.safe_dump(config))


@pytest.mark.parametrize("crash_batch", [0, 3], ids=["at-epoch-boundary", "mid-epoch"])
def test_fit_then_resume_matches_uninterrupted_training(tmp_path, toy_data, crash_batch):
    straight = run_config(tmp_path / "straight", toy_data, max_epochs=2)
    checkpoint_every(straight, 1)
    lightning_cli(["fit", "--config", str(straight)])

    interrupted = run_config(tmp_path / "resumed", toy_data, max_epochs=2)
    checkpoint_every(interrupted, 1)
    crashing = yaml.safe_load(interrupted.read_text())
    crash = {"epoch": 1, "batch": crash_batch}
    crashing["trainer"]["callbacks"].append({"class_path": f"{__name__}.CrashAtEpoch", "init_args": crash})
    crashing_path = tmp_path / "crashing.yaml"
    crashing_path.write_text(yaml.safe_dump(crashing))
    with pytest.raises(SimulatedCrash):
        lightning_cli(["fit", "--config", str(crashing_path)])
    first_half = trainable_state(tmp_path / "resumed" / "run" / "checkpoints" / "last.ckpt")
    lightning_cli(["fit", "--config", str(interrupted), "--ckpt_path", "last"])

    expected = torch.load(tmp_path / "straight" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == expected["global_step"] > 0
    assert resumed["state_dict"].keys() == expected["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, msg=key)
    changed = [k for k, v in first_half.items() if not torch.equal(v, expected["state_dict"][k])]
    assert changed, "the second epoch changed no weight"


def test_checkpoint_holds_only_trainable_weights(tmp_path, toy_data):
    config = run_config(tmp_path, toy_data, max_steps=2, limit_val_batches=0)
    cli = lightning_cli(["fit", "--config", str(config)])
    state = trainable_state(tmp_path / "run" / "checkpoints" / "last.ckpt")
    trainable = {f"model.{name}" for name, _ in cli.model.model.trainable_parameters()}
    params = {k for k in state if k in dict(cli.model.named_parameters())}
    assert params == trainable
    assert any("lora_A" in k for k in params) and any("projector" in k for k in params)
    assert not any(k.startswith("model.encoder.") for k in params)  # frozen encoder not saved


def test_validation_writes_samples_and_predict_writes_jsonl(tmp_path, toy_data):
    config = run_config(tmp_path, toy_data, max_epochs=1)
    lightning_cli(["fit", "--config", str(config)])
    samples = list((tmp_path / "run").glob("logs/version_*/samples/*.jsonl"))
    assert samples
    rows = [json.loads(line) for line in samples[0].read_text().splitlines()]
    assert len(rows) == 2 and set(rows[0]) == {"id", "instruction", "reference", "prediction"}

    lightning_cli(["predict", "--config", str(config), "--ckpt_path", "last"])
    predictions = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in predictions) == sorted(
        json.loads(line)["id"] for line in toy_data["test"].read_text().splitlines()
    )
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_validate_and_test_report_losses(tmp_path, toy_data):
    config = run_config(tmp_path, toy_data)
    cli = lightning_cli(["--config", str(config)], run=False)
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule)[0]
    assert metrics["val/loss"] > 0
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule)[0]
    assert metrics["test/loss"] > 0


def test_cli_help_lists_commands_and_options(capsys):
    main([])
    overview = capsys.readouterr().out
    assert "fit" in overview and "toydata" in overview
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--ckpt_path" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "SFTModule"])
    assert "--model.learning_rate" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fit", "--model.model.help", "ComposedSpeechLLM"])
    assert "--model.policy" in capsys.readouterr().out


def test_python_dash_m_speechsum_is_the_speechsum_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "speechsum", "toyscore", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "usage: speechsum toyscore" in done.stdout


def stage_options(capsys, stage: str) -> dict[str, str]:
    """``--model.help STAGE``: option → its help text (with the default)."""
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", stage])
    options, current = {}, None
    for line in capsys.readouterr().out.splitlines():
        words = line.split()
        if words and words[0].startswith("--model."):
            current = words[0].removeprefix("--model.")
            options[current] = line
        elif current and words:
            options[current] += " " + " ".join(words)
    return options


@pytest.mark.parametrize("stage", ["OnPolicyKDModule", "CTCAlignModule", "DPOModule", "TextLMModule"])
def test_stage_help_documents_the_shared_options_passed_through_kwargs(capsys, stage):
    options = stage_options(capsys, stage)
    shared = ("learning_rate", "weight_decay", "warmup_steps", "min_lr_ratio", "init_from", "num_val_samples",
              "generation", "checkpoint_trainable_only")
    assert all(name in options for name in shared), sorted(options)
    if stage == "CTCAlignModule":  # its own defaults, not the base's
        assert "default: 0.002" in options["learning_rate"] and "default: 20" in options["warmup_steps"]
    else:
        assert "default: 0.0001" in options["learning_rate"] and "default: 50" in options["warmup_steps"]


def test_wandb_offline_logs_samples_and_no_secret(tmp_path, toy_data, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "sk-secret-must-not-leak-0123456789")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    config = run_config(tmp_path, toy_data, max_epochs=1, limit_train_batches=2)
    data = yaml.safe_load(config.read_text())
    data["trainer"]["logger"].append(
        {"class_path": "speechsum.training.loggers.WandbLogger", "init_args": {"save_dir": str(tmp_path / "run")}}
    )
    config.write_text(yaml.safe_dump(data))
    lightning_cli(["fit", "--config", str(config)])
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1  # offline by default, no network needed
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"sk-secret-must-not-leak" not in path.read_bytes(), path


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true", "16-true"])
def test_half_precisions_on_cpu(tmp_path, toy_data, precision):
    """The true-half precisions make the default dtype half: the Whisper encoder's padding mask was made
    in it ('Expected attn_mask dtype to be bool or float or to match query dtype'; fp16: an overflow)."""
    config = run_config(tmp_path, toy_data, max_steps=2, limit_val_batches=0, precision=precision)
    cli = lightning_cli(["fit", "--config", str(config)])
    assert cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


def test_print_config_shows_the_merged_config(tmp_path, toy_data, capsys):
    config = run_config(tmp_path, toy_data)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--trainer.max_steps", "7", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["max_steps"] == 7
    assert printed["model"]["class_path"] == "speechsum.stages.sft.SFTModule"
    assert printed["model"]["init_args"]["model"]["init_args"]["policy"]["lora_r"] == 16


def test_trainable_only_checkpoint_drops_a_tied_frozen_head():
    from speechsum.models.composed import ComposedSpeechLLM
    from speechsum.models.policy import TrainingPolicy
    from speechsum.stages.sft import SFTModule
    from tests.conftest import tiny_backbone_args

    args = tiny_backbone_args()
    args["llm"] = {**args["llm"], "tie_word_embeddings": True}
    module = SFTModule(ComposedSpeechLLM(**{**args, "policy": TrainingPolicy()}))
    assert module.model.llm.lm_head.weight is module.model.llm.get_input_embeddings().weight
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    trainable = {f"model.{n}" for n, _ in module.model.trainable_parameters()}
    buffers = {f"model.{n}" for n, _ in module.model.named_buffers()}
    assert trainable <= checkpoint["state_dict"].keys() <= trainable | buffers


def test_init_from_a_full_finetune_into_a_lora_stage(tmp_path):
    from speechsum.models.composed import ComposedSpeechLLM
    from speechsum.models.policy import TrainingPolicy
    from speechsum.stages.sft import SFTModule
    from tests.conftest import tiny_backbone_args

    args = tiny_backbone_args()
    full = SFTModule(ComposedSpeechLLM(**{**args, "policy": TrainingPolicy(llm="full")}))
    with torch.no_grad():
        for parameter in full.model.llm.parameters():
            parameter.add_(1.0)  # "fine-tuned"
    checkpoint = {"state_dict": full.state_dict()}
    full.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "sft.ckpt")

    lora = SFTModule(ComposedSpeechLLM(**{**args, "policy": TrainingPolicy()}), init_from=str(tmp_path / "sft.ckpt"))
    tuned = full.model.llm.model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(lora.model.llm.model.layers[0].self_attn.q_proj.base_layer.weight, tuned)
    torch.testing.assert_close(lora.model.projector.mlp[0].weight, full.model.projector.mlp[0].weight)

    other = {**args, "llm": {**args["llm"], "hidden_size": 32}}
    with pytest.raises((ValueError, RuntimeError)):
        SFTModule(ComposedSpeechLLM(**{**other, "policy": TrainingPolicy()}), init_from=str(tmp_path / "sft.ckpt"))


def test_throughput_is_logged_per_window(tmp_path, toy_data):
    import csv

    config = run_config(tmp_path, toy_data, max_epochs=1, log_every_n_steps=2, limit_val_batches=0)
    lightning_cli(["fit", "--config", str(config)])
    metrics = next((tmp_path / "run").glob("logs/version_*/metrics.csv"))
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("train/tokens_per_s")]
    assert len(rows) >= 2
    assert all(float(r["train/tokens_per_s"]) > 0 and float(r["train/audio_s_per_s"]) > 0 for r in rows)


def test_weights_from_init_from_that_a_stage_freezes_stay_in_its_checkpoint(tmp_path):
    """A projector trained in one stage and frozen in the next comes back from the next stage's
    checkpoint (export, evaluate and serve rebuild the model from its config + these weights)."""
    from speechsum.models.checkpoint import load_speech_llm
    from speechsum.models.composed import ComposedSpeechLLM
    from speechsum.models.policy import TrainingPolicy
    from speechsum.stages.sft import SFTModule
    from tests.conftest import tiny_backbone_args

    args = tiny_backbone_args()
    first = SFTModule(ComposedSpeechLLM(**{**args, "policy": TrainingPolicy()}))
    with torch.no_grad():
        for parameter in first.model.projector.parameters():
            parameter.add_(0.5)  # "aligned"
    checkpoint = {"state_dict": first.state_dict(), "hyper_parameters": {}}
    first.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "first.ckpt")

    frozen_projector = {**args, "policy": TrainingPolicy(train_projector=False)}
    second = SFTModule(ComposedSpeechLLM(**frozen_projector), init_from=str(tmp_path / "first.ckpt"))
    saved = {"state_dict": second.state_dict(), "hyper_parameters": {"model": {
        "class_path": "speechsum.models.composed.ComposedSpeechLLM", "init_args": {**args, "policy": {"train_projector": False}}}}}
    second.on_save_checkpoint(saved)
    assert any(key.startswith("model.projector.") for key in saved["state_dict"])  # frozen, from init_from
    assert not any(key.startswith("model.encoder.") for key in saved["state_dict"])  # frozen, never loaded
    torch.save(saved, tmp_path / "second.ckpt")
    rebuilt, _ = load_speech_llm(tmp_path / "second.ckpt")
    for name, value in first.model.projector.state_dict().items():
        torch.testing.assert_close(rebuilt.projector.state_dict()[name], value)


def test_the_projects_configs_are_found_from_any_folder(tmp_path, monkeypatch, capsys):
    """`speechsum fit --config configs/trainer/cpu.yaml` in a folder without configs/ uses the
    project's (checkout or installed wheel), says so, and leaves inline YAML, missing files and a
    folder's own file of that name alone."""
    from speechsum.cli import main, with_project_configs

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", "configs/trainer/cpu.yaml", "-c", "configs/model/composed_tiny.yaml",
            "--config=configs/data/toy.yaml", "-cconfigs/sft.yaml", "--config", "trainer: {max_steps: 2}",
            "--config", "configs/none.yaml", "--trainer.max_steps", "configs/kd.yaml"]
    assert with_project_configs(args) == [
        "fit", "--config", str(repo / "configs/trainer/cpu.yaml"), "-c", str(repo / "configs/model/composed_tiny.yaml"),
        f"--config={repo / 'configs/data/toy.yaml'}", f"-c{repo / 'configs/sft.yaml'}", "--config", "trainer: {max_steps: 2}",
        "--config", "configs/none.yaml", "--trainer.max_steps", "configs/kd.yaml"]
    assert "configs/trainer/cpu.yaml: not in this folder; using the project's" in capsys.readouterr().err
    (tmp_path / "configs" / "trainer").mkdir(parents=True)
    (tmp_path / "configs" / "trainer" / "cpu.yaml").write_text("trainer: {max_steps: 1}\n")
    assert with_project_configs(["fit", "--config", "configs/trainer/cpu.yaml"]) == ["fit", "--config", "configs/trainer/cpu.yaml"]

    (tmp_path / "configs" / "trainer" / "cpu.yaml").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "configs/trainer/cpu.yaml", "--config", "configs/model/composed_tiny.yaml",
              "--trainer.max_steps", "3", "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["max_steps"] == 3 and printed["trainer"]["accelerator"] == "cpu"
    assert "ComposedSpeechLLM" in printed["model"]["init_args"]["model"]["class_path"]


@pytest.mark.parametrize("tool", ["pairs", "export", "summarize", "serve"])
def test_a_tools_config_option_finds_the_projects_configs_from_any_folder(tmp_path, monkeypatch, capsys, tool):
    """docs/dpo.md's `speechsum pairs --ckpt runs/benchmark/kd/checkpoints/last.ckpt --config configs/kd.yaml`
    in a run folder without configs/ stopped at '--config configs/kd.yaml: no such file', where `speechsum fit
    --config configs/kd.yaml` used the project's file."""
    from tests.test_cli_help import tool_parsers

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    (config,) = [a for a in tool_parsers()[tool]._actions if "--config" in a.option_strings]
    assert config.type("configs/kd.yaml") == str(repo / "configs/kd.yaml")
    assert capsys.readouterr().err == f"speechsum: --config configs/kd.yaml: not in this folder; using the project's {repo / 'configs/kd.yaml'}\n"
    assert config.type("configs/none.yaml") == "configs/none.yaml"  # named as written by the missing-file error
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "kd.yaml").write_text("model: {}\n")
    assert config.type("configs/kd.yaml") == "configs/kd.yaml"  # the folder's own file first

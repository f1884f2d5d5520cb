"""`speechsum fit|validate --ckpt_path` with a checkpoint that does not belong to the config: another
stage, another model shape; and an explicit checkpoint file never overrides the fit config."""

from __future__ import annotations

import pytest
import torch
import yaml

from speechsum.cli import lightning_cli, main
from tests.helpers import run_config
from tests.stages.test_ctc_align import align_config
from tests.test_cli_fit import SimulatedCrash, checkpoint_every


def trained(config, steps: int = 1):
    main(["fit", "--config", str(config), "--trainer.max_steps", str(steps)])
    return config.parent / "run" / "checkpoints" / "last.ckpt"


def error_of(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err, err
    return err


def test_a_checkpoint_of_another_stage_is_refused_naming_both(tmp_path, toy_data, capsys):
    """jsonargparse's ~30-line report of two merged configs before ("Parsing of ckpt_path
    hyperparameters failed!")."""
    aligned = trained(align_config(tmp_path / "align", toy_data))
    sft = run_config(tmp_path / "sft", toy_data)
    for command in ("fit", "validate"):
        err = error_of(capsys, [command, "--config", str(sft), "--ckpt_path", str(aligned)])
        assert (f"error: ckpt_path {aligned}: a checkpoint of CTCAlignModule, but this config's stage is SFTModule: "
                "resume it with the config it was trained with, or start this stage from its weights with "
                f"--model.init_args.init_from {aligned} (and no --ckpt_path)") in err


def test_a_checkpoint_of_another_model_shape_names_the_weights(tmp_path, toy_data, capsys):
    """A LoRA rank changed in the config, then `--ckpt_path last`: a size-mismatch traceback before."""
    config = run_config(tmp_path, toy_data)
    last = trained(config)
    changed = yaml.safe_load(config.read_text())
    changed["model"]["init_args"]["model"]["init_args"]["policy"]["lora_r"] = 8
    config.write_text(yaml.safe_dump(changed))
    err = error_of(capsys, ["fit", "--config", str(config), "--ckpt_path", "last", "--trainer.max_steps", "2"])
    assert f"error: ckpt_path {last}: 28 weights have other shapes than this model's, e.g. " in err
    assert "q_proj.lora_A.default.weight (16, 64) vs the model's (8, 64)" in err
    assert "it was trained with another model config (LoRA rank, sizes)" in err


def test_fit_from_a_checkpoint_file_keeps_the_configs_settings(tmp_path, toy_data):
    """Lightning replaced the whole model section by the checkpoint's hyperparameters: a LoRA rank
    changed in the config was silently ignored, and a resumed KD stage called the interrupted run's
    teacher URL."""
    config = run_config(tmp_path, toy_data)
    changed = yaml.safe_load(config.read_text())
    changed["trainer"]["callbacks"][0]["init_args"]["every_n_train_steps"] = 1  # a mid-epoch checkpoint
    config.write_text(yaml.safe_dump(changed))
    first = torch.load(trained(config), weights_only=True)
    changed["model"]["init_args"]["num_val_samples"] = 1
    config.write_text(yaml.safe_dump(changed))
    saved = tmp_path / "step1.ckpt"
    saved.write_bytes((tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes())
    main(["fit", "--config", str(config), "--ckpt_path", str(saved), "--trainer.max_steps", "2"])
    resumed = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["hyper_parameters"]["num_val_samples"] == 2
    assert resumed["global_step"] == 2 and resumed["hyper_parameters"]["num_val_samples"] == 1


def test_a_last_link_to_a_missing_checkpoint_or_none_at_all_is_refused(tmp_path, toy_data, capsys):
    """Lightning warned only, then fit started over and validate/test/predict ran the untrained model."""
    config = run_config(tmp_path, toy_data)
    for command in ("validate", "predict"):  # nothing trained yet
        err = error_of(capsys, [command, "--config", str(config), "--ckpt_path", "last"])
        assert (f"error: ckpt_path last: no last checkpoint in {tmp_path / 'run' / 'checkpoints'}, so {command} would "
                "run the untrained model; run `speechsum fit` with this config first") in err
    last = trained(config)
    target = last.resolve()
    target.unlink()
    for command in ("fit", "test"):
        err = error_of(capsys, [command, "--config", str(config), "--ckpt_path", "last"])
        assert f"error: ckpt_path last: {last} links to {target.name}, which does not exist" in err
        assert "pass --ckpt_path FILE of another checkpoint, put the file back, or delete the link" in err
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


def test_a_last_link_left_behind_by_a_kill_names_the_newest_whole_checkpoint(tmp_path, toy_data, capsys):
    """Lightning saves a new checkpoint, removes the previous one, then moves the link: a kill in
    between leaves the link on the removed file and the newest checkpoint beside it."""
    config = run_config(tmp_path, toy_data)
    last = trained(config)
    newest = last.parent / "epoch=0-step=2.ckpt"
    newest.write_bytes(last.resolve().read_bytes())
    (last.parent / "cut.ckpt").write_bytes(newest.read_bytes()[:100])  # newer, but not whole
    last.resolve().unlink()
    err = error_of(capsys, ["fit", "--config", str(config), "--ckpt_path", "last"])
    assert f"pass --ckpt_path {newest} (the newest whole checkpoint beside it)" in err


def test_resuming_mid_epoch_on_another_train_manifest_is_refused(tmp_path, toy_data, capsys):
    """The batch sampler skips the batches already trained: of a plan made from other data, the rest
    of the epoch silently left examples out (and trained others twice)."""
    config = run_config(tmp_path, toy_data, limit_val_batches=0)
    checkpoint_every(config, 1)
    crashing = yaml.safe_load(config.read_text())
    crashing["trainer"]["callbacks"].append({"class_path": "tests.test_cli_fit.CrashAtEpoch",
                                             "init_args": {"epoch": 0, "batch": 3}})
    (tmp_path / "crashing.yaml").write_text(yaml.safe_dump(crashing))
    with pytest.raises(SimulatedCrash):
        lightning_cli(["fit", "--config", str(tmp_path / "crashing.yaml")])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    lines = toy_data["train"].read_text().splitlines(keepends=True)
    fewer = toy_data["train"].parent / "train_fewer.jsonl"  # beside it: the audio paths are relative
    fewer.write_text("".join(lines[:-4]))
    err = error_of(capsys, ["fit", "--config", str(config), "--ckpt_path", "last", "--data.train_manifest", str(fewer)])
    assert (f"error: ckpt_path {last}: resumes epoch 0 after its batch 3, but the training data or batching changed "
            f"since it was saved (data.train_manifest {fewer}: 20 examples now") in err
    err = error_of(capsys, ["fit", "--config", str(config), "--ckpt_path", "last", "--data.max_batch_size", "2"])
    assert "resumes epoch 0 after its batch 3, but the training data or batching changed" in err
    cli = lightning_cli(["fit", "--config", str(config), "--ckpt_path", "last"])  # the same data: resumes
    assert cli.trainer.global_step > 3


def test_a_folder_or_best_as_ckpt_path_names_a_checkpoint_file_to_give(tmp_path, toy_data, capsys):
    """A folder was "[Errno 21] Is a directory"; `best` always failed in a new command (Lightning knows
    the best only inside the fit run), in a traceback saying ModelCheckpoint was "not configured"."""
    config = run_config(tmp_path, toy_data)
    err = error_of(capsys, ["validate", "--config", str(config), "--ckpt_path", str(tmp_path)])
    assert (f"error: ckpt_path {tmp_path} is a folder: give a checkpoint file, e.g. "
            f"{tmp_path}/checkpoints/last.ckpt (there is no .ckpt in it)\n") in err
    last = trained(config)
    err = error_of(capsys, ["validate", "--config", str(config), "--ckpt_path", str(tmp_path / "run")])
    assert f"error: ckpt_path {tmp_path / 'run'} is a folder: give a checkpoint file, e.g. {last}\n" in err
    saved = sorted(p for p in last.parent.glob("*.ckpt") if p.name != "last.ckpt")
    for command in ("validate", "test"):
        err = error_of(capsys, [command, "--config", str(config), "--ckpt_path", "best"])
        assert (f"error: ckpt_path best: which checkpoint was best is known only inside the fit run that saved it, not "
                f"to a new `speechsum {command}`; pass --ckpt_path FILE (e.g. {saved[-1]}, the newest in "
                f"{last.parent}; its name says its epoch and step) or --ckpt_path last\n") in err

"""`speechsum fit/validate/test` given what it cannot use: a config file that is no YAML, a bad
manifest line, a checkpoint that is not one (or cut short, or of other shapes), an unusable
``init_from``: one line naming the file and what to do, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speechsum.cli import main
from tests.helpers import run_config


@pytest.mark.parametrize(("text", "message"), [
    (b"trainer:\n  max_steps: [1, 2\n", "bad.yaml:3:1: not valid YAML: did not find expected ',' or ']'"),
    (b"trainer:\n  max_steps: 5\n foo: 1\n", "bad.yaml:3:2: not valid YAML: did not find expected key"),
    (b"trainer:\n  max_steps: 5 # caf\xe9\n", "bad.yaml: not UTF-8 text (byte b'\\xe9' at offset 29)"),
    # LibYAML's words name no tab: the hint on tabs that PyYAML's error got was missing here
    (b"trainer:\n\tmax_steps: 5\n", "bad.yaml:2:1: not valid YAML: found character that cannot start any token; "
                                     "YAML indents with spaces, never tabs: replace the tabs\n"),
])
def test_a_broken_config_file_is_named_with_line_and_column(tmp_path, capsys, text, message):
    from speechsum.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_bytes(text)
    trainer = Path(__file__).resolve().parents[1] / "configs" / "trainer" / "cpu.yaml"
    for args in (["fit", "--config", str(trainer), "--config", str(bad)], ["fit", f"--config={bad}"],
                 ["fit", "-c", str(bad)]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        assert f"error: {tmp_path}/{message}" in capsys.readouterr().err


def test_configs_the_lightning_cli_reads_pass_the_check(tmp_path):
    """A tab after a colon, an impossible date (a string to jsonargparse), inline YAML: not refused."""
    from speechsum.cli import check_config_files

    good = tmp_path / "good.yaml"
    good.write_text("trainer:\n  max_steps:\t3\n  default_root_dir: 2024-02-30\n")
    check_config_files(["fit", "--config", str(good), "-c", str(good), "--config", "trainer: {max_steps: 2}"])


def test_a_bad_manifest_line_ends_the_command_with_its_message_not_a_traceback(tmp_path, toy_data, capsys,
                                                                                monkeypatch):
    """``speechsum validate`` (and every other command) on a manifest with a bad line: one message
    naming file, line and reason, exit 2; SPEECHSUM_TRACEBACK=1 gives the traceback."""
    from speechsum.data.manifest import ManifestError

    bad = tmp_path / "bad.jsonl"
    bad.write_text(toy_data["val"].read_text().splitlines()[0] + " junk\n")
    config = run_config(tmp_path, toy_data)
    argv = ["validate", "--config", str(config), "--data.val_manifest", str(bad)]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"speechsum validate: error: {bad}:1: invalid JSON: Extra data" in err and "Traceback" not in err
    monkeypatch.setenv("SPEECHSUM_TRACEBACK", "1")
    with pytest.raises(ManifestError):
        main(argv)
    monkeypatch.delenv("SPEECHSUM_TRACEBACK")
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--system", "student:x:missing.ckpt", "--manifest", f"test={tmp_path / 'none.jsonl'}",
              "--out", str(tmp_path / "eval")])
    assert info.value.code == 2
    assert "speechsum evaluate: error:" in capsys.readouterr().err


def test_a_ckpt_path_that_is_not_a_training_checkpoint_is_named(tmp_path, toy_data, capsys):
    """Lightning's EOFError / KeyError from inside torch.load named no file."""
    config = run_config(tmp_path, toy_data)
    (tmp_path / "zero.ckpt").write_bytes(b"")
    (tmp_path / "text.ckpt").write_text("hello")
    torch.save({"state_dict": {}}, tmp_path / "weights.ckpt")
    (tmp_path / "in_config.yaml").write_text(f"ckpt_path: {tmp_path / 'zero.ckpt'}\n")
    on_command_line = [(["--ckpt_path", str(tmp_path / name)], name, message) for name, message in (
        ("zero.ckpt", "not a readable PyTorch checkpoint (EOFError"), ("text.ckpt", "not a readable PyTorch checkpoint"),
        ("weights.ckpt", "not a Lightning training checkpoint"), ("missing.ckpt", "No such file"))]
    in_config = (["--config", str(tmp_path / "in_config.yaml")], "zero.ckpt", "not a readable PyTorch checkpoint (EOFError")
    for where, name, message in [*on_command_line, in_config]:
        with pytest.raises(SystemExit) as info:
            main(["validate", "--config", str(config), *where])
        err = capsys.readouterr().err
        assert info.value.code == 2 and f"ckpt_path {tmp_path / name}: " in err and message in err
        assert "mmap" not in err


def test_a_last_checkpoint_cut_short_is_named_with_what_to_do(tmp_path, toy_data, capsys):
    """`--ckpt_path last` after a crash or a full disk cut the newest checkpoint: one line naming the
    file Lightning would read (a torch.load traceback before); an intact one still resumes."""
    config = run_config(tmp_path, toy_data, max_steps=2, limit_val_batches=0)
    main(["fit", "--config", str(config)])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    data = last.resolve().read_bytes()
    main(["validate", "--config", str(config), "--ckpt_path", "last"])  # readable: runs
    last.resolve().write_bytes(data[: len(data) // 2])
    for command in ("fit", "validate"):
        with pytest.raises(SystemExit) as info:
            main([command, "--config", str(config), "--ckpt_path", "last"])
        err = capsys.readouterr().err
        assert info.value.code == 2, err
        assert f"error: ckpt_path last: {last} cannot be read (RuntimeError: PytorchStreamReader failed" in err
        assert "Delete it to resume from an older checkpoint (--ckpt_path FILE) or start again without --ckpt_path" in err


def test_weights_of_another_shape_are_named_with_the_config_to_use(tmp_path):
    from speechsum.models.checkpoint import match_state_dict
    from speechsum.models.composed import ComposedSpeechLLM
    from speechsum.models.policy import TrainingPolicy
    from tests.conftest import tiny_backbone_args

    args = tiny_backbone_args()
    model = ComposedSpeechLLM(**{**args, "policy": TrainingPolicy()})
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    key = next(k for k in state if "lora_A" in k)
    state[key] = torch.zeros(state[key].shape[0] * 2, state[key].shape[1])  # another LoRA rank
    with pytest.raises(ValueError, match=r"^run\.ckpt: 1 weights have other shapes than this model's, e.g. .*"
                                         r"it was trained with another model config"):
        match_state_dict(model, state, "run.ckpt")


def test_an_init_from_that_cannot_be_used_is_one_line_naming_it(tmp_path, toy_data, capsys):
    """The stage's error reached the user inside ~90 lines of jsonargparse's union-type report."""
    config = run_config(tmp_path, toy_data)
    (tmp_path / "zero.ckpt").write_bytes(b"\n")
    for name, message in (("missing.ckpt", "init_from " + str(tmp_path / "missing.ckpt") + ": No such file or directory"),
                          ("zero.ckpt", "not a readable PyTorch checkpoint")):
        with pytest.raises(SystemExit) as info:
            main(["validate", "--config", str(config), "--model.init_args.init_from", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert info.value.code == 2 and message in err and str(tmp_path / name) in err and "Union" not in err


def test_a_val_check_interval_beyond_the_epoch_is_one_line_naming_it(tmp_path, toy_data, capsys):
    """Before: Lightning's ValueError traceback (\"`val_check_interval` (500) must be less than or equal to
    the number of the training batches\") once the data had been loaded."""
    config = run_config(tmp_path, toy_data, max_steps=2, val_check_interval=500)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config)])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert ("speechsum fit: error: trainer.val_check_interval (500) is more than the 7 training batch(es) of an epoch, "
            "so validation would never run: give at most 7, a fraction of the epoch (1.0: at its end), or "
            "check_val_every_n_epoch: null to count batches across epochs (limit_val_batches: 0 turns validation "
            "off)\n") in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_validate_without_val_data_names_the_setting(tmp_path, toy_data, capsys):
    """Before: `speechsum validate` with no val manifest validated nothing and exited 0 (Lightning's "Total length
    of `list` across ranks is zero" warning only), as `speechsum test` without test data does not."""
    config = run_config(tmp_path, toy_data)
    config.write_text(config.read_text().replace(f"val_manifest: {toy_data['val']}", "val_manifest: null"))
    with pytest.raises(SystemExit) as info:
        main(["validate", "--config", str(config)])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "speechsum validate: error: data.val_manifest" in err and "no val data: set it to a manifest" in err


@pytest.mark.parametrize(("text", "message"), [
    # which of the stacked files held the value was not said
    ("data:\n  max_batch_size: 0\n", "data.max_batch_size ({file}:2) must be at least 1 (or null: no cap), got 0"),
    ("data:\n  train_manifest: /no/such/train.jsonl\n",
     "data.train_manifest ({file}:2): manifest not found: /no/such/train.jsonl"),
    ("trainer:\n  accumulate_grad_batches: 0\n",
     "trainer.accumulate_grad_batches ({file}:2) must be at least 1, got 0"),
    # Lightning's TypeError traceback ("'<' not supported between instances of 'NoneType' and 'int'")
    ("trainer:\n  max_steps: null\n", "trainer.max_steps ({file}:2) must be an integer, got null: write -1 for no "
                                       "limit (max_epochs decides) or a number of steps"),
    # a stage's setting named no file (null where a number goes; a nested one)
    ("model:\n  init_args:\n    learning_rate: null\n",
     "model.init_args.learning_rate ({file}:3) must be a number at least 0, got None"),
    ("model:\n  init_args:\n    generation:\n      top_p: 1.5\n",
     "model.init_args.generation.top_p ({file}:4) must be a number above 0 and at most 1, got 1.5"),
    # one training process per CPU device: 64 of them on a small machine started and hung in their setup
    ("trainer:\n  accelerator: cpu\n  devices: 4096\n",
     "trainer.devices ({file}:3) must be at most {cpus} on the CPU (accelerator cpu: one process per device, "
     "and this machine has {cpus} CPUs), got 4096"),
])
def test_a_setting_out_of_range_names_the_file_and_line_that_set_it(tmp_path, toy_data, capsys, text, message):
    from speechsum.training.trainer_settings import usable_cpus

    config = run_config(tmp_path, toy_data, max_steps=1)
    mistake = tmp_path / "mistake.yaml"
    mistake.write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--config", str(mistake)])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-2] == "speechsum fit: error: " + message.format(
        file=mistake, cpus=usable_cpus())
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


@pytest.mark.parametrize(("value", "problem"), [
    # the command line gives a count as text ("4096"), which the check of a count passed by: 4096 processes started
    ("4096", "must be at most {cpus} on the CPU (accelerator cpu: one process per device, and this machine has {cpus} "
             "CPUs), got 4096"),
    # Lightning's TypeError traceback ("`devices` selected with `CPUAccelerator` should be an int > 0.")
    ("-1", "must be a count of processes from 1 to {cpus} on the CPU (accelerator cpu: one process per device; -1, 0 "
           "and device indices are for GPUs), got -1"),
    ("0", "must be a count of processes from 1 to {cpus} on the CPU (accelerator cpu: one process per device; -1, 0 "
          "and device indices are for GPUs), got 0"),
])
def test_trainer_devices_on_the_command_line_the_cpu_cannot_run_is_refused_naming_it(tmp_path, toy_data, capsys,
                                                                                     value, problem):
    from speechsum.training.trainer_settings import usable_cpus

    config = run_config(tmp_path, toy_data, max_steps=1)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--trainer.devices", value])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-2] == (
        "speechsum fit: error: trainer.devices " + problem.format(cpus=usable_cpus()))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="a machine without a GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_accelerator_on_a_machine_without_one_says_what_to_use(tmp_path, toy_data, capsys, accelerator):
    """Lightning's own words were "No supported gpu backend found!" (gpu), naming neither the setting nor the fix."""
    config = run_config(tmp_path, toy_data, max_steps=1)
    with pytest.raises(SystemExit) as info:
        main(["validate", "--config", str(config), "--trainer.accelerator", accelerator])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-2] == (
        "speechsum validate: error: trainer.accelerator must be cpu or auto on this machine, which has no CUDA GPU "
        f"that torch {torch.__version__} can use, got {accelerator}: set it to cpu (with precision 32-true or "
        "bf16-mixed; 16-mixed is a GPU's), or run on a machine with a GPU")

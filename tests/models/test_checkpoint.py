"""The one checkpoint loader: weights-only loading (a pickle payload is refused and never runs),
model config from hyperparameters or YAML, legacy class paths, weight matching."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
import yaml

from speechsum.cli import lightning_cli
from speechsum.evaluation.systems import SystemSpec, build_model
from speechsum.models.checkpoint import (
    LEGACY_MODULES,
    current_class_path,
    current_class_paths,
    load_model_weights,
    load_speech_llm,
    read_checkpoint,
)
from speechsum.models.composed import ComposedSpeechLLM
from speechsum.models.policy import TrainingPolicy
from speechsum.pairs import load_student
from tests.conftest import tiny_backbone_args
from tests.helpers import run_config

OLD_KD_CLASS = "speechsum.stages.kd.OnPolicyKDModule"  # before issue 14: the module speechsum/stages/kd.py
OLD_TEACHER_CLASS = "speechsum.teachers.HFTeacher"


class OpensAFile:
    """Unpickling this calls ``open(marker, "w")``: code run by merely loading a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def saved_stage(tmp_path_factory, toy_data):
    """A tiny composed SFT student as the Lightning CLI builds it: its config YAML, its
    trainable-only checkpoint whose hyperparameters are the CLI's config, and the module."""
    folder = tmp_path_factory.mktemp("stage")
    config = run_config(folder, toy_data)
    module = lightning_cli(["--config", str(config)], run=False).model
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    with torch.no_grad():  # weights unlike a fresh init, so loading them is visible
        for value in checkpoint["state_dict"].values():
            value.add_(0.5)
    torch.save(checkpoint, folder / "student.ckpt")
    return {"config": config, "ckpt": folder / "student.ckpt", "checkpoint": checkpoint}


def legacy_copy(saved_stage, folder):
    """The checkpoint and config again with the class paths a pre-issue-14 KD run recorded."""
    checkpoint = copy.deepcopy(saved_stage["checkpoint"])
    hparams = checkpoint["hyper_parameters"]
    assert hparams["_class_path"] == "speechsum.stages.sft.SFTModule"
    hparams["_class_path"] = OLD_KD_CLASS
    hparams["teacher"] = {"class_path": OLD_TEACHER_CLASS, "init_args": {"model": "no/such/teacher"}}
    torch.save(checkpoint, folder / "legacy.ckpt")
    config = yaml.safe_load(saved_stage["config"].read_text())
    config["model"]["class_path"] = OLD_KD_CLASS
    config["model"]["init_args"]["teacher"] = hparams["teacher"]
    config["trainer"]["callbacks"] = [{"class_path": "speechsum.callbacks.PredictionWriter",
                                       "init_args": {"output_path": str(folder / "p.jsonl")}}]
    config["data"]["max_audio_seconds"] = 7.5
    (folder / "legacy.yaml").write_text(yaml.safe_dump(config))
    return folder / "legacy.ckpt", folder / "legacy.yaml"


def assert_weights_loaded(model, checkpoint):
    own = model.state_dict()
    assert len(checkpoint["state_dict"]) > 10
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(own[key.removeprefix("model.")], value), key


def test_a_pickle_payload_is_refused_and_never_runs(saved_stage, tmp_path):
    checkpoint = dict(saved_stage["checkpoint"], hyper_parameters={"model": OpensAFile(tmp_path / "ran")})
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    for load in (
        lambda: read_checkpoint(tmp_path / "evil.ckpt"),
        lambda: load_speech_llm(tmp_path / "evil.ckpt"),
        lambda: build_model(SystemSpec("student", "evil", str(tmp_path / "evil.ckpt"))),
        lambda: load_student(str(tmp_path / "evil.ckpt"), str(saved_stage["config"])),
    ):
        with pytest.raises(ValueError, match=r"evil\.ckpt: refused: .*GLOBAL (io|builtins)\.open was not an allowed global"):
            load()
    assert not (tmp_path / "ran").exists()
    torch.load(tmp_path / "evil.ckpt", weights_only=False)  # the payload is real: the full unpickler runs it
    assert (tmp_path / "ran").exists()


def test_a_file_that_is_no_checkpoint_is_a_clear_error(saved_stage, tmp_path):
    good = saved_stage["ckpt"].read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(good[: len(good) // 2])  # a copy that stopped half way
    (tmp_path / "text.ckpt").write_text("epoch=3\n")  # not a torch file at all
    (tmp_path / "empty.ckpt").write_bytes(b"")
    cut = "the file ends early (a save or copy interrupted, a full disk?); copy it again or give the `.ckpt`"
    for name, message in (
        ("text.ckpt", "; give the `.ckpt`"),
        # before: torch's whole advice ("This is an internal miniz error. If you are seeing this error, …") and
        # "give the .ckpt a stage wrote" for the one it wrote, cut short
        ("cut.ckpt", f"(RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory): {cut}"),
        ("empty.ckpt", f"(EOFError: the file is empty): {cut}"),
    ):
        with pytest.raises(ValueError) as raised:
            read_checkpoint(tmp_path / name)
        assert str(raised.value).startswith(f"{tmp_path / name}: not a readable PyTorch checkpoint (")
        assert message in str(raised.value)


def test_the_model_comes_from_the_saved_hyperparameters_or_the_config(saved_stage):
    for config in (None, saved_stage["config"]):
        model, hparams = load_speech_llm(saved_stage["ckpt"], config)
        assert_weights_loaded(model, saved_stage["checkpoint"])
        assert hparams["_class_path"] == "speechsum.stages.sft.SFTModule"


def _edited(init_args: dict, edit: str) -> None:
    if edit == "typo":
        init_args["stak"] = init_args.pop("stack")
    elif edit == "type":
        init_args["stack"] = "four"
    else:
        init_args["projector"] = "linear"


@pytest.mark.parametrize(("edit", "problem"), [
    ("typo", "stak (a setting of speechsum.models.composed.ComposedSpeechLLM) (did you mean 'stack'?): in {file}:{line}"),
    ("type", "stack: expected an integer, got four: in {file}:{line}"),
    ("choice", "projector: expected one of 'mlp', 'ctc', got linear: in {file}:{line}"),
    ("no-class", None),
])
def test_a_config_whose_model_does_not_build_is_one_line_naming_the_setting(saved_stage, tmp_path, edit,
                                                                            problem):
    """``--config`` of summarize, export, evaluate and pairs: each was an ArgumentError traceback ending
    in a dump of the whole model config."""
    from speechsum.cli import main
    from speechsum.models.checkpoint import CheckpointError

    config = yaml.safe_load(saved_stage["config"].read_text())
    model = config["model"]["init_args"]["model"]
    if edit == "no-class":
        del model["class_path"]
    else:
        _edited(model["init_args"], edit)
    path = tmp_path / f"{edit}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    key = {"typo": "stak:", "type": "stack:", "choice": "projector:"}.get(edit, "class_path:")
    line = next(number for number, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith(key))
    ckpt = saved_stage["ckpt"]
    message = (f"{path}: model.init_args.model has no class_path: add the backbone's class, e.g. class_path: "
               "speechsum.models.composed.ComposedSpeechLLM" if problem is None else
               f"{path}: the model config does not build: {problem.format(file=path, line=line)}")
    with pytest.raises(CheckpointError) as info:
        load_speech_llm(ckpt, path)
    assert str(info.value) == f"{ckpt}: {message}"
    with pytest.raises(CheckpointError) as info:
        build_model(SystemSpec("student", "s", str(path)))
    assert str(info.value) == message
    with pytest.raises(SystemExit) as stop:
        main(["export", str(ckpt), "--config", str(path), "--out", str(tmp_path / "out")])
    assert stop.value.code == f"speechsum export: {ckpt}: {message}"
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_with_pre_issue_14_class_paths_still_loads(saved_stage, tmp_path):
    ckpt, config = legacy_copy(saved_stage, tmp_path)
    model, hparams = load_speech_llm(ckpt)
    assert hparams["_class_path"] == "speechsum.stages.kd.module.OnPolicyKDModule"
    assert hparams["teacher"]["class_path"] == "speechsum.stages.kd.teachers.HFTeacher"
    assert_weights_loaded(model, saved_stage["checkpoint"])

    spec = SystemSpec("student", "old_kd", str(ckpt))  # evaluation
    assert_weights_loaded(build_model(spec), saved_stage["checkpoint"])
    assert spec.stage == "kd"

    student = load_student(str(ckpt), str(config))  # pairs: the old config, never given to the CLI
    assert_weights_loaded(student.model, saved_stage["checkpoint"])
    assert student.max_audio_seconds == 7.5


def test_class_path_map():
    assert current_class_path(OLD_TEACHER_CLASS) == "speechsum.stages.kd.teachers.HFTeacher"
    assert current_class_path(OLD_KD_CLASS) == "speechsum.stages.kd.module.OnPolicyKDModule"
    assert current_class_path("speechsum.stages.base.GenerationSettings") == (
        "speechsum.models.generation.GenerationSettings"
    )
    for unchanged in ("speechsum.stages.kd.teachers.HFTeacher", "speechsum.models.composed.ComposedSpeechLLM",
                      "lightning.pytorch.callbacks.ModelCheckpoint", "ComposedSpeechLLM"):
        assert current_class_path(unchanged) == unchanged
    nested = {"class_path": "speechsum.remote.X", "init_args": {"a": [{"_class_path": "speechsum.serve.Y"}]}}
    assert current_class_paths(nested) == {
        "class_path": "speechsum.utils.remote.X", "init_args": {"a": [{"_class_path": "speechsum.serving.cli.Y"}]}
    }


def test_every_new_home_exists():
    for old, new in LEGACY_MODULES.items():
        module, _, name = new.rpartition(".")
        if old.endswith(name) and name[:1].isupper():  # a class entry
            assert hasattr(importlib.import_module(module), name), new
        else:
            importlib.import_module(new)


def test_weights_match_across_lora_wrapping_and_must_fit(tiny_composed):
    model = tiny_composed
    own = model.state_dict()
    wrapped = next(k for k in own if k.endswith(".base_layer.weight"))
    plain = wrapped.replace(".base_layer", "")
    value = torch.full_like(own[wrapped], 0.25)
    trainable = {f"model.{n}": p.detach() + 1 for n, p in model.trainable_parameters()}
    fresh = load_model_weights(model, {f"model.{plain}": value, **trainable}, "x.ckpt")
    assert fresh == [] and torch.equal(model.state_dict()[wrapped], value)
    with pytest.raises(ValueError, match=r"x\.ckpt: has weights this model lacks \(1 under no, e\.g\. \['no\.such'\]\): it was trained with "
                       r"another model config \(backbone, projector, LoRA targets\); build the model from the config"):
        load_model_weights(model, {"model.no.such": value}, "x.ckpt")
    with pytest.raises(ValueError, match=r"x\.ckpt: has weights this model lacks \(1 under <not model, e\.g\. \['<not model\.\*> teacher"):
        load_model_weights(model, {"teacher.w": value}, "x.ckpt")
    args = tiny_backbone_args()  # a CTC projector's checkpoint into an MLP projector's model
    ctc = ComposedSpeechLLM(**{**args, "policy": TrainingPolicy(**args["policy"]), "projector": "ctc"}).state_dict()
    ctc_only = {f"model.{k}": v for k, v in ctc.items() if k not in own}
    with pytest.raises(ValueError, match=rf"x\.ckpt: has weights this model lacks \({len(ctc_only)} under projector, "):
        load_model_weights(model, ctc_only, "x.ckpt")
    first = sorted(trainable)[0]
    with pytest.raises(ValueError, match=r"x\.ckpt: lacks 1 trainable weights of this model"):
        load_model_weights(model, {k: v for k, v in trainable.items() if k != first}, "x.ckpt")
    fresh = load_model_weights(model, {k: v for k, v in trainable.items() if k != first}, "x", require_trainable=False)
    assert fresh == [first.removeprefix("model.")]


@pytest.mark.parametrize(("hyper_parameters", "message"), [
    # a list where the mapping goes: was "AttributeError: 'list' object has no attribute 'get'"
    ([1], "the checkpoint does not record its model config; pass the config.yaml it was trained with (--config)"),
    ({"model": "composed"}, "the checkpoint does not record its model config; pass the config.yaml it was trained "
                            "with (--config)"),
    # a saved model config jsonargparse cannot build: was its traceback, ending in a dump of the union's subtypes
    ({"model": {"class_path": "nope.Nope"}}, "the model config does not build: class_path 'nope.Nope': no such class; "
     "pass the config.yaml it was trained with (--config)"),
    ({"model": {"class_path": "speechsum.models.composed.ComposedSpeechLLM", "init_args": {"bogus": 1}}},
     "the model config does not build: bogus (a setting of speechsum.models.composed.ComposedSpeechLLM); pass the "
     "config.yaml it was trained with (--config)"),
    ({"model": {"class_path": "torch.nn.Linear"}}, "model.init_args.model: torch.nn.Linear is not a speechsum backbone "
     "(a SpeechLLM): give one, e.g. class_path: speechsum.models.composed.ComposedSpeechLLM; pass the config.yaml it "
     "was trained with (--config)"),
])
def test_a_checkpoint_whose_saved_model_config_cannot_be_built_is_one_clear_error(tmp_path, hyper_parameters, message):
    ckpt = tmp_path / "stage.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": hyper_parameters}, ckpt)
    with pytest.raises(ValueError) as caught:
        load_speech_llm(ckpt)
    assert str(caught.value) == f"{ckpt}: {message}"


def test_an_evaluated_student_yaml_naming_no_backbone_is_named(tmp_path):
    config = tmp_path / "student.yaml"
    config.write_text("model:\n  init_args:\n    model:\n      class_path: torch.nn.Linear\n")
    with pytest.raises(ValueError) as caught:
        build_model(SystemSpec(kind="student", name="base", path=str(config)))
    assert str(caught.value) == (f"{config}: model.init_args.model: torch.nn.Linear is not a speechsum backbone (a "
                                 "SpeechLLM): give one, e.g. class_path: speechsum.models.composed.ComposedSpeechLLM")

"""`speechsum pipeline` checks every training stage's assembled config when it starts, before the first
stage runs (speechsum/pipeline/checks.py, stage_values.py): a misspelt key or class, a wrong type or a
value that can only be a mistake in a later stage's `overrides` was found only when that stage started,
after every stage before it. Also the pipeline YAML's own mistakes (duplicate keys, tabs, an empty file)
and `--from` a stage whose inputs are not there."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

import speechsum.pipeline.cli as pipeline
from speechsum.pipeline.checks import check_stage_configs
from speechsum.pipeline.command_args import check_command_args
from speechsum.pipeline.config import TRAINING_STAGES, load_pipeline_config
from speechsum.pipeline.table import PIPELINE, STAGES
from tests.conftest import CONFIGS

PRESETS = sorted((CONFIGS / "pipeline").glob("*.yaml"))
DEFAULT = yaml.safe_load((CONFIGS / "pipeline" / "default.yaml").read_text())


def checked(tmp_path: Path, config: dict, **options) -> str:
    """The one-line error of ``config`` written to tmp_path/bad.yaml, without the file's name."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError) as error:
        check_stage_configs(load_pipeline_config(path), path, tmp_path / "run", **options)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def edited(stage: str, section: str, **settings) -> dict:
    """The default preset with ``settings`` added to ``stages.STAGE.overrides.SECTION`` (dotted: nested)."""
    config = copy.deepcopy(DEFAULT)
    group = "text_lms" if stage in ("backbone", "teacher") else "stages"
    node = config[group][stage]["overrides"]
    for key in section.split("."):
        node = node.setdefault(key, {})
    node.update(settings)
    return config


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_passes_the_check_of_every_stage(preset, tmp_path):
    check_stage_configs(load_pipeline_config(preset), preset, tmp_path / "run")


def test_a_number_written_the_way_the_stage_reads_it_is_not_refused(tmp_path):
    """`5e-4` is text to PyYAML and a number to the stage's own parser (``speechsum fit`` takes it)."""
    path = tmp_path / "sci.yaml"
    path.write_text(yaml.safe_dump(edited("dpo", "model.init_args", learning_rate="5e-4")))
    assert "learning_rate: 5e-4\n" in path.read_text()  # written unquoted, as a user writes it
    check_stage_configs(load_pipeline_config(path), path, tmp_path / "run")
    path.write_text(yaml.safe_dump(edited("dpo", "model.init_args", learning_rate="-5e-4")))
    with pytest.raises(ValueError, match=r"learning_rate must be a number above 0, got -0.0005"):
        check_stage_configs(load_pipeline_config(path), path, tmp_path / "run")


@pytest.mark.parametrize("mode", ["serve", "remote"])
def test_the_kd_stage_is_checked_with_the_teacher_it_will_get(mode, tmp_path):
    config = {**load_pipeline_config(CONFIGS / "pipeline" / "tiny.yaml"),
              "teacher": {"mode": mode, "base_url": "http://127.0.0.1:9/v1", "model": "t"}}
    check_stage_configs(config, "tiny.yaml", tmp_path / "run")


@pytest.mark.parametrize(("config", "message"), [
    (edited("dpo", "model.init_args", betta=0.2),
     "stages.dpo.overrides.model.init_args.betta: unknown setting of speechsum.stages.dpo.DPOModule (did you mean "
     "'beta'?): correct or remove it"),
    (edited("kd", "trainer", max_stepz=3),
     "stages.kd.overrides.trainer.max_stepz: unknown setting (did you mean 'max_steps'?): correct or remove it"),
    (edited("kd", "model.init_args.model.init_args", encoder_dtyp="bfloat16"),
     "stages.kd.overrides.model.init_args.model.init_args.encoder_dtyp: unknown setting of "
     "speechsum.models.composed.ComposedSpeechLLM (did you mean 'encoder_dtype'?): correct or remove it"),
    (edited("kd", "model.init_args.generation", max_new_tokns=3),
     "stages.kd.overrides.model.init_args.generation.max_new_tokns: unknown setting of "
     "speechsum.models.generation.GenerationSettings (did you mean 'max_new_tokens'?): correct or remove it"),
    (edited("sft", "data", max_batch_sise=3),
     "stages.sft.overrides.data.max_batch_sise: unknown setting (did you mean 'max_batch_size'?): correct or remove it"),
    (edited("sft", "trainer", callbacks=[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                          "init_args": {"dirpth": "x"}}]),
     "stages.sft.overrides.trainer.callbacks.0.init_args.dirpth: unknown setting of "
     "lightning.pytorch.callbacks.ModelCheckpoint (did you mean 'dirpath'?): correct or remove it"),
    (edited("teacher", "model.init_args", lerning_rate=0.1),
     "text_lms.teacher.overrides.model.init_args.lerning_rate: unknown setting of "
     "speechsum.stages.text_lm.TextLMModule (did you mean 'learning_rate'?): correct or remove it"),
    (edited("kd", "model.init_args", teacher={"class_path": "speechsum.stages.kd.HFTeachr"}),
     "stages.kd.overrides.model.init_args.teacher.class_path: no class speechsum.stages.kd.HFTeachr (module "
     "'speechsum.stages.kd' has no attribute 'HFTeachr'): give an importable class (module.Class)"),
    (edited("dpo", "model", class_path="speechsum.stages.dpo.DPOModul"),
     "stages.dpo.overrides.model.class_path: no class speechsum.stages.dpo.DPOModul (module 'speechsum.stages.dpo' "
     "has no attribute 'DPOModul'): give an importable class (module.Class)"),
    (edited("dpo", "model.init_args", beta="high"),
     "stages.dpo.overrides.model.init_args.beta: expected a number, got 'high': give a number"),
    (edited("kd", "trainer", max_steps=1.5),
     "stages.kd.overrides.trainer.max_steps: expected an integer, got '1.5': give an integer"),
    (edited("dpo", "model.init_args", loss_type="dpo"),
     "stages.dpo.overrides.model.init_args.loss_type: expected one of 'sigmoid', 'ipo', got 'dpo': give one of "
     "'sigmoid', 'ipo'"),
    (edited("dpo", "trainer", precision="bf17"),
     "stages.dpo.overrides.trainer.precision: expected an integer, one of 'transformer-engine', "
     "'transformer-engine-float16', '16-true', '16-mixed', 'bf16-true', 'bf16-mixed', '32-true', '64-true', one of "
     "'64', '32', '16', 'bf16' or null, got bf17"),
    (edited("dpo", "model", class_path=None),
     "stages.dpo.overrides.model.class_path: empty (null): give the class to build (module.Class)"),
    (edited("dpo", "model", clas_path="speechsum.stages.dpo.DPOModule"),
     "stages.dpo.overrides.model.clas_path: unknown key (did you mean 'class_path'?): a class setting takes "
     "class_path and init_args"),
    (edited("dpo", "model.init_args", generation=[64]),
     "stages.dpo.overrides.model.init_args.generation: expected the settings of GenerationSettings (a mapping), "
     "got [64]"),
    # values that can only be mistakes: named with the range allowed
    (edited("kd", "trainer", max_steps=0), "stages.kd.overrides.trainer.max_steps must be at least 1 (or -1: no "
                                           "limit), got 0"),
    (edited("dpo", "trainer", max_steps=-5), "stages.dpo.overrides.trainer.max_steps must be at least 1 (or -1: no "
                                             "limit), got -5"),
    (edited("align", "trainer", max_epochs=0), "stages.align.overrides.trainer.max_epochs must be at least 1 (or -1: "
                                               "no limit), got 0"),
    (edited("sft", "model.init_args", learning_rate=0),
     "stages.sft.overrides.model.init_args.learning_rate must be a number above 0, got 0.0"),
    (edited("backbone", "model.init_args", learning_rate=-0.001),
     "text_lms.backbone.overrides.model.init_args.learning_rate must be a number above 0, got -0.001"),
    (edited("dpo", "model.init_args", beta=0), "stages.dpo.overrides.model.init_args.beta must be a number above 0, "
                                               "got 0.0"),
    (edited("kd", "model.init_args", beta=1.5), "stages.kd.overrides.model.init_args.beta must be a number at least 0 "
                                                "and at most 1, got 1.5"),
    (edited("kd", "model.init_args", temperature=-1), "stages.kd.overrides.model.init_args.temperature must be a "
                                                      "number above 0, got -1.0"),
    (edited("dpo", "model.init_args.generation", max_new_tokens=0),
     "stages.dpo.overrides.model.init_args.generation.max_new_tokens must be at least 1, got 0"),
    (edited("align", "model.init_args.model.init_args", encoder_dtype="bfloat61"),
     "stages.align.overrides.model.init_args.model.init_args.encoder_dtype: expected one of 'float32', 'bfloat16', "
     "got 'bfloat61': give one of 'float32', 'bfloat16'"),
    (edited("sft", "model.init_args.model.init_args", projector="linear"),
     "stages.sft.overrides.model.init_args.model.init_args.projector: expected one of 'mlp', 'ctc', got 'linear': "
     "give one of 'mlp', 'ctc'"),
    (edited("sft", "data", max_batch_size=0),
     "stages.sft.overrides.data.max_batch_size must be at least 1 (or null: no cap), got 0"),
    (edited("sft", "data", max_audio_seconds=-1),
     "stages.sft.overrides.data.max_audio_seconds must be a number above 0 (or null: the backbone's limit), got -1.0"),
    (edited("sft", "trainer", accumulate_grad_batches=-2),
     "stages.sft.overrides.trainer.accumulate_grad_batches must be at least 1, got -2"),
])
def test_a_mistake_in_a_stages_overrides_is_one_line_naming_the_file_stage_and_key(config, message, tmp_path):
    assert checked(tmp_path, config) == message


@pytest.mark.parametrize(("stage", "section", "key", "value"), [
    ("kd", "data", "train_manifest", "/no/such/kd_train.jsonl"), ("sft", "model.init_args", "init_from", "/no/such/a.ckpt")])
def test_a_file_outside_the_run_folder_that_is_not_there_is_named_before_the_run(tmp_path, stage, section, key, value):
    """The stage failed on it only when it started, after the stages before it."""
    assert checked(tmp_path, edited(stage, section, **{key: value})) == (
        f"stages.{stage}.overrides.{section}.{key}: {value}: no such file (a relative path is from the working "
        "folder): correct the path")


def test_a_seed_numpy_cannot_take_is_named_before_the_run(tmp_path):
    """Lightning's seed_everything raised "-1 is not in bounds, numpy accepts ..." (a traceback) when the stage began."""
    config = copy.deepcopy(DEFAULT)
    config["stages"]["sft"]["overrides"]["seed_everything"] = -1
    assert checked(tmp_path, config) == ("stages.sft.overrides.seed_everything must be an integer from 0 to 4294967295 "
                                         "(what numpy's seeding takes), true for a random seed, or false, got -1")


def test_a_mistake_in_a_stages_own_config_file_names_that_file(tmp_path):
    own = tmp_path / "my_dpo.yaml"
    dpo = yaml.safe_load((CONFIGS / "dpo.yaml").read_text())
    dpo["model"]["init_args"]["rpo_alhpa"] = 0.1
    own.write_text(yaml.safe_dump(dpo))
    config = copy.deepcopy(DEFAULT)
    config["stages"]["dpo"]["config"] = str(own)
    assert checked(tmp_path, config) == (
        f"stages.dpo (config {own}): model.init_args.rpo_alhpa: unknown setting of speechsum.stages.dpo.DPOModule "
        "(did you mean 'rpo_alpha'?): correct or remove it")


def test_only_the_stages_this_run_reaches_are_checked(tmp_path):
    config = edited("dpo", "model.init_args", betta=0.2)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    check_stage_configs(load_pipeline_config(path), path, tmp_path / "run", PIPELINE.until(["sft"]))
    assert checked(tmp_path, config, wanted=PIPELINE.until(["dpo"])).startswith("stages.dpo.overrides.")
    off = copy.deepcopy(config)
    off["stages"]["align"] = False
    off["stages"]["dpo"]["overrides"]["model"]["init_args"].pop("betta")
    off["text_lms"]["backbone"]["overrides"]["trainer"]["max_steps"] = 0
    assert checked(tmp_path, off).startswith("text_lms.backbone.overrides.trainer.max_steps")
    assert TRAINING_STAGES == ("text_lm", "align", "text_teacher", "sft", "kd", "dpo")


def test_the_run_refuses_a_bad_later_stage_before_any_stage_runs(tmp_path):
    ran = []
    table = PIPELINE.with_runs({stage: lambda ctx: ran.append(ctx.stage) or [] for stage in STAGES})
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(edited("dpo", "model.init_args", beta=-0.1)))
    args = pipeline.build_parser().parse_args(["--config", str(path), "--run-dir", str(tmp_path / "run")])
    with pytest.raises(ValueError, match=re.escape(f"{path}: stages.dpo.overrides.model.init_args.beta must be a "
                                                   "number above 0, got -0.1")):
        pipeline.run_pipeline(args, table)
    assert ran == [] and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("benchmark:\n\tsize: tiny\n", "bad.yaml:2:1: not valid YAML: found character '\\t' that cannot start any "
                                   "token; YAML indents with spaces, never tabs: replace the tabs"),
    ("", "bad.yaml: empty (no settings): start from a preset, e.g. configs/pipeline/default.yaml (docs/pipeline.md)"),
    ("# only a comment\n", "bad.yaml: empty (no settings): start from a preset, e.g. configs/pipeline/default.yaml "
                           "(docs/pipeline.md)"),
    ("- benchmark\n", "bad.yaml: expected a mapping at the top level, got list"),
    ("benchmark: {size: tiny}\npairs: {num_samples: 2}\npairs: {num_samples: 4}\n",
     "bad.yaml:3: key 'pairs' is given twice (first on line 2); YAML would keep only the last: merge the two or "
     "delete one"),
    ("benchmark: {size: tiny}\nstages:\n  sft:\n    overrides: {trainer: {max_steps: 3}}\n  sft: {}\n",
     "bad.yaml:5: key 'sft' (under 'stages') is given twice (first on line 3); YAML would keep only the last: merge "
     "the two or delete one"),
])
def test_a_pipeline_yaml_that_cannot_be_meant_as_written_is_one_line(text, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text(text)
    with pytest.raises(ValueError) as error:
        load_pipeline_config("bad.yaml")
    assert str(error.value) == message


def test_a_duplicate_key_in_a_stage_config_file_is_named(tmp_path):
    own = tmp_path / "my_sft.yaml"
    own.write_text((CONFIGS / "sft.yaml").read_text() + "trainer:\n  max_steps: 5\n")
    config = copy.deepcopy(DEFAULT)
    config["stages"]["sft"]["config"] = str(own)
    lines = own.read_text().splitlines()
    first = lines.index("trainer:") + 1
    assert checked(tmp_path, config) == (f"stages.sft: {own}:{len(lines) - 1}: key 'trainer' is given twice (first on "
                                         f"line {first}); YAML would keep only the last: merge the two or delete one")


def test_from_a_stage_whose_inputs_are_not_there_is_refused(tmp_path):
    table = PIPELINE.with_runs({stage: lambda ctx: [] for stage in STAGES})
    run = tmp_path / "run"
    args = pipeline.build_parser().parse_args(["--preset", "tiny", "--run-dir", str(run), "--from", "dpo"])
    with pytest.raises(ValueError) as error:
        pipeline.run_pipeline(args, table)
    assert str(error.value) == (f"--from dpo: benchmark, text_lm, align, text_teacher, sft, kd, pairs, which it is "
                                f"built on, are not complete in --run-dir {run}: give the folder of an earlier run, "
                                "or leave out --from to build them first")
    assert not run.exists()
    args.from_stage = None
    pipeline.run_pipeline(args, table)
    args.from_stage = ["dpo"]
    assert pipeline.run_pipeline(args, table)["stages"]["dpo"]["status"] == "ran"


def test_from_a_stage_whose_inputs_lost_an_output_is_refused(tmp_path):
    """SFT's checkpoint deleted to save space: its marker was enough for --from dpo, and the run then
    rebuilt SFT, KD and the pairs before DPO; now it is refused as a missing marker is, clearing nothing."""
    run = tmp_path / "run"

    def writes(ctx) -> list[Path]:
        path = ctx.run_dir / ctx.stage / "out.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("done")
        return [path]

    table = PIPELINE.with_runs({stage: writes for stage in STAGES})
    args = pipeline.build_parser().parse_args(["--preset", "tiny", "--run-dir", str(run)])
    pipeline.run_pipeline(args, table)
    (run / "sft" / "out.txt").unlink()
    args.from_stage = ["dpo"]
    with pytest.raises(ValueError, match=r"^--from dpo: sft, which it is built on, is not complete"):
        pipeline.run_pipeline(args, table)
    assert all(pipeline.read_marker(run, stage) for stage in STAGES)


@pytest.mark.parametrize(("section", "args", "message"), [
    ("evaluate", ["--asr-dtpye", "bfloat16"], "evaluate.args: --asr-dtpye is not an option of speechsum evaluate (did "
     "you mean '--asr-dtype'?) (these options go to speechsum evaluate: see its --help)"),
    ("evaluate", ["--asr-dtype=float16"], "evaluate.args: --asr-dtype float16: not one of float32, bfloat16 (these "
     "options go to speechsum evaluate: see its --help)"),
    ("benchmark", ["--world", "compact-hread"], "benchmark.args: --world compact-hread: not one of full, compact, "
     "compact-unnamed, compact-heard (these options go to speechsum benchmark build: see its --help)"),
    ("benchmark", ["--wor", "full"], "benchmark.args: --wor is an abbreviation of --workers, --world of speechsum "
     "benchmark build (these options go to speechsum benchmark build: see its --help)"),
    # the value an option's own check refuses, or none: speechsum benchmark build / pairs / evaluate exited 2 when the
    # stage started (since 2026-12-07)
    ("benchmark", ["--train-docs", "0"], "benchmark.args: --train-docs 0: must be at least 1, got 0 (these options go "
     "to speechsum benchmark build: see its --help)"),
    ("pairs", ["--seed", "x"], "pairs.args: --seed x: expected an integer, got 'x' (these options go to speechsum pairs: see "
     "its --help)"),
    ("evaluate", ["--asr-dtype", "--seed", "3"], "evaluate.args: --asr-dtype: needs a value (none follows it) (these "
     "options go to speechsum evaluate: see its --help)"),
    ("pairs", ["--conc", "3", "--zap"], "pairs.args: --zap is not an option of speechsum pairs (these "
     "options go to speechsum pairs: see its --help)"),
])
def test_an_option_a_stages_command_would_refuse_is_refused_when_the_run_starts(section, args, message, tmp_path):
    config = copy.deepcopy(DEFAULT)
    config[section] = {**config.get(section, {}), "args": args}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    table = PIPELINE.with_runs({stage: lambda ctx: pytest.fail(f"{ctx.stage} ran") for stage in STAGES})
    run_args = pipeline.build_parser().parse_args(["--config", str(path), "--run-dir", str(tmp_path / "run")])
    with pytest.raises(ValueError) as error:
        pipeline.run_pipeline(run_args, table)
    assert str(error.value) == f"{path}: {message}"


def test_the_teacher_servers_options_are_checked_only_when_the_run_starts_that_server():
    config = load_pipeline_config(CONFIGS / "pipeline" / "default.yaml")
    config["teacher"] = {**config.get("teacher", {}), "serve_args": ["--no-such-option"]}
    check_command_args({**config, "teacher": {**config["teacher"], "mode": "inprocess"}}, "mine.yaml")
    with pytest.raises(ValueError, match=r"^mine.yaml: teacher.serve_args: --no-such-option is not an option of "):
        check_command_args({**config, "teacher": {**config["teacher"], "mode": "serve"}}, "mine.yaml")


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_presets_command_options_pass(preset):
    check_command_args(load_pipeline_config(preset), preset)


def test_under_a_remote_teacher_the_kd_stage_is_checked_on_its_remote_config(tmp_path):
    own = tmp_path / "my_kd_remote.yaml"
    kd = yaml.safe_load((CONFIGS / "kd_remote.yaml").read_text())
    kd["model"]["init_args"]["teacher"]["init_args"]["max_concurency"] = 4
    own.write_text(yaml.safe_dump(kd))
    config = copy.deepcopy(DEFAULT)
    config["stages"]["kd"]["remote_config"] = str(own)
    config["teacher"] = {"mode": "remote", "base_url": "http://127.0.0.1:9/v1", "model": "t"}
    message = checked(tmp_path, config)
    assert message.startswith(f"stages.kd (config {own}): model.init_args.teacher.init_args.max_concurency: unknown "
                              "setting of ")

"""Pipeline YAMLs that were mishandled before any stage ran, or only by a late stage: a ``data:``
that is not a mapping (an AttributeError traceback), keys and values silently ignored
(``data.tset``, ``text_lms: false``, an option in ``evaluate.args`` that a setting also sets),
evaluation settings that failed the first evaluation or the report after every training stage, a
``--preset`` that is a path, and a complete stage whose checkpoint was cut short."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from speechsum.pipeline.checks import check_stage_configs
from speechsum.pipeline.command_args import check_command_args
from speechsum.pipeline.config import load_pipeline_config, preset_path
from speechsum.pipeline.runner import default_threads
from speechsum.pipeline.table import PIPELINE, STAGES
from tests.conftest import REPO
from tests.pipeline.test_scheduler import run_in_process

TINY = yaml.safe_load((REPO / "configs" / "pipeline" / "tiny.yaml").read_text())
OWN_DATA = {"benchmark": None, "text_lms": None, "teacher_model": "t", "backbone": "b"}
SPLITS = "the test splits: test, test_unseen, test_xling; evaluate.args adds one: [--manifest, NAME=PATH]"


def tiny_with(tmp_path: Path, **sections) -> Path:
    """The tiny preset with ``sections`` replaced, written to ``tmp_path/edited.yaml``."""
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump({**TINY, **sections}, sort_keys=False))
    return path


def own_data(tmp_path: Path, **data) -> dict:
    for name in ("train", "val", "test"):
        (tmp_path / f"{name}.jsonl").write_text("")
    return {**OWN_DATA, "data": {"train": str(tmp_path / "train.jsonl"), "val": str(tmp_path / "val.jsonl"),
                                 "tests": {"test": str(tmp_path / "test.jsonl")}, **data}}


def evaluate_with(**settings) -> dict:
    return {"evaluate": {**TINY["evaluate"], **settings}}


@pytest.mark.parametrize(("sections", "message"), [
    # AttributeError: 'str' object has no attribute 'get' (a traceback)
    ({**OWN_DATA, "data": "my/manifests"}, "data: expected a mapping {train: manifest, val: manifest, tests: "
     "{name: manifest}}, got 'my/manifests'"),
    # trained the text LMs on the benchmark all the same
    ({"text_lms": False}, "text_lms: false: write `text_lms: null` to train no text LMs (then give `backbone:` and "
     "`teacher_model:`), or leave the key out to train them"),
    ({"stages": False}, "stages: false: the student stages cannot be left out; leave the key out for their defaults "
     "(`stages: {align: false}` leaves out the alignment only)"),
    # went on as the text "{'name': 'x'}" or "5" of a model
    ({**OWN_DATA, "teacher_model": 5}, "teacher_model: expected a hub id or a model folder (text), got 5"),
    # TypeError: 'int' object is not iterable (a traceback)
    ({"stages": {"sft": {"config": 5}}}, "stages.sft.config: expected a config file or a list of them, got 5"),
    # a setting whose default is null took any value: `--judge-base-url 5` failed the baselines stage, a list the report
    ({"judge": {"kind": "openai", "base_url": 5}}, "judge.base_url: expected text or null, got 5"),
    ({"report": {"metric": ["rouge"]}}, "report.metric: expected text or null, got ['rouge']"),
    # failed the first evaluation stage, after the backbone and teacher trained
    (evaluate_with(metrics="rouge,rogue"), "evaluate.metrics: unknown rogue; give a comma-separated subset of "
     "rouge,bertscore,fact_judge,llm_judge"),
    (evaluate_with(metrics="rouge,llm_judge"), "evaluate.metrics: llm_judge needs an LLM judge: set judge.kind openai "
     "(and its model, base_url), or leave llm_judge out (judge.kind openai adds it)"),
    (evaluate_with(systems=["teacher", "sft", "teacher"]), "evaluate.systems: teacher listed twice; list each row once"),
    (evaluate_with(system_splits={"cascade": ["tset"]}), f"evaluate.system_splits.cascade: 'tset' is not a test split; "
     f"{SPLITS}"),
    (evaluate_with(system_splits={"cascade": []}), f"evaluate.system_splits.cascade: no split (the row would not run); "
     f"{SPLITS}"),
    # failed the report, the last stage
    ({"report": {"metric": "rogue"}}, "report.metric: 'rogue' is not a score the evaluations compute (evaluate.metrics "
     "rouge,fact_judge): one of rouge1, rouge2, rougeL, rougeLsum, fact_judge, fact_recall, fact_hallucinated, "
     "hallucination, hallucinated_entities, repetition, length_words, compression, truncated, or null for the default"),
    ({**evaluate_with(metrics="rouge"), "report": {"metric": "fact_judge"}}, "report.metric: 'fact_judge' is not a "
     "score the evaluations compute (evaluate.metrics rouge): one of rouge1, rouge2, rougeL, rougeLsum, hallucination, "
     "hallucinated_entities, repetition, length_words, compression, truncated, or null for the default"),
    ({**evaluate_with(systems=["sft", "kd", "dpo"]), "report": {"baseline": "cascade"}},
     "report.baseline: 'cascade' is not among the evaluated rows (evaluate.systems: sft, kd, dpo): name one of them, "
     "or null for the first student row"),
])
def test_mishandled_pipeline_settings_are_refused_on_load(tmp_path, sections, message):
    path = tiny_with(tmp_path, **sections)
    with pytest.raises(ValueError) as error:
        load_pipeline_config(path)
    assert str(error.value) == f"{path}: {message}"


def test_an_unknown_data_key_is_refused_with_its_line_and_the_splits_of_own_data_are_checked(tmp_path):
    """``data: {..., tset: ...}`` was dropped without a word."""
    path = tiny_with(tmp_path, **own_data(tmp_path, tset="x.jsonl"))
    line = path.read_text().splitlines().index("  tset: x.jsonl") + 1
    with pytest.raises(ValueError) as error:
        load_pipeline_config(path)
    assert str(error.value) == (f"{path}: data: unknown key(s) ['tset'] (tset on line {line}); allowed: train, val, "
                                "tests (more test splits go under tests)")
    path = tiny_with(tmp_path, **own_data(tmp_path), **evaluate_with(system_splits={"cascade": ["test_unseen"]}))
    with pytest.raises(ValueError) as error:
        load_pipeline_config(path)
    assert str(error.value) == (f"{path}: evaluate.system_splits.cascade: 'test_unseen' is not a test split; the test "
                                "splits: test (data.tests); evaluate.args adds one: [--manifest, NAME=PATH]")


@pytest.mark.parametrize("report", [{"metric": "rouge"}, {"metric": "bertscore_f1"}, {"metric": "repetition"},
                                    {"baseline": "backbone"}])
def test_report_settings_the_evaluations_can_satisfy_are_kept(tmp_path, report):
    path = tiny_with(tmp_path, **evaluate_with(metrics="rouge,bertscore"), report=report)
    assert load_pipeline_config(path)["report"] == report


@pytest.mark.parametrize("name", ["ami/test", "ami test", "a,b", "-x"])
def test_a_test_split_name_the_evaluation_cannot_take_is_refused(tmp_path, name):
    """``--manifest ami/test=RUN/…`` was read as one path by speechsum evaluate: the baselines stage failed."""
    config = own_data(tmp_path)
    config["data"]["tests"] = {name: config["data"]["tests"]["test"]}
    path = tiny_with(tmp_path, **config)
    with pytest.raises(ValueError) as error:
        load_pipeline_config(path)
    assert str(error.value) == (f"{path}: data.tests: split name {name!r}: use letters, digits, _ . - (no '/', ',', "
                                "'=' or spaces; it names the split in the report and in evaluate.system_splits)")


def test_a_split_added_by_evaluate_args_may_be_named_in_system_splits(tmp_path):
    """How the results of 2026-12-06 evaluated `val` too (benchmarks/results/pipeline/heard_2026-12-06)."""
    for args in (["--manifest", "val=RUN/data/val.jsonl"], ["--manifest=val=RUN/data/val.jsonl"],
                 ["--manifest", "RUN/data/val.jsonl"]):  # the split is the file's stem
        path = tiny_with(tmp_path, **evaluate_with(system_splits={"sft": ["test", "val"]}, args=args))
        assert load_pipeline_config(path)["evaluate"]["system_splits"] == {"sft": ["test", "val"]}


@pytest.mark.parametrize(("section", "key", "args", "message"), [
    # argparse kept the last one: benchmark.size tiny built the small benchmark, and said nothing
    ("benchmark", "args", ["--size", "small"], "benchmark.args: --size: set by benchmark.size: change it there "
     "(these options go to speechsum benchmark build: see its --help)"),
    ("evaluate", "args", ["--max-new", "4"], "evaluate.args: --max-new: set by evaluate.max_new_tokens: change it "
     "there (these options go to speechsum evaluate: see its --help)"),
    ("pairs", "args", ["--temperature=0.5"], "pairs.args: --temperature: set by pairs.temperature: change it there "
     "(these options go to speechsum pairs: see its --help)"),
    ("teacher", "serve_args", ["--port", "8000"], "teacher.serve_args: --port: set by the pipeline: leave it out "
     "(these options go to speechsum serve: see its --help)"),
])
def test_an_extra_option_that_a_setting_also_sets_is_refused(tmp_path, section, key, args, message):
    settings = {**TINY[section], key: args, **({"mode": "serve"} if section == "teacher" else {})}
    path = tiny_with(tmp_path, **{section: settings})
    config = load_pipeline_config(path)
    with pytest.raises(ValueError) as error:
        check_command_args(config, path)
    assert str(error.value) == f"{path}: {message}"


def test_extra_options_no_setting_sets_are_passed_on(tmp_path):
    path = tiny_with(tmp_path, **evaluate_with(args=["--manifest", "val=x.jsonl", "--asr-dtype", "bfloat16"]),
                     benchmark={**TINY["benchmark"], "args": ["--train-docs", "3"]})
    check_command_args(load_pipeline_config(path), path)  # nothing refused


@pytest.mark.parametrize(("trainer", "message"), [
    (5, "trainer: expected a mapping, got 5"),  # AttributeError: 'int' object has no attribute 'get'
    ({"max_steps": 2, "callbacks": 5}, "trainer.callbacks: expected a list, got 5"),  # TypeError
])
def test_an_override_that_replaces_the_trainer_badly_is_named(tmp_path, trainer, message):
    sft = {**TINY["stages"]["sft"], "overrides": {"trainer": trainer}}
    path = tiny_with(tmp_path, stages={**TINY["stages"], "sft": sft})
    with pytest.raises(ValueError) as error:
        check_stage_configs(load_pipeline_config(path), path, tmp_path / "run", ["sft"])
    assert str(error.value) == f"{path}: stages.sft: {message}"


def test_a_stage_config_next_to_the_pipeline_yaml_is_pointed_at(tmp_path, monkeypatch):
    """Relative paths are read from the working folder: the error said only 'no such config file'."""
    monkeypatch.chdir(REPO)
    (tmp_path / "my_sft.yaml").write_text("trainer: {max_steps: 2}\n")
    path = tiny_with(tmp_path, stages={**TINY["stages"], "sft": {"config": "my_sft.yaml"}})
    with pytest.raises(ValueError) as error:
        load_pipeline_config(path)
    assert str(error.value) == (f"{path}: stages.sft.config: no such config file 'my_sft.yaml' (relative paths are "
                                f"read from the working folder {REPO}; the one next to edited.yaml is "
                                f"{tmp_path / 'my_sft.yaml'}: write that path)")


@pytest.mark.parametrize("name", ["../pipeline/tiny", str(REPO / "configs" / "pipeline" / "tiny")])
def test_a_preset_given_as_a_path_is_refused(name):
    """``--preset /abs/x`` loaded /abs/x.yaml and ``--preset ../pipeline/tiny`` the tiny preset, as presets."""
    with pytest.raises(FileNotFoundError) as error:
        preset_path(name)
    assert str(error.value) == (f"--preset {name}: a preset is a name, not a path; presets: default, full, large, "
                                f"tiny; a YAML of your own goes to --config {name}")


def checkpoint_writing_stages():
    """The pipeline with stand-in stages that each write ``RUN/<stage>/last.ckpt``, a zip as torch's."""
    def stage_function(stage: str):
        def run(ctx) -> list[Path]:
            out = ctx.run_dir / stage / "last.ckpt"
            ctx.run([sys.executable, "-c", f"import pathlib, zipfile; p = pathlib.Path({str(out)!r}); "
                     "p.parent.mkdir(parents=True, exist_ok=True); zipfile.ZipFile(p, 'w').writestr('data.pkl', "
                     "'x' * 4000)"])
            return [out]
        return run
    return PIPELINE.with_runs({stage: stage_function(stage) for stage in STAGES})


def test_a_complete_stage_whose_checkpoint_was_cut_short_runs_again(tmp_path, capsys):
    """Its marker kept it complete, and KD failed loading the SFT checkpoint after the stages before it."""
    table, run = checkpoint_writing_stages(), tmp_path / "run"
    run_in_process(run, table)
    checkpoint = run / "sft" / "last.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    capsys.readouterr()
    summary = run_in_process(run, table)
    ran = [stage for stage, entry in summary["stages"].items() if entry["status"] == "ran"]
    assert ran == ["sft", "kd", "pairs", "evaluate_sft", "evaluate_kd", "dpo", "evaluate_dpo", "report"]
    assert f"[7/14] sft … runs again: its output {checkpoint} is not a whole checkpoint (cut short)\n" in \
        capsys.readouterr().out
    with zipfile.ZipFile(checkpoint) as whole:
        assert whole.read("data.pkl") == b"x" * 4000


@pytest.mark.parametrize(("value", "threads"), [("3", 3), (" 2 ", 2), ("4,2", 4)])
def test_the_threads_default_to_omp_num_threads(monkeypatch, value, threads):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert default_threads() == threads


@pytest.mark.parametrize("value", ["abc", "0", "-2", "2.5", "100000"])
def test_an_omp_num_threads_that_is_no_count_is_refused(tmp_path, monkeypatch, value):
    """It was ignored without a word: the stages shared out every CPU instead; 100000 was given to
    each stage's command (100,000 OpenMP threads)."""
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(ValueError) as error:
        run_in_process(tmp_path / "run", checkpoint_writing_stages())
    assert str(error.value) == (f"OMP_NUM_THREADS={value!r} is not a number of threads (1 to 1024): set it to one, "
                                "unset it (every CPU this process may use), or give --threads N")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("marker", ["{}", "[1]", '{"elapsed_s": "3 s", "outputs": []}', '{"elapsed_s": 3, "outputs": "x"}'])
def test_a_marker_that_is_not_one_counts_as_none(tmp_path, capsys, marker):
    """A marker edited by hand or written by another program: KeyError 'elapsed_s' or AttributeError
    'list' object has no attribute 'get' (a traceback) when the run was started again."""
    table, run = checkpoint_writing_stages(), tmp_path / "run"
    run_in_process(run, table)
    (run / ".state" / "dpo.json").write_text(marker)
    summary = run_in_process(run, table)
    assert [stage for stage, entry in summary["stages"].items() if entry["status"] == "ran"] == [
        "dpo", "evaluate_dpo", "report"]
    assert "[12/14] dpo … runs again, so evaluate_dpo, report will too\n" in capsys.readouterr().out

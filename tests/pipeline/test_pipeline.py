"""`speechsum pipeline`: config resolution, stage markers, the stage table, and the tiny preset end to
end (every artefact, a rerun that skips every stage, `--from dpo`). The scheduler on stand-in
commands: test_scheduler.py."""

from __future__ import annotations

import argparse
import json
import re
from types import SimpleNamespace

import pytest
import yaml

from speechsum.pipeline.cli import clear_markers_from, read_marker
from speechsum.pipeline.config import (
    SECTION_DEFAULTS,
    TRAINING_STAGES,
    deep_merge,
    drop_wandb,
    load_pipeline_config,
    resolve_stage_config,
    rewrite_paths,
    section_options,
)
from speechsum.pipeline.runner import format_duration, marker_path
from speechsum.pipeline.stages import subset_manifest
from speechsum.pipeline.table import PIPELINE, STAGES, Stage, StageTable
from tests.conftest import CONFIGS, REPO

PRESETS = sorted((CONFIGS / "pipeline").glob("*.yaml"))


# -- config rewriting and merging ---------------------------------------------------------------
def test_deep_merge_merges_mappings_and_replaces_lists_and_other_classes():
    base = {"trainer": {"max_steps": 10, "logger": [1, 2]},
            "model": {"class_path": "A", "init_args": {"lr": 1, "keep": True}}}
    merged = deep_merge(base, {"trainer": {"max_steps": 3, "logger": [9]}, "model": {"init_args": {"lr": 2}}})
    assert merged == {"trainer": {"max_steps": 3, "logger": [9]},
                      "model": {"class_path": "A", "init_args": {"lr": 2, "keep": True}}}
    other = deep_merge(base, {"model": {"class_path": "B", "init_args": {"x": 1}}})
    assert other["model"] == {"class_path": "B", "init_args": {"x": 1}}  # nothing of A's init_args left
    assert base["trainer"]["max_steps"] == 10  # inputs untouched


def test_rewrite_paths_replaces_whole_prefixes_only():
    mapping = {"runs/benchmark/kd_remote": "/run/kd", "runs/benchmark": "/run"}
    node = {"a": "runs/benchmark/data/train.jsonl", "b": ["runs/benchmark", "runs/benchmark_old/x"],
            "c": "runs/benchmark/kd_remote/checkpoints", "d": 3, "e": "xruns/benchmark/y"}
    assert rewrite_paths(node, mapping) == {
        "a": "/run/data/train.jsonl", "b": ["/run", "runs/benchmark_old/x"], "c": "/run/kd/checkpoints",
        "d": 3, "e": "xruns/benchmark/y"}


def test_drop_wandb_keeps_other_loggers():
    config = {"trainer": {"logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger"},
                                     {"class_path": "speechsum.training.loggers.WandbLogger"}]}}
    assert drop_wandb(config)["trainer"]["logger"] == [{"class_path": "lightning.pytorch.loggers.CSVLogger"}]


def test_stage_config_is_rewritten_overridden_and_has_no_wandb(tmp_path):
    config = {"benchmark": {"size": "tiny"}, "text_lms": {"backbone": {}},
              "stages": {"sft": {"config": "configs/sft.yaml", "overrides": {"trainer": {"max_steps": 7}}},
                         "kd": {"overrides": {"data": {"train_manifest": "runs/benchmark/data/kd_train.jsonl"}}}}}
    resolved = resolve_stage_config(config, "sft", tmp_path)
    text = yaml.safe_dump(resolved)
    assert "runs/benchmark" not in text and "WandbLogger" not in text
    assert resolved["trainer"]["max_steps"] == 7
    kd = resolve_stage_config(config, "kd", tmp_path, teacher={"mode": "inprocess"})  # overrides' paths too
    assert kd["data"]["train_manifest"] == f"{tmp_path}/data/kd_train.jsonl"
    assert resolved["data"]["train_manifest"] == f"{tmp_path}/data/train.jsonl"
    assert resolved["model"]["init_args"]["model"]["init_args"]["llm"] == f"{tmp_path}/text_lm/model"
    assert resolved["model"]["init_args"]["init_from"] == f"{tmp_path}/align/checkpoints/last.ckpt"
    assert "WandbLogger" in yaml.safe_dump(resolve_stage_config(config, "sft", tmp_path, wandb=True))
    align = resolve_stage_config(config, "align", tmp_path)
    assert align["model"]["init_args"]["model"]["init_args"]["llm"] == f"{tmp_path}/text_lm/model"
    assert align["trainer"]["default_root_dir"] == f"{tmp_path}/align"
    assert align["data"]["train_manifest"] == f"{tmp_path}/data/train.jsonl"
    no_align = resolve_stage_config({**config, "stages": {"align": False}}, "sft", tmp_path)
    assert no_align["model"]["init_args"]["init_from"] is None  # stages.align: false: SFT starts afresh
    remote = resolve_stage_config(config, "kd", tmp_path, teacher={
        "mode": "serve", "base_url": "http://127.0.0.1:1/v1", "model": "teacher", "api_key_env": "K"})
    teacher = remote["model"]["init_args"]["teacher"]["init_args"]
    assert teacher["base_url"] == "http://127.0.0.1:1/v1" and teacher["api_key_env"] == "K"
    assert teacher["tokenizer"] == f"{tmp_path}/text_teacher/model"
    assert remote["trainer"]["default_root_dir"] == f"{tmp_path}/kd"  # kd_remote writes where kd does


def test_real_model_wiring(tmp_path):
    """`data:` manifests, `backbone:` and `teacher_model:` replace the benchmark's paths."""
    d = tmp_path / "d"  # the manifests must exist: they are checked when the YAML is loaded
    d.mkdir()
    for name in ("train", "val", "ami"):
        (d / f"{name}.jsonl").write_text("{}\n")
    config_path = tmp_path / "real.yaml"
    config_path.write_text(yaml.safe_dump({
        "benchmark": None, "text_lms": None, "backbone": "org/backbone", "teacher_model": "org/teacher",
        "data": {"train": f"{d}/train.jsonl", "val": f"{d}/val.jsonl", "tests": {"ami": f"{d}/ami.jsonl"}}}))
    config = load_pipeline_config(config_path)
    kd = resolve_stage_config(config, "kd", tmp_path, teacher={"mode": "inprocess"})
    align = resolve_stage_config(config, "align", tmp_path)
    assert align["data"]["train_manifest"] == f"{d}/train.jsonl" and align["data"]["val_manifest"] == f"{d}/val.jsonl"
    assert "test_manifest" not in align["data"]
    assert align["model"]["init_args"]["model"]["init_args"]["llm"] == "org/backbone"
    assert kd["data"]["train_manifest"] == f"{d}/train.jsonl" and kd["data"]["test_manifest"] == f"{d}/ami.jsonl"
    assert kd["model"]["init_args"]["model"]["init_args"]["llm"] == "org/backbone"
    assert kd["model"]["init_args"]["teacher"]["init_args"]["model"] == "org/teacher"
    dpo = resolve_stage_config(config, "dpo", tmp_path)
    assert dpo["data"]["train_manifest"] == f"{tmp_path}/pairs/train.jsonl"


@pytest.mark.parametrize("content, message", [
    ({"benchmark": {"size": "tiny"}, "text_lm": {}}, "unknown key(s) ['text_lm'] (text_lm on line 3, did you mean 'text_lms'?)"),
    ({"benchmark": {"size": "tiny"}, "trainer": {}}, "unknown key(s) ['trainer'] (trainer on line 3): a config of "
                                                     "speechsum fit? the pipeline takes one as stages.STAGE.config"),
    ({"benchmark": None, "text_lms": None, "teacher_model": "t"}, "give `benchmark:`"),
    ({"benchmark": None, "data": {"train": "a", "val": "b"}, "teacher_model": "t"}, "missing ['tests']"),
    ({"benchmark": {"size": "tiny"}, "text_lms": None}, "teacher_model"),
    ({"benchmark": {"size": "tiny"}, "text_lms": {}, "stages": {"sfft": {}}}, "stages.sfft"),
    ({"benchmark": {"size": "tiny"}, "text_lms": {}, "stages": {"sft": False}}, "stages.sft: expected a mapping"),
    ({"benchmark": None, "data": {"train": "a", "val": "b", "tests": {"t": "c"}}}, "set `text_lms: null`"),
    ({"benchmark": {"size": "tiny"}, "judge": {"kind": "openai", "api_key": "sk-x"}}, "judge.api_key"),
    ({"benchmark": {"size": "tiny"}, "teacher": {"api_key_env": "sk-PROBE-123"}},
     "teacher.api_key_env: expected the name of the environment variable holding the API key"),
    # the settings sections are checked when the YAML is loaded, not when their stage starts hours later
    ({"benchmark": {"size": "tiny"}, "judge": {"kind": "opanai"}}, "judge.kind: 'opanai' is not one of fact, openai"),
    ({"benchmark": {"size": "tiny"}, "teacher": {"mode": "remtoe"}}, "teacher.mode: 'remtoe' is not one of"),
    ({"benchmark": {"size": "tiny"}, "pairs": {"train_exmaples": 4}}, "pairs: unknown key(s) ['train_exmaples']"),
    ({"benchmark": {"size": "tiny"}, "pairs": {"train_examples": "many"}}, "pairs.train_examples: expected a number, got 'many'"),
    ({"benchmark": {"size": "tiny"}, "pairs": {"train_examples": -1}}, "pairs.train_examples: must be at least 1, got -1"),
    ({"benchmark": {"size": "tiny"}, "pairs": {"num_samples": 2.5}}, "pairs.num_samples: expected an integer, got '2.5'"),
    ({"benchmark": {"size": "tiny"}, "pairs": True}, "pairs: expected a mapping of settings"),
    ({"benchmark": {"size": "tiny"}, "pairs": {"temperature": "hot"}}, "pairs.temperature: expected a number, got 'hot'"),
    ({"benchmark": {"size": "tiny"}, "pairs": {"add_reference": "yes"}}, "pairs.add_reference: expected bool"),
    ({"benchmark": {"size": "tiny"}, "evaluate": {"examples_per_split": 0}}, "evaluate.examples_per_split: must be at least 1, got 0 (null: all)"),
    ({"benchmark": {"size": "tiny"}, "evaluate": {"systems": ["kdd"]}}, "evaluate.systems: unknown ['kdd']"),
    ({"benchmark": {"size": "tiny"}, "evaluate": {"system_splits": {"cascade": "test"}}}, "evaluate.system_splits:"),
    ({"benchmark": {"size": "tiny", "sede": 1}}, "benchmark: unknown key(s) ['sede'] (sede on line 2, did you mean 'seed'?)"),
    # found at load, not after the stages before the one that reads them
    ({"benchmark": {"size": "tiny"}, "pairs": {"num_samples": 1}}, "pairs.num_samples: must be at least 2, got 1"),
    # the same limits as the command the setting goes to (speechsum pairs refuses these)
    ({"benchmark": {"size": "tiny"}, "pairs": {"num_samples": 100}}, "pairs.num_samples: must be at most 64, got 100"),
    ({"benchmark": {"size": "tiny"}, "pairs": {"temperature": 0}}, "pairs.temperature: must be a number above 0"),
    ({"benchmark": {"size": "tiny"}, "pairs": {"top_p": 0.0}}, "pairs.top_p: must be a number above 0 and at most 1"),
    ({"benchmark": {"size": "tiny", "text_documents": -5}}, "benchmark.text_documents: must be at least 0, got -5"),
    # past what any machine can do: refused by the stage's command (since 2026-12-07) when that stage started
    ({"benchmark": {"size": "tiny", "text_documents": 10**12}},
     "benchmark.text_documents: must be at most 10000000, got 1000000000000"),
    ({"benchmark": {"size": "tiny"}, "evaluate": {"batch_size": 10**8}}, "evaluate.batch_size: must be at most 65536, got "
     "100000000"),
    ({"benchmark": {"size": "tiny"}, "pairs": {"max_new_tokens": 10**12}},
     "pairs.max_new_tokens: must be at most 1048576, got 1000000000000"),
    # refused by the textcorpus stage only, after the benchmark was built
    ({"benchmark": {"size": "tiny", "text_unseen_share": -0.5}},
     "benchmark.text_unseen_share: must be a share at least 0 and at most 1, got -0.5"),
    ({"benchmark": {"size": "tiny", "text_xling_share": 2}}, "benchmark.text_xling_share: must be a share at least 0 "
     "and at most 1, got 2"),
    # refused by the tokenizer stage (after the benchmark was built), and by the benchmark stage as `--size`
    ({"benchmark": {"size": "tiny", "vocab_size": 100}}, "benchmark.vocab_size: must be at least 261, got 100"),
    ({"benchmark": {"size": "huge"}}, "benchmark.size: 'huge' is not one of tiny, small, default"),
    # refused by speechsum pairs (--judge-base-url) after SFT and KD, or by the KD teacher's first request
    ({"benchmark": {"size": "tiny"}, "judge": {"kind": "openai", "base_url": "localhost:8000/v1"}},
     "judge.base_url: 'localhost:8000/v1' is not an http:// or https:// URL; write it whole, e.g. http://localhost:8000/v1"),
    ({"benchmark": {"size": "tiny"}, "teacher": {"mode": "remote", "base_url": "http:///v1"}},
     "teacher.base_url: 'http:///v1' names no host: write it whole, e.g. http://127.0.0.1:8000/v1"),
    ({"benchmark": {"size": "tiny"}, "text_lms": {}, "stages": {"sft": {"config": "configs/nope.yaml"}}},
     "stages.sft.config: no such config file 'configs/nope.yaml'"),
    ({"benchmark": {"size": "tiny"}, "text_lms": {}, "stages": {"sft": {"config": "configs/sft.yaml", "overrides": [1]}}},
     "stages.sft.overrides: expected a mapping"),
    ({"benchmark": {"size": "tiny"}, "text_lms": {}, "stages": [1, 2]}, "stages: expected a mapping of stage"),
    # a manifest of data: that is not there, found at load and not by the stage that reads it
    ({"benchmark": None, "text_lms": None, "teacher_model": "t", "data": {"train": "no/train.jsonl", "val": "v",
      "tests": {"t": "c"}}}, "data.train: no manifest file no/train.jsonl (relative paths are read from the working folder "),
    ({"benchmark": None, "text_lms": None, "teacher_model": "t", "data": {"train": "a", "val": "v", "tests": ["c"]}},
     "data.tests: expected a mapping {name: manifest}, got ['c']"),
])
def test_bad_pipeline_configs_name_the_file_and_key(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        load_pipeline_config(path)
    assert str(path) in str(error.value)


def test_a_folder_given_as_the_pipeline_config_is_named_as_one(tmp_path):
    """It was reported as "no such config file"."""
    with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path))} is a folder: give a YAML file$"):
        load_pipeline_config(tmp_path)


def test_section_options_fill_in_the_defaults_and_keep_good_values(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({"benchmark": {"size": "tiny"}, "pairs": {"temperature": 1, "train_examples": 3},
                                    "evaluate": {"examples_per_split": None}, "report": {"metric": None}}))
    config = load_pipeline_config(path)  # an int where the default is a float, and nulls, are fine
    assert section_options(config, "pairs") == {**SECTION_DEFAULTS["pairs"], "temperature": 1, "train_examples": 3}
    assert section_options(config, "judge") == SECTION_DEFAULTS["judge"]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_resolve_for_every_training_stage(preset, tmp_path):
    config = load_pipeline_config(preset)
    for stage in TRAINING_STAGES:
        resolved = resolve_stage_config(config, stage, tmp_path, teacher={"mode": "inprocess"})
        assert resolved["trainer"]["default_root_dir"] == f"{tmp_path}/{stage}"
        assert "runs/benchmark" not in yaml.safe_dump(resolved)


def test_large_preset_is_the_default_recipe_evaluated_on_more_examples():
    """The large preset promises the default run's table with tighter intervals: every training setting
    and every train/val document the same (documents are seeded by id, so larger test splits leave
    them alone), only the test splits and the evaluation larger."""
    default, large = (yaml.safe_load((CONFIGS / "pipeline" / f"{name}.yaml").read_text()) for name in ("default", "large"))
    split_flags = ("--test-docs", "--test-unseen-docs", "--test-xling-docs")
    default_args, large_args = (dict(zip(c["benchmark"]["args"][::2], c["benchmark"]["args"][1::2])) for c in (default, large))
    assert {k: v for k, v in large_args.items() if k not in split_flags} == {
        k: v for k, v in default_args.items() if k not in split_flags}
    assert all(large_args[flag] >= 3 * default_args[flag] for flag in split_flags)
    for section in set(default) | set(large):
        if section not in ("benchmark", "evaluate"):
            assert large.get(section) == default.get(section), section
    assert {k: v for k, v in large["benchmark"].items() if k != "args"} == {
        k: v for k, v in default["benchmark"].items() if k != "args"}
    assert large["evaluate"]["examples_per_split"] is None and not large["evaluate"]["system_splits"]
    assert set(default["evaluate"]["metrics"].split(",")) <= set(large["evaluate"]["metrics"].split(","))
    assert {k: v for k, v in large["evaluate"].items() if k not in ("system_splits", "metrics")} == {
        k: v for k, v in default["evaluate"].items() if k not in ("system_splits", "metrics")}


# -- markers and helpers ---------------------------------------------------------------------------
def test_markers_clear_from_a_stage_on_and_broken_markers_do_not_count(tmp_path):
    for stage in STAGES:
        marker_path(tmp_path, stage).parent.mkdir(parents=True, exist_ok=True)
        marker_path(tmp_path, stage).write_text(json.dumps({"stage": stage, "elapsed_s": 1.0}))
    assert clear_markers_from(tmp_path, "dpo") == ["dpo", "evaluate_dpo", "report"]
    assert read_marker(tmp_path, "pairs") is not None and read_marker(tmp_path, "dpo") is None
    # the teacher: what is built on it (the baselines, KD and after), not the backbone lane
    assert clear_markers_from(tmp_path, "text_teacher") == ["text_teacher", "baselines", "kd", "pairs", "evaluate_kd"]
    assert read_marker(tmp_path, "align") is not None and read_marker(tmp_path, "sft") is not None
    marker_path(tmp_path, "pairs").write_text('{"stage": "pa')  # torn write: not complete
    assert read_marker(tmp_path, "pairs") is None


def test_format_duration():
    assert [format_duration(s) for s in (4.4, 72, 303, 3723)] == ["4s", "1m12s", "5m03s", "1h02m03s"]


def test_subset_manifest_spreads_and_makes_audio_absolute(tmp_path):
    source = tmp_path / "data" / "test.jsonl"
    source.parent.mkdir()
    source.write_text("".join(json.dumps({"id": f"x{i}", "audio": f"audio/{i}.wav"}) + "\n" for i in range(10)))
    ids = subset_manifest(source, tmp_path / "out" / "test.jsonl", 3)
    assert ids == ["x0", "x3", "x6"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "test.jsonl").read_text().splitlines()]
    assert rows[1]["audio"] == str(tmp_path / "data" / "audio" / "3.wav")
    assert len(subset_manifest(source, tmp_path / "all.jsonl", None)) == 10


def test_subset_manifest_joins_paths_as_load_manifest_does(tmp_path):
    """Relative paths are joined and normalised, not resolved: a symlinked audio folder keeps its
    name (load_manifest's rule); a NUL in ``audio`` names the file, line and field."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "audio").symlink_to(tmp_path / "elsewhere")
    source = tmp_path / "data" / "test.jsonl"
    source.write_text(json.dumps({"id": "a", "audio": "audio/./x.wav"}) + "\n" + json.dumps({"id": "b", "audio": "y\0.wav"}) + "\n")
    with pytest.raises(ValueError, match=r"test.jsonl: line 2: field 'audio': .*NUL character"):
        subset_manifest(source, tmp_path / "out.jsonl", None)
    source.write_text(json.dumps({"id": "a", "audio": "audio/./x.wav"}) + "\n")
    subset_manifest(source, tmp_path / "out.jsonl", None)
    assert json.loads((tmp_path / "out.jsonl").read_text())["audio"] == str(tmp_path / "data" / "audio" / "x.wav")


def test_subset_manifest_keeps_line_separators_in_strings_and_the_files_line_numbers(tmp_path):
    """U+2028/U+2029/U+0085 inside strings are no line ends (as in load_manifest): the rows come
    through whole, and a bad line is named by its number in the file."""
    source = tmp_path / "test.jsonl"
    rows = [{"id": f"x{i}", "audio": "/a.wav", "summary": f"a\u2028b\u2029c\x85d {i}"} for i in range(2)]
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert subset_manifest(source, tmp_path / "out.jsonl", None) == ["x0", "x1"]
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().split(b"\n") if line] == rows
    source.write_text(source.read_text(encoding="utf-8") + "{bad\n", encoding="utf-8")
    with pytest.raises(ValueError, match="test.jsonl: line 3: invalid JSON"):
        subset_manifest(source, tmp_path / "out.jsonl", None)
    source.write_text(json.dumps(rows) + "\n", encoding="utf-8")  # an AttributeError traceback before
    with pytest.raises(ValueError) as error:
        subset_manifest(source, tmp_path / "out.jsonl", None)
    assert str(error.value) == f"{source}: line 1: expected a JSON object (one example), got list; write one object per line"


def test_a_student_stage_left_out_by_evaluate_systems_leaves_the_other_rows_in_the_summary(tmp_path):
    """evaluate_sft with `evaluate.systems: [kd, dpo]`: nothing evaluated, and RUN/evaluate/summary.csv
    rebuilt from the rows there (its own was deleted before it ran)."""
    stat = {"mean": 0.5, "low": 0.4, "high": 0.6, "n": 2}
    (tmp_path / "evaluate" / "kd").mkdir(parents=True)
    (tmp_path / "evaluate" / "kd" / "metrics.json").write_text(json.dumps(
        {"system": {"role": "student", "stage": "kd"}, "results": {"all": {"rougeL": stat}}}))
    (tmp_path / "evaluate" / "summary.csv").write_text("system\nsft\n")  # stale
    ctx = SimpleNamespace(run_dir=tmp_path, stage="evaluate_sft", note=print,
                          config={"benchmark": {"size": "tiny"}, "evaluate": {"systems": ["kd", "dpo"]}})
    assert PIPELINE["evaluate_sft"].run(ctx) == []
    assert PIPELINE["evaluate_sft"].outputs(ctx) == [tmp_path / "evaluate" / "sft"]
    rows = (tmp_path / "evaluate" / "summary.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["system", "kd"]


def test_student_evaluation_reuses_the_old_single_stage_verdicts_and_keeps_its_judge_usage(tmp_path):
    """A run folder from before the split (one `evaluate` stage, verdicts in llm_judge.jsonl): each
    student stage starts its own verdict cache from that file, so no paid verdict is asked again;
    the judge's usage file gets the stage's name (three stages write into RUN/evaluate/)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_text(json.dumps({"id": "a", "audio": "a.wav"}) + "\n")
    (tmp_path / "kd" / "checkpoints").mkdir(parents=True)
    (tmp_path / "kd" / "checkpoints" / "last.ckpt").write_text("")
    (tmp_path / "evaluate_cache").mkdir()
    (tmp_path / "evaluate_cache" / "llm_judge.jsonl").write_text('{"key": "k", "value": {"score": 7}}\n')
    commands = []

    def run(command):  # stands in for `speechsum evaluate`: what it writes when the judge is used
        commands.append(command)
        (tmp_path / "evaluate" / "kd").mkdir(parents=True)
        (tmp_path / "evaluate" / "kd" / "metrics.json").write_text(json.dumps(
            {"system": {"role": "student", "stage": "kd"}, "results": {"all": {}}}))
        (tmp_path / "evaluate" / "llm_judge_usage.json").write_text("{}")

    ctx = SimpleNamespace(run_dir=tmp_path, stage="evaluate_kd", note=print, run=run, wandb=False,
                          config={"benchmark": {"size": "tiny"}, "judge": {"kind": "openai", "model": "m"}})
    PIPELINE["evaluate_kd"].run(ctx)
    cache = tmp_path / "evaluate_cache" / "llm_judge_evaluate_kd.jsonl"
    assert commands[0][commands[0].index("--judge-cache") + 1] == str(cache)
    assert cache.read_text() == '{"key": "k", "value": {"score": 7}}\n'
    assert (tmp_path / "evaluate" / "llm_judge_usage_evaluate_kd.json").is_file()
    assert not (tmp_path / "evaluate" / "llm_judge_usage.json").exists()


def test_from_and_until_take_comma_lists_and_evaluate_means_every_student_evaluation():
    from speechsum.pipeline.cli import stage_list

    assert stage_list("evaluate") == ["evaluate_sft", "evaluate_kd", "evaluate_dpo"]
    assert stage_list("dpo, evaluate_dpo,evaluate") == ["dpo", "evaluate_dpo", "evaluate_sft", "evaluate_kd"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown stage"):
        stage_list("dpo,evaluation")


def test_the_stage_table_lists_every_stage_after_what_it_needs():
    assert STAGES == ("benchmark", "text_lm", "align", "text_teacher", "features", "baselines", "sft", "kd", "pairs",
                      "evaluate_sft", "evaluate_kd", "dpo", "evaluate_dpo", "report")
    assert PIPELINE.downstream("text_lm") == [s for s in STAGES if s not in ("benchmark", "text_lm", "text_teacher")]
    assert PIPELINE.upstream("sft") == {"benchmark", "text_lm", "align"}  # not the teacher
    assert [s.name for s in PIPELINE if s.resumes] == list(TRAINING_STAGES)
    assert PIPELINE.label("align") == "[3/14] align"
    # the scheduler's priority: the longest chain of stages still to come (kd before evaluate_sft),
    # counting the stages that wait for it (the evaluations wait for features without reading it):
    # features (3) before baselines (2), dpo (3) before the SFT and KD evaluations (2)
    assert {s: PIPELINE.chain(s) for s in ("text_lm", "text_teacher", "features", "kd", "baselines", "evaluate_sft",
                                           "dpo", "report")} \
        == {"text_lm": 8, "text_teacher": 6, "features": 3, "kd": 5, "baselines": 2, "evaluate_sft": 2, "dpo": 3,
            "report": 1}
    assert PIPELINE.upstream("dpo") == {"benchmark", "text_lm", "align", "text_teacher", "sft", "kd", "pairs"}
    first = PIPELINE.epilog().splitlines()[:3]
    assert first == ["  benchmark     build the bundled benchmark, the text corpus and the tokenizer",
                     "  text_lm       train the text backbone (needs benchmark)",
                     "  align         align the student's projector to the backbone (CTC) (needs text_lm)"]
    with pytest.raises(ValueError, match=r"stage b needs \['c'\], which are not listed before it"):
        StageTable([Stage("b", ("c",), print, "x"),
                    Stage("c", (), print, "y")])


def test_docs_worked_example_resolves_and_type_checks(tmp_path):
    """docs/pipeline.md's Phi-4-multimodal + vLLM teacher + GPT-4.1 judge config (not run: no hub here)."""
    from tests.test_configs import parse

    docs = (REPO / "docs" / "pipeline.md").read_text()
    block = docs.split("```yaml\n# my_phi4mm.yaml\n", 1)[1].split("```", 1)[0]
    for name in re.findall(r"/data/(\S+\.jsonl)", block):  # its manifests must exist: checked when it is loaded
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_text("{}\n")
    (tmp_path / "phi4mm.yaml").write_text(block.replace("/data/", f"{tmp_path}/data/"))
    config = load_pipeline_config(tmp_path / "phi4mm.yaml")
    teacher = {"mode": "remote", **{k: config["teacher"][k] for k in ("base_url", "model", "api_key_env")}}
    for stage in ("sft", "kd", "dpo"):
        resolved = resolve_stage_config(config, stage, tmp_path / "run", teacher=teacher)
        (tmp_path / f"{stage}.yaml").write_text(yaml.safe_dump(resolved))
        model = parse(tmp_path / f"{stage}.yaml").config["model"]["init_args"]
        assert model["model"]["class_path"].endswith("Phi4MultimodalSpeechLLM")
        assert "llm" not in model["model"]["init_args"]  # no composed-model leftovers
    assert resolved["model"]["init_args"]["init_from"] == f"{tmp_path}/run/kd/checkpoints/last.ckpt"
    sft = yaml.safe_load((tmp_path / "sft.yaml").read_text())["model"]["init_args"]
    assert sft["init_from"] is None  # stages.align: false: Phi-4-multimodal already listens
    kd = yaml.safe_load((tmp_path / "kd.yaml").read_text())["model"]["init_args"]
    assert kd["teacher"]["init_args"]["base_url"] == "http://localhost:8000/v1"
    assert kd["teacher"]["init_args"]["tokenizer"] == "microsoft/Phi-4-mini-instruct"


def test_a_pipeline_yaml_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("benchmark: {size: tiny}  # café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: not UTF-8 text \(byte b'\\xe9' at offset \d+\)"):
        load_pipeline_config(path)

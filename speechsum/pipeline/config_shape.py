"""Checks of a pipeline YAML's shape that :func:`speechsum.pipeline.config.load_pipeline_config` makes
when it is loaded, before any stage runs: the sections that are not settings with defaults
(``data``, ``text_lms``, ``stages``, ``backbone``, ``teacher_model``), and the evaluation settings that
only the evaluation or report stages would have refused, after every training stage before them
(``evaluate.metrics``, ``evaluate.systems`` twice, ``evaluate.system_splits``, ``report.metric``,
``report.baseline``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from speechsum.evaluation.manifest_args import SPLIT_NAME
from speechsum.evaluation.report import METRIC_ALIASES
from speechsum.evaluation.scoring import BASIC_DESCRIPTIONS, GROUP_SCORES, METRIC_GROUPS
from speechsum.pipeline.sections import BENCHMARK_TEST_SPLITS, section_options
from speechsum.utils.config_keys import unknown_keys_note

DATA_KEYS = ("train", "val", "tests")  # the pipeline YAML's `data:` (your manifests)


def check_shape(config: Mapping, path: Path | str) -> None:
    """Refuse a ``data:`` that is not a mapping of :data:`DATA_KEYS` (another key was ignored; a
    string crashed the loader with an AttributeError), a ``text_lms:`` or ``stages:`` that is neither
    a mapping nor null (``text_lms: false`` trained the text LMs all the same), and a ``backbone:`` or
    ``teacher_model:`` that is not a hub id or folder name."""
    data = config.get("data")
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: data: expected a mapping {{train: manifest, val: manifest, tests: {{name: "
                         f"manifest}}}}, got {data!r}")
    unknown = sorted(set(data or {}) - set(DATA_KEYS))
    if unknown:
        raise ValueError(f"{path}: data: unknown key(s) {unknown}{unknown_keys_note(path, 'data', unknown, list(DATA_KEYS))}"
                         f"; allowed: {', '.join(DATA_KEYS)} (more test splits go under tests)")
    tests = (data or {}).get("tests")
    odd = [name for name in tests if not SPLIT_NAME.fullmatch(str(name))] \
        if isinstance(tests, dict) else []
    if odd:  # speechsum evaluate read `--manifest NAME=PATH` as one path: the first evaluation failed
        raise ValueError(f"{path}: data.tests: split name {odd[0]!r}: use letters, digits, _ . - (no '/', ',', '=' "
                         "or spaces; it names the split in the report and in evaluate.system_splits)")
    if config.get("text_lms", {}) is False:
        raise ValueError(f"{path}: text_lms: false: write `text_lms: null` to train no text LMs (then give "
                         "`backbone:` and `teacher_model:`), or leave the key out to train them")
    stages = config.get("stages")
    if stages is False:
        raise ValueError(f"{path}: stages: false: the student stages cannot be left out; leave the key out for "
                         "their defaults (`stages: {align: false}` leaves out the alignment only)")
    for key in ("backbone", "teacher_model"):
        value = config.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{path}: {key}: expected a hub id or a model folder (text), got {value!r}")


def evaluated_splits(config: Mapping) -> tuple[str, ...]:
    """The splits the evaluation stages run: ``data.tests``' names, else the benchmark's, and those
    ``evaluate.args`` adds (``--manifest val=RUN/data/val.jsonl``)."""
    data = config.get("data")
    args = [str(arg) for arg in section_options(config, "evaluate")["args"]]
    given = [value for option, value in zip(args, args[1:]) if option == "--manifest"]
    given += [arg.removeprefix("--manifest=") for arg in args if arg.startswith("--manifest=")]
    added = [split_of(text) for text in given]
    return tuple(dict.fromkeys([*map(str, data["tests"] if data else BENCHMARK_TEST_SPLITS), *added]))


def split_of(manifest_arg: str) -> str:
    """The split ``speechsum evaluate --manifest [SPLIT=]PATH`` names (the file's stem without ``SPLIT=``;
    :func:`speechsum.evaluation.manifest_args.parse_manifest_arg`, without reading any file)."""
    split, equals, _ = manifest_arg.partition("=")
    return split if equals and SPLIT_NAME.fullmatch(split) else Path(manifest_arg).stem


def check_evaluation_plan(config: Mapping, path: Path | str) -> None:
    """Refuse, when the YAML is loaded, evaluation settings that failed the first evaluation stage
    (``speechsum evaluate``: an unknown metric, ``llm_judge`` without an LLM judge, a split no test
    set has, an empty split list) or the report at the very end (a ``report.baseline`` row that is
    not evaluated)."""
    evaluate = section_options(config, "evaluate")
    metrics = [name.strip() for name in evaluate["metrics"].split(",") if name.strip()]
    unknown = [name for name in metrics if name not in METRIC_GROUPS]
    if unknown or not metrics:
        raise ValueError(f"{path}: evaluate.metrics: {'unknown ' + ', '.join(unknown) if unknown else 'no metric'}; "
                         f"give a comma-separated subset of {','.join(METRIC_GROUPS)}")
    if "llm_judge" in metrics and section_options(config, "judge")["kind"] != "openai":
        raise ValueError(f"{path}: evaluate.metrics: llm_judge needs an LLM judge: set judge.kind openai (and its "
                         "model, base_url), or leave llm_judge out (judge.kind openai adds it)")
    twice = sorted({name for name in evaluate["systems"] if evaluate["systems"].count(name) > 1})
    if twice:  # speechsum evaluate refuses a system name given twice: the baselines or a student's evaluation failed
        raise ValueError(f"{path}: evaluate.systems: {', '.join(twice)} listed twice; list each row once")
    splits = evaluated_splits(config)
    for system, names in (evaluate["system_splits"] or {}).items():  # a mapping of lists: check_sections
        wrong = [name for name in names if str(name) not in splits]
        if wrong or not names:
            problem = f"{wrong[0]!r} is not a test split" if wrong else "no split (the row would not run)"
            raise ValueError(f"{path}: evaluate.system_splits.{system}: {problem}; the test splits: {', '.join(splits)}"
                             f"{' (data.tests)' if config.get('data') else ''}; evaluate.args adds one: [--manifest, NAME=PATH]")
    report = section_options(config, "report")
    if section_options(config, "judge")["kind"] == "openai":
        metrics.append("llm_judge")  # the evaluation stages add it
    scores = [*(score for group in metrics for score in GROUP_SCORES[group]), *BASIC_DESCRIPTIONS]
    metric = report["metric"]
    if metric is not None and METRIC_ALIASES.get(metric, metric) not in scores:
        raise ValueError(f"{path}: report.metric: {metric!r} is not a score the evaluations compute "
                         f"(evaluate.metrics {evaluate['metrics']}): one of {', '.join(dict.fromkeys(scores))}, "
                         f"or null for the default")
    baseline = report["baseline"]
    if baseline is not None and baseline not in evaluate["systems"]:
        raise ValueError(f"{path}: report.baseline: {baseline!r} is not among the evaluated rows "
                         f"(evaluate.systems: {', '.join(evaluate['systems'])}): name one of them, or null for the "
                         "first student row")

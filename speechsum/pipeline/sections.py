"""The settings sections of a pipeline YAML (``benchmark``, ``teacher``, ``pairs``, ``judge``,
``evaluate``, ``report``): every key with its default, and their checks when the YAML is loaded
(:func:`speechsum.pipeline.config.load_pipeline_config`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from speechsum.benchmark.build import SIZES
from speechsum.utils.arguments import (
    MAX_BATCH,
    MAX_TEXT_DOCUMENTS,
    MAX_TOKENS,
    at_least,
    base_url_problem,
    nucleus_top_p,
    samples_per_input,
    sampling_temperature,
    share,
)
from speechsum.utils.config_keys import unknown_keys_note

BASELINE_SYSTEMS = ("teacher", "backbone", "cascade")  # the `baselines` stage's rows (text LMs, ASR cascade)
STUDENT_SYSTEMS = ("sft", "kd", "dpo")  # one stage each (evaluate_sft, evaluate_kd, evaluate), rows in RUN/evaluate/
EVAL_SYSTEMS = BASELINE_SYSTEMS + STUDENT_SYSTEMS
BENCHMARK_TEST_SPLITS = ("test", "test_unseen", "test_xling")  # the bundled benchmark's test manifests
# Every key of the settings sections, with its default (the stages read them through section_options);
# load_pipeline_config refuses other keys, values of another type and the choices below.
SECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "benchmark": {"size": "small", "seed": 0, "workers": 2, "text_documents": 12000, "vocab_size": 4096, "args": [],
                  "text_unseen_share": 0.0, "text_xling_share": 0.0, "text_unlabeled_share": 0.0},
    "teacher": {"mode": "inprocess", "base_url": None, "model": None, "api_key_env": "OPENAI_API_KEY",
                "serve_args": []},
    "pairs": {"train_examples": 64, "val_examples": 8, "num_samples": 4, "temperature": 1.0, "top_p": 1.0,
              "max_new_tokens": 128, "batch_size": 8, "add_reference": False, "args": []},
    "judge": {"kind": "fact", "model": "gpt-4.1", "base_url": None, "api_key_env": "OPENAI_API_KEY"},
    "evaluate": {"examples_per_split": None, "max_new_tokens": 128, "batch_size": 8, "metrics": "rouge,fact_judge",
                 "systems": list(EVAL_SYSTEMS), "system_splits": {}, "args": []},
    "report": {"metric": None, "baseline": None},
}
# benchmark.size: its build's sizes (an unknown one failed as `--size: invalid choice` when the stage ran)
SECTION_CHOICES = {"judge.kind": ("fact", "openai"), "teacher.mode": ("inprocess", "serve", "remote"),
                   "benchmark.size": tuple(SIZES)}


def _vocab_size(text: str) -> int:
    """``benchmark.vocab_size`` as ``speechsum benchmark tokenizer --vocab-size`` takes it: the 256 bytes and
    its special tokens at least (a smaller one failed when that stage ran, after the benchmark was built)."""
    from speechsum.benchmark.bpe import SPECIAL_TOKENS

    return at_least(256 + len(SPECIAL_TOKENS))(text)


# the commands' own argparse checks of the options these settings become: what a stage's command would
# refuse hours into a run is refused when the YAML is loaded
FIELD_CHECKS: dict[str, Callable[[str], Any]] = {
    **dict.fromkeys(("pairs.train_examples", "pairs.val_examples", "evaluate.examples_per_split", "benchmark.workers"),
                    at_least(1)),
    **dict.fromkeys(("pairs.max_new_tokens", "evaluate.max_new_tokens"), at_least(1, MAX_TOKENS)),
    **dict.fromkeys(("pairs.batch_size", "evaluate.batch_size"), at_least(1, MAX_BATCH)),
    "benchmark.vocab_size": _vocab_size,
    "benchmark.text_documents": at_least(0, MAX_TEXT_DOCUMENTS),
    **dict.fromkeys(("benchmark.text_unseen_share", "benchmark.text_xling_share", "benchmark.text_unlabeled_share"),
                    share),
    "pairs.num_samples": samples_per_input,
    "pairs.temperature": sampling_temperature,
    "pairs.top_p": nucleus_top_p,
}


def section_options(config: Mapping, name: str) -> dict:
    """The ``name`` section of a pipeline YAML over its defaults (:data:`SECTION_DEFAULTS`)."""
    return {**SECTION_DEFAULTS[name], **(config.get(name) or {})}


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def check_sections(config: Mapping, path: Path | str) -> None:
    """Refuse a settings section that is not a mapping, an unknown key in one (a typo would silently
    take the default), a value of another type than its default's, a value outside the choices, and
    a number its command would refuse (:data:`FIELD_CHECKS`) — when the YAML is loaded, not when the
    stage that reads it starts."""
    for name, defaults in SECTION_DEFAULTS.items():
        section = config.get(name)
        if section is None or (name == "benchmark" and section is False):
            continue
        if not isinstance(section, dict):
            raise ValueError(f"{path}: {name}: expected a mapping of settings ({', '.join(defaults)}), got {section!r}")
        unknown = sorted(set(section) - set(defaults))
        if unknown:
            raise ValueError(f"{path}: {name}: unknown key(s) {unknown}{unknown_keys_note(path, name, unknown, list(defaults))}; "
                             f"allowed: {', '.join(defaults)}")
        for key, value in section.items():
            field, default = f"{name}.{key}", defaults[key]
            if field in SECTION_CHOICES and value not in SECTION_CHOICES[field]:
                raise ValueError(f"{path}: {field}: {value!r} is not one of {', '.join(SECTION_CHOICES[field])}")
            if field in FIELD_CHECKS:
                if value is None and default is None:
                    continue
                problem = f"expected a number, got {value!r}"
                if isinstance(value, int | float) and not isinstance(value, bool):
                    try:
                        FIELD_CHECKS[field](str(value))
                        continue
                    except argparse.ArgumentTypeError as err:
                        problem = str(err)
                raise ValueError(f"{path}: {field}: {problem}{' (null: all)' if default is None else ''}")
            elif default is None and value is not None and not isinstance(value, str):  # a URL, a model or row name
                raise ValueError(f"{path}: {field}: expected text or null, got {value!r}")
            elif default is not None and not _same_kind(value, default):  # null too: the stages read a value
                raise ValueError(f"{path}: {field}: expected {type(default).__name__} like the default "
                                 f"{default!r}, got {value!r}" + (" (leave the key out for the default)" * (value is None)))
    for name in ("judge", "teacher"):  # speechsum pairs / the KD teacher refused it hours into the run
        url = (config.get(name) or {}).get("base_url")
        if isinstance(url, str) and (problem := base_url_problem(url)):
            raise ValueError(f"{path}: {name}.base_url: {problem}")
    evaluate = config.get("evaluate") or {}
    unknown_systems = [system for system in evaluate.get("systems") or [] if system not in EVAL_SYSTEMS]
    if unknown_systems:
        raise ValueError(f"{path}: evaluate.systems: unknown {unknown_systems}; allowed: {', '.join(EVAL_SYSTEMS)}")
    if evaluate.get("systems") == []:
        raise ValueError(f"{path}: evaluate.systems: empty, so the report would have no row; list some of "
                         f"{', '.join(EVAL_SYSTEMS)} (or end the run before the evaluations with --until dpo)")
    system_splits = evaluate.get("system_splits") or {}
    if any(name not in EVAL_SYSTEMS or not isinstance(splits, list) for name, splits in system_splits.items()):
        raise ValueError(f"{path}: evaluate.system_splits: expected a mapping of system ({', '.join(EVAL_SYSTEMS)}) "
                         f"to a list of test splits, e.g. {{cascade: [test]}}; got {system_splits!r}")

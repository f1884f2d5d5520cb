"""Every training stage's assembled config checked when the pipeline starts, before the first stage
runs: a misspelt key or class, a value of the wrong type (jsonargparse's parse of the config, the one
``speechsum fit`` makes, without building any model), and a value that can only be a mistake
(:mod:`speechsum.pipeline.stage_values`). A mistake in ``stages.dpo.overrides`` was found only when the
DPO stage started, after every stage before it. Each error is one line naming the pipeline YAML, the
stage and the dotted key (``stages.dpo.overrides.model.init_args.betta``)."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

from speechsum.pipeline.config import (
    TRAINING_STAGES,
    aligns,
    get_path,
    resolve_stage_config,
    section_options,
    stage_base_file,
    stage_spec,
    trains_text_lms,
)
from speechsum.pipeline.parse_report import describe
from speechsum.pipeline.stage_values import check_stage_values
from speechsum.pipeline.stages import kd_teacher
from speechsum.utils.arguments import ConfigError

SERVE_URL_STAND_IN = "http://127.0.0.1:1/v1"  # the KD stage's own teacher server: its port is known only then


def stage_label(stage: str) -> str:
    """Where a training stage's settings are in the pipeline YAML: ``stages.sft``, ``text_lms.backbone``."""
    return {"text_lm": "text_lms.backbone", "text_teacher": "text_lms.teacher"}.get(stage, f"stages.{stage}")


@functools.cache
def stage_parser() -> Any:
    """The parser of ``speechsum fit`` (the stage module chosen by ``model.class_path``, one
    DataModule), built once; parsing with it imports the classes a config names, builds none."""
    from lightning.pytorch.cli import LightningCLI

    import speechsum.stages  # noqa: F401  (every stage module by its short name)
    from speechsum.data.datamodule import SpeechSumDataModule
    from speechsum.models import import_backbones
    from speechsum.stages.base import SpeechStageModule

    import_backbones()

    class Built(Exception):
        pass

    class ParserOnly(LightningCLI):
        def parse_arguments(self, parser: Any, args: Any) -> None:
            raise Built(parser)

    try:
        ParserOnly(SpeechStageModule, SpeechSumDataModule, subclass_mode_model=True, auto_configure_optimizers=False,
                   parser_kwargs={"exit_on_error": False}, run=False, args=[])
    except Built as built:
        return built.args[0]
    raise RuntimeError("LightningCLI built no parser")


def teacher_for_check(config: Mapping) -> dict:
    """The KD teacher as the runner hands it to the stage (:func:`speechsum.pipeline.stages.kd_teacher`);
    under ``serve`` with a stand-in URL (the server's port is chosen when the stage starts)."""
    settings = section_options(config, "teacher")
    return kd_teacher(settings, settings["mode"], SERVE_URL_STAND_IN)


def checked_stages(config: Mapping, wanted: Collection[str]) -> list[str]:
    """The training stages among ``wanted`` that run a ``speechsum fit`` with this config."""
    return [stage for stage in TRAINING_STAGES if stage in wanted
            and (trains_text_lms(config) or stage not in ("text_lm", "text_teacher"))
            and (aligns(config) or stage != "align")]


def check_stage_configs(config: dict, path: Path | str, run_dir: Path, wanted: Collection[str] = TRAINING_STAGES) -> None:
    """Parse the assembled config of every training stage among ``wanted`` as ``speechsum fit`` will,
    then check its values; the first problem is a ``ValueError`` of one line (module docstring)."""
    for stage in checked_stages(config, wanted):
        try:  # its config files are read here first
            resolved = resolve_stage_config(config, stage, run_dir,
                                            teacher=teacher_for_check(config) if stage == "kd" else None)
        except ValueError as err:
            raise ValueError(f"{path}: {stage_label(stage)}: {err}") from None
        try:  # values as the stage will get them: its loader reads `5e-4` as a number, PyYAML as text
            parsed = stage_parser().parse_args(["--config", yaml.safe_dump(resolved, sort_keys=False)])
        except argparse.ArgumentError as err:
            raise ValueError(parse_problem(str(err), config, stage, path, resolved)) from None
        try:
            check_stage_values(parsed.as_dict())
        except ConfigError as err:
            key, _, problem = str(err).partition(" ")
            raise ValueError(f"{where(config, stage, path, key.split('.'))}{key} {problem}") from None
        if missing := missing_inputs(resolved, run_dir):
            key = missing[0]
            raise ValueError(f"{where(config, stage, path, key.split('.'))}{key}: {get_path(resolved, key)}: no such "
                             "file (a relative path is from the working folder): correct the path")


# the files a stage reads that no stage writes unless they are under the run folder
INPUT_FILES = ("data.train_manifest", "data.val_manifest", "data.test_manifest", "data.predict_manifest",
               "model.init_args.init_from")


def missing_inputs(resolved: Mapping, run_dir: Path) -> list[str]:
    """The keys of :data:`INPUT_FILES` in a stage's ``resolved`` config naming a file outside ``run_dir``
    that is not there: the stage failed on it when it started, after the stages before it (a file under
    the run folder is written by an earlier stage)."""
    missing = []
    for key in INPUT_FILES:
        value = get_path(resolved, key)
        if isinstance(value, str) and value and not Path(value).resolve().is_relative_to(run_dir.resolve()) \
                and not Path(value).exists():
            missing.append(key)
    return missing


def where(config: Mapping, stage: str, path: Path | str, keys: list[str]) -> str:
    """``FILE: stages.dpo.overrides.`` when ``keys`` (a dotted key of the assembled config, split)
    is set by the stage's ``overrides:``, else ``FILE: stages.dpo (config configs/dpo.yaml): ``."""
    spec = stage_spec(config, stage)
    node: Any = spec.get("overrides") or {}
    for key in keys:
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, Mapping) and key in node:
            node = node[key]
        else:
            base = stage_base_file(spec, stage, section_options(config, "teacher")["mode"])
            files = base if isinstance(base, str) else ", ".join(base)
            return f"{path}: {stage_label(stage)} (config {files}): "
    return f"{path}: {stage_label(stage)}.overrides."


def parse_problem(message: str, config: Mapping, stage: str, path: Path | str, resolved: Mapping) -> str:
    """jsonargparse's report (``message``) as one line: its deepest problem, at its place."""
    found = describe(message, resolved, known_keys)
    if found is None:
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        return f"{path}: {stage_label(stage)}: its assembled config does not parse: {' '.join(lines[:2])[:200]}"
    keys, problem = found
    return f"{where(config, stage, path, keys)}{'.'.join(keys)}: {problem}"


def known_keys(prefix: str) -> list[str]:
    """The dotted settings of ``speechsum fit`` directly under ``prefix`` ('' for the top level)."""
    dests = [action.dest for action in stage_parser()._actions if action.dest not in ("help", "config")]
    if not prefix:
        return sorted({dest.split(".")[0] for dest in dests})
    return [dest for dest in dests if dest.startswith(prefix + ".") and "." not in dest[len(prefix) + 1:]]

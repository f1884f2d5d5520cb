"""Pipeline configuration: the pipeline YAML (presets under ``configs/pipeline/``) and how each
training stage's Lightning config is resolved from its base YAML.

A stage config is built in this order (later steps win):

1. the stage's base YAML(s) (``config:`` one path or a list, deep-merged in order);
2. every string path ``runs/benchmark/...`` rewritten to ``<run_dir>/...``
   (``runs/benchmark/kd_remote`` → ``<run_dir>/kd``, so both KD configs write one place);
3. the W&B logger dropped unless ``--wandb``;
4. wiring for real models/data (``data:``, ``backbone:``, ``teacher_model:``, the teacher endpoint;
   with ``stages.align: false`` SFT's ``init_from`` of the alignment checkpoint is cleared);
5. the stage's ``overrides:`` from the pipeline YAML;
6. the pipeline's callbacks: live progress lines (:mod:`speechsum.pipeline.progress_callback`)
   and a ModelCheckpoint that keeps a resume checkpoint every ``checkpoint_every_s`` seconds of
   training (:mod:`speechsum.pipeline.resume`).

Deep merge: mappings merge key by key; anything else (lists included) is replaced; a mapping
whose ``class_path`` differs from the one it lands on replaces it whole (a different class keeps
none of the old ``init_args``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from speechsum.pipeline.config_shape import check_evaluation_plan, check_shape
from speechsum.pipeline.resume import CHECKPOINT_EVERY_S, resume_checkpoint_callback
from speechsum.pipeline.sections import (  # noqa: F401  (the settings sections, imported from here too)
    BASELINE_SYSTEMS,
    EVAL_SYSTEMS,
    SECTION_DEFAULTS,
    STUDENT_SYSTEMS,
    check_sections,
    section_options,
)
from speechsum.utils.arguments import check_key_variable
from speechsum.utils.config_keys import duplicate_key, unknown_keys_note
from speechsum.utils.config_stack import deep_merge
from speechsum.utils.io import file_sha256, project_file, read_yaml

TRAINING_STAGES = ("text_lm", "align", "text_teacher", "sft", "kd", "dpo")
STUDENT_STAGES = ("align", "sft", "kd", "dpo")  # the speech student's fit stages (pipeline YAML `stages:`)
TEXT_LMS = ("backbone", "teacher")  # the text LMs the pipeline trains (pipeline YAML `text_lms:`)
BENCHMARK_PREFIX = "runs/benchmark"
PROGRESS_CALLBACK = {"class_path": "speechsum.pipeline.progress_callback.ProgressLines"}
PRESET_DIR = Path("configs") / "pipeline"  # resolved by project_file: checkout, then the installed wheel
DEFAULT_STAGE_CONFIGS = {
    "text_lm": "configs/benchmark/text_lm.yaml",
    "text_teacher": "configs/benchmark/text_teacher.yaml",
    "align": "configs/align.yaml",
    "sft": "configs/sft.yaml",
    "kd": "configs/kd.yaml",
    "kd_remote": "configs/kd_remote.yaml",
    "dpo": "configs/dpo.yaml",
}

# Every key the pipeline YAML may hold (anything else is a typo and an error).
TOP_LEVEL_KEYS = {"benchmark", "data", "text_lms", "backbone", "teacher_model", "stages", "teacher", "pairs",
                  "judge", "evaluate", "report"}
def rewrite_paths(node: Any, mapping: dict[str, str]) -> Any:
    """Every string equal to, or starting with ``<prefix>/``, a key of ``mapping`` gets that prefix
    replaced (longest prefix first); other values are returned unchanged."""
    prefixes = sorted(mapping, key=len, reverse=True)
    if isinstance(node, dict):
        return {key: rewrite_paths(value, mapping) for key, value in node.items()}
    if isinstance(node, list):
        return [rewrite_paths(value, mapping) for value in node]
    if isinstance(node, str):
        for prefix in prefixes:
            if node == prefix or node.startswith(prefix + "/"):
                return mapping[prefix] + node[len(prefix):]
    return node


def drop_wandb(config: dict) -> dict:
    """The config without ``WandbLogger`` entries in ``trainer.logger``."""
    config = copy.deepcopy(config)
    loggers = (config.get("trainer") or {}).get("logger")
    if isinstance(loggers, list):
        config["trainer"]["logger"] = [
            entry for entry in loggers
            if not (isinstance(entry, dict) and str(entry.get("class_path", "")).endswith("WandbLogger"))
        ]
    elif isinstance(loggers, dict) and str(loggers.get("class_path", "")).endswith("WandbLogger"):
        config["trainer"]["logger"] = False
    return config


def set_path(config: dict, dotted: str, value: Any, only_if_present: bool = False) -> None:
    """``config[a][b][c] = value`` for ``dotted = "a.b.c"`` (missing mappings are created unless
    ``only_if_present``, which leaves the config alone when the key is not there)."""
    *parents, leaf = dotted.split(".")
    node = config
    for key in parents:
        if not isinstance(node.get(key), dict):
            if only_if_present:
                return
            node[key] = {}
        node = node[key]
    if only_if_present and leaf not in node:
        return
    node[leaf] = value


def get_path(config: Mapping, dotted: str) -> Any:
    """``config[a][b][c]`` for ``dotted = "a.b.c"``; None where a key is missing."""
    node: Any = config
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def find_config_file(path: str | Path) -> Path:
    """``path`` as given (relative to the working directory), else in the checkout or among the
    wheel's installed configs (:func:`speechsum.utils.io.project_file`), so ``configs/sft.yaml``
    works from any folder, installed or editable."""
    return project_file(path)


def load_yaml(path: str | Path) -> dict:
    path = find_config_file(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give a YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    data = read_yaml(path)
    if (repeated := duplicate_key(path)) is not None:  # PyYAML keeps the last one silently
        raise ValueError(repeated)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_stage_base(config: str | list[str]) -> dict:
    """The base YAML of a stage: one file, or several deep-merged in order."""
    merged: dict = {}
    for path in [config] if isinstance(config, str) else list(config):
        merged = deep_merge(merged, load_yaml(path))
    return merged


def check_data_files(data: dict, path: str | Path) -> None:
    """Each manifest of ``data:`` is a file (relative: to the working folder), found when the YAML is
    loaded, not by the stage that reads it after the ones before it."""
    if not isinstance(data["tests"], dict):
        raise ValueError(f"{path}: data.tests: expected a mapping {{name: manifest}}, got {data['tests']!r}")
    for key, manifest in [("train", data["train"]), ("val", data["val"]), *(("tests." + k, v) for k, v in data["tests"].items())]:
        if not Path(str(manifest)).is_file():
            raise ValueError(f"{path}: data.{key}: no manifest file {manifest}{beside_note(manifest, path)}")


def beside_note(file: object, path: str | Path) -> str:
    """For a relative ``file`` named in the pipeline YAML at ``path`` and not found: relative paths are
    read from the working folder, and where the one next to the YAML is (the path to write) if it is."""
    if not isinstance(file, str) or Path(file).is_absolute():
        return ""
    beside = Path(path).parent / file
    found = f"; the one next to {Path(path).name} is {beside}: write that path" if beside.is_file() else ""
    return f" (relative paths are read from the working folder {Path.cwd()}{found})"


def load_pipeline_config(path: str | Path) -> dict:
    """A pipeline YAML, checked for unknown top-level keys and the benchmark-or-data rule."""
    config = load_yaml(path)
    if not config:
        raise ValueError(f"{path}: empty (no settings): start from a preset, e.g. configs/pipeline/default.yaml "
                         "(docs/pipeline.md)")
    unknown = sorted(set(config) - TOP_LEVEL_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}{unknown_keys_note(path, None, unknown, sorted(TOP_LEVEL_KEYS))}; "
                         f"allowed: {sorted(TOP_LEVEL_KEYS)}")
    check_shape(config, path)  # data, text_lms, stages, backbone, teacher_model: before they are read
    if not config.get("benchmark") and not config.get("data"):
        raise ValueError(f"{path}: give `benchmark:` (build the bundled benchmark) or `data:` "
                         "({train, val, tests: {name: path}}: your own manifests)")
    if config.get("data"):
        data = config["data"]
        missing = [key for key in ("train", "val", "tests") if not data.get(key)]
        if missing:
            raise ValueError(f"{path}: data: missing {missing} (train, val: manifests; tests: {{name: manifest}})")
    if trains_text_lms(config) and not config.get("benchmark"):
        raise ValueError(f"{path}: the text LMs train on the bundled benchmark's text corpus, but `benchmark:` is "
                         "null; with your own data set `text_lms: null` and give `backbone:` and `teacher_model:`")
    for section in ("teacher", "judge"):  # before check_sections: the key gets this message, not "unknown"
        if isinstance(config.get(section), dict) and "api_key" in config[section]:
            raise ValueError(f"{path}: {section}.api_key: keys are never read from files; put the key in an "
                             f"environment variable and name it with {section}.api_key_env")
        if isinstance(config.get(section), dict) and isinstance(config[section].get("api_key_env"), str):
            check_key_variable(f"{path}: {section}.api_key_env", config[section]["api_key_env"])
    check_sections(config, path)
    if not trains_text_lms(config) and not config.get("teacher_model"):
        raise ValueError(f"{path}: text_lms is null, so give `teacher_model:` (hub id or directory)")
    check_stage_specs(config, path)
    if config.get("data"):
        check_data_files(config["data"], path)
    check_evaluation_plan(config, path)  # after data.tests is checked: it names the splits
    return config


def check_stage_specs(config: Mapping, path: Path | str) -> None:
    """``stages:`` (align, sft, kd, dpo) and ``text_lms:`` (backbone, teacher) map a known stage to
    ``config`` (its files present), ``overrides`` (a mapping) and, under ``stages``, ``remote_config``:
    anything else is refused now, not silently ignored (``overides``) or found after the stages before it."""
    for section, allowed, keys in (("stages", STUDENT_STAGES, ("config", "remote_config", "overrides")),
                                   ("text_lms", TEXT_LMS, ("config", "overrides"))):
        specs = config.get(section) or {}
        if not isinstance(specs, dict):
            raise ValueError(f"{path}: {section}: expected a mapping of stage ({', '.join(allowed)}) to its settings, "
                             f"got {specs!r}")
        for stage, spec in specs.items():
            where = f"{path}: {section}.{stage}"
            if stage not in allowed:
                raise ValueError(f"{where}: unknown stage; allowed: {', '.join(allowed)}")
            if section == "stages" and stage == "align" and spec is False:
                continue  # no alignment stage: SFT starts from the model as configured
            unknown = sorted(set(spec) - set(keys)) if isinstance(spec, dict) else []
            if spec is not None and (not isinstance(spec, dict) or unknown):
                raise ValueError(f"{where}: expected a mapping with {', '.join(keys)}"
                                 + (" (or false: no alignment stage)" if stage == "align" else "")
                                 + (f"; unknown key(s) {unknown}" if unknown else f", got {spec!r}"))
            spec = spec or {}
            for key in ("config", "remote_config"):  # a missing file, found now and not after the stages before it
                files = spec.get(key)
                if files is not None and not isinstance(files, str | list):
                    raise ValueError(f"{where}.{key}: expected a config file or a list of them, got {files!r}")
                for file in [files] if isinstance(files, str) else files or []:
                    if not isinstance(file, str) or not find_config_file(file).is_file():
                        raise ValueError(f"{where}.{key}: no such config file {file!r}{beside_note(file, path)}")
            if not isinstance(spec.get("overrides") or {}, dict):
                raise ValueError(f"{where}.overrides: expected a mapping deep-merged onto the stage's config, "
                                 f"got {spec['overrides']!r}")


def aligns(config: dict) -> bool:
    """Whether the pipeline runs the CTC alignment stage (``stages.align: false`` turns it off)."""
    return (config.get("stages") or {}).get("align") is not False


def preset_path(name: str) -> Path:
    folder = project_file(PRESET_DIR)
    path = folder / f"{name}.yaml"
    if Path(name).name != name or "\\" in name or not path.is_file():  # a path (/abs, ../x) left the folder
        choices = sorted(p.stem for p in folder.glob("*.yaml"))
        own = (f"; a YAML of your own goes to --config {name}" if name.endswith((".yaml", ".yml")) or "/" in name
               else "")
        what = f"no {path}" if Path(name).name == name and "\\" not in name else "a preset is a name, not a path"
        raise FileNotFoundError(f"--preset {name}: {what}; presets: {', '.join(choices)}{own}")
    return path


def stage_spec(config: dict, stage: str) -> dict:
    """``{config, overrides}`` of a training stage from the pipeline YAML."""
    if stage in ("text_lm", "text_teacher"):
        key = "backbone" if stage == "text_lm" else "teacher"
        spec = (config.get("text_lms") or {}).get(key) or {}
    else:
        spec = (config.get("stages") or {}).get(stage) or {}  # None (defaults) or False (align off)
    defaults = {"config": DEFAULT_STAGE_CONFIGS[stage]}
    if stage == "kd":
        defaults["remote_config"] = DEFAULT_STAGE_CONFIGS["kd_remote"]
    return {**defaults, **spec}


def stage_base_file(spec: dict, stage: str, teacher_mode: str | None) -> str | list | None:
    """The base config file(s) of a training stage: the KD stage reads ``remote_config`` when its
    teacher is behind an endpoint (``serve`` or ``remote``), every stage ``config`` otherwise."""
    if stage == "kd" and teacher_mode not in (None, "inprocess"):
        return spec["remote_config"]
    return spec.get("config")


def stage_base_settings(config: Mapping, stage: str) -> dict:
    """The settings of a training stage's base config file(s) (:func:`stage_base_file`), parsed: part of
    its settings digest (:meth:`~speechsum.pipeline.table.StageTable.config_digests`), so an edited
    ``configs/sft.yaml`` is pointed out on a rerun as an edited ``stages.sft.overrides`` is (the stage was
    kept without a word); an edited comment changes nothing."""
    mode = section_options(config, "teacher")["mode"]
    return load_stage_base(stage_base_file(stage_spec(dict(config), stage), stage, mode) or [])


def resolve_stage_config(config: dict, stage: str, run_dir: Path, wandb: bool = False,
                         teacher: dict | None = None, checkpoint_every_s: float = CHECKPOINT_EVERY_S) -> dict:
    """The Lightning config of a training stage, ready for ``speechsum fit`` (module docstring).

    ``teacher`` (KD only): ``{"mode": "inprocess"|"serve"|"remote", "base_url", "model",
    "api_key_env"}`` as the runner decided it (for ``serve`` with the actual port)."""
    spec = stage_spec(config, stage)
    base_file = stage_base_file(spec, stage, teacher["mode"] if teacher else None)
    if not base_file:
        raise ValueError(f"stage {stage}: no base config (set `config:` for it in the pipeline YAML)")
    run = str(run_dir)
    run_paths = {f"{BENCHMARK_PREFIX}/kd_remote": f"{run}/kd", BENCHMARK_PREFIX: run}
    resolved = rewrite_paths(load_stage_base(base_file), run_paths)
    if not wandb:
        resolved = drop_wandb(resolved)
    wire_real_inputs(resolved, config, stage, run_dir, teacher)
    init_from = ((resolved.get("model") or {}).get("init_args") or {}).get("init_from")
    if stage == "sft" and not aligns(config) and init_from == f"{run}/align/checkpoints/last.ckpt":
        resolved["model"]["init_args"]["init_from"] = None  # stages.align: false: no aligned projector
    resolved = deep_merge(resolved, rewrite_paths(spec.get("overrides") or {}, run_paths))
    trainer = resolved.setdefault("trainer", {})
    if not isinstance(trainer, dict) or not isinstance(trainer.get("callbacks") or [], list):
        what = "trainer" if not isinstance(trainer, dict) else "trainer.callbacks"
        raise ValueError(f"{what}: expected a {'mapping' if what == 'trainer' else 'list'}, got {get_path(resolved, what)!r}")
    trainer["callbacks"] = [*(trainer.get("callbacks") or []), PROGRESS_CALLBACK,
                            resume_checkpoint_callback(f"{run}/{stage}", checkpoint_every_s)]
    return resolved


def wire_real_inputs(resolved: dict, config: dict, stage: str, run_dir: Path, teacher: dict | None) -> None:
    """Point a stage at the user's manifests, backbone and teacher (when the YAML names them)."""
    data = config.get("data")
    if data and stage in STUDENT_STAGES:
        if stage != "dpo":
            set_path(resolved, "data.train_manifest", str(data["train"]))
            set_path(resolved, "data.val_manifest", str(data["val"]))
        if stage != "align":
            first_test = str(next(iter(data["tests"].values())))
            set_path(resolved, "data.test_manifest", first_test)
            set_path(resolved, "data.predict_manifest", first_test)
    if config.get("backbone") and not trains_text_lms(config) and stage in STUDENT_STAGES:
        set_path(resolved, "model.init_args.model.init_args.llm", str(config["backbone"]), only_if_present=True)
    teacher_model = teacher_model_path(config, run_dir)
    if stage == "kd" and teacher:
        if teacher["mode"] == "inprocess":
            set_path(resolved, "model.init_args.teacher.init_args.model", teacher_model)
        else:
            for key in ("base_url", "model", "api_key_env"):
                if teacher.get(key):
                    set_path(resolved, f"model.init_args.teacher.init_args.{key}", teacher[key])
            set_path(resolved, "model.init_args.teacher.init_args.tokenizer", teacher_model)


def trains_text_lms(config: dict) -> bool:
    """Whether the pipeline trains the benchmark's text LMs: ``text_lms`` absent or a mapping, not null."""
    return config.get("text_lms", {}) is not None


def shared_settings(config: Mapping) -> dict:
    """What every stage's settings depend on (:meth:`StageTable.config_digests`): the user's data
    and models (the contents of the ``data:`` manifests too: one edited in place changes every
    stage's digest), and whether the pipeline trains the text LMs and aligns."""
    settings = {"data": config.get("data"), "backbone": config.get("backbone"),
                "teacher_model": config.get("teacher_model"), "trains_text_lms": trains_text_lms(config),
                "aligns": aligns(config)}
    if config.get("data"):
        data = config["data"]
        files = [data["train"], data["val"], *data["tests"].values()]
        settings["data_contents"] = {str(path): file_sha256(path) for path in files}
    return settings


def teacher_model_path(config: dict, run_dir: Path) -> str:
    """The text teacher: the one this pipeline trains, else ``teacher_model:`` (hub id or dir)."""
    if trains_text_lms(config):
        return str(run_dir / "text_teacher" / "model")
    return str(config.get("teacher_model") or run_dir / "text_teacher" / "model")


def backbone_path(config: dict, run_dir: Path) -> str | None:
    """The text backbone: the one this pipeline trains, else ``backbone:`` (may be None)."""
    if trains_text_lms(config):
        return str(run_dir / "text_lm" / "model")
    return str(config["backbone"]) if config.get("backbone") else None

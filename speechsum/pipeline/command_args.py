"""The extra command-line options a pipeline YAML passes to a stage's command (``benchmark.args``,
``pairs.args``, ``evaluate.args``, ``teacher.serve_args``), checked when the run starts against that
command's own parser: an option it does not take, or a value outside an option's choices, made the
stage's command exit with a usage error only when that stage started, after the stages before it."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path

from speechsum.pipeline.sections import section_options
from speechsum.utils.config_keys import did_you_mean
from speechsum.utils.repeated_options import repeated_option


def benchmark_build_parser() -> argparse.ArgumentParser:
    """The parser of ``speechsum benchmark build``."""
    from speechsum.benchmark.cli import _parser

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["build"]


def pairs_parser() -> argparse.ArgumentParser:
    from speechsum.pairs import build_parser

    return build_parser()


def evaluate_parser() -> argparse.ArgumentParser:
    from speechsum.evaluation.cli import evaluate_parser as parser

    return parser()


def serve_parser() -> argparse.ArgumentParser:
    from speechsum.serving.cli import build_parser

    return build_parser()


# the setting, and the command (and its parser) that gets its options
COMMAND_ARGS: dict[str, tuple[str, Callable[[], argparse.ArgumentParser]]] = {
    "benchmark.args": ("speechsum benchmark build", benchmark_build_parser),
    "pairs.args": ("speechsum pairs", pairs_parser),
    "evaluate.args": ("speechsum evaluate", evaluate_parser),
    "teacher.serve_args": ("speechsum serve", serve_parser),
}


# the options the pipeline gives each command itself, and the setting each comes from: the same
# option among the extra ones replaced the setting's value without a word (argparse keeps the last)
PIPELINE_SETS: dict[str, dict[str, str]] = {
    "benchmark.args": {"--out": "the pipeline (RUN/data)", "--size": "benchmark.size", "--seed": "benchmark.seed",
                       "--workers": "benchmark.workers"},
    "pairs.args": {**dict.fromkeys(("--ckpt", "--config", "--manifest", "--out", "--cache"), "the pipeline (RUN/kd, RUN/pairs)"),
                   **{f"--{key.replace('_', '-')}": f"pairs.{key}" for key in (
                       "num_samples", "temperature", "top_p", "max_new_tokens", "batch_size", "add_reference")},
                   "--judge": "judge.kind", "--judge-model": "judge.model", "--api-key-env": "judge.api_key_env",
                   "--judge-base-url": "judge.base_url"},
    "evaluate.args": {"--out": "the pipeline (RUN/<stage>)", "--judge-cache": "the pipeline (RUN/evaluate_cache)",
                      "--max-new-tokens": "evaluate.max_new_tokens", "--batch-size": "evaluate.batch_size",
                      "--metrics": "evaluate.metrics", "--judge-model": "judge.model (with judge.kind openai)",
                      "--api-key-env": "judge.api_key_env", "--judge-base-url": "judge.base_url"},
    "teacher.serve_args": {**dict.fromkeys(("--model", "--port", "--served-model-name"), "the pipeline"),
                           "--api-key-env": "the pipeline (a fresh key of its own)"},
}


def option_problem(parser: argparse.ArgumentParser, args: list[str],
                   pipeline_sets: Mapping[str, str] | None = None) -> str | None:
    """What ``parser`` would refuse among the ``--long`` options of ``args`` (an option it does not
    take, one abbreviation of several, a value outside its choices, one given twice with different
    values), or an option the pipeline sets itself (``pipeline_sets``: option → where its value comes
    from); None when nothing."""
    options = parser._option_string_actions
    for index, arg in enumerate(args):
        if not arg.startswith("--") or arg == "--":
            continue
        name, equals, value = arg.partition("=")
        matches = [name] if name in options else [o for o in options if o.startswith(name)] * parser.allow_abbrev
        if len(matches) != 1:
            longs = [o for o in options if o.startswith("--")]
            return (f"{name} is {'an abbreviation of ' + ', '.join(matches) if matches else 'not an option'} of "
                    f"{parser.prog}{'' if matches else did_you_mean(name, longs)}")
        if matches[0] in (pipeline_sets or {}):
            source = pipeline_sets[matches[0]]
            return f"{name}: set by {source}: " + ("change it there" if "." in source.split()[0] else "leave it out")
        action = options[matches[0]]
        given = value if equals else (args[index + 1] if index + 1 < len(args) else None)
        if action.nargs != 0 and (given is None or (not equals and given.startswith("--"))):
            return f"{name}: needs a value (none follows it)"
        if action.choices is not None and action.type in (None, str) and action.nargs is None and given is not None \
                and given not in action.choices:
            return f"{name} {given}: not one of {', '.join(map(str, action.choices))}"
        if action.nargs is None and callable(action.type) and given is not None and (problem := value_problem(action, given)):
            return f"{name} {given}: {problem}"
    return repeated_option(parser, args)


def value_problem(action: argparse.Action, given: str) -> str | None:
    """What the option's own type check (``int``, ``at_least(1)``, a URL or port check) says of
    ``given``; None when it takes it. The checks read nothing but the text."""
    try:
        action.type(given)
    except argparse.ArgumentTypeError as err:
        return str(err)
    except (TypeError, ValueError) as err:
        return f"not a valid {action.type.__name__} value" if action.type in (int, float) else str(err)
    return None


def check_command_args(config: Mapping, path: Path | str) -> None:
    """Refuse, when the run starts, an extra option of a stage's command that the command would refuse."""
    for field, (command, parser_of) in COMMAND_ARGS.items():
        section, key = field.split(".")
        if section == "benchmark" and not config.get("benchmark"):
            continue
        if field == "teacher.serve_args" and section_options(config, "teacher")["mode"] != "serve":
            continue  # options of a server this run does not start
        args = [str(arg) for arg in section_options(config, section)[key]]
        problem = option_problem(parser_of(), args, PIPELINE_SETS[field]) if args else None
        if problem:
            raise ValueError(f"{path}: {field}: {problem} (these options go to {command}: see its --help)")

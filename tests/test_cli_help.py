"""Every setting the Lightning CLI offers has its explanation in ``speechsum fit --help`` (and
``--model.help`` / ``--model.model.help``): jsonargparse takes it from the class docstring's
``Args:``, and shows only "(type: str | null, default: null)" for a parameter it cannot find there
(several named on one line, ``a / b: ...``, or a docstring its parser cannot read)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
import sys

import pytest
from jsonargparse._parameter_resolvers import get_signature_parameters

from speechsum.cli import main

PACKAGES = ("speechsum.stages", "speechsum.models", "speechsum.training", "speechsum.data")


def documented_classes() -> list[type]:
    """The classes of the packages the CLI builds from whose docstring has an ``Args:`` section."""
    found = []
    for package in PACKAGES:
        for module_info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
            module = importlib.import_module(module_info.name)
            for name, cls in vars(module).items():
                if inspect.isclass(cls) and cls.__module__ == module.__name__ and not name.startswith("_") and \
                        "Args:" in (cls.__doc__ or "") + (cls.__init__.__doc__ or ""):
                    found.append(cls)
    return found


def test_every_parameter_of_a_documented_class_has_its_explanation():
    classes = documented_classes()
    assert len(classes) >= 10
    missing = {f"{cls.__module__}.{cls.__qualname__}": [p.name for p in get_signature_parameters(cls) if not p.doc]
               for cls in classes}
    assert {name: params for name, params in missing.items() if params} == {}


@pytest.mark.parametrize(("options", "line"), [
    (["--help"], "--data.train_manifest TRAIN_MANIFEST JSONL manifest of the training split"),
    (["--model.model.help", "ComposedSpeechLLM"], "--model.stack STACK encoder frames per audio token"),
])
def test_the_help_explains_the_options_that_had_only_their_type(capsys, options, line):
    """The composed backbone's docstring held a real newline (``"{audio}\\n{instruction}"`` in a
    non-raw string), so none of its 17 options had an explanation."""
    with pytest.raises(SystemExit):
        main(["fit", *options])
    assert line in " ".join(capsys.readouterr().out.split())


def tool_parsers() -> dict[str, argparse.ArgumentParser]:
    from speechsum.benchmark.cli import _parser as benchmark_parser
    from speechsum.evaluation.cli import evaluate_parser
    from speechsum.evaluation.report_cli import report_parser
    from speechsum.pairs import build_parser as pairs_parser
    from speechsum.pipeline.cli import build_parser as pipeline_parser
    from speechsum.serving.cli import build_parser as serve_parser
    from speechsum.serving.export import build_parser as export_parser
    from speechsum.serving.summarize import build_parser as summarize_parser
    from speechsum.synth.run import build_parser as synth_parser

    parsers = {"evaluate": evaluate_parser(), "report": report_parser(), "pairs": pairs_parser(),
               "pipeline": pipeline_parser(), "serve": serve_parser(), "export": export_parser(),
               "summarize": summarize_parser(), "synth": synth_parser()}
    commands = next(a for a in benchmark_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parsers.update({f"benchmark {name}": parser for name, parser in commands.choices.items() if parser.add_help})
    return parsers


def test_every_tool_option_with_a_default_says_it():
    """``speechsum benchmark build --help`` did not say that --size is default, --seed 0, --world full."""
    silent = []
    for tool, parser in tool_parsers().items():
        automatic = issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
        for action in parser._actions:
            if not action.option_strings or action.required or action.default in (None, False, [], argparse.SUPPRESS):
                continue
            default = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
            if not automatic and default not in (action.help or ""):
                silent.append(f"{tool} {action.option_strings[0]} (default {default})")
    assert silent == []


def test_pipeline_threads_help_names_the_stages_that_run_alone():
    """--threads said that dpo and evaluate_dpo got every thread after they had stopped running
    alone (2026-12-07): the list is now read from the stage table."""
    (threads,) = [a for a in tool_parsers()["pipeline"]._actions if "--threads" in a.option_strings]
    assert "nothing can run beside (benchmark, report) or" in threads.help


def test_pipeline_run_dir_help_says_what_the_folder_may_be():
    """--run-dir said only "where everything goes": not that an earlier run's folder is continued, a
    folder of other files refused, and one pipeline at a time let in."""
    (run_dir,) = [a for a in tool_parsers()["pipeline"]._actions if "--run-dir" in a.option_strings]
    assert run_dir.help == ("where everything goes: a new or empty folder, or an earlier run's, which the run continues "
                            "(a folder of other files is refused; one pipeline per folder at a time) "
                            "(default runs/pipeline)")


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_names_speechsum_and_the_libraries_it_trains_with(flag, capsys):
    """What a bug report needs; it was "unrecognized arguments: --version" from the Lightning CLI."""
    from importlib.metadata import version

    import speechsum

    main([flag])
    assert capsys.readouterr().out == (f"speechsum {speechsum.__version__} (torch {version('torch')}, transformers "
                                       f"{version('transformers')}, lightning {version('lightning')}, python "
                                       f"{sys.version.split()[0]})\n")


def test_the_help_names_every_preset(capsys):
    """configs/pipeline/full.yaml (the README's `full` preset) was named neither in `speechsum pipeline
    --help` (--preset: 'tiny …, default …, large') nor in `speechsum --help` ('--preset tiny|default|large')."""
    from speechsum.pipeline.cli import EPILOG
    from speechsum.pipeline.config import PRESET_DIR
    from speechsum.utils.io import project_file

    presets = sorted(path.stem for path in project_file(PRESET_DIR).glob("*.yaml"))
    assert len(presets) >= 4
    (preset,) = [a for a in tool_parsers()["pipeline"]._actions if "--preset" in a.option_strings]
    listed = EPILOG.split("Presets (configs/pipeline/):")[1]
    assert [name for name in presets if name not in preset.help or not re.search(rf"\b{name} \(", listed)] == []
    with pytest.raises(SystemExit):
        main(["--help"])
    (overview,) = re.findall(r"\[--preset ([\w|]+)\]", capsys.readouterr().out)
    assert sorted(overview.split("|")) == presets


@pytest.mark.parametrize(("options", "line"), [
    (["--model.help", "SFTModul"], "error: --model.help SFTModul: no such class (did you mean 'SFTModule'?); --model.help "
     "takes a stage: CTCAlignModule, DPOModule, OnPolicyKDModule, SFTModule, TextLMModule"),
    (["--model.model.help", "ComposedSpeech"], "error: --model.model.help ComposedSpeech: no such class (did you mean "
     "'ComposedSpeechLLM'?); --model.model.help takes a backbone: ComposedSpeechLLM, Phi4MultimodalSpeechLLM, "
     "Qwen2AudioSpeechLLM, TextLLM"),
])
def test_the_help_of_a_misspelled_class_names_the_classes_it_takes(capsys, options, line):
    """``--model.help SFTModul`` was "Expected a dot import path string", and ``--model.model.help
    ComposedSpeech`` a report on the stage's Union subtypes ending "got NestedArg(key='model.help', …)"."""
    with pytest.raises(SystemExit) as stop:
        main(["fit", *options])
    assert stop.value.code == 2 and capsys.readouterr().err.splitlines()[-1] == line

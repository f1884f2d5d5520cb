"""The ``speechsum`` command: Lightning CLI stages (fit/validate/test/predict) plus tools."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import warnings
from collections.abc import Callable

from speechsum.utils.arguments import key_option_problem
from speechsum.utils.config_stack import with_stacked_dicts_merged
from speechsum.utils.processes import Terminated, die_with_parent, raise_terminated
from speechsum.utils.url_secrets import without_url_secrets

OVERVIEW = """\
speechsum — train speech LLMs that summarise speech (SFT → on-policy KD → DPO).

Training and inference (PyTorch Lightning CLI; stack configs with several --config):
  speechsum fit      --config configs/trainer/cpu.yaml --config configs/model/composed_tiny.yaml ...
  speechsum validate | test | predict   (same options; --ckpt_path last resumes or evaluates)
  speechsum fit --print_config ...      show the merged config
  speechsum fit --help                  every trainer and data option
  speechsum fit --model.help SFTModule  every option of a stage
  speechsum fit --model.model.help ComposedSpeechLLM   every option of a backbone
Stages (model.class_path): SFTModule, OnPolicyKDModule, DPOModule — configs/sft_tiny.yaml,
  configs/kd.yaml, configs/kd_remote.yaml, configs/dpo.yaml, configs/benchmark/*.yaml (text LMs).
Tools:
  speechsum pipeline [--preset tiny|default|large|full]   the whole recipe end to end (resumable; --from STAGE)
  speechsum benchmark build|info|tokenizer   the bundled spoken-document benchmark
  speechsum serve --model DIR|CKPT     OpenAI-compatible server: HF causal LM, or a speech student (input_audio)
  speechsum export CKPT --out DIR [--merge-lora]   a trained student as a Hugging Face directory (+ model card)
  speechsum summarize AUDIO... --model DIR|CKPT    summaries of audio files (JSONL)
  speechsum pairs ...                   sample summaries, judge them, write DPO preference pairs
  speechsum evaluate ...                score systems (student, text LM, cascade) on test manifests
  speechsum report RUN_DIRS...          the paper-style comparison table and chart
  speechsum synth ...                   SFT data from your audio: an LLM writes queries and summaries
  speechsum toydata --out DIR           write a tiny synthetic audio-instruction set
  speechsum toyscore PREDICTIONS        score predictions on that set
Run `speechsum <command> --help` for every option of a command; `speechsum --version` for the versions
(speechsum and the libraries it trains with) to put in a bug report.
"""


# where a fit's keys are named (a remote teacher's; the W&B logger reads its own variable)
KEY_VARIABLE_SETTING = "api_key_env (e.g. OPENAI_API_KEY; W&B reads WANDB_API_KEY)"

# Each tool: "module:function", imported only when that tool runs; the function takes argv.
TOOLS: dict[str, str] = {
    "toydata": "speechsum.data.toy:main",
    "toyscore": "speechsum.data.toy:score_main",
    "benchmark": "speechsum.benchmark.cli:main",
    "serve": "speechsum.serving.cli:main",
    "export": "speechsum.serving.export:main",
    "summarize": "speechsum.serving.summarize:main",
    "pairs": "speechsum.pairs:main",
    "evaluate": "speechsum.evaluation.cli:evaluate_main",
    "report": "speechsum.evaluation.report_cli:report_main",
    "synth": "speechsum.synth.run:main",
    "pipeline": "speechsum.pipeline.cli:main",
}


def _tool(name: str) -> Callable[[list[str]], None]:
    module_name, function_name = TOOLS[name].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def __getattr__(name: str):
    """``lightning_cli`` and ``SpeechSumCLI`` load Lightning only when asked for: tools start fast."""
    if name in ("lightning_cli", "SpeechSumCLI"):
        from speechsum import lightning_cli as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def hide_upstream_notices() -> None:
    """Leave out of every command's output one warning about a library's own code, not the user's
    run: Lightning 2.6's ``_pytree`` builds torch's deprecated ``LeafSpec`` on every Trainer call,
    so torch ≥ 2.10 warned in every fit and evaluate log (Lightning-AI/pytorch-lightning#21326).
    Matched by message, category and the module that raises it: the same warning from any other
    code is still shown."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")


def main(argv: list[str] | None = None) -> None:
    """Run a command. Ctrl-C or SIGTERM ends it with one line and exit code 128 + the signal
    (130, 143), not a traceback; ``speechsum fit`` keeps Lightning's own handling of both, with these
    codes too (its SIGTERM stop would exit 0, as if training had finished, and its Ctrl-C 1)."""
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "speechsum"
    if args and args[0] in TOOLS and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, raise_terminated)  # Lightning's Trainer adds its own handler to it
    die_with_parent()
    hide_upstream_notices()
    sys.excepthook = print_masked_traceback
    try:
        _main(args, argv)
    except KeyboardInterrupt:
        print(f"\nspeechsum {command}: interrupted (Ctrl-C); {_again(command)}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except SystemExit as stop:  # Lightning's SIGTERMException is one, with code None: exit 0
        lightning = sys.modules.get("lightning.pytorch.utilities.exceptions")
        if not isinstance(stop, (Terminated, getattr(lightning, "SIGTERMException", Terminated))):
            raise
        print(f"\nspeechsum {command}: interrupted (SIGTERM); {_again(command)}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None


def print_masked_traceback(kind: type[BaseException], error: BaseException, trace: object) -> None:
    """``sys.excepthook`` of every command: Python's traceback of an error no command ends plainly (or every
    one, with ``SPEECHSUM_TRACEBACK=1``) with the API keys in use and URL credentials masked
    (:func:`speechsum.utils.remote.without_keys`): an endpoint's error quotes the key it refused ("Incorrect API
    key provided: sk-…"), and the traceback went whole to the terminal and the pipeline's stage logs."""
    import traceback

    text = "".join(traceback.format_exception(kind, error, trace))
    remote = sys.modules.get("speechsum.utils.remote")  # loaded where a key was read: it knows them
    sys.stderr.write(remote.without_keys(text) if remote is not None else without_url_secrets(text))
    sys.stderr.flush()


def _again(command: str) -> str:
    """What to do after an interrupted ``command``: the resumable ones continue where they stopped."""
    if command == "fit":
        return "--ckpt_path last resumes from the last checkpoint"
    if command in ("pipeline", "pairs", "synth"):
        return "rerun the same command to continue where it stopped"
    return "rerun the same command"


def versions_line() -> str:
    """``speechsum 0.1.0 (torch 2.x, transformers 5.x, lightning 2.x, python 3.x)``: the installed
    versions, read from the packages' metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    import speechsum

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {installed(name)}" for name in ("torch", "transformers", "lightning"))
    return f"speechsum {speechsum.__version__} ({libraries}, python {sys.version.split()[0]})"


def _main(args: list[str], argv: list[str] | None) -> None:
    from speechsum.utils.denormals import flush_denormals

    flush_denormals()  # every command: subnormal floats slow x86 arithmetic ~100x (utils/denormals.py)
    try:
        if args and args[0] in TOOLS:
            _tool(args[0])(args[1:])
            return
        if args and args[0] in ("-V", "--version"):
            print(versions_line())
            return
        if not args or args[0] in ("-h", "--help"):
            print(OVERVIEW)
            if not args:
                return
        check_command(args[0])
        args = with_project_configs(args)
        if problem := key_option_problem(args, KEY_VARIABLE_SETTING):  # never echoed by jsonargparse's error
            print(f"error: {problem}", file=sys.stderr)
            raise SystemExit(2)
        configs = check_config_files(args)
        args = with_stacked_dicts_merged(args)
        if argv is None:
            sys.argv[1:] = args  # LightningCLI reads sys.argv itself (and warns when given both)
        check_ckpt_path(args, configs)
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        from speechsum.lightning_cli import lightning_cli
        from speechsum.utils.arguments import ConfigError

        try:
            lightning_cli(None if argv is None else args)
        except MisconfigurationException as err:  # Lightning's own check of a trainer setting: its message says it
            raise ConfigError(str(err)) from err
    except Exception as err:
        found = known_error(args[0], err)
        if found is None or os.environ.get("SPEECHSUM_TRACEBACK"):
            raise
        failure, code = found
        if args[0] in LIGHTNING_COMMANDS:  # a trainer./data. setting: the --config file and line that set it
            from speechsum.utils.config_keys import config_paths, located_setting

            failure = located_setting(failure, config_paths(args), args)
        print(f"speechsum {args[0]}: error: {failure}\n(set SPEECHSUM_TRACEBACK=1 for the traceback)", file=sys.stderr)
        raise SystemExit(code) from None


def known_error(command: str, err: Exception) -> tuple[str, int] | None:
    """(one line, exit code) for an error that ends ``command`` without a traceback: a full disk
    (exit 1, :func:`~speechsum.utils.write_errors.write_failure_text`), an input error
    (exit 2; a tool's own OSError/ValueError is about its arguments or inputs; in training, only the
    kinds of :func:`input_error_in_chain`, also where jsonargparse wraps them: a stage's __init__
    failing inside the CLI's parsing), else :func:`known_runtime_error`. None for any other error."""
    from speechsum.utils.write_errors import write_failure_text

    full = write_failure_text(err, _again(command))
    if full is not None:  # not the input's fault: exit 1
        return full, 1
    if isinstance(err, OSError | ValueError):
        cause = err if command in TOOLS else input_error_in_chain(err)
        if cause is not None:
            return str(cause), 2
    return known_runtime_error(err)


def known_runtime_error(err: Exception) -> tuple[str, int] | None:
    """(one line, exit code) for an error that ends any command without a traceback: a trainer
    setting Lightning refuses (``speechsum evaluate --devices 0``; exit 2), a training step whose loss
    or gradients are NaN or infinite (exit 1), an endpoint's refusal (a judge, a remote teacher; its
    key masked; exit 1). None for any other error. Modules not loaded
    are not looked at: nothing of theirs ran."""
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")
    if lightning is not None and isinstance(err, lightning.MisconfigurationException):
        return str(err), 2
    steps = sys.modules.get("speechsum.training.finite_steps")
    if steps is not None and isinstance(err, steps.NonFiniteTrainingError):  # a diverged fit: the step, the checkpoint
        return str(err), 1
    remote = sys.modules.get("speechsum.utils.remote")
    failure = remote.endpoint_error_text(err) if remote is not None else None
    return (failure, 1) if failure else None


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def check_command(word: str) -> None:
    """Exit 2 when ``word`` (the first argument, not an option) is no command, suggesting the closest
    one: the Lightning CLI's own error listed only fit, validate, test and predict, also for a
    misspelled tool (``speechsum evalute``)."""
    import difflib

    commands = [*LIGHTNING_COMMANDS, *TOOLS]
    if word.startswith("-") or word in commands:
        return
    close = difflib.get_close_matches(word, commands, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    print(f"speechsum: unknown command {word!r}{hint}; commands: {', '.join(commands)} (speechsum --help)",
          file=sys.stderr)
    raise SystemExit(2)


def with_project_configs(args: list[str]) -> list[str]:
    """``args`` with each ``--config``/``-c`` file that is not in the working folder but is one of
    the project's own (``configs/trainer/cpu.yaml``: in the checkout speechsum runs from, or among the
    wheel's installed configs, :func:`speechsum.utils.io.project_file`) replaced by that file's path,
    said on stderr: the README's commands work from any folder, as ``speechsum pipeline``'s do."""
    from speechsum.utils.project_configs import project_config as resolved

    out, after_flag = [], False
    for arg in args:
        if after_flag:
            out.append(resolved(arg))
        elif arg.startswith(("--config=", "-c=")):
            flag, value = arg.split("=", 1)
            out.append(f"{flag}={resolved(value)}")
        elif arg.startswith("-c") and len(arg) > 2 and not arg.startswith("--"):
            out.append("-c" + resolved(arg[2:]))
        else:
            out.append(arg)
        after_flag = arg in ("--config", "-c")
    return out


def check_ckpt_path(args: list[str], configs: list) -> None:
    """Raise :class:`~speechsum.models.checkpoint.CheckpointError` naming ``ckpt_path`` (on the
    command line or in one of the parsed ``--config`` files, ``configs``) when it is not a readable
    training checkpoint (Lightning's EOFError / KeyError from deep inside ``torch.load`` did not say
    which file); ``last``, ``best``, ``hpc`` and ``registry`` are Lightning's own names."""
    from speechsum.utils.config_keys import flag_values

    values = flag_values(args, "--ckpt_path")
    values += [c["ckpt_path"] for c in configs if isinstance(c, dict) and isinstance(c.get("ckpt_path"), str)]
    for value in values:
        if value not in ("last", "best", "hpc", "registry", "null", "None"):
            from speechsum.models.checkpoint import check_training_checkpoint

            check_training_checkpoint(value)


def input_error_in_chain(err: BaseException) -> BaseException | None:
    """The first error in ``err``'s chain (itself, then its causes) that is about the user's input (a
    manifest line, an audio file, a checkpoint, a missing path) and whose message says all there is to
    say: such errors end a command with that message, not a traceback. None if there is none."""
    from speechsum.data.audio import AudioTooLongError, BadSampleError, CorruptAudioError, SampleRateError
    from speechsum.data.hf_dataset import HFDatasetError
    from speechsum.data.manifest import ManifestError
    from speechsum.models.checkpoint import CheckpointError
    from speechsum.utils.arguments import ConfigError, error_in_chain

    kinds = (ManifestError, HFDatasetError, BadSampleError, CorruptAudioError, AudioTooLongError, SampleRateError,
             CheckpointError, ConfigError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
    return error_in_chain(err, kinds)


def missing_config_text(value: str) -> str | None:
    """Why a ``--config`` value is no config file (missing, or a folder), or None: a file, or YAML
    given inline (``--config '{trainer: {max_steps: 2}}'``, which jsonargparse also takes)."""
    if os.path.isfile(value) or any(mark in value for mark in ("\n", "{", ": ")):
        return None
    if os.path.isdir(value):
        return f"--config {value} is a folder: give a YAML file, e.g. configs/sft_tiny.yaml"
    if value.endswith((".yaml", ".yml", ".json")) or os.sep in value:
        return f"--config {value}: no such file (from {os.getcwd()}): give the path of a YAML file, e.g. configs/sft_tiny.yaml"
    return None


def check_config_files(args: list[str]) -> list:
    """Exit 2 naming the file, line and column when a ``--config``/``-c`` file is not valid YAML or
    not UTF-8 (the Lightning CLI would report a ``"<unicode string>"`` and not say which of several
    files). Parsed with the Lightning CLI's own YAML loader (jsonargparse's), so whatever it accepts
    passes; anything else (a missing file, YAML text given inline) is left to it. Returns what the
    files hold. A key given twice in one mapping and a section (trainer, model, data) that holds
    no settings are refused too, naming the line."""
    import yaml
    from jsonargparse import get_loader

    from speechsum.utils.config_keys import config_paths, duplicate_key, key_setting, non_mapping_section
    from speechsum.utils.io import not_utf8_text, yaml_error_text

    load = get_loader("yaml")
    configs = []
    for path in config_paths(args):
        missing = missing_config_text(path)
        if missing is not None:  # jsonargparse: its whole usage, then "File does not exist"
            print(f"error: {missing}", file=sys.stderr)
            raise SystemExit(2)
        try:
            with open(path, encoding="utf-8") as file:
                configs.append(load(file.read()))
        except UnicodeDecodeError as err:
            print(f"error: {not_utf8_text(path, err)}", file=sys.stderr)
            raise SystemExit(2) from None
        except yaml.YAMLError as err:
            print(f"error: {yaml_error_text(path, err)}", file=sys.stderr)
            raise SystemExit(2) from None
        except Exception:  # noqa: BLE001  (a missing file, inline YAML, …: the Lightning CLI reports it)
            continue
        if not isinstance(configs[-1], dict):  # jsonargparse: "Unexpected config: ", naming no file
            problem = ("an empty config file (no settings); fill it or leave the --config out" if configs[-1] is None
                       else "a config file is a mapping of settings (trainer:, model:, data:, ...), "
                       f"got a {type(configs[-1]).__name__}")
            print(f"error: {path}: {problem}", file=sys.stderr)
            raise SystemExit(2)
        if (problem := duplicate_key(path) or non_mapping_section(path)  # silently lost settings
                or key_setting(path, KEY_VARIABLE_SETTING)) is not None:  # a key: never saved, never echoed
            print(f"error: {problem}", file=sys.stderr)
            raise SystemExit(2)
    return configs

if __name__ == "__main__":
    main()

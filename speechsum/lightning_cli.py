"""The Lightning CLI behind ``speechsum fit|validate|test|predict``: stage chosen by ``model.class_path``."""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

import speechsum.stages  # noqa: F401  (every stage module by its short name, see speechsum/stages/__init__.py)
from speechsum.data.datamodule import SpeechSumDataModule
from speechsum.data.split_files import warn_shared_manifests
from speechsum.models import import_backbones
from speechsum.models.base import SpeechLLM
from speechsum.stages.base import SpeechStageModule
from speechsum.training.saved_config import MaskedSaveConfigCallback, model_section, restore_credentials
from speechsum.training.trainer_settings import (
    check_accelerator,
    check_cpu_devices,
    check_fit_length,
    check_seed,
    check_trainer_settings,
)
from speechsum.utils.arguments import ConfigError, ConfigFieldError, error_in_chain, without_secrets
from speechsum.utils.config_keys import (
    config_paths,
    did_you_mean,
    key_locations,
    located_setting,
    unknown_key_note,
)
from speechsum.utils.cpu_bf16 import cpu_precision

import_backbones()  # every backbone by its short name (--model.model.help ComposedSpeechLLM)


class SpeechSumArgumentParser(LightningArgumentParser):
    """Its errors about an unknown setting also name the closest accepted one and the ``--config``
    file and line the setting is on (:func:`speechsum.utils.config_keys.unknown_key_note`); the values they
    repeat show no secret (:func:`~speechsum.utils.arguments.without_secrets`)."""

    config_files: list[str] = []  # of the command line being parsed (SpeechSumCLI.parse_arguments)
    command_line: list[str] = []  # that command line's arguments
    working_folder: str = "."  # where that command line was given: its relative --config paths start there

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if nested := NESTED_HELP.search(message):
            super().error(without_secrets(help_class_problem(f"{nested.group(1)}.{nested.group(2)}", nested.group(3))), ex)
        if help_class := HELP_CLASS.search(message):
            super().error(without_secrets(help_class_problem(help_class.group(1), help_class.group(2))), ex)
        parser = getattr(ex, "subcommand_parser", None) or self.command_parser()
        known = [action.dest for action in parser._actions if action.option_strings]
        # jsonargparse reads a --config file inside its folder (os.chdir): a value of the wrong type in
        # configs/x.yaml is refused there, where the relative path configs/x.yaml names nothing
        with in_folder(self.working_folder):
            note = unknown_key_note(message, self.config_files, known, self.command_line)
        super().error(without_secrets(message + note), ex)  # it repeats what it was given: a URL's password too

    def command_parser(self) -> LightningArgumentParser:
        """The parser of the command line's subcommand (``fit``), else this one: an unknown setting found by
        ``--print_config`` is reported by the top parser, which knows no ``trainer.*`` setting to suggest."""
        subcommands = self._subcommands_action
        chosen = self.command_line[0] if self.command_line else None
        return subcommands.choices.get(chosen, self) if subcommands is not None else self


@contextlib.contextmanager
def in_folder(folder: str) -> Iterator[None]:
    """Inside ``folder`` as the working folder, back where it was after (contextlib.chdir is Python 3.11+)."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


# jsonargparse's refusal of ``--model.help SFTModul``, and of ``--model.model.help ComposedSpeech`` (a report on
# "Parser key "model"" whose given value is the nested option, relative to it)
HELP_CLASS = re.compile(r"--([\w.]+)\.help: (?:Expected a dot import path string: |module '[\w.]+' has no attribute ')"
                        r"([\w.]+)")
NESTED_HELP = re.compile(r"^Parser key \"([\w.]+)\":[\s\S]*Given value: NestedArg\(key='([\w.]+)\.help', val='([\w.]+)'\)")


def help_class_problem(key: str, given: str) -> str:
    """``--model.help SFTModul: no such class (did you mean 'SFTModule'?); --model.help takes a stage: …``:
    the classes a stage (``model``) or a backbone (``….model``) setting takes, by name."""
    base = SpeechStageModule if key == "model" else SpeechLLM if key.rsplit(".", 1)[-1] == "model" else None
    if base is None:
        return f"--{key}.help {given}: no such class; give module.Class"
    found, names = [base], []
    while found:
        cls = found.pop()
        found += cls.__subclasses__()
        names += [cls.__name__] if cls.__module__.startswith("speechsum.") and not inspect.isabstract(cls) else []
    names = sorted(set(names) - {base.__name__})
    return (f"--{key}.help {given}: no such class{did_you_mean(given.rsplit('.', 1)[-1], names)}; --{key}.help takes "
            f"{'a stage' if base is SpeechStageModule else 'a backbone'}: {', '.join(names)}")


class SpeechSumCLI(LightningCLI):
    """LightningCLI with the stage module chosen by ``model.class_path`` and one DataModule."""

    def _parse_ckpt_path(self) -> None:
        """An explicit ``--ckpt_path FILE``: a checkpoint of another stage is refused naming both
        (jsonargparse's ~30-line report of the merged configs before). ``fit`` keeps the config as
        given: Lightning would replace its whole model section by the checkpoint's hyperparameters,
        silently (a resumed KD stage called the teacher URL of the interrupted run). The other
        commands keep Lightning's way: the model is rebuilt as the checkpoint was trained."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not os.path.isfile(ckpt_path):
            return
        from speechsum.models.checkpoint import CheckpointError, current_class_path, read_checkpoint

        saved = (read_checkpoint(ckpt_path, mmap=True).get("hyper_parameters") or {}).get("_class_path")
        configured = (self.config[subcommand].get("model") or {}).get("class_path")
        if saved and configured and current_class_path(saved) != current_class_path(configured):
            raise CheckpointError(
                f"ckpt_path {ckpt_path}: a checkpoint of {saved.rpartition('.')[2]}, but this config's stage is "
                f"{configured.rpartition('.')[2]}: resume it with the config it was trained with, or start this "
                f"stage from its weights with --model.init_args.init_from {ckpt_path} (and no --ckpt_path)")
        if subcommand != "fit":
            given = model_section(self.config[subcommand])
            super()._parse_ckpt_path()
            self.config[subcommand]["model"] = restore_credentials(self.config[subcommand]["model"], given, ckpt_path)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        given = sys.argv[1:] if args is None else args
        command_line = [str(arg) for arg in given] if isinstance(given, list) else []
        files = config_paths(command_line)
        for each in (parser, *getattr(self, "_subcommand_parsers", {}).values()):
            each.config_files, each.command_line, each.working_folder = files, command_line, os.getcwd()
        super().parse_arguments(parser, args)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The trainer, saving checkpoints whole or not at all (:func:`use_atomic_checkpoints`), Lightning's own W&B
        logger run as speechsum's (:func:`adopt_lightning_wandb_loggers`)."""
        from speechsum.training.checkpoint_io import use_atomic_checkpoints
        from speechsum.training.loggers import adopt_lightning_wandb_loggers

        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer.strategy)
        adopt_lightning_wandb_loggers(trainer.loggers)
        return trainer

    def _set_seed(self) -> None:
        """Lightning's seeding, after :func:`check_seed` (a seed numpy cannot take was its traceback)."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        check_seed(config.get("seed_everything"))
        super()._set_seed()

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        try:
            check_trainer_settings(config.get("trainer") or {})
            if self.subcommand == "fit":
                check_fit_length(config.get("trainer") or {})
            self.check_machine(config.get("trainer") or {})
        except ConfigError as err:
            raise self.located(err) from None
        check_run_folders(self.subcommand, config.get("trainer") or {})
        data = config.get("data")
        data = data.as_dict() if hasattr(data, "as_dict") else data
        if isinstance(data, Mapping):
            warn_shared_manifests(data)

    def check_machine(self, trainer: Any) -> None:
        """What the trainer's settings ask of this machine: the accelerator, the processes on the CPU, and
        bf16, which a CPU without bf16 instructions runs as 32-true (:func:`cpu_precision`)."""
        check_accelerator(trainer)
        check_cpu_devices(trainer)
        if trainer and trainer.get("precision") is not None:
            trainer["precision"] = cpu_precision(trainer.get("precision"), trainer.get("accelerator"))

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:
            config = self.config.get(self.subcommand) if self.subcommand else self.config
            field = error_in_chain(err, (ConfigFieldError,))
            if field is not None:
                value = None if field.value is None else str(field.value)
                where = key_locations(self.parser.config_files, "model", field.field, value)
                raise ConfigError(field.located(", ".join(where))) from field
            own = err if type(err) is ConfigError else error_in_chain(err.__cause__, (ConfigError,))
            if own is not None:  # a speechsum check inside a nested class jsonargparse wraps (policy: {lora_r: 0})
                raise self.located(own) from None
            refusal = construction_error(err, config.as_dict(), self.parser.config_files)
            if refusal is None:
                raise
            raise refusal from err.__cause__

    def located(self, err: ConfigError) -> ConfigError:
        """``err`` with the ``FILE:LINE`` of the setting it names (``data.max_batch_size must …``) after the
        name, when a ``--config`` file sets it and the command line does not: which of several stacked
        files held the value was not said."""
        return ConfigError(located_setting(str(err), self.parser.config_files, self.parser.command_line))

    def before_fit(self) -> None:
        self._check_last_checkpoint()
        if self.config.get(self.subcommand, {}).get("ckpt_path") == "best":
            refuse_best(self.subcommand, [str(c.dirpath) for c in self.trainer.checkpoint_callbacks
                                          if getattr(c, "dirpath", None)])

    before_validate = before_test = before_predict = before_fit

    def _run_subcommand(self, subcommand: str) -> None:
        """Lightning ends a run stopped by Ctrl-C with ``sys.exit(1)``, a failure's code; it is raised
        again as the ``KeyboardInterrupt`` it was, so ``speechsum.cli.main`` says so and exits 130."""
        try:
            super()._run_subcommand(subcommand)
        except SystemExit as stop:
            if stop.code == 1 and self.trainer.interrupted:
                raise KeyboardInterrupt from None
            raise

    def _check_last_checkpoint(self) -> None:
        """``--ckpt_path last``: the checkpoint Lightning will pick (the newest ``last*.ckpt`` of the
        checkpoint callbacks' folders) is checked as an explicit path is (``speechsum.cli.check_ckpt_path``), so a
        file cut short by a crash or a full disk is named, not a traceback from inside ``torch.load``."""
        if self.config.get(self.subcommand, {}).get("ckpt_path") != "last":
            return
        from lightning.pytorch.callbacks import ModelCheckpoint

        from speechsum.models.checkpoint import CheckpointError, check_training_checkpoint

        found: set[str] = set()
        for callback in self.trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and hasattr(callback, "_find_last_checkpoints"):
                found |= callback._find_last_checkpoints(self.trainer)
        folders = [str(c.dirpath) for c in self.trainer.checkpoint_callbacks if getattr(c, "dirpath", None)]
        refuse_missing_last(self.subcommand, found, folders)
        existing = [path for path in found if os.path.exists(path)]
        if not existing:
            return
        newest = max(existing, key=os.path.getmtime)  # as Lightning chooses
        try:
            check_training_checkpoint(newest, named=f"last ({newest})")
        except CheckpointError as err:
            if err.__cause__ is None:  # readable, but not a training checkpoint: its message says so
                raise
            source = err.__cause__.__context__ or err.__cause__  # torch's own error, when there is one
            cause = f"{type(source).__name__}: {str(source).splitlines()[0].split('. ')[0]}"
            raise CheckpointError(f"ckpt_path last: {newest} cannot be read ({cause}): it was cut short or corrupted, "
                                  "e.g. by a crash or a full disk while it was written. Delete it to resume from an "
                                  "older checkpoint (--ckpt_path FILE) or start again without --ckpt_path") from err


def refuse_missing_last(subcommand: str, found: set[str], folders: list[str]) -> None:
    """``--ckpt_path last`` where Lightning would load nothing and go on with fresh weights (its
    warning only): a ``last.ckpt`` link whose checkpoint is gone, or, for validate/test/predict
    (which would score an untrained model), no last checkpoint at all. ``fit`` with none starts
    training, as Lightning means it to (set before the first run)."""
    from speechsum.models.checkpoint import CheckpointError

    dangling = sorted(path for path in found if os.path.islink(path) and not os.path.exists(path))
    if dangling:
        beside = whole_checkpoints(os.path.dirname(dangling[0]))
        instead = f"--ckpt_path {beside[-1]} (the newest whole checkpoint beside it)" if beside else \
            "--ckpt_path FILE of another checkpoint"
        raise CheckpointError(
            f"ckpt_path last: {dangling[0]} links to {os.readlink(dangling[0])}, which does not exist (deleted, moved, "
            f"or a kill came between a checkpoint's save and the link's update); pass {instead}, put the file back, "
            f"or delete the link {'to start training afresh' if subcommand == 'fit' else 'and train again'}")
    if subcommand != "fit" and not any(os.path.exists(path) for path in found):
        raise CheckpointError(
            f"ckpt_path last: no last checkpoint in {', '.join(folders) or 'any checkpoint folder (no ModelCheckpoint)'}, "
            f"so {subcommand} would run the untrained model; run `speechsum fit` with this config first (a "
            "ModelCheckpoint with save_last), or pass --ckpt_path FILE")


def refuse_best(subcommand: str, folders: list[str]) -> None:
    """``--ckpt_path best``: Lightning knows the best checkpoint only within the ``fit`` run that saved
    it (``ModelCheckpoint.best_model_path``); a new command always failed, in a traceback saying the
    callback was "not configured to save the best model" (also when it was)."""
    from speechsum.models.checkpoint import CheckpointError

    saved = [path for folder in folders if os.path.isdir(folder) for path in whole_checkpoints(folder)
             if not os.path.basename(path).startswith("last")]
    example = f"e.g. {saved[-1]}, the newest in {os.path.dirname(saved[-1])}" if saved else \
        f"a checkpoint of {', '.join(folders) or 'the run'}"
    raise CheckpointError(f"ckpt_path best: which checkpoint was best is known only inside the fit run that saved it, "
                          f"not to a new `speechsum {subcommand}`; pass --ckpt_path FILE ({example}; its name says "
                          "its epoch and step) or --ckpt_path last")


def whole_checkpoints(folder: str) -> list[str]:
    """The readable ``*.ckpt`` files (not links) of ``folder``, oldest first."""
    from speechsum.pipeline.resume import readable

    files = [entry.path for entry in os.scandir(folder) if entry.name.endswith(".ckpt") and entry.is_file(follow_symlinks=False)]
    return sorted((path for path in files if readable(Path(path))), key=os.path.getmtime)


def check_run_folders(subcommand: str | None, trainer: Any) -> None:
    """Refuse, before the model is built, a folder the run writes to where nothing can be created (a
    file in the way, a read-only place), naming the setting: the loggers' ``save_dir`` (an
    ``[Errno 2]`` naming only the path before) and, for ``fit``, each ``ModelCheckpoint``'s
    ``dirpath`` (the first save failed after the first epoch's training)."""
    from speechsum.utils.io import check_output_path

    def entries(value: Any) -> list[dict]:
        listed = [entry.as_dict() if hasattr(entry, "as_dict") else entry
                  for entry in (value if isinstance(value, list) else [value])]
        return [entry for entry in listed if isinstance(entry, dict) and isinstance(entry.get("init_args"), dict)]

    places = [(f"trainer.logger {entry['class_path'].rpartition('.')[2]}.save_dir", entry["init_args"].get("save_dir"))
              for entry in entries(trainer.get("logger"))]
    if subcommand in (None, "fit"):
        places += [(f"trainer.callbacks {entry['class_path'].rpartition('.')[2]}.dirpath", entry["init_args"].get("dirpath"))
                   for entry in entries(trainer.get("callbacks")) if str(entry.get("class_path")).endswith("Checkpoint")]
    for option, path in places:
        if isinstance(path, str | os.PathLike) and "://" not in str(path):
            check_output_path(path, option, folder=True)


def path_settings(config: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, value)`` of every string of ``config`` written as a path (with a ``/``)."""
    if isinstance(config, dict):
        for key, value in config.items():
            yield from path_settings(value, f"{prefix}{key}.")
    elif isinstance(config, list):
        for index, value in enumerate(config):
            yield from path_settings(value, f"{prefix}{index}.")
    elif isinstance(config, str) and "/" in config:
        yield prefix.rstrip("."), config


def construction_error(err: ValueError, config: dict, files: list[str] = ()) -> ConfigError | None:
    """The error of a class the config names that a library raised while it was built (a model folder
    without config.json, weights or tokenizer files; one that does not exist, which Hugging Face calls
    an invalid repo id), as one line naming the setting: jsonargparse reports it as "Does not validate
    against any of the Union subtypes" around a dump of the whole config. None for speechsum's own
    errors (they name their setting), the file errors ``speechsum`` ends with plainly, and the rest.
    A folder that does not exist is named with the ``FILE:LINE`` of ``files`` (the ``--config`` files)
    that sets it, and one under ``runs/benchmark/`` with what writes it."""
    cause = err.__cause__
    plain = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
    # a TypeError of transformers' typed configs (llm: {hidden_size: abc}), torch's RuntimeError of a size it cannot
    # make, an ArithmeticError: each a traceback before
    built = (ValueError, OSError, TypeError, RuntimeError, ArithmeticError)
    if (not isinstance(cause, built) or isinstance(cause, plain)
            or type(cause).__module__.startswith("speechsum")):
        return None
    text = f"{type(cause).__name__}: {cause}"
    for key, value in path_settings(config):
        if value in str(cause) and not os.path.exists(os.path.expanduser(value)):
            where = key_locations(list(files), key.split(".")[0], key.rsplit(".", 1)[-1], value)
            made = (" (the benchmark pipeline writes runs/benchmark/: speechsum pipeline --run-dir runs/benchmark "
                    "--until STAGE, docs/pipeline.md)" if value.startswith("runs/benchmark/") else "")
            return ConfigError(f"{key}{f' ({where[-1]})' if where else ''}: {value} does not exist{made}: give a "
                               f"Hugging Face model folder or hub id ({text})")
        if value in str(cause):
            return ConfigError(f"{key}: {value} cannot be loaded: {text}")
    model = (config.get("model") or {}).get("class_path")
    return ConfigError(f"{f'model ({model})' if model else 'a class of the config'} cannot be built: {text}")


def lightning_cli(args: list[str] | None = None, run: bool = True) -> SpeechSumCLI:
    return SpeechSumCLI(
        SpeechStageModule,
        SpeechSumDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        parser_class=SpeechSumArgumentParser,
        save_config_callback=MaskedSaveConfigCallback,  # a base_url's user:password@ masked in the run's config.yaml
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )

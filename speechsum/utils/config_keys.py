"""Where an unknown setting of a ``speechsum fit|validate|test|predict`` command line is, and the
name likely meant: jsonargparse says "Subcommand 'fit' does not accept option 'trainer.max_stepz'"
or "Option 'learning_rat' is not accepted" without naming the ``--config`` file (of several
stacked) or line, and suggests nothing."""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

SUBCOMMAND_KEY = re.compile(r"does not accept option '([^']+)'")
GROUP_KEY = re.compile(r"Group '([^']+)' does not accept option '([^']+)'")  # with --print_config
NESTED_KEY = re.compile(r"Option '([^']+)' is not accepted")
TOP_KEY = re.compile(r'^Parser key "([^"]+)"')
CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)':\s*\n\s*Option '([^']+)' is not accepted")
UNRECOGNIZED = re.compile(r"^unrecognized arguments: (.*)")
PARSER_KEY = re.compile(r'Parser key "([^"]+)":')
# a type (<class 'int'>) or a choice (typing.Literal['float32', 'bfloat16']: named as "expected , got ..." before)
EXPECTED = re.compile(r"Expected a (?:<class '([^']+)'>|typing\.Literal\[([^\]]*)\])")
GIVEN = re.compile(r"(?:Got value|Given value): (.*)$", re.MULTILINE)
MISSING_CLASS = re.compile(r"Problem with given class_path '([^']+)':\s*\n\s*(?:module '[^']+' has no attribute|No module "
                           r"named)")
TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "NoneType": "null",
              "dict": "a mapping", "list": "a list"}


# a trainer./data. setting, or a stage's (model.init_args.learning_rate, model.init_args.generation.top_p)
SECTION_SETTING = re.compile(r"((?:trainer|data)\.\w+|model(?:\.\w+)+?)( must .*|: .*)", re.DOTALL)


def located_setting(message: str, files: list[str], command_line: list[str]) -> str:
    """``message`` (``trainer.devices must …``, ``data.train_manifest: manifest not found …``,
    ``model.init_args.learning_rate must …``) with the last ``--config`` file's line that sets the setting
    after its name (the one a stack of files takes); unchanged when the command line sets it
    (``--trainer.devices 4``) or no file does."""
    match = SECTION_SETTING.fullmatch(message)
    key = match.group(1) if match else ""
    given = (f"--{key}", f"--{key.replace('.init_args.', '.')}")  # jsonargparse takes --model.learning_rate too
    if match is None or any(arg.split("=", 1)[0] in given for arg in command_line):
        return message
    if key.startswith("model."):  # the whole path: max_new_tokens is a KD setting and one of generation's
        keys = tuple(key.split("."))
        where = [f"{file}:{line}" for file in files if (document := _composed(file)) is not None
                 for path, line, _ in _key_lines(document) if path == keys]
    else:
        where = key_locations(files, *key.split("."))
    return f"{key} ({where[-1]}){match.group(2)}" if where else message


def flag_values(args: list[str], *flags: str) -> list[str]:
    """The values of ``flags`` on a command line, written ``--flag VALUE`` or ``--flag=VALUE``."""
    values = [value for flag, value in zip(args, args[1:]) if flag in flags]
    return values + [arg.split("=", 1)[1] for arg in args if arg.startswith(tuple(f"{flag}=" for flag in flags))]


def config_paths(args: list[str]) -> list[str]:
    """The ``--config`` / ``-c`` files of a Lightning CLI command line, in every spelling."""
    paths = flag_values(args, "--config", "-c")
    return paths + [arg[2:] for arg in args if arg.startswith("-c") and len(arg) > 2 and arg[2] != "="]


def _key_lines(node: yaml.Node, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], int, yaml.Node]]:
    """(path of mapping keys, 1-based line, value node) of every key in a composed YAML document."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, str(key.value))
            yield path, key.start_mark.line + 1, value
            yield from _key_lines(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _key_lines(item, prefix)


def _composed(path: str | Path) -> yaml.Node | None:
    """The YAML document of ``path`` as nodes (with their lines), None when empty or it does not compose
    (its own error is reported where it is read)."""
    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.compose(stream)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


SECTIONS = ("trainer", "model", "data")  # the Lightning CLI's sections of settings


def non_mapping_section(path: str | Path) -> str | None:
    """``PATH:LINE: trainer: ...`` for the first top-level section of a ``speechsum fit`` config
    (:data:`SECTIONS`) whose value is no mapping of settings nor text (a class path, a config file's
    path, which jsonargparse reads): ``trainer: 5``, or ``trainer:`` with its
    settings commented out (null) replaced the earlier config files' trainer settings with Lightning's
    defaults without a word; ``data: [..]`` or null was a TypeError traceback."""
    document = _composed(path)
    for key, value in document.value if isinstance(document, yaml.MappingNode) else ():
        text = isinstance(value, yaml.ScalarNode) and value.tag.endswith(":str")  # a class path or a config file
        if key.value in SECTIONS and not isinstance(value, yaml.MappingNode) and not text:
            given = ("empty (null)" if value.tag.endswith(":null") else
                     f"{value.value!r}" if isinstance(value, yaml.ScalarNode) else "a list")
            return (f"{path}:{key.start_mark.line + 1}: {key.value}: a section of settings (a mapping, each setting "
                    f"indented under it), got {given}: write its settings under it, or delete the key")
    return None


def key_setting(path: str | Path, instead: str) -> str | None:
    """``PATH:LINE: a.b.api_key: ...`` for the first setting of the config file ``path`` named like an API key
    (:data:`~speechsum.utils.arguments.KEY_SETTING`), saying to give it in the environment (``instead``: what
    names the variable); None when there is none. jsonargparse refused it, repeating the value, and dumped
    the whole section with the key in it into the log."""
    from speechsum.utils.arguments import KEY_SETTING, key_advice

    document = _composed(path)
    for keys, line, _ in _key_lines(document) if document is not None else ():
        if KEY_SETTING.fullmatch(keys[-1]):
            return f"{path}:{line}: {'.'.join(keys)}: {key_advice(instead)}"
    return None


def duplicate_key(path: str | Path) -> str | None:
    """``PATH:LINE: key 'K' (under 'a.b') is given twice (first on line N): ...`` for the first key a
    YAML mapping of ``path`` repeats (PyYAML keeps the last silently, so the first is lost); None when
    none repeats or the file does not compose (its own error is reported where it is read)."""
    document = _composed(path)
    nodes: list[tuple[tuple[str, ...], yaml.Node]] = [((), document)] if document is not None else []
    while nodes:
        prefix, node = nodes.pop(0)
        children = [(prefix, item) for item in node.value] if isinstance(node, yaml.SequenceNode) else []
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name, line = str(key.value), key.start_mark.line + 1
                if name in seen:
                    under = f" (under '{'.'.join(prefix)}')" if prefix else ""
                    return (f"{path}:{line}: key '{name}'{under} is given twice (first on line {seen[name]}); YAML "
                            "would keep only the last: merge the two or delete one")
                seen[name] = line
                children.append(((*prefix, name), value))
        nodes += children
    return None


def key_locations(files: list[str], under: str, name: str, value: str | None = None,
                  mapping: bool | None = None) -> list[str]:
    """``FILE:LINE`` of each key ``name`` below the top-level key ``under``'s first part in ``files``
    (only those whose scalar value is ``value`` when it is given; whose value is a mapping, or is
    not, when ``mapping`` is True or False)."""
    found = []
    for file in files:
        try:
            with open(file, encoding="utf-8") as stream:
                document = yaml.compose(stream)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # reported on its own by the CLI
        if document is not None:
            found += [f"{file}:{line}" for path, line, node in _key_lines(document)
                      if path[0] == under.split(".")[0] and path[-1] == name
                      and (value is None or isinstance(node, yaml.ScalarNode) and node.value == value)
                      and (mapping is None or isinstance(node, yaml.MappingNode) == mapping)]
    return found


def init_parameters(class_path: str) -> list[str]:
    """The arguments ``class_path``'s ``__init__`` takes, those its ``**kwargs`` pass on to base
    classes included; [] when it cannot be imported."""
    module, _, name = class_path.rpartition(".")
    try:
        klass = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for base in klass.__mro__:
        if "__init__" not in vars(base):
            continue
        parameters = list(inspect.signature(vars(base)["__init__"]).parameters.values())[1:]
        names += [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names


def did_you_mean(word: str, choices: list[str]) -> str:
    """`` (did you mean 'X'?)`` for the choice closest to ``word``; "" when none is close."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


GIVEN_VALUE = re.compile(r"Given value: (\{.*)")
SPEC_KEYS = ("class_path", "init_args", "dict_kwargs")
REQUIRED = re.compile(r"the following arguments are required: ([\w.]+)")
STAGE_HINT = ("speechsum.stages.sft.SFTModule, OnPolicyKDModule or DPOModule (see configs/sft_tiny.yaml, "
              "configs/kd.yaml, configs/dpo.yaml)")


def unknown_key_note(message: str, files: list[str], known_keys: list[str], command_line: list[str] = ()) -> str:
    """What to add to jsonargparse's ``message`` about an unknown setting: the closest accepted
    name and, for one read from ``files``, each ``FILE:LINE`` it is on (a value of the wrong type
    given on ``command_line``, the arguments: that option); "" for other messages.
    ``known_keys``: the dotted settings (``trainer.max_steps``) the command takes."""
    if match := GROUP_KEY.search(message) or SUBCOMMAND_KEY.search(message):
        key = ".".join(match.groups())
        where = key_locations(files, key, key.rsplit(".", 1)[-1])
        return f"\n  {key}{did_you_mean(key, known_keys)}" + (f": in {', '.join(where)}" if where else "")
    if (top := TOP_KEY.search(message)) and (match := CLASS_PATH.search(message)):
        class_path, name = match.groups()
        where = key_locations(files, top.group(1), name)
        return (f"\n  {name} (a setting of {class_path}){did_you_mean(name, init_parameters(class_path))}"
                + (f": in {', '.join(where)}" if where else ""))
    if match := MISSING_CLASS.search(message):
        return _missing_class_note(match.group(1), files)
    if (keys := PARSER_KEY.findall(message)) and (given := GIVEN_VALUE.search(message)):
        misspelt = [key for key in re.findall(r"'(\w+)': ", given.group(1))
                    if key not in SPEC_KEYS and difflib.get_close_matches(key, SPEC_KEYS, n=1, cutoff=0.75)]
        if misspelt:
            where = key_locations(files, keys[0], misspelt[0])
            return (f"\n  {keys[0]}.{misspelt[0]}{did_you_mean(misspelt[0], list(SPEC_KEYS))}: not a key of a class "
                    "setting (class_path, init_args)" + (f": in {', '.join(where)}" if where else ""))
    if (keys := PARSER_KEY.findall(message)) and "'class_path': None" in message:
        where = [place for null in ("null", "~", "") for place in key_locations(files, keys[0], "class_path", null)]
        return (f"\n  {keys[0]}.class_path: empty (null): give the class to build{', a stage: ' + STAGE_HINT if keys[0] == 'model' else ''}"
                + (f": in {', '.join(where)}" if where else ""))
    if (required := REQUIRED.search(message)) and required.group(1).rsplit(".", 1)[-1] == "model":
        return f"\n  {required.group(1)}: no model in the config: add a model: section whose class_path is a stage: {STAGE_HINT}"
    if (keys := PARSER_KEY.findall(message)) and (expected := EXPECTED.findall(message)) and GIVEN.search(message):
        subclass = "Not a valid subclass" in message or "Expected a dot import path" in message
        return _wrong_type_note(keys, expected, GIVEN.search(message).group(1), files, list(command_line), subclass,
                                settings_words(message))
    if match := UNRECOGNIZED.search(message):
        options = [f"--{key}" for key in known_keys]
        notes = [f"{word}{did_you_mean(word, options)}" for word in match.group(1).split() if word.startswith("--")]
        return "".join(f"\n  {note}" for note in notes if "did you mean" in note)
    return ""


SETTINGS_CLASS = re.compile(r"Subtypes: \[<class '([\w.]+)'>, <class 'NoneType'>\]\s*\n\s*Errors:\s*\n\s*- Not a valid "
                            r"subclass of (\w+)")


def settings_words(message: str) -> str | None:
    """``a mapping of GenerationSettings' settings (max_new_tokens, …)`` when the setting of a wrong
    type in jsonargparse's ``message`` is a dataclass of plain settings (``generation: [1, 2]``):
    its advice was a class path or a class_path/init_args mapping, which a dataclass takes neither
    of in any config of this project. None for any other setting."""
    import dataclasses

    found = SETTINGS_CLASS.findall(message)
    if not found:
        return None
    module, _, name = found[-1][0].rpartition(".")
    try:
        settings = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    if not dataclasses.is_dataclass(settings):
        return None
    return f"a mapping of {name} fields ({', '.join(field.name for field in dataclasses.fields(settings))})"


def _wrong_type_note(keys: list[str], expected: list[tuple[str, str]], given: str, files: list[str],
                     command_line: list[str], subclass: bool = False, settings: str | None = None) -> str:
    """A value of the wrong type: jsonargparse names the innermost key alone (``learning_rate``, of
    which stage?) and neither the file nor the line; ``keys``: its "Parser key" names, outermost first;
    ``expected``: (type name, "") or ("", the choices) of each type it names; ``subclass``: the setting
    is a class setting, which jsonargparse's message names by null only ("expected , got 5" before);
    ``settings``: the words of a dataclass of plain settings (:func:`settings_words`).
    A value given on ``command_line`` (which overrides the files) is named as that option, not as the
    files' line of the same key, whose value is fine."""
    name = keys[-1].rsplit(".", 1)[-1]
    kinds = [TYPE_WORDS.get(kind, kind) if kind else f"one of {choices}" for kind, choices in expected]
    words = " or ".join(dict.fromkeys(kind for kind in kinds if kind != "null"))
    words = settings or words or ("a class (module.Class) or a mapping with class_path and init_args" if subclass
                                  else "another type")
    flags = [arg.split("=", 1)[0] for arg in command_line]
    options = [flag for flag in flags if flag == f"--{keys[-1]}"  # a top-level key: --seed_everything abc
               or flag.startswith(f"--{keys[0].split('.')[0]}.") and flag.rsplit(".", 1)[-1] == name]
    if options:
        return f"\n  {name}: expected {words}, got {given}: on the command line ({options[-1]} {given})"
    where = (key_locations(files, keys[0], name, given) or settings and key_locations(files, keys[0], name, mapping=False)
             or key_locations(files, keys[0], name))  # a list where a mapping goes: the files' mappings are fine
    return f"\n  {name}: expected {words}, got {given}" + (f": in {', '.join(where)}" if where else "")


def speechsum_classes() -> list[str]:
    """``module.Class`` of every class defined in an imported speechsum module."""
    found = []
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("speechsum.") and module is not None:
            found += [f"{module_name}.{name}" for name, value in vars(module).items()
                      if inspect.isclass(value) and value.__module__ == module_name and not name.startswith("_")]
    return found


def _missing_class_note(class_path: str, files: list[str]) -> str:
    """A ``class_path`` that names no class: the speechsum class with the closest name, and where it is."""
    classes = speechsum_classes()
    close = difflib.get_close_matches(class_path.rsplit(".", 1)[-1], [path.rsplit(".", 1)[-1] for path in classes], n=1)
    hint = f" (did you mean {next(path for path in classes if path.endswith('.' + close[0]))!r}?)" if close else ""
    where = [place for top in ("model", "data", "trainer") for place in key_locations(files, top, "class_path", class_path)]
    return f"\n  class_path {class_path!r}: no such class{hint}" + (f": in {', '.join(where)}" if where else "")


def unknown_keys_note(path: str | os.PathLike, section: str | None, unknown: list[str], allowed: list[str]) -> str:
    """`` (KEY on line N, did you mean 'K'?; ...)`` for the ``unknown`` keys of ``section`` (None: the
    top level) of the YAML at ``path`` (a pipeline config), with a hint when it is a config of
    ``speechsum fit`` instead: a misspelled key is found without reading the whole file."""
    notes = []
    for key in unknown:
        lines = [place.rsplit(":", 1)[1] for place in key_locations([str(path)], section or key, key)]
        hint = did_you_mean(key, allowed).strip()[1:-1]  # "did you mean 'seed'?"
        notes.append(", ".join([f"{key} on line {lines[0]}" if lines else key] + ([hint] if hint else [])))
    fit_config = section is None and {"trainer", "model"} & set(unknown)
    return f" ({'; '.join(notes)})" + (": a config of speechsum fit? the pipeline takes one as stages.STAGE.config"
                                       if fit_config else "")

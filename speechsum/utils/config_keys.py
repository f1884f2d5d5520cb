"""Where an unknown setting of a ``speechsum fit|validate|test|predict`` command line is, and the
name likely meant: jsonargparse says "Subcommand 'fit' does not accept option 'trainer.max_stepz'"
or "Option 'learning_rat' is not accepted" without naming the ``--config`` file (of several
stacked) or line, and suggests nothing."""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Iterator

import yaml

SUBCOMMAND_KEY = re.compile(r"does not accept option '([^']+)'")
NESTED_KEY = re.compile(r"Option '([^']+)' is not accepted")
TOP_KEY = re.compile(r'^Parser key "([^"]+)"')
CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)':\s*\n\s*Option '([^']+)' is not accepted")
UNRECOGNIZED = re.compile(r"^unrecognized arguments: (.*)")


def flag_values(args: list[str], *flags: str) -> list[str]:
    """The values of ``flags`` on a command line, written ``--flag VALUE`` or ``--flag=VALUE``."""
    values = [value for flag, value in zip(args, args[1:]) if flag in flags]
    return values + [arg.split("=", 1)[1] for arg in args if arg.startswith(tuple(f"{flag}=" for flag in flags))]


def config_paths(args: list[str]) -> list[str]:
    """The ``--config`` / ``-c`` files of a Lightning CLI command line, in every spelling."""
    paths = flag_values(args, "--config", "-c")
    return paths + [arg[2:] for arg in args if arg.startswith("-c") and len(arg) > 2 and arg[2] != "="]


def _key_lines(node: yaml.Node, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], int]]:
    """(path of mapping keys, 1-based line) of every key in a composed YAML document."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, str(key.value))
            yield path, key.start_mark.line + 1
            yield from _key_lines(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _key_lines(item, prefix)


def key_locations(files: list[str], under: str, name: str) -> list[str]:
    """``FILE:LINE`` of each key ``name`` below the top-level key ``under``'s first part in ``files``."""
    found = []
    for file in files:
        try:
            with open(file, encoding="utf-8") as stream:
                document = yaml.compose(stream)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # reported on its own by the CLI
        if document is not None:
            found += [f"{file}:{line}" for path, line in _key_lines(document)
                      if path[0] == under.split(".")[0] and path[-1] == name]
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


def _closest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key_note(message: str, files: list[str], known_keys: list[str]) -> str:
    """What to add to jsonargparse's ``message`` about an unknown setting: the closest accepted
    name and, for one read from ``files``, each ``FILE:LINE`` it is on; "" for other messages.
    ``known_keys``: the dotted settings (``trainer.max_steps``) the command takes."""
    if match := SUBCOMMAND_KEY.search(message):
        key = match.group(1)
        where = key_locations(files, key, key.rsplit(".", 1)[-1])
        return f"\n  {key}{_closest(key, known_keys)}" + (f": in {', '.join(where)}" if where else "")
    if (top := TOP_KEY.search(message)) and (match := CLASS_PATH.search(message)):
        class_path, name = match.groups()
        where = key_locations(files, top.group(1), name)
        return (f"\n  {name} (a setting of {class_path}){_closest(name, init_parameters(class_path))}"
                + (f": in {', '.join(where)}" if where else ""))
    if match := UNRECOGNIZED.search(message):
        options = [f"--{key}" for key in known_keys]
        notes = [f"{word}{_closest(word, options)}" for word in match.group(1).split() if word.startswith("--")]
        return "".join(f"\n  {note}" for note in notes if "did you mean" in note)
    return ""

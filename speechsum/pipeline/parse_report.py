"""jsonargparse's report of a config it refuses (nested by indentation: ``Parser key "model":``,
``Problem with given class_path 'C':``, the alternatives of a union, a dump of the value given) read
down to its deepest problem: the dotted key of the config it is at and what is wrong there, for
:mod:`speechsum.pipeline.checks` to put on one line."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any

from speechsum.utils.config_keys import PARSER_KEY, SPEC_KEYS, TYPE_WORDS, did_you_mean, init_parameters

CLASS = re.compile(r"^Problem with given class_path '([^']+)':")
UNKNOWN = re.compile(r"^(?:Group '([^']+)' does not accept option|Option) '([^']+)'(?: is not accepted)?$")
EXPECTED = re.compile(r"^Expected a (.+?)(?:\. Got value: (.*))?$")
NO_CLASS = re.compile(r"^(module '[^']+' has no attribute '[^']+'|No module named .*)$")
NOT_SUBCLASS = re.compile(r"^Not a valid subclass of (\w+)")
GIVEN = re.compile(r"^Given value: (.*)$")
NOISE = re.compile(r"^(Does not validate|Subtypes:|Errors:|Given value type|Subclass types expect|a class path|a dict )")
Steps = list[tuple[str, str]]


def type_words(expected: str) -> str:
    """``<class 'int'>`` → an integer; ``typing.Literal['a', 'b']`` → one of 'a', 'b'."""
    if match := re.fullmatch(r"<class '([^']+)'>", expected):
        return TYPE_WORDS.get(match.group(1), f"a {match.group(1)}")
    if match := re.fullmatch(r"typing\.Literal\[(.*)\]", expected):
        return f"one of {match.group(1)}"
    return expected


def locate(resolved: Mapping, steps: Steps) -> tuple[list[str], Any, str | None]:
    """The dotted key (split) in ``resolved`` that the report's nesting ``steps`` point at, the value
    there, and the class last met: a ``("key", "trainer.callbacks")`` step descends by those keys, a
    ``("class", C)`` step into ``init_args`` where the setting is written ``{class_path, init_args}``
    (a dataclass such as ``generation`` is a plain mapping), a list into its item of class C."""
    keys: list[str] = []
    node: Any = resolved
    owner = None
    for kind, name in steps:
        if kind == "class":
            owner = name
            if isinstance(node, list):
                found = [i for i, item in enumerate(node) if isinstance(item, Mapping) and item.get("class_path") == name]
                if found:
                    keys.append(str(found[0]))
                    node = node[found[0]]
            if isinstance(node, Mapping) and "class_path" in node:
                keys.append("init_args")
                node = node.get("init_args") or {}
            continue
        for key in name.split("."):
            keys.append(key)
            node = node.get(key) if isinstance(node, Mapping) else None
    return keys, node, owner


def read_report(message: str) -> tuple[Steps, str, tuple[str, ...]] | None:
    """(nesting, kind, details) of the deepest problem of ``message``: kind ``unknown`` (group,
    name), ``type`` (expected, given), ``class`` (import error), ``shape`` (class), ``union``
    (the alternatives, given) or ``other`` (the line); None when it names none."""
    best: tuple[Steps, str, tuple[str, ...]] | None = None
    alternatives: dict[tuple, list[str]] = {}
    given: dict[tuple, str] = {}
    stack: list[tuple[int, tuple[str, str]]] = []

    def keep(steps: Steps, kind: str, details: tuple[str, ...]) -> None:
        nonlocal best
        if best is None or len(steps) >= len(best[0]):
            best = (steps, kind, details)

    for line in message.splitlines():
        text = line.strip().removeprefix("- ")
        indent = len(line) - len(line.lstrip(" -"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        steps = [step for _, step in stack]
        if match := PARSER_KEY.match(text):
            stack.append((indent, ("key", match.group(1))))
        elif match := CLASS.match(text):
            stack.append((indent, ("class", match.group(1))))
        elif match := UNKNOWN.match(text):
            keep(steps, "unknown", match.groups())
        elif match := NO_CLASS.match(text):
            keep(steps, "class", match.groups())
        elif match := NOT_SUBCLASS.match(text):
            keep(steps, "shape", match.groups())
        elif (match := EXPECTED.match(text)) and match.group(2) is not None:
            keep(steps, "type", match.groups())
        elif match:
            alternatives.setdefault(tuple(steps), []).append(type_words(match.group(1)))
        elif match := GIVEN.match(text):
            given[tuple(steps)] = match.group(1)
        elif text and not NOISE.match(text) and steps:
            keep(steps, "other", (text,))
    if best is not None and best[1] not in ("other",):
        return best
    unions = [steps for steps, words in alternatives.items() if words != ["null"]]
    if unions and (best is None or len(max(unions, key=len)) > len(best[0])):
        steps = max(unions, key=len)
        return list(steps), "union", (", ".join(alternatives[steps]), given.get(steps, "?"))
    return best


def describe(message: str, resolved: Mapping, known_keys: Callable[[str], list[str]]) -> tuple[list[str], str] | None:
    """(the dotted key, split; what is wrong there and what to do) of jsonargparse's ``message``
    about ``resolved``; ``known_keys(prefix)``: the settings under a dotted prefix ('' for the top)."""
    found = read_report(message)
    if found is None:
        return None
    steps, kind, details = found
    if kind == "unknown":
        group, name = details
        keys, _, owner = locate(resolved, [*steps, ("key", group)] if group else steps)
        known = init_parameters(owner) if owner else [key.rpartition(".")[2] for key in known_keys(".".join(keys))]
        return [*keys, name], f"unknown setting{f' of {owner}' if owner else ''}{did_you_mean(name, known)}: correct or remove it"
    keys, node, owner = locate(resolved, steps)
    if kind == "type":
        expected, value = details
        return keys, f"expected {type_words(expected)}, got {value!r}: give {type_words(expected)}"
    if kind == "union":
        return keys, f"expected {details[0].replace(', null', ' or null')}, got {details[1][:80]}"
    if kind == "class":
        keys = keys[:-1] if keys and keys[-1] == "init_args" else keys
        return [*keys, "class_path"], f"no class {owner} ({details[0]}): give an importable class (module.Class)"
    if isinstance(node, Mapping) and "class_path" in node and not node["class_path"]:
        return [*keys, "class_path"], "empty (null): give the class to build (module.Class)"
    if kind == "shape":
        misspelt = [key for key in node if key not in SPEC_KEYS and difflib.get_close_matches(key, SPEC_KEYS, n=1)] \
            if isinstance(node, Mapping) else []
        if misspelt:
            return [*keys, misspelt[0]], f"unknown key{did_you_mean(misspelt[0], list(SPEC_KEYS))}: a class setting " \
                                         "takes class_path and init_args"
        return keys, f"expected the settings of {details[0]} (a mapping), got {str(node)[:80]}"
    return keys, details[0]

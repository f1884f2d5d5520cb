"""An option given twice on one command line with two different values (``--batch-size 8 …
--batch-size 16``): argparse keeps the last without a word, so the first, typed on purpose, was lost.
:class:`OnceParser` refuses it with a usage error naming both values; options that add up
(``--manifest`` and ``--system`` of ``speechsum evaluate``: ``action="append"``), flags, and an option
repeated with the same value are taken as before."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import NoReturn

from speechsum.utils.arguments import key_option_problem, without_secrets


def option_action(parser: argparse.ArgumentParser, arg: str) -> tuple[argparse.Action, str | None] | None:
    """(the action ``arg`` names, the value written inside it: ``--out=x``'s ``x``, ``-n5``'s ``5``;
    None when the value is the next argument), or None for no option of ``parser``: a value, a
    negative number, an abbreviation of several options (argparse's own error says so)."""
    options = parser._option_string_actions
    if not arg.startswith("-") or arg == "-":
        return None
    if arg.startswith("--"):
        name, equals, value = arg.partition("=")
        if name in options:
            return options[name], value if equals else None
        matches = [o for o in options if o.startswith(name) and o.startswith("--")] if parser.allow_abbrev else []
        return (options[matches[0]], value if equals else None) if len(matches) == 1 else None
    if arg in options:
        return options[arg], None
    if arg[:2] in options and len(arg) > 2:  # -n5, -n=5
        return options[arg[:2]], arg[2:].removeprefix("=")
    return None


def repeated_option(parser: argparse.ArgumentParser, args: Sequence[str]) -> str | None:
    """``--out: given twice, a then b: give it once`` for the first plain option (one value, stored)
    that ``args`` give twice with different values; None when there is none. Stops at ``--`` and at a
    subcommand's name (its own parser checks what follows)."""
    commands = {name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                for name in action.choices}
    seen: dict[argparse.Action, tuple[str, str]] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--" or arg in commands:
            return None
        found = option_action(parser, arg)
        if found is None:
            continue
        action, value = found
        if type(action) is not argparse._StoreAction or action.nargs not in (None, "?"):
            continue
        if value is None:
            if action.nargs == "?" or index >= len(args):
                continue
            value = args[index]
            index += 1
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
        if action in seen and not same_value(action, seen[action][1], value):
            first_name, first = seen[action]
            shown = name if name == first_name else f"{first_name} / {name}"
            return (f"{shown}: given twice, {first!r} and then {value!r}; give it once (argparse would keep the "
                    f"last without a word)")
        seen.setdefault(action, (name, value))
    return None


def same_value(action: argparse.Action, first: str, then: str) -> bool:
    """Whether two values of ``action`` are the same (``2`` and ``02`` of an integer option are)."""
    if first == then:
        return True
    try:
        return action.type(first) == action.type(then) if callable(action.type) else False
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return False


def option_notes(parser: argparse.ArgumentParser, words: Sequence[str]) -> str:
    """A line per ``--long`` word of ``words`` that ``parser`` (or the subcommand its command line
    names, whose unknown options it reports) has a close option for: ``\n  --judge-modle (did you mean
    '--judge-model'?)``; "" when none is close."""
    commands = {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                for name, sub in action.choices.items()}
    chosen = next((commands[arg] for arg in getattr(parser, "given", []) if arg in commands), None)
    parsers = [parser] if chosen is None else [parser, chosen]
    named = {option[2:]: option for each in parsers for option in each._option_string_actions if option.startswith("--")}
    names = [word.split("=", 1)[0] for word in words if word.startswith("--")]
    return "".join(f"\n  {name} (did you mean {named[close[0]]!r}?)" for name in names
                   if (close := difflib.get_close_matches(name[2:], named, n=1)))


def unknown_options(parser: argparse.ArgumentParser, args: Sequence[str]) -> str | None:
    """``unrecognized arguments: --outt x`` (each ``--long`` option of ``args`` that ``parser`` does not
    take, with the values after it, as argparse lists them) and :func:`option_notes`; None when there is
    none. Stops at ``--`` and at a subcommand's name (its own parser checks what follows)."""
    commands = {name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                for name in action.choices}
    options = parser._option_string_actions
    extras: list[str] = []
    collecting = False
    for arg in args:
        if arg == "--" or arg in commands:
            break
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            collecting = name not in options and not (parser.allow_abbrev and any(
                option.startswith(name) for option in options if option.startswith("--")))
        elif arg.startswith("-") and not parser._negative_number_matcher.match(arg):
            collecting = False
        if collecting:
            extras.append(arg)
    return f"unrecognized arguments: {' '.join(extras)}{option_notes(parser, extras)}" if extras else None


class OnceParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose command line may not give a plain option twice with different
    values (:func:`repeated_option`) nor an API key (:func:`key_option_problem`), and whose errors show no secret;
    an option it does not take is named with the closest one it takes (:func:`option_notes`), also where
    argparse named a required option instead (``--outt x``: "the following arguments are required: --out");
    its subcommands' parsers are of this class too."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        args = list(sys.argv[1:] if args is None else args)
        self.given = args
        instead = "--api-key-env" if "--api-key-env" in self._option_string_actions else None
        if (problem := key_option_problem(args, instead) or repeated_option(self, args)) is not None:
            self.error(problem)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        """argparse's usage error, with the secrets in the values it repeats masked (:func:`without_secrets`:
        "unrecognized arguments: ... http://user:password@host", a URL option given twice)."""
        if message.startswith("unrecognized arguments: "):
            message += option_notes(self, message.split()[2:])
        elif message.startswith("the following arguments are required") and (
                unknown := unknown_options(self, getattr(self, "given", []))):
            message = unknown
        super().error(without_secrets(message))

"""argparse ``type=`` checks shared by the commands: a bad value is an argparse error naming the
option ("argument --batch-size: must be at least 1, got 0"), before any work starts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer in ``[low, high]`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


def number(low: float, high: float = math.inf, low_open: bool = False, what: str = "a number") -> Callable[[str], float]:
    """A finite float in ``[low, high]`` (``(low, high]`` when ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            bounds = f"{'above' if low_open else 'at least'} {low:g}" + (f" and at most {high:g}" if high < math.inf else "")
            raise argparse.ArgumentTypeError(f"must be {what} {bounds}, got {text}")
        return value

    return parse


def port(text: str) -> int:
    value = at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0-65535, got {value}")
    return value


positive_seconds = number(0.0, low_open=True, what="a number of seconds")
sampling_temperature = number(0.0, low_open=True)
nucleus_top_p = number(0.0, 1.0, low_open=True)
samples_per_input = at_least(2, 64)  # a preference pair needs two

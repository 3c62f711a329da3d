"""argparse ``type=`` callables for the CLI's numeric options: a bad number is refused by the
parser with one line naming the option (``--nodes: 0 is not >= 1``) instead of reaching the
code as a ZeroDivisionError, a negative sleep or a silently empty run.

    p.add_argument("--nodes", type=positive_int, default=2)
    p.add_argument("--timeout", type=positive_float, default=1.0)

Every bound is inclusive unless its name says otherwise; NaN and infinities are never numbers
here. ``MAX_COUNT`` caps counts of things the harness builds or repeats, so a typo of a few
extra digits is an error, not an hour of work or an exhausted memory.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_COUNT = 1_000_000  # pods, repeats, calls...: far above any scale the harness is meant for
MAX_SECONDS = 7 * 24 * 3600.0  # a week: above any budget or timeout that makes sense


def int_in(lo: int, hi: int = MAX_COUNT) -> Callable[[str], int]:
    """A parser of integers in ``[lo, hi]``."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not between {lo} and {hi}")
        return value

    parse.__name__ = f"integer in [{lo}, {hi}]"  # argparse names the type in some messages
    return parse


def float_in(lo: float, hi: float = MAX_SECONDS, *, lo_open: bool = False) -> Callable[[str], float]:
    """A parser of finite numbers in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
        low_ok = value > lo if lo_open else value >= lo
        if not math.isfinite(value) or not low_ok or value > hi:
            bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
            raise argparse.ArgumentTypeError(f"{text[:40]} is not a number {bound} and <= {hi:g}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_in(1)
non_negative_int = int_in(0)
positive_float = float_in(0.0, lo_open=True)
non_negative_float = float_in(0.0)

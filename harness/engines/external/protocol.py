"""The JSON-lines protocol of an external engine, harness side, pure: what a stdout line means.

Every line the program prints on stdout must be one JSON object. ``parse_line`` turns a line into
a ``SyncLine`` (a ``{"type": "sync", ...}`` report), ``None`` (another object: logged), or raises
``BadLine`` saying what was wrong: not JSON, not an object, a non-finite number (``NaN``,
``Infinity``), a sync field that is not a non-negative integer, ``timings`` that are not numbers.
A bad line never stops the reader: the caller counts it and goes on with the next line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

MAX_LINE = 1 << 20  # bytes of one stdout line; a snapshot-sized sync report is far below this
EXCERPT = 200  # characters of a bad line kept for the log and the error message

REQUIRED = ("start_ns", "end_ns", "through_seq")
OPTIONAL = ("sync_version", "sets_ns", "rules_ns", "render_ns")


class BadLine(ValueError):
    """A stdout line the protocol does not allow (the message says why)."""


@dataclass
class SyncLine:
    """One sync report: the rules for every event up to ``through_seq`` are in force."""

    start_ns: int
    end_ns: int
    through_seq: int
    sync_version: int = 0
    sets_ns: int = 0
    rules_ns: int = 0
    render_ns: int = 0
    reason: str = "external"
    error: str | None = None
    timings: dict[str, int] = field(default_factory=dict)


def excerpt(line: str) -> str:
    """The first ``EXCERPT`` characters of ``line``, marked when cut."""
    return line if len(line) <= EXCERPT else line[:EXCERPT] + f"... ({len(line)} chars)"


def _reject_constant(name: str) -> Any:
    raise BadLine(f"non-finite number {name}")


def _integer(msg: dict[str, Any], key: str, required: bool) -> int:
    value = msg.get(key)
    if value is None and not required:
        return 0
    if value is None:
        raise BadLine(f"sync line without {key}")
    # bool is an int in Python, and 1e9 arrives as a float: accept only what is a whole number
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadLine(f"{key} {excerpt(repr(value))} is not an integer")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise BadLine(f"{key} {value!r} is not an integer")
    if value < 0:
        raise BadLine(f"{key} {value!r} is negative")
    return int(value)


def parse_sync(msg: dict[str, Any]) -> SyncLine:
    """A ``{"type": "sync"}`` object as a SyncLine; BadLine naming the first bad field."""
    ints = {k: _integer(msg, k, True) for k in REQUIRED}
    ints.update({k: _integer(msg, k, False) for k in OPTIONAL})
    raw = msg.get("timings") or {}
    if not isinstance(raw, dict):
        raise BadLine("timings is not an object")
    timings: dict[str, int] = {}
    for k, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise BadLine(f"timings.{excerpt(str(k))} {excerpt(repr(v))} is not a finite number")
        timings[str(k)] = int(v)
    error = msg.get("error")
    if error is not None and not isinstance(error, str):
        raise BadLine("error is not a string")
    if ints["end_ns"] < ints["start_ns"]:
        raise BadLine(f"end_ns {ints['end_ns']} is before start_ns {ints['start_ns']}")
    return SyncLine(**ints, reason=str(msg.get("reason", "external"))[:EXCERPT], error=error, timings=timings)


def parse_line(line: str) -> SyncLine | None:
    """One stdout line (without its newline): a SyncLine, None for another JSON object, BadLine
    for anything the protocol does not allow."""
    if len(line) > MAX_LINE:
        raise BadLine(f"line longer than {MAX_LINE} bytes")
    try:
        msg = json.loads(line, parse_constant=_reject_constant)
    except RecursionError:
        raise BadLine("nested too deeply") from None
    except json.JSONDecodeError as e:
        raise BadLine(f"not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(msg, dict):
        raise BadLine(f"a JSON {type(msg).__name__}, not an object")
    if msg.get("type") != "sync":
        return None
    return parse_sync(msg)

"""Windows in a probe time series: spans during which outcomes were (or were not) what they
should be, and the lag until an outcome became stable. Pure: input is ``[(t_ns, outcome), ...]``.

    windows(series, bad=DENIED)                         -> [Window, ...]
    stable_since(series, Outcome.CONNECTED, after_ns=t0) -> first t from which every later probe
                                                           is connected

Outcomes are ``harness.outcome.Outcome`` members or their serialized words (a series read back
from results.json): the members are strings, so both compare equal.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from harness.outcome import PROBE_DENIED

DENIED = PROBE_DENIED  # the packet prober's "denied" classes


@dataclass
class Window:
    """A maximal run of consecutive ``bad`` probes: first and last send time, how many probes,
    and the resolution bounds: the window lasted at least ``last - first`` and at most
    ``next_good - prev_good`` (None at the edges of the series)."""

    first_ns: int
    last_ns: int
    count: int
    prev_good_ns: int | None = None
    next_good_ns: int | None = None
    outcomes: tuple[str, ...] = ()

    @property
    def observed_ns(self) -> int:
        return self.last_ns - self.first_ns

    @property
    def bound_ns(self) -> int | None:
        if self.prev_good_ns is None or self.next_good_ns is None:
            return None
        return self.next_good_ns - self.prev_good_ns


def _sorted(series: Iterable[Sequence]) -> list[tuple[int, str]]:
    return sorted((int(s[0]), str(s[1])) for s in series)


def windows(series: Iterable[Sequence], bad: Collection[str]) -> list[Window]:
    """Every maximal run of probes whose outcome is in ``bad``, in time order."""
    out: list[Window] = []
    cur: Window | None = None
    prev_good: int | None = None
    kinds: set[str] = set()
    for t, outcome in _sorted(series):
        if outcome in bad:
            if cur is None:
                cur = Window(t, t, 0, prev_good)
                kinds = set()
            cur.last_ns, cur.count = t, cur.count + 1
            kinds.add(outcome)
        else:
            if cur is not None:
                cur.next_good_ns = t
                cur.outcomes = tuple(sorted(kinds))
                out.append(cur)
                cur = None
            prev_good = t
    if cur is not None:
        cur.outcomes = tuple(sorted(kinds))
        out.append(cur)
    return out


def stable_since(series: Iterable[Sequence], outcome: str, after_ns: int = 0) -> int | None:
    """Send time of the first probe (at or after ``after_ns``) from which every later probe has
    ``outcome``; None if the last probe does not have it."""
    items = [(t, o) for t, o in _sorted(series) if t >= after_ns]
    if not items or items[-1][1] != outcome:
        return None
    t_stable = items[-1][0]
    for t, o in reversed(items):
        if o != outcome:
            break
        t_stable = t
    return t_stable


def first_of(series: Iterable[Sequence], outcomes: Collection[str], after_ns: int = 0) -> int | None:
    """Send time of the first probe with an outcome in ``outcomes`` (at or after ``after_ns``)."""
    return next((t for t, o in _sorted(series) if o in outcomes and t >= after_ns), None)


def last_of(series: Iterable[Sequence], outcomes: Collection[str]) -> int | None:
    """Send time of the last probe with an outcome in ``outcomes``."""
    return next((t for t, o in reversed(_sorted(series)) if o in outcomes), None)


def counts(series: Iterable[Sequence]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, o in series:
        out[str(o)] = out.get(str(o), 0) + 1
    return out

"""Truth tables of pod-to-pod reachability, in the style of the upstream Kubernetes e2e suite.

A ``TruthTable`` holds, for every ordered pair of an ordered list of pod keys, whether a
connection is (expected to be / was observed to be) allowed, plus an optional detail (the
oracle's reason, or the probe outcome such as ``timeout`` or ``refused``)::

    -    x/a  x/b  x/c
    x/a  -    .    X
    x/b  .    -    X

``.`` allowed, ``X`` denied, ``-`` skipped (a pod to itself with ``ignore_self``), ``?`` not
known yet; rows are sources, columns destinations, exactly like the e2e ``PrettyPrint``.

``expected_table`` builds the oracle's table, ``table_from_expectation`` a case file's
``expect: {default, exceptions}``, and ``diff(expected, observed)`` compares two tables.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.model.cluster import Cluster, Pod
from harness.model.fields import Fields, items
from harness.oracle import Oracle
from harness.outcome import Outcome

ALLOW = "allow"
DENY = "deny"

# Cell values are a bool, a verdict word (``allow`` / ``deny``, as case files write them) or an
# ``Outcome`` (or its word): its ``allowed`` decides, as in e2e anything but a completed handshake
# is denied. Where an outcome's meaning depends on the protocol (an SCTP INIT answered by ICMP
# protocol-unreachable reached the pod: allowed), the prober classifies it so (harness.conformance.sctp).
VERDICTS = (ALLOW, DENY)


def verdict_word(allowed: bool | None) -> str:
    """``allow`` / ``deny`` / ``nothing`` for a cell value."""
    return "nothing" if allowed is None else (ALLOW if allowed else DENY)


def parse_cell(value: bool | str) -> tuple[bool | None, str | None]:
    """A cell value (bool, ``allow``/``deny`` or an outcome) -> (allowed, detail). An outcome
    that cannot be judged (``n/a-...``) gives None: the cell stays unknown, with the outcome
    as its detail."""
    if isinstance(value, bool):
        return value, None
    word = value.strip().lower()
    if word in VERDICTS:
        return word == ALLOW, None
    try:
        outcome = Outcome.parse(word)
    except ValueError:
        raise ValueError(f"unknown cell value {value!r} (use allow, deny or one of "
                         f"{', '.join(Outcome.words())})") from None
    return outcome.allowed, outcome.word


@dataclass(frozen=True)
class Cell:
    """One cell: ``allowed`` None means unknown (or skipped when ``skipped``)."""

    allowed: bool | None = None
    detail: str | None = None
    skipped: bool = False

    @property
    def mark(self) -> str:
        if self.skipped:
            return "-"
        if self.allowed is None:
            return "?"
        return "." if self.allowed else "X"


class TruthTable:
    """An n x n table over ``pods`` (ordered pod keys): rows are sources, columns destinations.

    ``default`` fills every cell (None: unknown). ``ignore_self`` marks pod-to-itself cells as
    skipped: they render ``-`` and ``diff`` never counts them."""

    def __init__(self, pods: Iterable[str | Pod], default: bool | None = None, *, ignore_self: bool = False):
        self.pods: tuple[str, ...] = tuple(p.key if isinstance(p, Pod) else p for p in pods)
        if len(set(self.pods)) != len(self.pods):
            raise ValueError("duplicate pod keys in truth table")
        self.ignore_self = ignore_self
        self._index = {p: i for i, p in enumerate(self.pods)}
        self._cells: dict[tuple[str, str], Cell] = {}
        for s in self.pods:
            for d in self.pods:
                self._cells[(s, d)] = Cell(None, skipped=True) if (ignore_self and s == d) else Cell(default)

    # -- cells -----------------------------------------------------------------------------
    def _check(self, src: str, dst: str) -> None:
        for role, key in (("source", src), ("destination", dst)):
            if key not in self._index:
                raise KeyError(f"{role} {key!r} is not in this truth table ({', '.join(self.pods)})")

    def set(self, src: str, dst: str, value: bool | str, detail: str | None = None) -> None:
        """Set one cell from a bool, ``allow``/``deny`` or a probe outcome (``timeout`` etc.).

        Setting a skipped self cell records the value but keeps it skipped."""
        self._check(src, dst)
        allowed, outcome = parse_cell(value)
        old = self._cells[(src, dst)]
        self._cells[(src, dst)] = Cell(allowed, detail or outcome, old.skipped)

    def unset(self, src: str, dst: str) -> None:
        """Forget one cell's value (it becomes unknown, ``?``)."""
        self._check(src, dst)
        self._cells[(src, dst)] = Cell(None, skipped=self._cells[(src, dst)].skipped)

    def cell(self, src: str, dst: str) -> Cell:
        self._check(src, dst)
        return self._cells[(src, dst)]

    def get(self, src: str, dst: str) -> bool | None:
        """True allowed, False denied, None unknown."""
        return self.cell(src, dst).allowed

    def set_all_from(self, src: str, value: bool | str) -> None:
        """Every destination of ``src`` (like e2e ``ExpectAllEgress``)."""
        for d in self.pods:
            self.set(src, d, value)

    def set_all_to(self, dst: str, value: bool | str) -> None:
        """Every source towards ``dst`` (like e2e ``ExpectAllIngress``)."""
        for s in self.pods:
            self.set(s, dst, value)

    def set_matching(self, src_pattern: str, dst_pattern: str, value: bool | str) -> int:
        """Every cell whose source and destination match the glob patterns (``x/*``, ``*/a``, ``*``);
        returns how many cells were set."""
        n = 0
        for s in self.pods:
            if fnmatch.fnmatchcase(s, src_pattern):
                for d in self.pods:
                    if fnmatch.fnmatchcase(d, dst_pattern):
                        self.set(s, d, value)
                        n += 1
        return n

    def pairs(self) -> Iterable[tuple[str, str, Cell]]:
        """(src, dst, cell) row by row."""
        for s in self.pods:
            for d in self.pods:
                yield s, d, self._cells[(s, d)]

    @property
    def is_complete(self) -> bool:
        """Every non-skipped cell has a value."""
        return all(c.skipped or c.allowed is not None for _, _, c in self.pairs())

    def counts(self) -> dict[str, int]:
        """``{"allow": n, "deny": n, "skipped": n, "unknown": n}``."""
        out = {ALLOW: 0, DENY: 0, "skipped": 0, "unknown": 0}
        for _, _, c in self.pairs():
            key = "skipped" if c.skipped else "unknown" if c.allowed is None else ALLOW if c.allowed else DENY
            out[key] += 1
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TruthTable):
            return NotImplemented
        return self.pods == other.pods and all(
            a.mark == b.mark for (_, _, a), (_, _, b) in zip(self.pairs(), other.pairs(), strict=True)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    # -- output ----------------------------------------------------------------------------
    def render(self, indent: str = "") -> str:
        """The e2e-style grid: header of destinations, one row per source, columns aligned."""
        return _grid(self.pods, lambda s, d: self._cells[(s, d)].mark, indent)

    def __str__(self) -> str:
        return self.render()

    def as_expectation(self) -> dict[str, Any]:
        """The table as ``{default, exceptions}`` (the case-file form), with the majority verdict
        as default; skipped and unknown cells are left out."""
        c = self.counts()
        default = c[ALLOW] >= c[DENY]
        exceptions = [
            {"from": s, "to": d, "verdict": verdict_word(cell.allowed)}
            for s, d, cell in self.pairs()
            if not cell.skipped and cell.allowed is not None and cell.allowed != default
        ]
        return {"default": verdict_word(default), "exceptions": exceptions}


def _grid(pods: Sequence[str], mark, indent: str) -> str:
    width = max([len(p) for p in pods] + [1])
    def row(cells: Iterable[str]) -> str:
        return (indent + "  ".join(c.ljust(width) for c in cells)).rstrip()
    lines = [row(["-", *pods])]
    lines += [row([s, *(mark(s, d) for d in pods)]) for s in pods]
    return "\n".join(lines)


# -- building tables ---------------------------------------------------------------------------
def expected_table(cluster: Cluster | Oracle, pods: Iterable[str | Pod] | None, port: int,
                   protocol: str = "TCP", ignore_self: bool = True, family: str = "IPv4") -> TruthTable:
    """The oracle's table for ``pods`` (default: every pod of the cluster, sorted by key) on
    ``protocol/port`` over ``family``; each cell's detail is the oracle's one-line reason."""
    oracle = cluster if isinstance(cluster, Oracle) else Oracle(cluster, family)
    keys = [p.key if isinstance(p, Pod) else p for p in pods] if pods is not None else sorted(oracle.cluster.pods)
    table = TruthTable(keys, ignore_self=ignore_self)
    for s in keys:
        for d in keys:
            if ignore_self and s == d:
                continue
            v = oracle.verdict(s, d, port, protocol)
            table.set(s, d, v.allowed, detail=v.reason)
    return table


def build_expectation(pods: Iterable[str | Pod], default: bool | str,
                      exceptions: Iterable[Mapping[str, Any] | tuple[str, str, bool | str]] = (),
                      *, ignore_self: bool = True) -> TruthTable:
    """A table from a default verdict plus exceptions ``{from, to, verdict}`` (or tuples).

    ``from``/``to`` are pod keys or glob patterns (``x/*``, ``*``); later exceptions override
    earlier ones. Raises ValueError for a pattern that matches no pod or a bad verdict."""
    allowed, _ = parse_cell(default)
    table = TruthTable(pods, allowed, ignore_self=ignore_self)
    for exc in exceptions:
        src, dst, value = ((exc["from"], exc["to"], exc["verdict"]) if isinstance(exc, Mapping) else exc)
        if table.set_matching(src, dst, value) == 0:
            raise ValueError(f"exception {src} -> {dst} matches no pair of pods in the table")
    return table


def table_from_expectation(spec: Any, pods: Iterable[str | Pod], *, ignore_self: bool = True,
                           source: str | None = None, path: str = "expect") -> TruthTable:
    """Parse a case file's ``expect: {default: allow|deny, exceptions: [{from, to, verdict}]}``
    strictly (one-line ConfigError naming ``source`` and the field path) into a table."""
    keys = [p.key if isinstance(p, Pod) else p for p in pods]
    f = Fields(spec, source, path)
    default = f.req("default", str, choices=(ALLOW, DENY))
    table = TruthTable(keys, default == ALLOW, ignore_self=ignore_self)
    for p, raw in items(f.opt("exceptions", list), source, f.field("exceptions")):
        e = Fields(raw, source, p)
        src = e.req("from", str)
        dst = e.req("to", str)
        value = e.req("verdict", str, choices=(ALLOW, DENY))
        e.done()
        for key, role in ((src, "from"), (dst, "to")):
            if not any(fnmatch.fnmatchcase(k, key) for k in keys):
                raise e.error(role, f"{key!r} matches no pod of the topology")
        table.set_matching(src, dst, value)
    f.done()
    return table


# -- comparing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mismatch:
    """One cell where the observation differs from the expectation (or is missing)."""

    src: str
    dst: str
    expected: Cell
    observed: Cell

    def __str__(self) -> str:
        obs = verdict_word(self.observed.allowed)
        if self.observed.detail:
            obs += f" ({self.observed.detail})"
        return f"{self.src} -> {self.dst}: expected {verdict_word(self.expected.allowed)}, observed {obs}"


@dataclass
class TableDiff:
    """The comparison of an expected and an observed table."""

    expected: TruthTable
    observed: TruthTable
    mismatches: list[Mismatch]
    correct: int
    ignored: int

    @property
    def count(self) -> int:
        """Number of mismatching cells."""
        return len(self.mismatches)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def __bool__(self) -> bool:
        # Truthy when there is a difference, like a non-empty diff.
        return bool(self.mismatches)

    def summary(self) -> str:
        """e2e-style ``reachability: correct:N, incorrect:M, ignored:K, result=ok|MISMATCH``."""
        return (f"reachability: correct:{self.correct}, incorrect:{self.count}, ignored:{self.ignored}, "
                f"result={'ok' if self.ok else 'MISMATCH'}")

    def render(self, indent: str = "") -> str:
        """The comparison grid (``.`` match, ``X`` mismatch, ``-`` ignored) and one line per mismatch."""
        bad = {(m.src, m.dst) for m in self.mismatches}

        def mark(s: str, d: str) -> str:
            if (s, d) in bad:
                return "X"
            return "-" if self._ignored(s, d) else "."

        lines = [_grid(self.expected.pods, mark, indent)]
        lines += [f"{indent}{m}" for m in self.mismatches]
        return "\n".join(lines)

    def report(self) -> str:
        """Expected, observed, comparison and the summary line: what a person reads after a run."""
        return "\n\n".join([
            "expected:\n" + self.expected.render("  "),
            "observed:\n" + self.observed.render("  "),
            "comparison:\n" + self.render("  "),
            self.summary(),
        ])

    def _ignored(self, s: str, d: str) -> bool:
        e = self.expected.cell(s, d)
        return e.skipped or e.allowed is None or self.observed.cell(s, d).skipped

    def __str__(self) -> str:
        return self.render()


def diff(expected: TruthTable, observed: TruthTable) -> TableDiff:
    """Compare two tables over the same pods (same order). A cell skipped in either table is
    ignored; an observation missing where one was expected is a mismatch."""
    if expected.pods != observed.pods:
        raise ValueError(f"cannot compare tables over different pods: {expected.pods} vs {observed.pods}")
    mismatches: list[Mismatch] = []
    correct = ignored = 0
    for (s, d, e), (_, _, o) in zip(expected.pairs(), observed.pairs(), strict=True):
        if e.skipped or o.skipped or e.allowed is None:
            ignored += 1
        elif o.allowed is None or o.allowed != e.allowed:
            mismatches.append(Mismatch(s, d, e, o))
        else:
            correct += 1
    return TableDiff(expected, observed, mismatches, correct, ignored)


__all__ = [
    "ALLOW", "DENY", "VERDICTS", "Cell", "Mismatch", "TableDiff", "TruthTable", "build_expectation", "diff",
    "expected_table", "parse_cell", "table_from_expectation", "verdict_word",
]

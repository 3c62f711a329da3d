"""Compare two baselines of one suite: a ratio per metric and a regression verdict (pure).

Noise rule (documented in ``netpol-harness compare --help``): with ``slowdown`` the factor by
which NEW is worse than BASE on medians (``new/base`` for times, ``base/new`` for throughput),
a metric has **regressed** when

    slowdown >= threshold   (default 1.5)   AND   NEW's best repeat is worse than BASE's worst

i.e. the median moved past the threshold *and* the min-max ranges do not overlap, so one noisy
repeat on a shared runner can neither cause nor hide a verdict on its own. A metric may carry an
absolute ``floor``: a change of the medians smaller than it is ``ok`` whatever the ratio (for
quantities near zero, such as ns per set entry). A metric saved with ``gate: false`` is
informational: its verdict gets "(info)" and never fails the comparison. ``improved`` is the
mirror image. ``strict`` drops the range condition (medians only). A metric present on one
side only is ``missing`` (not a regression unless ``fail_missing``).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.bench.baseline import Baseline, Metric, fmt, machine_label

DEFAULT_THRESHOLD = 1.5


@dataclass
class Row:
    """One metric's comparison; ``ratio`` is new/base on medians, ``slowdown`` >1 means worse."""

    name: str
    unit: str
    base: Metric | None
    new: Metric | None
    ratio: float | None
    slowdown: float | None
    verdict: str  # ok, regressed, improved, missing, noisy; "(info)" appended for ungated metrics


def _worse(better: str, a: float, b: float) -> bool:
    """True if value ``a`` is worse than ``b``."""
    return a > b if better == "lower" else a < b


def compare_metric(name: str, base: Metric | None, new: Metric | None, threshold: float = DEFAULT_THRESHOLD,
                   strict: bool = False) -> Row:
    """The comparison of one metric (see the module docstring for the rule)."""
    row = _compare_metric(name, base, new, threshold, strict)
    if base is not None and new is not None and not (base.gate and new.gate) and row.verdict != "ok":
        row.verdict += " (info)"  # informational metric: shown, never a failure
    return row


def _compare_metric(name: str, base: Metric | None, new: Metric | None, threshold: float, strict: bool) -> Row:
    if base is None or new is None:
        m = base or new
        return Row(name, m.unit if m else "", base, new, None, None, "missing")
    better = base.better
    floor = max(base.floor, new.floor)
    if abs(new.median - base.median) <= floor:
        ratio = new.median / base.median if base.median > 0 and new.median > 0 else None
        return Row(name, base.unit, base, new, ratio, None, "ok")
    if base.median <= 0 or new.median <= 0:  # a ratio means nothing here
        return Row(name, base.unit, base, new, None, None, "noisy")
    ratio = new.median / base.median
    slowdown = ratio if better == "lower" else 1 / ratio
    if better == "lower":
        separated_worse, separated_better = new.min > base.max, new.max < base.min
    else:
        separated_worse, separated_better = new.max < base.min, new.min > base.max
    verdict = "ok"
    if slowdown >= threshold:
        verdict = "regressed" if (strict or separated_worse) else "noisy"
    elif slowdown <= 1 / threshold:
        verdict = "improved" if (strict or separated_better) else "noisy"
    return Row(name, base.unit, base, new, ratio, slowdown, verdict)


@dataclass
class Comparison:
    base: Baseline
    new: Baseline
    rows: list[Row]
    threshold: float
    fail_missing: bool = False

    @property
    def regressed(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "regressed" or (self.fail_missing and r.verdict == "missing")]

    @property
    def failed(self) -> bool:
        return bool(self.regressed)


def compare(base: Baseline, new: Baseline, threshold: float = DEFAULT_THRESHOLD, strict: bool = False,
            fail_missing: bool = False) -> Comparison:
    """Compare every metric of ``base`` and ``new`` (union of names, sorted)."""
    if threshold <= 1.0:
        raise ValueError("threshold must be greater than 1")
    names = sorted(set(base.metrics) | set(new.metrics))
    rows = [compare_metric(n, base.metrics.get(n), new.metrics.get(n), threshold, strict) for n in names]
    return Comparison(base, new, rows, threshold, fail_missing)


def _cell(m: Metric | None) -> str:
    return "-" if m is None else f"{fmt(m.median)} [{fmt(m.min)}-{fmt(m.max)}]"


def table_rows(c: Comparison) -> list[list[str]]:
    """Rows for tabulate: metric, unit, base median [min-max], new median [min-max], ratio, verdict."""
    out = []
    for r in c.rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        verdict = r.verdict.upper() if r.verdict == "regressed" else r.verdict
        out.append([r.name, r.unit, _cell(r.base), _cell(r.new), ratio, verdict])
    return out


HEADERS = ["metric", "unit", "base median [min-max]", "new median [min-max]", "new/base", "verdict"]


def render(c: Comparison) -> str:
    """The human report: both machines, the table, the verdict line."""
    from tabulate import tabulate

    lines = [f"suite: {c.base.suite}" + ("" if c.base.suite == c.new.suite else f" vs {c.new.suite}"),
             f"base: {machine_label(c.base.machine)} ({c.base.created or 'undated'}, load {c.base.load or '?'})",
             f"new:  {machine_label(c.new.machine)} ({c.new.created or 'undated'}, load {c.new.load or '?'})"]
    for side, b in (("base", c.base), ("new", c.new)):
        for backend, v in sorted(b.versions.items()):
            if isinstance(v, dict):
                lines.append(f"{side} {backend}: {v.get('iptables', '?')}; {v.get('ipset', '?')}")
    lines.append(tabulate(table_rows(c), headers=HEADERS, tablefmt="github"))
    n = len(c.regressed)
    rule = (f"regressed = median {c.threshold}x worse and NEW's best repeat worse than BASE's worst; "
            f"noisy = median past the threshold but ranges overlap")
    lines.append(rule)
    lines.append(f"{n} metric(s) regressed" if n else "no regression")
    return "\n".join(lines)

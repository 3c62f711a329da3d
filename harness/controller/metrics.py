"""Per-node histograms of sync time and phases, as JSON and Prometheus text exposition format.
Pure.

What is observed and under which names is the engine's (a ``MetricSet``: a namespace, the
buckets, and per metric its help text and how to read a ``SyncRecord``; an engine offers its
own as ``Engine.metric_set``). One controller is one scrape target per
node; here all nodes share one exposition, told apart by a ``node`` label. A phase a sync did
not run is not observed for that sync.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BUCKETS = tuple(0.005 * 2.327 ** i for i in range(10))  # prometheus.ExponentialBuckets(0.005, 2.327, 10)


@dataclass(frozen=True)
class MetricSet:
    """An engine's sync metrics: ``namespace`` (the name prefix), ``buckets`` (seconds) and
    ``metrics`` (name -> (help text, observation in seconds from a SyncRecord, or None))."""

    namespace: str
    metrics: dict[str, tuple[str, Callable[[Any], float | None]]]
    buckets: tuple[float, ...] = DEFAULT_BUCKETS


def timing_s(name: str) -> Callable[[Any], float | None]:
    """An observation: the sync's ``timings[name]`` (ns) in seconds, None when absent or 0."""
    def get(rec: Any) -> float | None:
        v = rec.timings.get(name)
        return v / 1e9 if v else None
    return get


def total_s(rec: Any) -> float | None:
    """An observation: the whole sync in seconds."""
    return rec.total_ns / 1e9 if rec.total_ns else None


# an engine that names no metrics of its own: the sync and its recorded phases
GENERIC = MetricSet("netpol", {
    "sync_time": ("Time a full sync took", total_s),
    "sets_time": ("Time programming the sets took", timing_s("ipset_restore_time")),
    "rules_time": ("Time programming the rules took", timing_s("iptables_restore_time")),
})


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of ascending values (q in [0, 1]); NaN for no values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Histogram:
    """A Prometheus-style histogram that also keeps the raw observations (for exact quantiles)."""

    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    values: list[float] = field(default_factory=list)

    def observe(self, seconds: float) -> None:
        self.values.append(float(seconds))

    @property
    def count(self) -> int:
        return len(self.values)

    @property
    def sum(self) -> float:
        return math.fsum(self.values)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound) per bucket, ending with (+inf, count)."""
        out = [(b, sum(1 for v in self.values if v <= b)) for b in self.buckets]
        out.append((math.inf, self.count))
        return out

    def summary(self) -> dict[str, float | int]:
        s = sorted(self.values)
        return {"count": self.count, "sum": self.sum,
                "min": s[0] if s else math.nan, "mean": self.sum / len(s) if s else math.nan,
                "p50": quantile(s, 0.5), "p90": quantile(s, 0.9), "p99": quantile(s, 0.99),
                "max": s[-1] if s else math.nan}


def _fmt(x: float) -> str:
    """A float as Prometheus text wants it (``+Inf``, ``NaN``, shortest round-trip repr)."""
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    return repr(float(x))


def _label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}"


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x


@dataclass
class ControllerMetrics:
    """``histograms[metric][node]`` of one ``MetricSet``; build with ``from_syncs`` (Timeline.syncs)."""

    metric_set: MetricSet = GENERIC
    histograms: dict[str, dict[str, Histogram]] = field(default_factory=dict)

    @property
    def buckets(self) -> tuple[float, ...]:
        return self.metric_set.buckets

    @classmethod
    def from_syncs(cls, syncs: Iterable[Any], metric_set: MetricSet = GENERIC) -> ControllerMetrics:
        """Observe every successfully finished sync (objects with node, ok, total_ns, render_ns,
        timings, like ``SyncRecord``) under ``metric_set``'s names."""
        m = cls(metric_set)
        for rec in syncs:
            if rec.ok:
                m.observe(rec)
        return m

    def observe(self, rec: Any) -> None:
        for metric, (_, get) in self.metric_set.metrics.items():
            v = get(rec)
            if v is not None:
                self.histograms.setdefault(metric, {}).setdefault(rec.node, Histogram(self.buckets)).observe(v)

    def get(self, metric: str, node: str) -> Histogram:
        return self.histograms.get(metric, {}).get(node) or Histogram(self.buckets)

    def to_dict(self) -> dict[str, Any]:
        """``{"unit": "seconds", "buckets": [...], "metrics": {full_name: {node: {count, sum, min,
        mean, p50, p90, p99, max, buckets: {le: cumulative count}}}}}``; NaN/inf become null."""
        out: dict[str, Any] = {}
        for metric in self.metric_set.metrics:
            per = self.histograms.get(metric)
            if not per:
                continue
            out[f"{self.metric_set.namespace}_{metric}"] = {
                node: {**{k: (_json_float(v) if isinstance(v, float) else v) for k, v in h.summary().items()},
                       "buckets": {_fmt(b): c for b, c in h.cumulative()}}
                for node, h in sorted(per.items())}
        return {"unit": "seconds", "buckets": list(self.buckets), "metrics": out}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    def to_prometheus(self) -> str:
        """Prometheus text exposition format (version 0.0.4): HELP, TYPE histogram, cumulative
        ``_bucket{node,le}`` series, ``_sum`` and ``_count`` per node."""
        lines: list[str] = []
        for metric, (help_text, _) in self.metric_set.metrics.items():
            per = self.histograms.get(metric)
            if not per:
                continue
            name = f"{self.metric_set.namespace}_{metric}"
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} histogram")
            for node, h in sorted(per.items()):
                for bound, count in h.cumulative():
                    lines.append(f"{name}_bucket{_labels({'node': node, 'le': _fmt(bound)})} {count}")
                lines.append(f"{name}_sum{_labels({'node': node})} {_fmt(h.sum)}")
                lines.append(f"{name}_count{_labels({'node': node})} {h.count}")
        return "\n".join(lines) + ("\n" if lines else "")

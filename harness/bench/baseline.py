"""Benchmark results as JSON: a ``Baseline`` (suite, machine, tool versions, parameters, metrics),
each ``Metric`` a set of repeats with median and min-max. Pure apart from file I/O.

File format (schema 1)::

    {"schema": 1, "suite": "canaries", "created": "2026-11-26T02:10:00Z",
     "machine": {... harness.report.machine.machine_info() ...},
     "versions": {"nft": {"iptables": "...", "ipset": "...", "kernel": "..."}, ...},
     "load": [5.1, 4.9, 4.2], "params": {...}, "notes": ["..."],
     "metrics": {"ipset_swap.per_op_us": {"unit": "us", "better": "lower",
                 "values": [...], "median": 1.2, "min": 1.1, "max": 1.4, "n": 5}}}
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.engines.config import BACKEND_NAMES
from harness.errors import ConfigError

# The iptables backends a bench measures by default, in the order its tables read (legacy first).
BENCH_BACKENDS: tuple[str, ...] = tuple(sorted(BACKEND_NAMES))

SCHEMA = 1


@dataclass
class Metric:
    """Repeated measurements of one quantity; ``better`` is ``lower`` (times) or ``higher``
    (throughput); ``floor`` is an absolute difference (in ``unit``) below which a change is never
    a regression (for quantities near zero, e.g. ns per set entry); ``gate`` False makes the
    metric informational: compared and shown, never a failure (for estimators known to be noisy
    on a shared machine, e.g. a Python sender's packet rate)."""

    unit: str
    values: list[float]
    better: str = "lower"
    floor: float = 0.0
    gate: bool = True

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    @property
    def n(self) -> int:
        return len(self.values)

    def as_dict(self) -> dict:
        d = {"unit": self.unit, "better": self.better, "values": [round(v, 6) for v in self.values],
             "median": round(self.median, 6), "min": round(self.min, 6), "max": round(self.max, 6), "n": self.n}
        if self.floor:
            d["floor"] = self.floor
        if not self.gate:
            d["gate"] = False
        return d

    def summary(self) -> str:
        """``1.23 us (1.10-1.40, n=5)``."""
        return f"{fmt(self.median)} {self.unit} ({fmt(self.min)}-{fmt(self.max)}, n={self.n})"


def fmt(x: float) -> str:
    """A number with 3 significant digits, no exponent for everyday sizes."""
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


@dataclass
class Baseline:
    """The result of one bench suite run."""

    suite: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    created: str = ""
    extra: dict = field(default_factory=dict)  # suite-specific tables (rows), not compared

    def add(self, name: str, unit: str, values: list[float], better: str = "lower", floor: float = 0.0,
            gate: bool = True) -> Metric:
        """Record a metric (replacing one of the same name) and return it."""
        if not values:
            raise ValueError(f"metric {name}: no values")
        m = Metric(unit, [float(v) for v in values], better, floor, gate)
        self.metrics[name] = m
        return m

    def as_dict(self) -> dict:
        return {"schema": SCHEMA, "suite": self.suite, "created": self.created, "machine": self.machine,
                "versions": self.versions, "load": self.load, "params": self.params, "notes": self.notes,
                "metrics": {k: m.as_dict() for k, m in sorted(self.metrics.items())}, "extra": self.extra}


def stamp(b: Baseline, machine: dict | None = None) -> Baseline:
    """Fill ``created``, ``load`` and (unless given) ``machine`` from this host."""
    b.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    b.load = [round(x, 2) for x in os.getloadavg()]
    if machine is None:
        from harness.report.machine import machine_info  # subprocess calls: only when saving for real

        machine = machine_info()
    b.machine = machine
    return b


def save(b: Baseline, path: str | os.PathLike) -> Path:
    """Write ``b`` as JSON (parent directories created); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(b.as_dict(), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return p


def from_dict(data: dict, source: str | None = None) -> Baseline:
    """A Baseline from its JSON form; a malformed file is a ConfigError naming the field."""
    if not isinstance(data, dict):
        raise ConfigError(source, None, "a baseline is a JSON object")
    if data.get("schema") != SCHEMA:
        raise ConfigError(source, "schema", f"unsupported baseline schema {data.get('schema')!r} (expected {SCHEMA})")
    suite = data.get("suite")
    if not isinstance(suite, str) or not suite:
        raise ConfigError(source, "suite", "missing suite name")
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        raise ConfigError(source, "metrics", "must be an object of name -> metric")
    b = Baseline(suite, machine=data.get("machine") or {}, versions=data.get("versions") or {},
                 params=data.get("params") or {}, notes=list(data.get("notes") or []),
                 load=list(data.get("load") or []), created=data.get("created") or "",
                 extra=data.get("extra") or {})
    for name, m in metrics.items():
        where = f"metrics.{name}"
        if not isinstance(m, dict):
            raise ConfigError(source, where, "must be an object")
        values = m.get("values")
        if not isinstance(values, list) or not values or not all(isinstance(v, int | float) for v in values):
            raise ConfigError(source, f"{where}.values", "must be a non-empty list of numbers")
        better = m.get("better", "lower")
        if better not in ("lower", "higher"):
            raise ConfigError(source, f"{where}.better", f"must be lower or higher, not {better!r}")
        floor = m.get("floor", 0.0)
        if not isinstance(floor, int | float) or floor < 0:
            raise ConfigError(source, f"{where}.floor", "must be a number >= 0")
        gate = m.get("gate", True)
        if not isinstance(gate, bool):
            raise ConfigError(source, f"{where}.gate", "must be true or false")
        b.metrics[name] = Metric(str(m.get("unit", "")), [float(v) for v in values], better, float(floor), gate)
    return b


def load(path: str | os.PathLike) -> Baseline:
    """Read a baseline file; missing file or bad JSON is a ConfigError naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(p), None, f"cannot read baseline ({e.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(str(p), None, f"not JSON: line {e.lineno}: {e.msg}") from None
    return from_dict(data, str(p))


def machine_label(machine: dict) -> str:
    """``Linux 6.18.4, Intel Xeon ... x 2`` for table headers."""
    if not machine:
        return "unknown machine"
    label = f"Linux {machine.get('kernel', '?')}, {machine.get('cpu_model', '?')} x {machine.get('cpus', '?')}"
    if machine.get("virtualization"):  # a kernel-matrix guest: its figures are only comparable within one mode
        label += f" ({machine['virtualization']} guest, {machine.get('vcpus', '?')} vCPU)"
    return label

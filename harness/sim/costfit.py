"""A per-sync cost model fitted to kernel-measured syncs. Pure (numpy), no root.

Data source: a ``bench sweep`` baseline JSON (``harness/bench/baselines/<machine>/sweep.json``,
``extra.cells``: per point x backend x strategy the median of each timed apply phase and the
ruleset's rules, sets and set entries; ``extra.render``: render time per point). Each phase is
fitted on its own to ``t = c0 + c1 * x**k`` where ``x`` is the size that drives it:

- ``top_level_time``, ``iptables_save_time``, ``iptables_restore_time``: the rules;
- ``ipset_save_time``, ``ipset_restore_time``: the set entries;
- ``stale_cleanup_time``: the sets (kube-router destroys every stale set one by one);
- render: rules + entries.

``k`` is chosen on a grid in [1, 2] (super-linear: the measured ipset restore grows ~x^1.4
between 15k and 570k entries), ``c0, c1 >= 0`` by least squares; the relative residual of each
measured point is kept with the fit, so a user sees where it is off. With fewer than 3 points a
phase falls back to ``k = 1`` through the origin-or-offset two-point line.

For the ``incremental`` strategy the sweep measures one pod's change (changed sets and chains
only) at each cluster size; its phases are fitted against the *full* ruleset's size at that
point (how big the cluster is), not the changed part's, so the model answers "one event's
incremental sync at this cluster size".

The cluster's ruleset size itself (rules, sets, entries on one node) is a ``ShapeModel`` fitted
from the same sweep's points (the synthetic cluster's label/selector mix,
``harness.model.synthetic``). Assumption, stated in docs/churn-and-simulation.md: a real cluster's selectivity differs;
entries are scaled by ``20 / namespaces`` (the sweep's clusters have 20 namespaces and a
selector mostly picks pods of one namespace).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError

PHASE_DRIVER = {
    "top_level_time": "rules",
    "iptables_save_time": "rules",
    "ipset_save_time": "entries",
    "ipset_restore_time": "entries",
    "iptables_restore_time": "rules",
    "stale_cleanup_time": "sets",
}
# the order an apply runs them (harness.controller.loop.PHASE_ORDER); rules are in force after
# iptables_restore_time, before the stale sets are destroyed
PHASE_ORDER = tuple(PHASE_DRIVER)
IN_FORCE_AFTER = "iptables_restore_time"
K_GRID = tuple(round(1.0 + 0.05 * i, 2) for i in range(21))
SWEEP_NAMESPACES = 20  # harness.model.synthetic.synthetic_cluster's default


@dataclass(frozen=True)
class Size:
    """One node's ruleset size: iptables rules, ipsets, set entries."""

    rules: float
    sets: float
    entries: float

    def of(self, driver: str) -> float:
        return {"rules": self.rules, "sets": self.sets, "entries": self.entries,
                "rules+entries": self.rules + self.entries}[driver]


@dataclass
class PowerFit:
    """``t_ms = c0 + c1 * x**k`` with the measured points and their relative residuals."""

    driver: str
    c0: float
    c1: float
    k: float
    points: list[tuple[float, float]] = field(default_factory=list)  # (x, measured ms)
    residuals: list[float] = field(default_factory=list)  # (fit - measured) / measured

    def __call__(self, x: float) -> float:
        return self.c0 + self.c1 * max(x, 0.0) ** self.k

    @property
    def max_abs_residual(self) -> float:
        return max((abs(r) for r in self.residuals), default=0.0)


def fit_power(xs: list[float], ys: list[float], driver: str = "x") -> PowerFit:
    """The least-squares ``c0 + c1 * x**k`` (``c0, c1 >= 0``, ``k`` on ``K_GRID``) through the
    points, weighted by 1/y so small and large points count alike (relative error)."""
    if len(xs) != len(ys) or not xs:
        raise ValueError("fit_power needs matching, non-empty xs and ys")
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    w = 1.0 / np.maximum(y, 1e-3)
    best: tuple[float, float, float, float] | None = None
    grid = K_GRID if len(xs) >= 3 else (1.0,)
    for k in grid:
        basis = np.column_stack([np.ones_like(x), x ** k])
        c, *_ = np.linalg.lstsq(basis * w[:, None], y * w, rcond=None)
        c0, c1 = float(c[0]), float(c[1])
        if c1 < 0:  # no growth seen: a constant
            c0, c1 = float(np.sum(y * w * w) / np.sum(w * w)), 0.0
        if c0 < 0:  # a negative offset is not physical: refit through the origin
            c0 = 0.0
            xk = x ** k
            c1 = float(np.sum(xk * y * w * w) / max(np.sum(xk * xk * w * w), 1e-30))
        err = float(np.sum(((c0 + c1 * x ** k - y) * w) ** 2))
        if best is None or err < best[3] - 1e-12:
            best = (c0, c1, k, err)
    assert best is not None
    c0, c1, k, _ = best
    fit = PowerFit(driver, c0, c1, k, [(float(a), float(b)) for a, b in zip(xs, ys, strict=True)])
    fit.residuals = [(fit(a) - b) / b if b > 0 else 0.0 for a, b in fit.points]
    return fit


@dataclass
class StrategyCost:
    """The fitted phases of one (backend, strategy): ``sync_ms(size)`` and when rules are in force."""

    backend: str
    strategy: str
    phases: dict[str, PowerFit]
    render: PowerFit | None = None

    def phase_ms(self, size: Size) -> dict[str, float]:
        return {name: fit(size.of(fit.driver)) for name, fit in self.phases.items()}

    def render_ms(self, size: Size) -> float:
        return self.render(size.of(self.render.driver)) if self.render else 0.0

    def sync_ms(self, size: Size) -> tuple[float, float]:
        """``(in_force_ms, total_ms)`` of one sync from its start: render, then the phases in
        order; the rules are in force when ``iptables_restore_time`` ends."""
        t = self.render_ms(size)
        in_force = None
        phases = self.phase_ms(size)
        for name in PHASE_ORDER:
            t += phases.get(name, 0.0)
            if name == IN_FORCE_AFTER:
                in_force = t
        return (t if in_force is None else in_force), t


@dataclass
class ShapeModel:
    """One node's ruleset size from a cluster's shape (the sweep's synthetic mix):
    ``rules = a + b*policies + c*local_pods + d*local_pods*policies/namespaces``,
    ``sets = e*policies``, ``entries = (f*policies*pods + g*policies) * 20/namespaces``."""

    rules: tuple[float, float, float, float]
    sets: float
    entries: tuple[float, float]
    residuals: dict[str, list[float]] = field(default_factory=dict)

    def size(self, pods: float, policies: float, local_pods: float, namespaces: float = SWEEP_NAMESPACES) -> Size:
        a, b, c, d = self.rules
        ns = max(namespaces, 1.0)
        rules = a + b * policies + c * local_pods + d * local_pods * policies / ns
        f, g = self.entries
        entries = (f * policies * pods + g * policies) * SWEEP_NAMESPACES / ns
        return Size(max(rules, 1.0), max(self.sets * policies, 0.0), max(entries, 0.0))


def fit_shape(points: list[dict[str, float]]) -> ShapeModel:
    """A ``ShapeModel`` from ``[{"pods", "policies", "local_pods", "rules", "sets", "entries"}, ...]``."""
    if len(points) < 2:
        raise ValueError("a shape fit needs at least 2 points")
    P = np.array([p["pods"] for p in points], float)
    Q = np.array([p["policies"] for p in points], float)
    L = np.array([p["local_pods"] for p in points], float)
    R = np.array([p["rules"] for p in points], float)
    S = np.array([p["sets"] for p in points], float)
    E = np.array([p["entries"] for p in points], float)
    basis = np.column_stack([np.ones_like(Q), Q, L, L * Q / SWEEP_NAMESPACES])
    if len(points) < 4:
        basis = basis[:, :2]
    w = 1.0 / np.maximum(R, 1.0)
    cr, *_ = np.linalg.lstsq(basis * w[:, None], R * w, rcond=None)
    rules = tuple(float(x) for x in cr) + (0.0,) * (4 - len(cr))
    sets = float(np.sum(S * Q) / max(np.sum(Q * Q), 1e-9))
    we = 1.0 / np.maximum(E, 1.0)
    be = np.column_stack([Q * P, Q])
    ce, *_ = np.linalg.lstsq(be * we[:, None], E * we, rcond=None)
    model = ShapeModel(rules, sets, (float(ce[0]), float(ce[1])))  # type: ignore[arg-type]
    got = [model.size(p["pods"], p["policies"], p["local_pods"]) for p in points]
    model.residuals = {
        "rules": [(g.rules - p["rules"]) / p["rules"] for g, p in zip(got, points, strict=True)],
        "sets": [(g.sets - p["sets"]) / max(p["sets"], 1) for g, p in zip(got, points, strict=True)],
        "entries": [(g.entries - p["entries"]) / max(p["entries"], 1) for g, p in zip(got, points, strict=True)],
    }
    return model


@dataclass
class CostModel:
    """Every fitted (backend, strategy) plus the shape model, and where the data came from."""

    source: str
    machine: dict[str, Any]
    strategies: dict[str, StrategyCost]  # "backend/strategy"
    shape: ShapeModel

    def cost(self, backend: str, strategy: str) -> StrategyCost:
        key = f"{backend}/{strategy}"
        if key not in self.strategies:
            raise ConfigError(self.source, "strategy", f"no fitted cost for {key} "
                              f"(fitted: {', '.join(sorted(self.strategies))})")
        return self.strategies[key]

    def residual_table(self) -> list[dict[str, Any]]:
        """One row per fitted phase: form, k and the worst relative residual (for reports)."""
        rows = []
        for key, sc in sorted(self.strategies.items()):
            fits = dict(sc.phases)
            if sc.render is not None:
                fits["render"] = sc.render
            for name, f in fits.items():
                rows.append({"cost": key, "phase": name, "driver": f.driver,
                             "fit": f"{f.c0:.3g} + {f.c1:.3g}*x^{f.k:g}", "points": len(f.points),
                             "max_residual_pct": round(100 * f.max_abs_residual, 1)})
        return rows

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "machine": self.machine,
                "strategies": {k: {"phases": {n: asdict(f) for n, f in v.phases.items()},
                                   "render": asdict(v.render) if v.render else None}
                               for k, v in self.strategies.items()},
                "shape": asdict(self.shape)}


def fit_sweep(data: dict[str, Any], source: str = "sweep.json") -> CostModel:
    """A ``CostModel`` from a parsed ``bench sweep`` baseline (see the module docstring)."""
    extra = data.get("extra") if isinstance(data, dict) else None
    if not isinstance(extra, dict) or not isinstance(extra.get("cells"), list):
        raise ConfigError(source, "extra.cells", "not a bench sweep result (no extra.cells list)")
    points = {f"{p['nodes']}n/{p['nodes'] * p['pods_per_node']}p/{p['policies']}np": p
              for p in data.get("params", {}).get("points", [])}
    full: dict[str, Size] = {}  # point -> the full ruleset's size (restore cells)
    for c in extra["cells"]:
        if c.get("strategy") == "restore" and not c.get("extrapolated"):
            full[c["point"]] = Size(c["rules"], c["sets"], c["entries"])
    renders = {r["point"]: r for r in extra.get("render", []) if isinstance(r, dict)}
    by_key: dict[str, list[dict[str, Any]]] = {}
    for c in extra["cells"]:
        if c.get("extrapolated") or c.get("skipped") or not c.get("phases_ms") or c["point"] not in full:
            continue
        by_key.setdefault(f"{c['backend']}/{c['strategy']}", []).append(c)
    render_fit = None
    if len(renders) >= 2:
        rs = [r for p, r in renders.items() if p in full]
        render_fit = fit_power([r["rules"] + r["entries"] for r in rs], [r["render_ms"] for r in rs], "rules+entries")
    strategies: dict[str, StrategyCost] = {}
    for key, cells in by_key.items():
        backend, strategy = key.split("/")
        phases = {}
        for name, driver in PHASE_DRIVER.items():
            xs, ys = [], []
            for c in cells:
                ms = c["phases_ms"].get(name)
                if ms is None or (ms <= 0 and strategy == "incremental"):
                    continue  # the incremental apply runs no save or cleanup
                xs.append(full[c["point"]].of(driver))
                ys.append(max(float(ms), 1e-3))
            if xs:
                phases[name] = fit_power(xs, ys, driver)
        strategies[key] = StrategyCost(backend, strategy, phases, render_fit)
    shape_points = []
    for name, size in full.items():
        p = points.get(name)
        if p:
            shape_points.append({"pods": p["nodes"] * p["pods_per_node"], "policies": p["policies"],
                                 "local_pods": p["pods_per_node"], "rules": size.rules, "sets": size.sets,
                                 "entries": size.entries})
    if len(shape_points) < 2:
        raise ConfigError(source, "params.points", "a shape fit needs at least 2 measured points")
    return CostModel(source, data.get("machine", {}), strategies, fit_shape(shape_points))


def load_cost_model(path: str | Path) -> CostModel:
    """``fit_sweep`` of the JSON file at ``path``; ConfigError (one line) if unreadable."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise ConfigError(str(p), None, f"cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(str(p), None, f"not JSON: {e.msg} (line {e.lineno})") from None
    return fit_sweep(data, str(p))


def default_baseline() -> Path:
    """The shipped sweep baseline of the harness's reference machine."""
    return Path(__file__).resolve().parent.parent / "bench" / "baselines" / "xeon-2cpu-linux-6.18.44" / "sweep.json"


"""Sync cost vs cluster size: render time and per-phase apply time per strategy and backend.

Each point is a generated cluster (``synthetic_cluster(nodes, pods_per_node, policies)``, seeded)
whose first node's rules are rendered by the engine (``SweepConfig.engine``, through
``harness.engines.base.TwoPhaseNode``: render and apply timed apart). Per backend (legacy, nft)
and strategy:

- ``restore``, ``netlink``, ``per-rule``: a first sync into a fresh ``nph-`` namespace, then the
  measured **full re-sync** with a new sync version (every chain renamed, every set swapped: what
  the reproduced controller does on every event and every 5 minutes);
- ``incremental``: the controller's what-if strategy: a full sync with a stable version, then the
  measured syncs alternate between "one pod added on this node" and "that pod removed"
  (changed sets and chains only, ``iptables-restore --noflush``).

Bounded: ``per-rule`` cells whose re-sync would spawn more than ``max_execs`` processes are not
run but **extrapolated** from the ms per exec measured at smaller points (marked ``~``); a
(strategy, backend) whose median passes ``cell_budget_s`` is skipped at larger points, and the
sweep stops starting new points after ``budget_s`` (both noted in the result).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass, field

from harness.bench.baseline import Baseline
from harness.bench.common import fresh_ns, progress
from harness.engines import registry
from harness.engines.config import BACKEND_NAMES, DEFAULT_ENGINE, DEFAULT_PROFILE, EnforcementConfig
from harness.model.cluster import Cluster, Pod, PodKind
from harness.model.synthetic import synthetic_cluster

log = logging.getLogger(__name__)

STRATEGIES = ("restore", "netlink", "incremental", "per-rule")
BACKENDS = tuple(sorted(BACKEND_NAMES))  # legacy first, as the tables read
NODE = "node-000"
PHASES = ("top_level_time", "iptables_save_time", "ipset_save_time", "ipset_restore_time",
          "iptables_restore_time", "stale_cleanup_time")


@dataclass(frozen=True)
class Point:
    """One cluster size."""

    nodes: int
    pods_per_node: int
    policies: int

    @property
    def pods(self) -> int:
        return self.nodes * self.pods_per_node

    @property
    def label(self) -> str:
        return f"{self.nodes}n/{self.pods}p/{self.policies}np"


# 300 -> 10,000 pods, 10 -> 2,000 policies, 10 -> 100 nodes
DEFAULT_POINTS = (Point(10, 30, 10), Point(20, 50, 50), Point(50, 50, 200), Point(100, 50, 1000),
                  Point(100, 100, 2000))
SMOKE_POINTS = (Point(3, 4, 3), Point(5, 6, 8))


def parse_point(text: str) -> Point:
    """``NODESxPODS_PER_NODExPOLICIES`` (e.g. ``100x50x1000``) -> Point; ValueError if malformed."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"expected NODESxPODS_PER_NODExPOLICIES, e.g. 100x50x1000, not {text!r}")
    n, p, q = (int(x) for x in parts)
    if not (1 <= n <= 250 and p >= 1 and q >= 0):
        raise ValueError(f"{text}: 1-250 nodes, at least 1 pod per node")
    return Point(n, p, q)


@dataclass
class Cell:
    """Measured (or extrapolated) sync cost of one point x backend x strategy; times in ms."""

    point: str
    pods: int
    policies: int
    nodes: int
    backend: str
    strategy: str
    rules: int
    sets: int
    entries: int
    runs: int = 0
    total_ms: list[float] = field(default_factory=list)
    phases_ms: dict[str, float] = field(default_factory=dict)  # medians
    execs: int = 0
    extrapolated: bool = False
    skipped: str = ""

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.total_ms) if self.total_ms else None

    def per_1k_rules_ms(self) -> float | None:
        """iptables-restore phase per 1,000 rules of the ruleset."""
        v = self.phases_ms.get("iptables_restore_time")
        return v / (self.rules / 1000) if v is not None and self.rules else None

    def per_1k_entries_ms(self) -> float | None:
        """Set-programming phase per 1,000 set entries."""
        v = self.phases_ms.get("ipset_restore_time")
        return v / (self.entries / 1000) if v is not None and self.entries else None


def _pod_added(point: Point, seed: int) -> Cluster:
    """The same generated cluster plus one pod on NODE (the incremental strategy's change)."""
    c = synthetic_cluster(point.nodes, point.pods_per_node, point.policies, seed)
    node = c.nodes[NODE]
    ns = sorted(c.namespaces)[0]
    template = next(p for p in c.pods.values() if p.node == NODE)
    pod = Pod(ns, "pod-added", NODE, dict(template.labels), node.pod_cidr.network_address + 2 + point.pods_per_node,
              list(template.ports), PodKind.FULL)
    c.pods[pod.key] = pod
    return c


def _phases(ts: list[dict]) -> dict[str, float]:
    return {p: statistics.median(int(t.get(p) or 0) for t in ts) / 1e6 for p in PHASES}


def _node(engine, cfg: SweepConfig, ns: str, backend: str = BACKENDS[-1], strategy: str = "restore"):
    """The engine of NODE in namespace ``ns`` for one backend x strategy (``TwoPhaseNode``)."""
    config = EnforcementConfig(engine=cfg.engine, profile=cfg.profile, strategy=strategy, backend=backend)
    engine.validate(config, "bench sweep")
    return engine.node(NODE, ns, config, None)


def _measure_full(engine, cfg: SweepConfig, rs1, rs2, backend: str, strategy: str, ns_name: str) -> dict:
    with fresh_ns(ns_name) as ns:
        node = _node(engine, cfg, ns, backend, strategy)
        node.apply(rs1, full=True)
        return node.apply(rs2, full=True)


def _measure_incremental(engine, cfg: SweepConfig, stable, changed, backend: str, ns_name: str,
                         syncs: int) -> list[dict]:
    out = []
    with fresh_ns(ns_name) as ns:
        node = _node(engine, cfg, ns, backend, "incremental")
        node.apply(stable)  # the first sync is a full restore
        for i in range(syncs):
            out.append(node.apply(changed if i % 2 == 0 else stable))
    return out


@dataclass
class SweepConfig:
    points: tuple[Point, ...] = DEFAULT_POINTS
    backends: tuple[str, ...] = BACKENDS
    strategies: tuple[str, ...] = STRATEGIES
    repeat: int = 5
    budget_s: float = 600.0
    cell_budget_s: float = 20.0
    max_execs: int = 6000
    engine: str = DEFAULT_ENGINE
    profile: str = DEFAULT_PROFILE
    seed: int = 1
    verbose: bool = True


def run_sweep(run: str, cfg: SweepConfig) -> Baseline:
    """Run the sweep; returns a Baseline of suite ``sweep`` (metrics per cell, the table of cells
    in ``extra["cells"]``, the 2-s answer in ``extra["over_2s"]``). Machine info not stamped."""
    t_start = time.monotonic()
    engine = registry.get_engine(cfg.engine, "bench sweep")
    renderer = _node(engine, cfg, "")  # renders only: no namespace
    result = Baseline("sweep", params={**asdict(cfg), "points": [asdict(p) for p in cfg.points]})
    result.params.pop("verbose", None)
    cells: list[Cell] = []
    dropped: dict[tuple[str, str], str] = {}  # (backend, strategy) -> why
    per_exec_ms: dict[str, float] = {}  # backend -> per-rule ms per exec, from the last measured point
    render_rows = []
    n = 0
    for pi, point in enumerate(cfg.points):
        elapsed = time.monotonic() - t_start
        if elapsed > cfg.budget_s:
            note = f"budget {cfg.budget_s:.0f} s spent after {elapsed:.0f} s: points from {point.label} on not run"
            result.notes.append(note)
            progress(note, cfg.verbose)
            break
        cluster = synthetic_cluster(point.nodes, point.pods_per_node, point.policies, cfg.seed)
        index = renderer.prepare(cluster)
        renders = []
        for r in range(max(cfg.repeat, 1)):
            t0 = time.perf_counter_ns()
            renderer.render(cluster, sync_version=1_700_000_000_000_000_000 + r, prepared=index)
            renders.append((time.perf_counter_ns() - t0) / 1e6)
        rs1 = renderer.render(cluster, sync_version=1_700_000_000_000_000_001, prepared=index)
        rs2 = renderer.render(cluster, sync_version=1_700_000_000_000_000_002, prepared=index)
        result.add(f"{point.label}.render_ms", "ms", renders)
        render_rows.append({"point": point.label, "pods": point.pods, "rules": rs2.rule_count, "sets": len(rs2.sets),
                            "entries": rs2.set_entry_count, "render_ms": statistics.median(renders)})
        progress(f"point {pi + 1}/{len(cfg.points)} {point.label}: {rs2.rule_count} rules, {len(rs2.sets)} sets, "
                 f"{rs2.set_entry_count} entries; render {statistics.median(renders):.0f} ms", cfg.verbose)
        incr_pair = None
        for backend in cfg.backends:
            for strategy in cfg.strategies:
                cell = Cell(point.label, point.pods, point.policies, point.nodes, backend, strategy, rs2.rule_count,
                            len(rs2.sets), rs2.set_entry_count)
                cells.append(cell)
                key = (backend, strategy)
                if key in dropped:
                    cell.skipped = dropped[key]
                    if strategy == "per-rule" and backend in per_exec_ms:
                        cell.execs = renderer.estimated_execs(rs2)
                        cell.total_ms = [per_exec_ms[backend] * cell.execs]
                        cell.extrapolated = True
                    continue
                if time.monotonic() - t_start > cfg.budget_s:  # a large point can take minutes: check per cell
                    cell.skipped = f"budget {cfg.budget_s:.0f} s spent"
                    continue
                if strategy == "per-rule" and renderer.estimated_execs(rs2) > cfg.max_execs:
                    cell.execs = renderer.estimated_execs(rs2)
                    if backend in per_exec_ms:
                        cell.total_ms = [per_exec_ms[backend] * cell.execs]
                        cell.extrapolated = True
                    cell.skipped = f"~{cell.execs} execs > max {cfg.max_execs}"
                    continue
                if strategy == "incremental":
                    if incr_pair is None:
                        stable = renderer.render(cluster, sync_version=1_700_000_000_000_000_001, prepared=index)
                        changed = renderer.render(_pod_added(point, cfg.seed), sync_version=1_700_000_000_000_000_001)
                        incr_pair = (stable, changed)
                    n += 1
                    ts = _measure_incremental(engine, cfg, *incr_pair, backend, f"nph-{run}-sw-{n}",
                                              max(cfg.repeat, 1))
                else:
                    # per-rule is slow: fewer repeats (noted in params), still at least 1
                    reps = max(1, min(cfg.repeat, 2)) if strategy == "per-rule" else cfg.repeat
                    ts = []
                    for _ in range(reps):
                        n += 1
                        ts.append(_measure_full(engine, cfg, rs1, rs2, backend, strategy, f"nph-{run}-sw-{n}"))
                cell.runs = len(ts)
                cell.total_ms = [t["total"] / 1e6 for t in ts]
                cell.phases_ms = _phases(ts)
                cell.execs = ts[0].get("execs", 0)
                if strategy == "incremental":  # what the change touched, not the whole ruleset
                    cell.rules, cell.sets, cell.entries = ts[0]["rules"], ts[0]["sets"], ts[0]["set_entries"]
                if strategy == "per-rule" and cell.execs:
                    per_exec_ms[backend] = cell.median_ms / cell.execs
                result.add(f"{point.label}.{backend}.{strategy}.sync_ms", "ms", cell.total_ms)
                progress(f"  {backend:6} {strategy:11} median {cell.median_ms:8.1f} ms "
                         f"[{min(cell.total_ms):.1f}-{max(cell.total_ms):.1f}] over {cell.runs} runs", cfg.verbose)
                if cell.median_ms / 1000 > cfg.cell_budget_s:
                    dropped[key] = f"skipped: {cell.median_ms / 1000:.1f} s at {point.label} > cell budget"
                    result.notes.append(f"{backend} {strategy}: {dropped[key]}")
    if any(c.skipped.startswith("budget") for c in cells):
        result.notes.append(f"budget {cfg.budget_s:.0f} s spent during a point: its remaining cells not run")
    if any(c.extrapolated for c in cells):
        result.notes.append("per-rule cells marked ~ are extrapolated: ms per exec at the largest measured point "
                            "x the estimated execs of the re-sync; a lower bound (an iptables call's cost grows "
                            "with the table: nft reads the whole ruleset per call)")
    result.extra = {"cells": [_cell_row(c) for c in cells], "render": render_rows,
                    "over_2s": over_threshold(cells, 2000.0)}
    return result


def _cell_row(c: Cell) -> dict:
    return {"point": c.point, "nodes": c.nodes, "pods": c.pods, "policies": c.policies, "backend": c.backend,
            "strategy": c.strategy, "rules": c.rules, "sets": c.sets, "entries": c.entries, "runs": c.runs,
            "median_ms": c.median_ms, "min_ms": min(c.total_ms) if c.total_ms else None,
            "max_ms": max(c.total_ms) if c.total_ms else None, "phases_ms": c.phases_ms,
            "per_1k_rules_ms": c.per_1k_rules_ms(), "per_1k_entries_ms": c.per_1k_entries_ms(),
            "execs": c.execs, "extrapolated": c.extrapolated, "skipped": c.skipped}


def over_threshold(cells: list[Cell] | list[dict], limit_ms: float) -> dict[str, str]:
    """Per ``backend strategy``: where the sync first exceeds ``limit_ms``, interpolated linearly
    in pods between the last point under and the first over (pure; cells in sweep order)."""
    rows = [_cell_row(c) if isinstance(c, Cell) else c for c in cells]
    out: dict[str, str] = {}
    keys = list(dict.fromkeys((r["backend"], r["strategy"]) for r in rows))
    for backend, strategy in keys:
        series = [r for r in rows if r["backend"] == backend and r["strategy"] == strategy
                  and r["median_ms"] is not None]
        prev = None
        answer = None
        for r in series:
            if r["median_ms"] > limit_ms:
                approx = "~" if r["extrapolated"] else ""
                if prev is None:
                    answer = f"already at {r['point']} ({approx}{r['median_ms']:.0f} ms)"
                else:
                    f = (limit_ms - prev["median_ms"]) / (r["median_ms"] - prev["median_ms"])
                    pods = prev["pods"] + f * (r["pods"] - prev["pods"])
                    answer = (f"between {prev['point']} and {r['point']} (~{pods:,.0f} pods; "
                              f"{prev['median_ms']:.0f} -> {approx}{r['median_ms']:.0f} ms)")
                break
            prev = r
        if answer is None:
            answer = (f"not reached up to {prev['point']} ({prev['median_ms']:.0f} ms)" if prev else "no data")
        out[f"{backend} {strategy}"] = answer
    return out

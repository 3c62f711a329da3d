"""The discrete-event simulation of kube-router's per-node policy controller under churn. Pure.

What is simulated, per node (the same semantics ``harness.controller`` runs on the kernel):

- **delivery**: every cluster event reaches the node after a delay drawn from the node's delay
  model, never before the previous one (an informer's watch stream is ordered;
  ``harness.controller.delivery.NodeSchedule``);
- **which events request a sync**: kube-router's handlers (``harness.engines.kube_router.events``,
  kube-router v2.10.0 pkg/controllers/netpol/pod.go: newPodEventHandler): a pod without IP is
  ignored, its IP arriving by status update requests one, as do deletions, label changes and
  every policy event;
- **the 1-slot channel**: ``RequestFullSync`` is a non-blocking send into
  ``make(chan struct{}, 1)``; the sync goroutine takes the slot and runs ``fullPolicySync``, so
  every request made while a sync runs collapses into one follow-up sync
  (v2.10.0 pkg/controllers/netpol/network_policy_controller.go: Run, RequestFullSync);
- **the periodic ticker** feeds the same channel: ``Run`` calls ``RequestFullSync`` once at start
  and after every tick of ``time.NewTicker(syncPeriod)`` (same file: Run), so a tick during a
  sync coalesces with the events' requests (each node's ticker phase is drawn uniformly);
- **lister skew** (option): the sync reads the listers, which may lag the handler that
  requested it by ``lister_skew_s``; an event delivered within that much before the sync's start
  is not in its snapshot and waits for the next request (an assumption: the size of the skew is
  not in the source; 0 = the handler and lister agree);
- **the ipset mutex** (option): kube-router shares one ``sync.Mutex`` between the policy,
  routing and proxy controllers (v2.10.0 pkg/cmd/kube-router.go: ``var ipsetMutex``); the policy
  sync holds it around its ipset restore (pkg/controllers/netpol/policy.go:
  syncNetworkPolicyChains) and its stale-set cleanup (network_policy_controller.go:
  cleanupStaleIPSets). The other holders are modelled as holding it ``hold_s`` every
  ``every_s`` (an assumption standing in for the proxy's and routing controller's syncs);
- **strategy**: ``restore`` (every sync is a full sync: kube-router) or ``incremental`` (the
  harness's what-if: an event sync applies only what changed; its cost is one event's
  incremental apply per event it answers plus a full render; a sync answering the periodic tick
  is a full one, as ``harness.controller.loop`` does);
- **cost**: per sync from ``harness.sim.costfit`` at the node's current cluster size, times a
  lognormal noise factor (``cost_sigma``) and ``cost_scale`` (a machine/load factor). The rules
  of a sync are in force when its ``iptables-restore`` ends; set entries when its ipset restore
  ends (TMP + swap, v1.2.2+): a new client's IP admitted by a server's policy needs the latter,
  a new pod's own chain (its fail-open window) the former.

Why a small loop and not SimPy: given the event stream, every node is an independent single-
server queue (delivery, channel, ticker and mutex are node-local), so one pass over a node's
sorted deliveries computes its syncs exactly; SimPy's processes and events would add an object
and a scheduler step per delivery (not measured here) for no modelling gain, and the
extrapolation points have millions of deliveries (the whole grid runs in ~20 s this way).

Per pod it reports the two quantities the kernel driver measures with probes:
``reach`` (pod_creation_reachability_latency: network ready -> the first probe of the pod to the
server that connects; the server's node must have the pod's IP in the policy's set) and
``fail_open`` (network ready -> the last probe of a denied intruder that still reached the pod;
the pod's own node must have its chain). Probe timing is modelled: a probe every
``probe_interval_s`` from network ready.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field, replace
from typing import Any

from harness.model import churn as ch
from harness.sim.costfit import PHASE_ORDER, CostModel, ShapeModel, Size, StrategyCost

SYNC_REQUESTING = {ch.IP, ch.DELETE, ch.RELABEL, ch.POLICY}  # kube-router's handlers (module docstring)
STRATEGIES = ("restore", "incremental")


@dataclass
class Mutex:
    """The other controllers' holds of the shared ipset mutex: ``hold_s`` every ``every_s``."""

    every_s: float
    hold_s: float

    def free_at(self, t: float, phase: float) -> float:
        """The first time >= t the mutex is free (holds are [phase + k*every, + hold))."""
        if self.hold_s <= 0:
            return t
        k = math.floor((t - phase) / self.every_s)
        start = phase + k * self.every_s
        return start + self.hold_s if start <= t < start + self.hold_s else t


@dataclass
class SimConfig:
    """One simulated point. Cluster: ``nodes``, steady ``pods`` (besides the churn's),
    ``policies``, ``namespaces``; controller: ``strategy``, ``backend``, ``delivery`` (a
    ``churn.Delay`` for every node; ``delivery_per_node`` overrides by node index),
    ``resync_period_s``, ``lister_skew_s``, ``mutex``; measurement: ``client_nodes`` simulated
    client nodes (1..client_nodes; node 0 holds the server), ``client_share`` of the churn pods
    placed on them (``churn.place``), ``probe_interval_s``, ``cni_add_s`` (CNI ADD -> network
    ready); cost: ``cost_sigma``, ``cost_scale`` (``cost_scale_per_node`` overrides by index)."""

    nodes: int
    pods: int
    policies: int
    namespaces: int = 20
    strategy: str = "restore"
    backend: str = "legacy"
    delivery: ch.Delay = field(default_factory=lambda: ch.Delay("fixed", (0.0,)))
    delivery_per_node: dict[int, ch.Delay] = field(default_factory=dict)
    resync_period_s: float = 300.0
    lister_skew_s: float = 0.0
    mutex: Mutex | None = None
    client_nodes: int = 1
    client_share: float = 1.0
    probe_interval_s: float = 0.01
    cni_add_s: float = 0.0
    cost_sigma: float = 0.1
    cost_scale: float = 1.0
    cost_scale_per_node: dict[int, float] = field(default_factory=dict)
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "pods": self.pods, "policies": self.policies, "namespaces": self.namespaces,
                "strategy": self.strategy, "backend": self.backend, "delivery": str(self.delivery),
                "resync_period_s": self.resync_period_s, "lister_skew_s": self.lister_skew_s,
                "mutex": None if self.mutex is None else [self.mutex.every_s, self.mutex.hold_s],
                "client_nodes": self.client_nodes, "client_share": self.client_share,
                "probe_interval_s": self.probe_interval_s, "cni_add_s": self.cni_add_s,
                "cost_sigma": self.cost_sigma, "cost_scale": self.cost_scale,
                "cost_scale_per_node": self.cost_scale_per_node, "seed": self.seed}


@dataclass
class SimEvent:
    """One API event: emitted at ``t_s``; ``pod`` = the churn pod's index (-1: a policy event)."""

    seq: int
    t_s: float
    kind: str
    pod: int
    requests_sync: bool


@dataclass
class SimSync:
    start: float
    cutoff: float  # events delivered at or before this are in the snapshot
    sets_in_force: float
    rules_in_force: float
    end: float
    answered: int
    full: bool


@dataclass
class PodResult:
    index: int
    node: int
    ready: float
    reach_s: float | None  # None: never within the run (no sync included it)
    fail_open_s: float | None  # only for pods on simulated client nodes


@dataclass
class SimResult:
    config: SimConfig
    spec: ch.ChurnSpec
    pods: list[PodResult]
    syncs: dict[int, list[SimSync]]
    events: int

    def latencies(self, what: str) -> list[float]:
        """Finished values of ``reach`` or ``fail_open`` in seconds, sorted."""
        vals = [getattr(p, f"{what}_s") for p in self.pods]
        return sorted(v for v in vals if v is not None)

    def summary(self) -> dict[str, Any]:
        """p50/p99/max of reach and fail-open (s), sync counts and mean sync time of node 0."""
        out: dict[str, Any] = {"config": self.config.describe(), "churn": self.spec.describe(), "events": self.events}
        for what in ("reach", "fail_open"):
            v = self.latencies(what)
            out[what] = {"n": len(v), "p50": quantile(v, 0.5), "p99": quantile(v, 0.99), "max": v[-1] if v else None,
                         "unfinished": sum(1 for p in self.pods if getattr(p, f"{what}_s") is None
                                           and (what == "reach" or 1 <= p.node <= self.config.client_nodes))}
        s0 = self.syncs.get(0, [])
        d = self.spec.duration_s  # busy: the share of the churn's duration a sync was running
        out["server_node_syncs"] = {"n": len(s0), "mean_s": (sum(s.end - s.start for s in s0) / len(s0)) if s0 else None,
                                    "busy_fraction": sum(max(min(s.end, d) - s.start, 0.0) for s in s0) / max(d, 1e-9)}
        return out


def quantile(sorted_values: list[float], q: float) -> float | None:
    """Linear-interpolated quantile of an already sorted list (None if empty)."""
    if not sorted_values:
        return None
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def events_of(spec: ch.ChurnSpec, cni_add_s: float = 0.0
              ) -> tuple[list[SimEvent], dict[int, float], dict[int, float]]:
    """The API event stream of ``spec`` and each churn pod's network-ready time: a creation is
    the pod without IP at its creation, the IP at ``max(status update, network ready)`` (the
    kernel driver emits it no earlier than the CNI ADD returned); third, each pod's placement
    draw (``ChurnOp.slot``)."""
    ready: dict[int, float] = {}
    slots: dict[int, float] = {}
    raw: list[tuple[float, int, str, int]] = []
    for op in ch.schedule(spec):
        t = op.t_s
        if op.kind == ch.CREATE:
            ready[op.index] = t + cni_add_s
            slots[op.index] = op.slot
        elif op.kind == ch.IP:
            t = max(t, ready[op.index])
        elif op.kind == ch.DELETE:
            t = max(t, ready[op.index])
        raw.append((t, op.index, op.kind, op.index if op.kind != ch.POLICY else -1))
    raw.sort(key=lambda r: (r[0], ch.KINDS.index(r[2])))
    events = [SimEvent(i + 1, t, kind, pod, kind in SYNC_REQUESTING) for i, (t, _, kind, pod) in enumerate(raw)]
    return events, ready, slots


def _sync_cost(cost: StrategyCost, full_cost: StrategyCost, size: Size, full: bool, answered: int,
               noise: float) -> tuple[float, float, float, tuple[float, float], float]:
    """``(sets_in_force, rules_in_force, total, ipset section, cleanup start)`` offsets (s) from
    the sync start; the ipset section is (start, end) of the mutex-held ipset save+restore."""
    sc = full_cost if full else cost
    phases = sc.phase_ms(size)
    render = sc.render_ms(size)
    scale = 1.0
    if not full and cost.strategy == "incremental":
        # assumption: a batch of m events costs m single-event applies, but never more than
        # applying everything (a full restore's phases) - the diff cannot exceed the whole
        one = sum(phases.values())
        everything = sum(full_cost.phase_ms(size).values())
        scale = min(max(answered, 1), max(everything / one, 1.0)) if one > 0 else 1.0
    t = render
    marks: dict[str, tuple[float, float]] = {}
    for name in PHASE_ORDER:
        d = phases.get(name, 0.0) * scale
        marks[name] = (t, t + d)
        t += d
    f = noise / 1000.0
    ipset = (marks["ipset_save_time"][0] * f, marks["ipset_restore_time"][1] * f)
    return (marks["ipset_restore_time"][1] * f, marks["iptables_restore_time"][1] * f, t * f, ipset,
            marks["stale_cleanup_time"][0] * f)


def simulate(spec: ch.ChurnSpec, config: SimConfig, model: CostModel) -> SimResult:
    """Run the simulation of ``spec`` on ``config`` with sync costs from ``model``."""
    events, ready, slots = events_of(spec, config.cni_add_s)
    place = {i: ch.place(slots[i], config.nodes, config.client_nodes, config.client_share) for i in ready}
    return simulate_stream(events, ready, place, config, model, spec)


def replay_events(played: list[dict[str, Any]]) -> tuple[list[SimEvent], dict[int, float], dict[int, int]]:
    """The events of a kernel churn run as it played them (``harness.bench.churn``'s
    ``played``: emission times relative to its start), with network-ready times and nodes."""
    events, ready, place = [], {}, {}
    for i, p in enumerate(sorted(played, key=lambda p: p["t"])):
        events.append(SimEvent(i + 1, float(p["t"]), p["kind"], int(p["pod"]), p["kind"] in SYNC_REQUESTING))
        if p["kind"] == ch.CREATE:
            ready[int(p["pod"])] = float(p.get("ready", p["t"]))
            place[int(p["pod"])] = int(p["node"])
    return events, ready, place


def simulate_stream(events: list[SimEvent], ready: dict[int, float], place: dict[int, int], config: SimConfig,
                    model: CostModel, spec: ch.ChurnSpec | None = None) -> SimResult:
    """The simulation of an explicit event stream (``events`` sorted by time, each churn pod's
    network-ready time and node index)."""
    if config.strategy not in STRATEGIES:
        raise ValueError(f"strategy {config.strategy!r}: one of {', '.join(STRATEGIES)}")
    cost = model.cost(config.backend, config.strategy)
    full_cost = model.cost(config.backend, "restore")
    pods_per_node = (config.pods / config.nodes) if config.nodes else 0.0
    syncs: dict[int, list[SimSync]] = {}
    delivered: dict[int, dict[int, float]] = {}  # node -> event seq -> delivery time
    rng_root = random.Random(f"sim:{config.seed}:{spec.seed if spec else 0}")
    sim_nodes = range(0, min(config.client_nodes, config.nodes - 1) + 1)
    ip_seq = {e.pod: e.seq for e in events if e.kind == ch.IP}
    for n in sim_nodes:
        rng = random.Random(f"{rng_root.random()}:{n}")
        model_n = config.delivery_per_node.get(n, config.delivery)
        last = 0.0
        deliveries = []
        for e in events:
            last = max(e.t_s + model_n.draw(rng), last)
            deliveries.append((last, e))
        delivered[n] = {e.seq: t for t, e in deliveries}
        cfg_n = replace(config, cost_scale=config.cost_scale_per_node.get(n, config.cost_scale))
        syncs[n] = _run_node(deliveries, cfg_n, cost, full_cost, model.shape, pods_per_node, rng)
    results = []
    for i, t_ready in sorted(ready.items()):
        node = place[i]
        seq = ip_seq.get(i)
        rng = random.Random(f"probe:{config.seed}:{i}")
        gap = config.probe_interval_s
        reach = fail_open = None
        if seq is not None:
            s = _first_including(syncs[0], delivered[0][seq])
            if s is not None:
                # the first probe at or after the sets are in force (probes every gap from ready)
                reach = max(s.sets_in_force - t_ready, 0.0) + rng.uniform(0, gap)
            if node in syncs:
                s = _first_including(syncs[node], delivered[node][seq])
                if s is not None:
                    # the last probe that still got through: just before the chain is in force
                    fail_open = max(s.rules_in_force - t_ready - rng.uniform(0, gap), 0.0)
        results.append(PodResult(i, node, t_ready, reach, fail_open))
    return SimResult(config, spec or ch.ChurnSpec(duration_s=max((e.t_s for e in events), default=1.0) or 1.0),
                     results, syncs, len(events))


def _first_including(syncs: list[SimSync], delivered_at: float) -> SimSync | None:
    i = bisect.bisect_left([s.cutoff for s in syncs], delivered_at)
    return syncs[i] if i < len(syncs) else None


def _run_node(deliveries: list[tuple[float, SimEvent]], config: SimConfig, cost: StrategyCost,
              full_cost: StrategyCost, shape: ShapeModel, pods_per_node: float,
              rng: random.Random) -> list[SimSync]:
    """One node's syncs: the 1-slot channel fed by requesting deliveries and ticker ticks."""
    period = config.resync_period_s
    tick_phase = rng.uniform(0, period)
    mutex_phase = rng.uniform(0, config.mutex.every_s) if config.mutex else 0.0
    reqs = [t for t, e in deliveries if e.requests_sync]  # sorted (FIFO delivery)
    times = [t for t, _ in deliveries]
    # live churn pods with an IP, as the node's view sees them after each delivery
    live, count = [], 0
    for _, e in deliveries:
        if e.kind == ch.IP:
            count += 1
        elif e.kind == ch.DELETE:
            count -= 1
        live.append(count)
    # one ticker period past the last delivery: an event no sync took waits for the tick
    horizon = (times[-1] if times else 0.0) + period + 1e-6
    out: list[SimSync] = []
    free_at = 0.0  # the initial sync (Run's first RequestFullSync) finished before the churn starts
    taken = 0  # requests consumed so far (index into reqs)
    next_tick = tick_phase
    while True:
        pending_req = taken < len(reqs) and reqs[taken] <= free_at
        tick_due = next_tick <= free_at
        if pending_req or tick_due:
            start = free_at
        else:
            nxt = min(reqs[taken] if taken < len(reqs) else math.inf, next_tick)
            if nxt > horizon:
                break
            start = nxt
        # the take empties the slot: every request and tick up to ``start`` is answered
        new_taken = bisect.bisect_right(reqs, start, lo=taken)
        answered = new_taken - taken
        periodic = next_tick <= start
        while next_tick <= start:  # ticks before the take collapsed into this request
            next_tick += period
        taken = new_taken
        cutoff = start - config.lister_skew_s
        k = bisect.bisect_right(times, cutoff) - 1
        churn_live = live[k] if k >= 0 else 0
        size = _size(config, shape, churn_live, pods_per_node)
        full = periodic or config.strategy == "restore"
        noise = config.cost_scale * (rng.lognormvariate(0.0, config.cost_sigma) if config.cost_sigma > 0 else 1.0)
        sets_t, rules_t, total, ipset, cleanup = _sync_cost(cost, full_cost, size, full, answered, noise)
        shift = 0.0
        if config.mutex is not None:
            # wait for the shared ipset mutex before the ipset section and before the cleanup
            got = config.mutex.free_at(start + ipset[0], mutex_phase)
            shift = got - (start + ipset[0])
            got2 = config.mutex.free_at(start + shift + cleanup, mutex_phase)
            total += got2 - (start + shift + cleanup)
        out.append(SimSync(start, cutoff, start + shift + sets_t, start + shift + rules_t, start + shift + total,
                           answered, full))
        free_at = start + shift + total
    return out


def _size(config: SimConfig, shape: ShapeModel, churn_live: int, pods_per_node: float) -> Size:
    """The node's ruleset size with ``churn_live`` churn pods besides the steady ones."""
    pods = config.pods + churn_live
    local = pods_per_node + churn_live / max(config.nodes - 1, 1)
    return shape.size(pods, config.policies, local, config.namespaces)

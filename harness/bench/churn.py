"""``bench churn``: a churn workload (``harness.model.churn``) played against a lab whose real
nodes run the configured engine's controllers (kube-router by default), the rest virtual;
pod_creation_reachability_latency and the fail-open window of every churn pod on a real node
measured with packet probes (``harness.probe.packet``), not computed.

The cluster: ``synthetic_cluster(nodes, pods_per_node, policies)`` (steady pods; those of real
nodes are light pods, one shared namespace per node, so the lab stays cheap), plus

- ``churn-srv/server`` on node-000 (app=churn-server, TCP 8080 served) and
  ``churn-srv/intruder`` on node-000 (no allowed label);
- ``churn-srv/allow-churn``: the server accepts TCP 8080 from app=churn pods of namespaces
  labelled churn=true (every ``churn-NN``);
- per churn namespace ``default-deny``: every pod refuses ingress (the common production
  baseline), so a new pod reached by the intruder before its own node programmed it is a
  fail-open (a TCP RST from the pod: nothing listens; after enforcement: ICMP port-unreachable,
  kube-router's REJECT).

Churn pods get their IPs from the lab, round-robin as host-local IPAM does
(``Cluster.allocate_ip``; ``ipam: lowest`` hands pods on real nodes the lowest free address instead). A churn pod lands on a node by ``churn.place`` (a share ``client_share`` on the real client
nodes node-001.., the rest on virtual nodes, model only). A pod on a real node is wired (CNI
ADD: a full pod) right after its pod-without-IP event; its IP goes out as a pod update at its
status-update time, no earlier than the wiring returned. From network ready, the pod probes the
server (``rate`` SYNs/s for ``probe_s``) and the intruder probes the pod:

- reach = first CONNECTED probe to the server - network ready;
- fail_open = last probe of the intruder answered by the pod itself (RST or CONNECTED) -
  network ready (0 when none got through).

A pod's flows stop once both settled (``SETTLED`` final outcomes in a row), so the prober keeps
up under bursts; ``probe_lag_s`` records how late a pod's first probes went out and
``censored`` counts pods whose first probe already connected (their reach is an upper bound).

The schedule is played in real time; an operation that starts late (the lab's wiring takes
time) is recorded at its real emission time, and the record of every event as played
(``played``) is what ``harness.sim`` replays for validation.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError
from harness.model import churn as ch
from harness.model.cluster import ContainerPort, Namespace, NodeKind, Pod, PodKind
from harness.model.host_local import lowest_free
from harness.model.policy import LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule

log = logging.getLogger(__name__)

SERVER = "churn-srv/server"
INTRUDER = "churn-srv/intruder"
PORT = 8080
MAX_NODES = 250  # synthetic_cluster's limit (one /24 per node)
IPAMS = ("round-robin", "lowest")


def lowest_free_ip(cluster: Any, node: str) -> Any:
    """``--ipam lowest``: the lowest free address of the node's pod CIDR, which reuses a deleted
    pod's IP at once - while the nodes' rules still hold it (docs/churn-and-simulation.md). The default,
    ``round-robin``, is the lab's own allocation (``Cluster.allocate_ip``, like host-local)."""
    n = cluster.nodes[node]
    used = {p.ip for p in cluster.pods.values() if p.node == node and p.ip is not None}
    ip = lowest_free(n.pod_cidr, n.gateway_ip, used)
    if ip is None:
        raise ConfigError(None, f"nodes.{node}.pod_cidr", f"{n.pod_cidr} has no free address left")
    return ip


@dataclass
class ChurnRunConfig:
    """A kernel churn run: cluster shape, which nodes are real, controller settings, probes."""

    nodes: int = 6
    pods_per_node: int = 4
    policies: int = 6
    real_nodes: int = 2
    client_share: float = 1.0
    strategy: str = "restore"
    backend: str = "legacy"
    profile: str | None = None
    delivery: str = "fixed:0"
    resync_period_s: float = 300.0
    rate: float = 100.0  # probes per second per flow
    probe_s: float = 5.0
    settle_s: float = 2.0  # after the last op, before the teardown
    ipam: str = "round-robin"  # the lab's, like host-local; or "lowest" (a freed IP is reused at once)
    seed: int = 0

    def validate(self, spec: ch.ChurnSpec, source: str = "bench churn") -> None:
        """ConfigError (one line naming the field) for a run that cannot work."""
        if not 2 <= self.real_nodes <= self.nodes <= MAX_NODES:
            raise ConfigError(source, "nodes", f"need 2 <= real_nodes ({self.real_nodes}) <= nodes ({self.nodes}) "
                              f"<= {MAX_NODES}")
        if not 0 < self.client_share <= 1:
            raise ConfigError(source, "client_share", f"must be in (0, 1], got {self.client_share:g}")
        if not 0 < self.rate <= 2000:
            raise ConfigError(source, "rate", f"must be in (0, 2000] probes/s, got {self.rate:g}")
        if self.ipam not in IPAMS:
            raise ConfigError(source, "ipam", f"{self.ipam!r} is not one of {', '.join(IPAMS)}")
        if self.probe_s >= spec.lifetime_s:
            raise ConfigError(source, "probe_s", f"{self.probe_s:g} s must be shorter than the pods' "
                              f"lifetime_s ({spec.lifetime_s:g} s): a pod is probed until it is deleted")

    def describe(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PodRecord:
    index: int
    key: str
    node: str
    ready_ns: int = 0
    ip_emitted_ns: int = 0
    reach_s: float | None = None
    fail_open_s: float | None = None
    probe_lag_s: float | None = None
    censored: bool = False
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)


def churn_policies(spec: ch.ChurnSpec) -> list[NetworkPolicy]:
    """The server's allow policy and one default-deny per churn namespace."""
    allow = NetworkPolicy("churn-srv", "allow-churn", LabelSelector.of({"app": "churn-server"}), ("Ingress",),
                          ingress=(PolicyRule((PolicyPeer(namespace_selector=LabelSelector.of({"churn": "true"}),
                                                          pod_selector=LabelSelector.of({"app": "churn"})),),
                                              (PolicyPort("TCP", PORT),)),))
    return [allow, *(NetworkPolicy(ns, "default-deny", LabelSelector(), ("Ingress",)) for ns in spec.namespace_names)]


def churn_cluster(spec: ch.ChurnSpec, cfg: ChurnRunConfig):  # -> Cluster
    """The synthetic cluster plus the churn namespaces, server, intruder and policies."""
    import dataclasses

    from harness.model.synthetic import synthetic_cluster

    c = synthetic_cluster(cfg.nodes, cfg.pods_per_node, cfg.policies, cfg.seed, real_nodes=cfg.real_nodes)
    for key, pod in list(c.pods.items()):
        if c.nodes[pod.node].kind is NodeKind.REAL:
            c.pods[key] = dataclasses.replace(pod, kind=PodKind.LIGHT)
    c.namespaces["churn-srv"] = Namespace("churn-srv", {"churn": "false"})
    for ns in spec.namespace_names:
        c.namespaces[ns] = Namespace(ns, {"churn": "true"})
    node0 = "node-000"
    c.pods[SERVER] = Pod("churn-srv", "server", node0, {"app": "churn-server"},
                         c.nodes[node0].pod_cidr.network_address + 200, [ContainerPort(PORT, "TCP", "http")])
    c.pods[INTRUDER] = Pod("churn-srv", "intruder", node0, {"app": "intruder"},
                           c.nodes[node0].pod_cidr.network_address + 201)
    for pol in churn_policies(spec):
        c.policies[pol.key] = pol
    return c


def run_churn(spec: ch.ChurnSpec, cfg: ChurnRunConfig,
              on_progress: Callable[[float, float, str], None] | None = None,
              run_id: str | None = None) -> dict[str, Any]:
    """Build the lab, start the controllers and the prober, play ``spec`` in real time and
    return per-pod results, the played events and the controllers' sync summary. Interrupts
    (Ctrl-C, SIGTERM) tear everything down through the context managers. ``run_id`` names the
    lab (its namespaces are ``nph-<run_id>-...``; default random)."""
    from harness.controller import Controller, ControllerConfig
    from harness.controller import events as ev
    from harness.engines.config import EnforcementConfig
    from harness.lab import Lab
    from harness.probe.packet import FlowSpec, PacketProber

    cfg.validate(spec)
    cluster = churn_cluster(spec, cfg)
    enforcement = EnforcementConfig(strategy=cfg.strategy, backend=cfg.backend,
                                    **({"profile": cfg.profile} if cfg.profile else {}))
    ccfg = ControllerConfig(delivery=cfg.delivery, resync_period_s=cfg.resync_period_s,
                            seed=cfg.seed).with_enforcement(enforcement)
    ops = ch.schedule(spec)
    node_names = sorted(cluster.nodes)
    real_clients = cfg.real_nodes - 1
    pods: dict[int, PodRecord] = {}
    flows: dict[int, tuple[Any, Any]] = {}
    played: list[dict[str, Any]] = []
    late: list[float] = []
    rev: dict[int, int] = {}
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(Lab(cluster, run_id=run_id, servers=True))
        ctl = stack.enter_context(Controller(lab, ccfg))
        prober = PacketProber(timeout_s=0.25)
        prober.start()
        stack.callback(prober.stop)
        server_ip = str(lab.cluster.pods[SERVER].ip)
        intruder_ns, intruder_ip = lab.pod_netns(INTRUDER), str(lab.cluster.pods[INTRUDER].ip)
        t0 = time.time_ns()
        horizon = ops[-1].t_s if ops else 0.0

        def rel(t_ns: int) -> float:
            return (t_ns - t0) / 1e9

        for op in ops:
            _stop_settled(flows)
            wait = t0 / 1e9 + op.t_s - time.time()
            while wait > 0:  # stop settled flows while waiting: fewer probes, a prober that keeps up
                time.sleep(min(wait, 0.05))
                _stop_settled(flows)
                wait = t0 / 1e9 + op.t_s - time.time()
            late.append(max(-wait, 0.0))
            if on_progress is not None:
                on_progress(op.t_s, horizon, op.kind)
            node_i = ch.place(op.slot, cfg.nodes, real_clients, cfg.client_share) if op.index >= 0 else -1
            key = op.key
            if op.kind == ch.CREATE:
                node = node_names[node_i]
                kind = PodKind.FULL if cluster.nodes[node].kind is NodeKind.REAL else PodKind.VIRTUAL
                ip = lowest_free_ip(lab.cluster, node) if cfg.ipam == "lowest" and kind is PodKind.FULL else None
                pod = Pod(op.namespace, op.name, node, {"app": "churn", "rev": "0"}, ip, kind=kind)
                pending = ev.pod_added(pod)
                pending.pod.ip = None  # type: ignore[union-attr]  # scheduled, no IP yet: kube-router ignores it
                ctl.emit(pending, apply_to_api=False)
                played.append({"t": rel(pending.emitted_ns), "kind": ch.CREATE, "pod": op.index, "node": node_i})
                ready = lab.add_pod(pod)
                pods[op.index] = PodRecord(op.index, key, node, ready_ns=ready)
                played[-1]["ready"] = rel(ready)
                if kind is PodKind.FULL:
                    ip = str(lab.cluster.pods[key].ip)
                    out = prober.add_flow(FlowSpec(lab.pod_netns(key), ip, server_ip, PORT, "TCP", rate=cfg.rate,
                                                   count=int(cfg.rate * cfg.probe_s), flow_id=f"{key}->server"),
                                          start_ns=ready)
                    into = prober.add_flow(FlowSpec(intruder_ns, intruder_ip, ip, PORT, "TCP", rate=cfg.rate,
                                                    count=int(cfg.rate * cfg.probe_s), flow_id=f"intruder->{key}"),
                                           start_ns=ready)
                    flows[op.index] = (out, into)
            elif op.kind == ch.IP:
                e = ctl.emit(ev.pod_updated(lab.cluster.pods[key]), apply_to_api=False)
                pods[op.index].ip_emitted_ns = e.emitted_ns
                played.append({"t": rel(e.emitted_ns), "kind": ch.IP, "pod": op.index, "node": node_i})
            elif op.kind == ch.DELETE:
                if op.index in flows:
                    for f in flows[op.index]:
                        f.stop()
                _finish(pods[op.index], flows.pop(op.index, None))
                e = ctl.remove_pod(key)
                played.append({"t": rel(e.emitted_ns), "kind": ch.DELETE, "pod": op.index, "node": node_i})
            elif op.kind == ch.RELABEL:
                if key in lab.cluster.pods:
                    rev[op.index] = rev.get(op.index, 0) + 1
                    e = ctl.relabel_pod(key, {"app": "churn", "rev": str(rev[op.index])})
                    played.append({"t": rel(e.emitted_ns), "kind": ch.RELABEL, "pod": op.index, "node": node_i})
            elif op.kind == ch.POLICY:
                e = ctl.update_policy(lab.cluster.policies[f"{op.namespace}/default-deny"])
                played.append({"t": rel(e.emitted_ns), "kind": ch.POLICY, "pod": -1, "node": -1})
        time.sleep(cfg.settle_s)
        for i, pair in list(flows.items()):
            prober.wait(list(pair), timeout=cfg.probe_s + 2)
            _finish(pods[i], pair)
        ctl.wait_idle(30)
        syncs = _sync_summary(ctl)
    probed = [p for p in pods.values() if p.outcomes]
    return {"config": cfg.describe(), "churn": spec.describe(), "t0_ns": t0,
            "pods": [p.__dict__ for p in probed], "played": played,
            "driver_late_s": {"p50": _q(sorted(late), 0.5), "max": max(late, default=0.0)},
            "reach": _stats([p.reach_s for p in probed]), "fail_open": _stats([p.fail_open_s for p in probed]),
            "probe_lag_s": _stats([p.probe_lag_s for p in probed]),
            "censored": sum(1 for p in probed if p.censored),
            "syncs": syncs}


SETTLED = 5  # this many consecutive final outcomes on both flows: the pod's verdicts will not change


def _stop_settled(flows: dict[int, tuple[Any, Any]]) -> None:
    """Stop the flows of pods whose probes settled: the last ``SETTLED`` probes to the server
    connected and the last ``SETTLED`` of the intruder were refused by the policy (ICMP)."""
    from harness.outcome import Outcome

    for out, into in flows.values():
        if out.stopped:
            continue
        a = out.series()[-SETTLED:]
        b = into.series()[-SETTLED:]
        if (len(a) == len(b) == SETTLED and all(r.outcome is Outcome.CONNECTED for r in a)
                and all(r.outcome is Outcome.REJECTED_ICMP for r in b)):
            out.stop()
            into.stop()


def _finish(rec: PodRecord, pair: tuple[Any, Any] | None) -> None:
    """reach and fail_open of one pod from its two flows' series (once)."""
    from harness.outcome import Outcome

    if pair is None or rec.outcomes:
        return
    out, into = pair
    s_out, s_in = out.series(), into.series()
    rec.outcomes = {"to_server": out.counts(), "from_intruder": into.counts()}
    ok = [r.send_ns for r in s_out if r.outcome is Outcome.CONNECTED]
    rec.reach_s = (min(ok) - rec.ready_ns) / 1e9 if ok else None
    # how late the prober's first probes went out (a loaded prober): a reach whose first probe
    # already connected is only an upper bound (``censored``)
    rec.probe_lag_s = max(((s[0].send_ns - rec.ready_ns) / 1e9 for s in (s_out, s_in) if s), default=None)
    rec.censored = bool(s_out) and s_out[0].outcome is Outcome.CONNECTED
    through = [r.send_ns for r in s_in if r.outcome in (Outcome.REFUSED_RST, Outcome.CONNECTED)]
    rec.fail_open_s = max((max(through) - rec.ready_ns) / 1e9, 0.0) if through else 0.0


def _sync_summary(ctl: Any) -> dict[str, Any]:
    out = {}
    for name in ctl.nodes:
        ss = [s for s in ctl.timeline.node_syncs(name, done_only=True) if s.ok][1:]  # after the initial
        d = sorted((s.end_ns - s.start_ns) / 1e9 for s in ss)
        out[name] = {"n": len(ss), "p50_s": _q(d, 0.5), "p99_s": _q(d, 0.99), "mean_s": sum(d) / len(d) if d else None,
                     "durations_s": [round((s.end_ns - s.start_ns) / 1e9, 6) for s in ss],
                     "failed": sum(1 for s in ctl.timeline.node_syncs(name, done_only=True) if not s.ok)}
    return out


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _stats(values: list[float | None]) -> dict[str, Any]:
    v = sorted(x for x in values if x is not None)
    return {"n": len(v), "unfinished": sum(1 for x in values if x is None), "p50": _q(v, 0.5), "p99": _q(v, 0.99),
            "max": v[-1] if v else None}

"""Window and lag scenarios (on the default topology; policy creation also at scale), each one run = one observation dict.

Common setting: the ``db/allow-backup`` policy (app=mariadb pods accept TCP 3306 from app=backup
pods of namespace batch); ``db/target-0`` on node-a (app=mariadb, echo listener on 3306);
``batch/client-0`` on node-b (app=backup, allowed); ``frontend/web-1`` on node-b (not allowed).

- ``FailOpen`` (seed issue #873, DESIGN.md): a new protected pod is created while node-a learns of it
  late; a denied client probes it from the start. fail_open_window = how long denied traffic
  was let through; a connection established inside the window must survive enforcement
  (conntrack ESTABLISHED is accepted before the pod chain's REJECT).
- ``SetUpdateWindow``: an allowed client probes continuously while the policy's source set
  changes repeatedly (a new backup pod per update); v1.2 flushes and refills the set in place,
  v1.3+ restores into a TMP set and swaps. Counts and times refused probes.
- ``EstablishedSurvivesSync``: long-lived allowed connections across N forced full syncs.
- ``PolicyCreation``: a deny-all is in force; an allow policy is created at t0;
  policy_enforcement_latency = first probe from which the client is stably connected - t0.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.analysis.windows import DENIED, first_of, last_of, stable_since, windows
from harness.controller import Controller, ControllerConfig
from harness.engines.config import EnforcementConfig
from harness.kernel import netns
from harness.model.cluster import ContainerPort, Pod
from harness.model.policy import LabelSelector, NetworkPolicy
from harness.outcome import Outcome
from harness.scenarios.job import allow_backup
from harness.scenarios.running import controller_and_prober

log = logging.getLogger(__name__)

PORT = 3306
TARGET = "db/target-0"
CLIENT = "batch/client-0"
INTRUDER = "frontend/web-1"


def _target_pod(name: str = "target-0") -> Pod:
    return Pod("db", name, "node-a", {"app": "mariadb"}, ports=[ContainerPort(PORT, "TCP", "mysql")])


@dataclass
class WindowConfig(EnforcementConfig):
    """A configuration of one of the window scenarios: the enforcement fields
    (``EnforcementConfig``) and the scenario's own (used as each scenario needs).
    ``topology`` / ``synthetic_policies`` name the cluster the lab is built from
    (``harness.scenarios.clusters.scenario_cluster``); they are recorded, the lab is the caller's."""

    name: str
    delivery: Any = field(default_factory=lambda: {"node-a": 0.3, "node-b": 0.0})
    probe_rate: float = 1000.0
    topology: str = "default"
    synthetic_policies: int = 0

    def describe(self) -> dict[str, Any]:
        return asdict(self)


class _Base:
    def __init__(self, lab: Any, config: WindowConfig, *, target: bool = True, policies: tuple = ()):
        self.lab, self.config = lab, config
        self.ctl: Controller | None = None
        self.prober: Any = None
        self._target = target
        self._policies = policies or (allow_backup(),)
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        lab, cfg = self.lab, self.config
        if self._target and TARGET not in lab.cluster.pods:
            lab.add_pod(_target_pod())
        if CLIENT not in lab.cluster.pods:
            lab.add_pod(Pod("batch", "client-0", "node-b", {"app": "backup"}))
        for pol in self._policies:
            lab.cluster.policies[pol.key] = pol
        ccfg = ControllerConfig(delivery=cfg.delivery).with_enforcement(cfg.enforcement())
        self._stack = contextlib.ExitStack()
        self.ctl, self.prober = self._stack.enter_context(controller_and_prober(lab, ccfg, 0.25))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def flow(self, src_key: str, dst_ip: str, seconds: float, flow_id: str, rate: float | None = None):
        from harness.probe.packet import FlowSpec

        rate = rate or self.config.probe_rate
        pod = self.lab.cluster.pods[src_key]
        return self.prober.add_flow(FlowSpec(self.lab.pod_netns(src_key), str(pod.ip), dst_ip, PORT, "TCP",
                                             rate=rate, count=int(rate * seconds), flow_id=flow_id))


def _series(flow) -> list[list]:
    return [[r.send_ns, r.outcome.value] for r in flow.series()]


def conntrack_established(node_netns: str, src_ip: str, dst_ip: str, port: int = PORT) -> list[str]:
    """Lines of ``conntrack -L`` in the node namespace for ESTABLISHED TCP src -> dst:port."""
    proc = netns.run(node_netns, ["conntrack", "-L", "-p", "tcp", "-s", src_ip, "-d", dst_ip, "--dport", str(port)],
                     check=False)
    return [ln for ln in proc.stdout.splitlines() if "ESTABLISHED" in ln]


class FailOpen(_Base):
    """Seed issue #873: a new denied-to pod is reachable until its chain lands."""

    probe_s = 0.9

    def run_once(self, index: int) -> dict[str, Any]:
        from harness.probe.sockets import LongLivedFlow, LongLivedFlows, tcp_connect

        ctl, lab = self.ctl, self.lab
        assert ctl is not None
        added = ctl.add_pod(_target_pod(f"fresh-{index}"))
        key, dst = added.pod.key, str(added.pod.ip)
        ready = added.ready_ns
        flow = self.flow(INTRUDER, dst, self.probe_s, f"{INTRUDER}->{key}")
        intruder_ns = lab.pod_netns(INTRUDER)
        src_ip = str(lab.cluster.pods[INTRUDER].ip)
        flows = LongLivedFlows()
        ll = flows.add(LongLivedFlow(f"ll-{index}", intruder_ns, dst, PORT, period_s=0.02, stall_s=0.5),
                       connect_timeout_s=0.5)
        flows.start()
        try:
            programmed = ctl.await_event(added.event.seq, timeout=30, nodes="node-a")
            self.prober.wait([flow], timeout=self.probe_s + 5)
            time.sleep(0.2)  # the long-lived flow keeps exchanging after enforcement
            exchanges_after = ll.exchanges
            ct = conntrack_established(lab.node_netns("node-a"), src_ip, dst)
            time.sleep(0.1)
            exchanges_after = ll.exchanges - exchanges_after
        finally:
            flows.stop()
        after = tcp_connect(intruder_ns, dst, PORT, timeout_s=0.5)
        series = _series(flow)
        last_open = last_of(series, {Outcome.CONNECTED})
        first_denied = first_of(series, DENIED, after_ns=last_open or 0)
        sync = ctl.timeline.sync_including("node-a", added.event.seq)
        obs = {
            "run": index, "pod": key, "ready_ns": ready, "programmed_ns": programmed,
            "sync": None if sync is None else {"start_ns": sync.start_ns, "in_force_ns": sync.in_force_ns,
                                               "phases": [[p.name, p.start_ns, p.end_ns] for p in sync.phases]},
            "probe": {"rate": self.config.probe_rate, "series": series, "first_ns": series[0][0] if series else None},
            "fail_open_ms": None if last_open is None else (last_open - ready) / 1e6,
            "fail_open_bound_ms": None if first_denied is None else (first_denied - ready) / 1e6,
            "enforced_after_ms": None if first_denied is None else (first_denied - ready) / 1e6,
            "long_lived": {"events": [[e.kind, e.t_ns, e.detail] for e in ll.events],
                           "established_in_window": "established" in ll.event_kinds()
                           and (ll.events[0].t_ns < programmed),
                           "exchanges_after_enforcement": exchanges_after,
                           "reset": Outcome.RESET_AFTER_ESTABLISHED in ll.event_kinds(),
                           "conntrack_established": ct},
            "new_connection_after": {"ok": after.ok, "errno": after.errno},
        }
        ctl.remove_pod(key)
        ctl.wait_idle(30)
        return obs


class SetUpdateWindow(_Base):
    """Continuous allowed probes while the policy's source set is updated ``updates`` times."""

    def run(self, updates: int, rate: float = 2000.0,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """One observation over ``updates`` set updates; ``progress(done, updates)`` before each."""
        ctl, lab = self.ctl, self.lab
        assert ctl is not None
        dst = str(lab.cluster.pods[TARGET].ip)
        # warm-up: the client is in the set on node-a before the probes start
        ctl.wait_idle(30)
        flow = self.flow(CLIENT, dst, 3600, f"{CLIENT}->{TARGET}", rate=rate)
        time.sleep(0.1)
        syncs = []
        t0 = time.time_ns()
        for i in range(updates):
            if progress:
                progress(i, updates)
            # alternately a backup pod appears and goes (model only): each is a set update, and
            # the node's /24 never runs out of addresses however many updates are asked for
            if i % 2 == 0:
                ev = ctl.announce_pod(Pod("batch", f"extra-{i}", "node-b", {"app": "backup"},
                                          ip=ctl.api.allocate_ip("node-b")))
            else:
                ev = ctl.remove_pod(f"batch/extra-{i - 1}")
            ctl.await_event(ev.seq, timeout=30, nodes="node-a")
            rec = ctl.timeline.sync_including("node-a", ev.seq)
            if rec is not None:
                syncs.append(rec)
        time.sleep(0.1)
        flow.stop()
        self.prober.wait([flow], timeout=5)
        t1 = time.time_ns()
        series = _series(flow)
        wins = windows(series, DENIED)
        sets = [[p.start_ns, p.end_ns] for s in syncs for p in s.phases if p.name == "ipset_restore_time"]
        return {
            "updates": updates, "syncs": len({s.index for s in syncs}), "start_ns": t0, "end_ns": t1,
            "probe": {"rate": rate, "sent": len(series), "counts": flow.counts()},
            "refused": sum(w.count for w in wins),
            "windows": [{"first_ns": w.first_ns, "last_ns": w.last_ns, "count": w.count,
                         "observed_ms": w.observed_ns / 1e6,
                         "bound_ms": None if w.bound_ns is None else w.bound_ns / 1e6,
                         "outcomes": list(w.outcomes)} for w in wins],
            "ipset_restore_phases": sets,
            "ipset_restore_ms": [(e - s) / 1e6 for s, e in sets],
            "set_mode": set_update_mode(self.config),
        }


def set_update_mode(config: EnforcementConfig) -> str | None:
    """How the configured engine updates a set in place (``flush+refill`` | ``tmp+swap``), if it says."""
    from harness.engines import registry

    mode = getattr(registry.get_engine(config.engine), "set_update_mode", None)
    return mode(config) if mode is not None else None


class EstablishedSurvivesSync(_Base):
    """``flows`` long-lived allowed connections across ``syncs`` forced full syncs."""

    def run(self, syncs: int, flows: int = 4,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """One observation over ``syncs`` forced full syncs; ``progress(done, syncs)`` before each."""
        from harness.probe.sockets import LongLivedFlow, LongLivedFlows

        ctl, lab = self.ctl, self.lab
        assert ctl is not None
        dst = str(lab.cluster.pods[TARGET].ip)
        ns = lab.pod_netns(CLIENT)
        ll = LongLivedFlows()
        live = [ll.add(LongLivedFlow(f"flow-{i}", ns, dst, PORT, period_s=0.02, stall_s=1.0),
                       connect_timeout_s=1.0) for i in range(flows)]
        ll.start()
        done = []
        t0 = time.time_ns()
        try:
            for i in range(syncs):
                if progress:
                    progress(i, syncs)
                done.extend(ctl.force_sync("node-a", timeout=60))
            time.sleep(0.2)
        finally:
            ll.stop()
        t1 = time.time_ns()
        kinds = [k for f in live for k in f.event_kinds()]
        return {
            "syncs": len(done), "flows": flows, "start_ns": t0, "end_ns": t1,
            "sync_ms": [s.total_ns / 1e6 for s in done],
            "versions": len({s.sync_version for s in done}),
            "established": kinds.count("established"),
            "resets": kinds.count(Outcome.RESET_AFTER_ESTABLISHED),
            "stalls": kinds.count("stall"), "closed": kinds.count("closed"),
            "connect_failed": kinds.count("connect_failed"),
            "exchanges": sum(f.exchanges for f in live),
            "events": [[f.flow_id, e.kind, e.t_ns, e.detail] for f in live for e in f.events],
        }


def deny_all_db() -> NetworkPolicy:
    return NetworkPolicy("db", "deny-all", LabelSelector(), ("Ingress",))


class PolicyCreation(_Base):
    """deny-all in force; the allow policy created at t0; time until stably connected."""

    def __init__(self, lab: Any, config: WindowConfig):
        super().__init__(lab, config, policies=(deny_all_db(),))

    def run_once(self, index: int, budget_s: float = 3.0) -> dict[str, Any]:
        ctl, lab = self.ctl, self.lab
        assert ctl is not None
        dst = str(lab.cluster.pods[TARGET].ip)
        flow = self.flow(CLIENT, dst, budget_s, f"{CLIENT}->{TARGET}#{index}")
        time.sleep(0.05)
        pol = allow_backup()
        ev = ctl.create_policy(pol)
        t0 = ev.emitted_ns
        programmed = None
        with contextlib.suppress(Exception):
            programmed = ctl.await_event(ev.seq, timeout=30, nodes="node-a")
        # enough probes after the change to call the outcome stable
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline and not flow.done.is_set():
            ok_after = [r for r in flow.records if r.outcome is Outcome.CONNECTED and r.send_ns > (programmed or t0)]
            if len(ok_after) >= 50:
                break
            time.sleep(0.02)
        flow.stop()
        self.prober.wait([flow], timeout=5)
        series = _series(flow)
        stable = stable_since(series, Outcome.CONNECTED, after_ns=t0)
        sync = ctl.timeline.sync_including("node-a", ev.seq)
        obs = {
            "run": index, "t0_ns": t0, "programmed_ns": programmed,
            "sync": None if sync is None else {"start_ns": sync.start_ns, "in_force_ns": sync.in_force_ns,
                                               "total_ms": sync.total_ns / 1e6,
                                               "phases": [[p.name, p.start_ns, p.end_ns] for p in sync.phases]},
            "enforcement_latency_ms": None if stable is None else (stable - t0) / 1e6,
            "controller_lag_ms": None if programmed is None else (programmed - t0) / 1e6,
            "probe": {"rate": self.config.probe_rate, "counts": flow.counts(),
                      "denied_before": sum(1 for t, o in series if t < t0 and o != Outcome.CONNECTED),
                      "connected_before": sum(1 for t, o in series if t < t0 and o == Outcome.CONNECTED),
                      # how long before t0 the earliest of those was sent (an engine that judges
                      # a queued packet when it reads it lets one sent just before t0 through)
                      "connected_before_lead_ms": max(((t0 - t) / 1e6 for t, o in series
                                                       if t < t0 and o == Outcome.CONNECTED), default=0.0)},
        }
        dev = ctl.delete_policy(pol.key)
        with contextlib.suppress(Exception):
            ctl.await_event(dev.seq, timeout=30, nodes="node-a")
        ctl.wait_idle(30)
        return obs

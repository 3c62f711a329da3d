"""Pure parts of the controller model: no root, no kernel.

The sync loop itself is exercised here with an in-memory applier (it records what it would
program); the same loop against the kernel is in test_controller_kernel.py.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import threading
import time

import pytest

from harness.controller import events as ev
from harness.controller.channel import SyncChannel, SyncRequest
from harness.controller.delivery import Delivery, parse_delay
from harness.controller.loop import ControllerConfig, NodeController, phases_of
from harness.controller.metrics import DEFAULT_BUCKETS, ControllerMetrics, Histogram, quantile
from harness.controller.mitigations import CniWait, DefaultDeny, Retry, Sleep, parse_mitigations, retry
from harness.controller.timeline import Timeline
from harness.engines.kube_router.apply import SyncTimings
from harness.engines.kube_router.engine import KubeRouterEngine
from harness.engines.kube_router.events import requests_sync
from harness.engines.kube_router.incremental import noflush_restore_text, plan_incremental
from harness.engines.kube_router.metrics import METRIC_SET
from harness.engines.kube_router.render.kube_router import render_node
from harness.errors import ConfigError
from harness.model.cluster import Cluster, ContainerPort, Namespace, Node, Pod
from harness.model.netpol import parse_network_policy
from harness.model.policy import (
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    SelectorRequirement,
)


# -- fixtures ---------------------------------------------------------------------------------------
def small_cluster() -> Cluster:
    c = Cluster(name="t")
    c.nodes["node-a"] = Node("node-a", ipaddress.IPv4Address("172.18.0.2"), ipaddress.IPv4Network("10.244.0.0/24"))
    c.nodes["node-b"] = Node("node-b", ipaddress.IPv4Address("172.18.0.3"), ipaddress.IPv4Network("10.244.1.0/24"))
    c.namespaces["db"] = Namespace("db", {"tier": "db"})
    c.namespaces["batch"] = Namespace("batch", {"tier": "batch"})
    c.add_pod(Pod("db", "mysql-0", "node-a", {"app": "mysql"}, ports=[ContainerPort(3306, "TCP", "mysql")]))
    c.add_pod(Pod("batch", "old-job", "node-b", {"app": "backup"}))
    pol = allow_backup()
    c.policies[pol.key] = pol
    return c


def allow_backup() -> NetworkPolicy:
    return NetworkPolicy(
        "db", "allow-backup", LabelSelector.of({"app": "mysql"}), ("Ingress",),
        ingress=(PolicyRule(peers=(PolicyPeer(pod_selector=LabelSelector.of({"app": "backup"}),
                                              namespace_selector=LabelSelector.of({"tier": "batch"})),),
                            ports=(PolicyPort("TCP", 3306),)),))


class MemoryApplier:
    """Stands in for the kernel in pure tests: keeps every ruleset it was given."""

    strategy = "memory"

    def __init__(self, hold: threading.Event | None = None, entered: threading.Event | None = None):
        self.applied: list = []
        self.hold, self.entered = hold, entered

    def sync_version(self, start_ns: int) -> int:
        return start_ns

    def apply(self, ruleset, *, full: bool = False) -> SyncTimings:
        t = SyncTimings("memory", "none", "none", ruleset.sync_version, start_ns=time.time_ns())
        if self.hold is not None and self.applied:  # hold every sync after the initial one
            self.entered.set()  # type: ignore[union-attr]
            self.hold.wait(10)
        self.applied.append(ruleset)
        t.ipset_restore_time = 1000
        t.iptables_restore_time = 2000
        t.sets_ns = t.rules_ns = t.end_ns = time.time_ns()
        t.total = t.end_ns - t.start_ns
        return t


def node_controller(cluster: Cluster, node: str = "node-a", applier=None, **cfg) -> NodeController:
    config = ControllerConfig(**cfg).validated()
    timeline = Timeline()
    engine = KubeRouterEngine().node(node, "nph-none", config, timeline, applier=applier or MemoryApplier())
    return NodeController(node, "nph-none", ev.view_of(cluster), config, timeline, engine)


def emit(nc: NodeController, event: ev.ClusterEvent) -> ev.ClusterEvent:
    rec = nc.timeline.new_event(event.kind.value, event.key)
    event.seq, event.emitted_ns = rec.seq, rec.emitted_ns
    nc.enqueue(event)
    return event


def wait_idle(nc: NodeController, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not nc.idle():
        assert time.monotonic() < deadline, "controller did not become idle"
        time.sleep(0.002)


# -- 1-slot channel ---------------------------------------------------------------------------------
def test_channel_first_request_queues_the_rest_collapse():
    ch = SyncChannel()
    reqs = [SyncRequest("n", "event", 0, seq=i) for i in range(1, 6)]
    assert [ch.request(r) for r in reqs] == [True, False, False, False, False]
    assert [r.queued for r in reqs] == [True, False, False, False, False]
    assert ch.take(0) == reqs
    assert ch.pending  # taken, not answered yet
    ch.done()
    assert not ch.pending
    assert ch.take(0.01) is None
    assert ch.request(SyncRequest("n", "event", 0, seq=9)) is True


def test_channel_take_wakes_on_request_and_close():
    ch = SyncChannel()
    got = []
    t = threading.Thread(target=lambda: got.append(ch.take(5)))
    t.start()
    time.sleep(0.02)
    ch.request(SyncRequest("n", "periodic", 1))
    t.join(2)
    assert got and got[0][0].reason == "periodic"
    t = threading.Thread(target=lambda: got.append(ch.take(5)))
    t.start()
    ch.close()
    t.join(2)
    assert got[-1] is None and not t.is_alive()


# -- delivery models ---------------------------------------------------------------------------------
def test_delay_specs_parse():
    assert str(parse_delay(0.05)) == "fixed:0.05"
    assert str(parse_delay("0.2")) == "fixed:0.2"
    assert str(parse_delay("uniform:0.01,0.2")) == "uniform:0.01,0.2"
    assert str(parse_delay("lognormal:0.08,0.5")) == "lognormal:0.08,0.5"
    assert str(parse_delay("exponential:0.05,0.01")) == "exponential:0.05,0.01"
    assert parse_delay(None).params == (0.0,)
    assert parse_delay("uniform:0.1,0.3").mean_s == pytest.approx(0.2)


@pytest.mark.parametrize("spec, message", [
    ("gauss:1", "unknown delay model 'gauss'"),
    ("uniform:0.3,0.1", "uniform low 0.3 is above high 0.1"),
    ("uniform:0.1", "uniform takes 2 parameter(s), got 1"),
    ("fixed:-1", "delays must be finite and >= 0"),
    ("fixed:abc", "parameters must be numbers of seconds"),
    (True, "is not a delay"),
])
def test_delay_spec_errors_name_file_and_field(spec, message):
    with pytest.raises(ConfigError) as e:
        parse_delay(spec, "scenario.yaml", "delivery.node-a")
    assert str(e.value).startswith("scenario.yaml: delivery.node-a: ")
    assert message in str(e.value)


def test_delays_are_seeded_per_node_and_repeatable():
    d = Delivery.parse({"default": "uniform:0,1", "node-c": 0.5}, seed=7)
    a1 = [d.model_for("node-a").sampler("node-a", 7).next_s() for _ in range(1)]
    s1 = d.model_for("node-a").sampler("node-a", 7)
    s2 = d.model_for("node-a").sampler("node-a", 7)
    draws = [s1.next_s() for _ in range(20)]
    assert draws == [s2.next_s() for _ in range(20)]
    assert draws[0] == a1[0]
    other = d.model_for("node-b").sampler("node-b", 7)
    assert [other.next_s() for _ in range(20)] != draws
    reseeded = d.model_for("node-a").sampler("node-a", 8)
    assert [reseeded.next_s() for _ in range(20)] != draws
    assert all(0 <= x <= 1 for x in draws)
    assert d.model_for("node-c").sampler("node-c").next_s() == 0.5


def test_schedule_keeps_events_in_order():
    # lognormal with a wide sigma draws wildly different delays; delivery must stay FIFO
    sched = Delivery.parse("lognormal:0.05,2", seed=3).schedule("node-a")
    emitted = [i * 1_000_000 for i in range(200)]
    at = [sched.deliver_at(t) for t in emitted]
    assert at == sorted(at)
    assert all(a >= e for a, e in zip(at, emitted, strict=True))
    fixed = Delivery.parse(0.25).schedule("n")
    assert fixed.deliver_at(10) == 10 + 250_000_000


# -- events -------------------------------------------------------------------------------------------
def test_event_json_round_trip_and_policy_manifest():
    pol = NetworkPolicy(
        "db", "complex", LabelSelector.of({"app": "mysql"}, [SelectorRequirement("tier", "In", ("a", "b"))]),
        ("Ingress", "Egress"),
        ingress=(PolicyRule(peers=(PolicyPeer(ip_block=IPBlock(ipaddress.IPv4Network("10.0.0.0/8"),
                                                                (ipaddress.IPv4Network("10.1.0.0/16"),))),),
                            ports=(PolicyPort("TCP", 80, 90), PolicyPort("UDP", "dns"))),),
        egress=(PolicyRule(),))
    manifest = ev.policy_to_manifest(pol)
    assert parse_network_policy(manifest, None, "") == pol
    for e in (ev.policy_created(pol), ev.pod_added(small_cluster().pods["db/mysql-0"]),
              ev.namespace_relabeled("db", {"tier": "x"}), ev.pod_removed("db/mysql-0")):
        e.seq, e.emitted_ns = 4, 123
        line = e.to_json()
        assert "\n" not in line
        back = ev.ClusterEvent.from_json(line)
        assert (back.kind, back.key, back.seq, back.emitted_ns, back.pod, back.labels) == \
               (e.kind, e.key, 4, 123, e.pod, e.labels)
        assert back.policy == e.policy
    with pytest.raises(ConfigError, match="not a cluster event"):
        ev.ClusterEvent.from_dict({"kind": "pod-exploded", "key": "x"})


def test_cluster_dict_round_trip_renders_identically():
    c = small_cluster()
    back = ev.cluster_from_dict(json.loads(json.dumps(ev.cluster_to_dict(c))))
    assert render_node(back, "node-a", sync_version=1) == render_node(c, "node-a", sync_version=1)


def test_requests_sync_follows_kube_router():
    c = small_cluster()
    no_ip = Pod("batch", "pending", "node-b", {"app": "backup"})
    assert not requests_sync(ev.pod_added(no_ip), c)  # not actionable yet
    ev.apply_event(c, ev.pod_added(no_ip))
    with_ip = Pod("batch", "pending", "node-b", {"app": "backup"}, ip=ipaddress.IPv4Address("10.244.1.9"))
    assert requests_sync(ev.pod_updated(with_ip), c)  # IP assigned
    ev.apply_event(c, ev.pod_updated(with_ip))
    assert not requests_sync(ev.pod_updated(with_ip), c)  # nothing kube-router looks at changed
    assert requests_sync(ev.pod_relabeled(with_ip, {"app": "other"}), c)
    assert requests_sync(ev.pod_removed("batch/pending"), c)
    assert not requests_sync(ev.namespace_relabeled("db", {"tier": "db"}), c)
    assert requests_sync(ev.namespace_relabeled("db", {"tier": "x"}), c)
    assert requests_sync(ev.policy_deleted("db/allow-backup"), c)


def test_apply_event_replaces_objects_so_snapshots_stay_consistent():
    c = small_cluster()
    snap = ev.snapshot(c)
    old = c.pods["batch/old-job"]
    ev.apply_event(c, ev.pod_relabeled(old, {"app": "web"}))
    assert snap.pods["batch/old-job"].labels == {"app": "backup"}
    assert c.pods["batch/old-job"].labels == {"app": "web"}
    ev.apply_event(c, ev.namespace_relabeled("db", {"tier": "x"}))
    assert snap.namespaces["db"].labels["tier"] == "db"
    assert c.namespace_labels("db") == {"tier": "x", "kubernetes.io/metadata.name": "db"}
    ev.apply_event(c, ev.policy_deleted("db/allow-backup"))
    assert "db/allow-backup" in snap.policies and not c.policies


# -- the loop with an in-memory applier --------------------------------------------------------------------
def test_loop_orders_events_and_each_sync_sees_a_prefix():
    c = small_cluster()
    nc = node_controller(c, delivery="uniform:0,0.02", seed=11)
    nc.start()
    try:
        sent = []
        for i in range(30):
            pod = Pod("batch", f"job-{i}", "node-b", {"app": "backup"}, ip=ipaddress.IPv4Address(f"10.244.1.{50 + i}"))
            sent.append(emit(nc, ev.pod_added(pod)))
            if i % 3 == 0:
                emit(nc, ev.pod_relabeled(pod, {"app": "other"}))
        emit(nc, ev.policy_deleted("db/allow-backup"))
        wait_idle(nc)
    finally:
        nc.stop()
    tl = nc.timeline
    delivered = [tl.events[s].delivered_ns["node-a"] for s in sorted(tl.events)]
    assert delivered == sorted(delivered), "one node must see events in emission order"
    syncs = tl.node_syncs("node-a", done_only=True)
    assert syncs[0].reasons == ["initial"]
    throughs = [s.through_seq for s in syncs]
    assert throughs == sorted(throughs) and throughs[-1] == max(tl.events)
    for s in syncs[1:]:
        assert tl.events[s.through_seq].delivered_ns["node-a"] <= s.start_ns
        nxt = tl.events.get(s.through_seq + 1)
        assert nxt is None or nxt.delivered_ns["node-a"] >= s.start_ns - 1_000_000  # taken at snapshot
    view = nc.view
    assert set(view.pods) == set(c.pods) | {e.key for e in sent}
    assert view.pods["batch/job-3"].labels == {"app": "other"} and not view.policies
    # the last ruleset was rendered from the final view
    assert nc.engine.applier.applied[-1] == render_node(view, "node-a", sync_version=syncs[-1].sync_version)


def test_burst_of_100_pod_events_during_one_sync_gives_at_most_two_syncs():
    c = small_cluster()
    hold, entered = threading.Event(), threading.Event()
    nc = node_controller(c, applier=MemoryApplier(hold, entered))
    nc.start()
    try:
        assert nc.wait_initial(5).reasons == ["initial"]
        first = emit(nc, ev.pod_relabeled(c.pods["batch/old-job"], {"app": "x0"}))
        assert entered.wait(5)  # the sync for event 1 is running (held open)
        for i in range(1, 100):
            emit(nc, ev.pod_relabeled(c.pods["batch/old-job"], {"app": f"x{i}"}))
        nc.timeline.wait_for(lambda: True if nc.last_delivered_seq == first.seq + 99 else None, 5)
        hold.set()
        wait_idle(nc)
    finally:
        hold.set()
        nc.stop()
    syncs = nc.timeline.node_syncs("node-a", done_only=True)[1:]
    assert len(syncs) == 2
    assert syncs[0].through_seq == first.seq and syncs[1].through_seq == first.seq + 99
    reqs = [r for r in nc.timeline.requests if r.reason == "event"]
    assert len(reqs) == 100 and sum(r.queued for r in reqs) == 2
    assert len(syncs[1].reasons) == 99  # the follow-up sync answers every collapsed request


def test_periodic_resync_runs_without_events():
    nc = node_controller(small_cluster(), resync_period_s=0.05)
    nc.start()
    try:
        got = nc.timeline.wait_for(
            lambda: True if len(nc.timeline.node_syncs("node-a", done_only=True)) >= 3 else None, 5)
    finally:
        nc.stop()
    assert got
    assert [s.reasons for s in nc.timeline.node_syncs("node-a")[:3]] == [["initial"], ["periodic"], ["periodic"]]


def test_failed_sync_is_recorded_and_the_loop_goes_on():
    class Failing(MemoryApplier):
        def apply(self, ruleset, *, full=False):
            if len(self.applied) == 1:
                self.applied.append(None)
                raise RuntimeError("iptables-restore exploded")
            return super().apply(ruleset, full=full)

    c = small_cluster()
    nc = node_controller(c, applier=Failing())
    nc.start()
    try:
        nc.wait_initial(5)
        e1 = emit(nc, ev.pod_relabeled(c.pods["batch/old-job"], {"app": "a"}))
        nc.timeline.wait_for(lambda: nc.timeline.node_syncs("node-a", done_only=True)[1:] or None, 5)
        e2 = emit(nc, ev.pod_relabeled(c.pods["batch/old-job"], {"app": "b"}))
        nc.timeline.wait_for(lambda: nc.timeline.sync_including("node-a", e2.seq), 5)
    finally:
        nc.stop()
    syncs = nc.timeline.node_syncs("node-a")
    assert syncs[1].error == "RuntimeError: iptables-restore exploded"
    assert nc.timeline.sync_including("node-a", e1.seq) is syncs[2]  # a failed sync includes nothing
    assert nc.errors == ["RuntimeError: iptables-restore exploded"]


def test_config_errors():
    with pytest.raises(ConfigError, match="strategy: unknown strategy 'fast'"):
        ControllerConfig(strategy="fast").validated()
    with pytest.raises(ConfigError, match="default_deny: --netpol-default-deny needs profile v2.10"):
        ControllerConfig(profile="v1.3", default_deny=True).validated()
    with pytest.raises(ConfigError, match="profile: unknown kube-router profile"):
        ControllerConfig(profile="v9").validated()
    with pytest.raises(ConfigError, match="resync_period_s: must be > 0"):
        ControllerConfig(resync_period_s=0).validated()
    assert ControllerConfig(delivery={"node-a": 0.1}).validated().delivery.model_for("node-a").params == (0.1,)


# -- timeline and phases ----------------------------------------------------------------------------------
def test_timeline_queries():
    tl = Timeline()
    e1 = tl.new_event("pod-added", "a/b", emitted_ns=1000)
    e2 = tl.new_event("pod-added", "a/c", emitted_ns=2000)
    tl.delivered(e1.seq, "n", 1500, True)
    s0 = tl.sync_started("n", 1600, 1600, e1.seq, ["event#1"], "restore")
    tl.delivered(e2.seq, "n", 1700, True)
    assert tl.sync_including("n", e1.seq) is None  # not finished yet
    tl.sync_finished(s0, end_ns=1900, rules_ns=1800)
    s1 = tl.sync_started("n", 2500, 2500, e2.seq, ["event#2"], "restore")
    tl.sync_finished(s1, end_ns=2900)
    assert tl.first_sync_started_after("n", 1650) is s1
    assert tl.first_sync_after_delivery("n", e1.seq) is s0 and tl.first_sync_after_delivery("n", e2.seq) is s1
    assert tl.first_sync_after_delivery("m", e1.seq) is None
    assert tl.sync_including("n", e1.seq) is s0 and tl.programmed_ns("n", e1.seq) == 1800
    assert tl.programmed_ns("n", e2.seq) == 2900  # no rules_ns reported: end of sync
    assert tl.lag_ns(e1.seq, "n") == 800 and tl.delivery_lag_ns(e2.seq, "n") == -300
    assert tl.last_event_for("a/c").seq == e2.seq
    assert tl.wait_for(lambda: None, 0.01) is None
    d = json.loads(json.dumps(tl.to_dict()))
    assert [s["through_seq"] for s in d["syncs"]] == [1, 2]


def test_phases_are_laid_out_back_to_back():
    ph = phases_of(1000, 50, {"start_ns": 1100, "iptables_save_time": 10, "ipset_restore_time": 20,
                              "iptables_restore_time": 30, "top_level_time": 0})
    assert [(p.name, p.start_ns, p.end_ns) for p in ph] == [
        ("render", 1000, 1050), ("iptables_save_time", 1100, 1110), ("ipset_restore_time", 1110, 1130),
        ("iptables_restore_time", 1130, 1160)]


# -- metrics -------------------------------------------------------------------------------------------------
def test_histogram_buckets_are_kube_routers():
    assert DEFAULT_BUCKETS[0] == 0.005 and len(DEFAULT_BUCKETS) == 10
    assert DEFAULT_BUCKETS[1] == pytest.approx(0.011635)
    h = Histogram()
    for v in (0.001, 0.004, 0.02, 0.5, 100.0):
        h.observe(v)
    cum = dict(h.cumulative())
    assert cum[DEFAULT_BUCKETS[0]] == 2 and cum[DEFAULT_BUCKETS[2]] == 3 and cum[math.inf] == 5
    assert h.summary()["p50"] == 0.02 and h.summary()["max"] == 100.0
    assert quantile([1, 2, 3, 4], 0.99) == 4 and quantile([1, 2, 3, 4], 0.5) == 2
    assert math.isnan(quantile([], 0.5))


def _records():
    tl = Timeline()
    for node, total, save in (("node-a", 0.010, 0.002), ("node-a", 0.030, 0.004), ("node-b", 0.2, 0.0)):
        r = tl.sync_started(node, 1, 1_000, 0, ["x"], "restore")
        tl.sync_finished(r, end_ns=1_000 + int(total * 1e9), render_ns=1_000_000,
                         timings={"iptables_save_time": int(save * 1e9), "ipset_restore_time": 3_000_000,
                                  "iptables_restore_time": 5_000_000})
    bad = tl.sync_started("node-a", 1, 1_000, 0, ["x"], "restore")
    tl.sync_finished(bad, end_ns=9_000_000_000, error="boom")
    return tl.syncs


def test_metrics_json():
    m = ControllerMetrics.from_syncs(_records(), METRIC_SET)
    d = json.loads(m.to_json())
    total = d["metrics"]["kube_router_controller_iptables_sync_time"]
    assert total["node-a"]["count"] == 2 and total["node-a"]["sum"] == pytest.approx(0.040)  # failed sync left out
    assert total["node-b"]["max"] == pytest.approx(0.2)
    assert "node-b" not in d["metrics"]["kube_router_controller_iptables_v4_save_time"]  # no save: not observed
    chains = d["metrics"]["kube_router_controller_policy_chains_sync_time"]["node-a"]
    assert chains["p50"] == pytest.approx(0.004)  # render 1 ms + ipset restore 3 ms
    assert total["node-a"]["buckets"]["+Inf"] == 2


_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? '
                     r'(-?[0-9.e+-]+|\+Inf|NaN)$')


def test_metrics_prometheus_text_exposition():
    text = ControllerMetrics.from_syncs(_records(), METRIC_SET).to_prometheus()
    lines = text.splitlines()
    assert text.endswith("\n")
    names = [ln.split()[2] for ln in lines if ln.startswith("# TYPE")]
    assert names == ["kube_router_controller_iptables_sync_time", "kube_router_controller_iptables_v4_save_time",
                     "kube_router_controller_iptables_v4_restore_time",
                     "kube_router_controller_policy_ipset_v4_restore_time",
                     "kube_router_controller_policy_chains_sync_time"]
    assert all(ln.endswith(" histogram") for ln in lines if ln.startswith("# TYPE"))
    for ln in lines:
        assert ln.startswith("# HELP ") or ln.startswith("# TYPE ") or _SAMPLE.match(ln), ln
    assert 'kube_router_controller_iptables_sync_time_bucket{node="node-a",le="+Inf"} 2' in lines
    assert 'kube_router_controller_iptables_sync_time_count{node="node-b"} 1' in lines
    assert 'kube_router_controller_iptables_sync_time_bucket{node="node-a",le="0.011635"} 1' in lines
    # cumulative buckets never decrease
    buckets = [int(ln.rsplit(" ", 1)[1]) for ln in lines
               if ln.startswith('kube_router_controller_iptables_sync_time_bucket{node="node-a"')]
    assert buckets == sorted(buckets) and len(buckets) == 11
    assert ControllerMetrics().to_prometheus() == ""


# -- incremental planning ---------------------------------------------------------------------------------------
def test_incremental_plan_only_touches_what_changed():
    c = small_cluster()
    v = 1_700_000_000_000_000_000
    old = render_node(c, "node-a", sync_version=v)
    assert plan_incremental(None, old).full
    assert plan_incremental(old, render_node(c, "node-a", sync_version=v)).empty
    # a new allowed client on another node: only the policy's source set changes
    c.add_pod(Pod("batch", "job-1", "node-b", {"app": "backup"}))
    new = render_node(c, "node-a", sync_version=v)
    p = plan_incremental(old, new)
    assert not p.full and not p.chains_changed and not p.chains_removed
    assert [s.name for s in p.sets_changed] == [s.name for s in new.sets
                                                 if "10.244.1.3 timeout 0" in s.entries and s.name.startswith("KUBE-SRC")]
    assert noflush_restore_text(p) == ""
    # a new local pod: its pod chain is added and the top-level chains rewritten
    c.add_pod(Pod("db", "mysql-1", "node-a", {"app": "mysql"}))
    newer = render_node(c, "node-a", sync_version=v)
    p2 = plan_incremental(new, newer)
    changed = [ch.name for ch in p2.chains_changed]
    assert changed[-3:] == ["KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT"]
    assert len([n for n in changed if n.startswith("KUBE-POD-FW-")]) == 1
    text = noflush_restore_text(p2)
    assert text.startswith("*filter\n") and text.endswith("COMMIT\n")
    assert text.count(":KUBE-POD-FW-") == 1 and "-X" not in text
    # the pod goes again: its chain is removed after the chains that jumped to it were rewritten
    c.remove_pod("db/mysql-1")
    p3 = plan_incremental(newer, render_node(c, "node-a", sync_version=v))
    assert len(p3.chains_removed) == 1
    text = noflush_restore_text(p3)
    assert text.index("-A KUBE-ROUTER-FORWARD") < text.index(f"-X {p3.chains_removed[0]}")
    # a different sync version renames everything: every chain changes
    p4 = plan_incremental(old, render_node(c, "node-a", sync_version=v + 1))
    assert p4.chains_removed and not p4.full


# -- mitigations ---------------------------------------------------------------------------------------------------
class _Attempt:
    def __init__(self, ok):
        self.ok, self.start_ns, self.end_ns = ok, 0, 0


def test_retry_backs_off_until_ok():
    outcomes = iter([False, False, False, True, True])
    waits: list[float] = []
    got = retry(lambda: _Attempt(next(outcomes)), attempts=10, initial_s=0.1, factor=2, max_s=0.3,
                sleep=waits.append)
    assert [a.ok for a in got] == [False, False, False, True]
    assert waits == [0.1, 0.2, 0.3]
    assert len(retry(lambda: _Attempt(False), attempts=3, sleep=lambda s: None)) == 3


def test_mitigation_specs():
    m = parse_mitigations("cni-wait:all,timeout=3+retry:attempts=4+sleep 2")
    assert str(m) == "cni-wait:all+retry+sleep:2"
    assert isinstance(m.items[0], CniWait) and m.items[0].timeout_s == 3
    assert isinstance(m.items[1], Retry) and m.items[1].attempts == 4
    assert isinstance(m.items[2], Sleep) and m.items[2].seconds == 2
    assert str(parse_mitigations(["none"])) == "none"
    cfg = parse_mitigations(["default-deny"]).configure(ControllerConfig())
    assert cfg.default_deny and isinstance(parse_mitigations("default-deny").items[0], DefaultDeny)
    with pytest.raises(ConfigError, match=r"s.yaml: mitigations\[1\]: unknown mitigation 'pray'"):
        parse_mitigations(["retry", "pray"], "s.yaml")
    with pytest.raises(ConfigError, match="unknown retry parameter"):
        parse_mitigations("retry:tries=3")


def test_cli_delivery_option():
    from harness.controller.commands import _delivery

    d = _delivery(["uniform:0.01,0.1", "node-a=0.3"], seed=4)
    assert str(d) == "uniform:0.01,0.1 node-a=fixed:0.3 (seed 4)"
    with pytest.raises(ConfigError, match=r"--delivery: delivery.node-b: 'slow:1': unknown delay model 'slow'"):
        _delivery(["node-b=slow:1"], 0)


def test_periodic_ticker_requests_at_a_fixed_cadence_even_during_a_sync():
    """kube-router's Run: RequestFullSync on every tick of a time.Ticker, not only when idle
    (v2.10.0:network_policy_controller.go Run). The first periodic sync is held open across
    several ticks: the first of them fills the slot (one follow-up sync), later ones collapse into
    it; the ticks keep their cadence from start."""
    hold, entered = threading.Event(), threading.Event()
    nc = node_controller(small_cluster(), applier=MemoryApplier(hold, entered), resync_period_s=0.05)
    nc.start()
    try:
        assert entered.wait(5)  # the first periodic sync is running, held open (the initial one is not)
        t_enter = time.time_ns()
        time.sleep(0.23)  # ~4 ticks during it
        t_release = time.time_ns()
        hold.set()
        assert nc.timeline.wait_for(
            lambda: True if len(nc.timeline.node_syncs("node-a", done_only=True)) >= 3 else None, 5)
    finally:
        hold.set()
        nc.stop()
    ticks = [r for r in nc.timeline.requests if r.reason == "periodic"]
    during = [r for r in ticks if t_enter < r.t_ns < t_release]
    assert len(during) >= 3
    assert during[0].queued and not any(r.queued for r in during[1:])  # one slot: the rest collapse
    gaps = [(b.t_ns - a.t_ns) / 1e9 for a, b in zip(ticks, ticks[1:], strict=False)]
    assert all(0.0 < g < 0.15 for g in gaps[:4])  # the cadence, not "a period after the last sync"
    follow_up = nc.timeline.node_syncs("node-a", done_only=True)[2]
    assert follow_up.reasons[0] == "periodic" and len(follow_up.reasons) >= 3


def test_lister_skew_is_on_by_default_and_the_cli_can_turn_it_off():
    # kube-router lists pods twice per sync (v2.10.0 fullPolicySync: buildNetworkPoliciesInfo, then
    # pod.go syncPodFirewallChains' own listing): the controller reproduces it unless told not to
    import argparse

    from harness.controller import commands

    assert ControllerConfig().lister_skew is True
    sub = argparse.ArgumentParser().add_subparsers()
    commands.register(sub, argparse.ArgumentParser().add_subparsers())
    parser = sub.choices["controller"]
    assert parser.parse_args([]).no_lister_skew is False
    assert parser.parse_args(["--no-lister-skew"]).no_lister_skew is True

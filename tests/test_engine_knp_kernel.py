"""kube-network-policies' engine in the kernel (root): the datapath this kernel gets, verdicts
through the queue within and across nodes, fail-open with the bypass on and off, and that stop
leaves no table, no bound queue and no iptables rule behind."""

from __future__ import annotations

import copy
import gzip
import os

import pytest

from harness.controller.timeline import Timeline
from harness.engines.config import EnforcementConfig
from harness.engines.kube_network_policies import dataplane
from harness.engines.kube_network_policies import ruleset as rs
from harness.engines.kube_network_policies.engine import KubeNetworkPoliciesEngine
from harness.errors import EnvironmentProblem
from harness.kernel import netns
from harness.model.policy import LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule

pytestmark = pytest.mark.kernel

MYSQL_FROM_WEB = NetworkPolicy(
    "db", "mysql-from-web", LabelSelector.of({"app": "mysql"}), ("Ingress",),
    (PolicyRule((PolicyPeer(namespace_selector=LabelSelector.of({"tier": "frontend"}),
                            pod_selector=LabelSelector.of({"app": "web"})),), (PolicyPort("TCP", 3306),)),))


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    try:
        dataplane.require_tools()
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    from harness.lab import Lab
    from harness.model.topology import load_topology

    with Lab(load_topology("default")) as lab:
        yield lab


def _view(lab):
    view = copy.deepcopy(lab.cluster)
    view.policies[MYSQL_FROM_WEB.key] = MYSQL_FROM_WEB
    return view


def _start(lab, **cfg):
    eng = KubeNetworkPoliciesEngine()
    config = EnforcementConfig(engine="kube-network-policies", **cfg)
    eng.validate(config)
    timeline = Timeline()
    nodes = {n: eng.node(n, lab.node_netns(n), config, timeline) for n in ("node-a", "node-b")}
    view = _view(lab)
    for ne in nodes.values():
        ne.start(view)
    return nodes


def _queues(netns_name: str) -> list[str]:
    """The bound queues of the namespace (/proc/net/netfilter/nfnetlink_queue, first column)."""
    def read() -> list[str]:
        with open("/proc/thread-self/net/netfilter/nfnetlink_queue") as f:
            return [ln.split()[0] for ln in f if ln.strip()]
    return netns.call_in(netns_name, read)


def _tables(netns_name: str) -> str:
    return netns.run(netns_name, ["nft", "list", "tables"]).stdout


def _kernel_has_nft_queue() -> bool | None:
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return any(ln.startswith("CONFIG_NFT_QUEUE=") for ln in f)
    except OSError:
        return None


def test_datapath_matches_the_kernel_config(lab):
    has = _kernel_has_nft_queue()
    if has is None:
        pytest.skip("no /proc/config.gz")
    got = dataplane.detect_datapath(lab.node_netns("node-a"))
    assert got is (rs.Datapath.NATIVE if has else rs.Datapath.COMPAT)
    assert "kube-network-policies-probe" not in _tables(lab.node_netns("node-a"))  # the probe left nothing


def test_verdicts_through_the_queue_and_clean_stop(lab):
    nodes = _start(lab)
    try:
        a = lab.node_netns("node-a")
        assert "inet kube-network-policies" in _tables(a)
        assert str(rs.DEFAULT_QUEUE_ID) in _queues(a)
        mysql0 = str(lab.cluster.pods["db/mysql-0"].ip)
        assert mysql0 in netns.run(a, ["nft", "list", "set", "inet", "kube-network-policies", "podips-v4"]).stdout
        assert lab.connect("frontend/web-0", "db/mysql-0", 3306) == "connected"  # same node
        assert lab.connect("frontend/web-1", "db/mysql-0", 3306) == "connected"  # across nodes
        assert lab.connect("backend/api-0", "db/mysql-0", 3306, timeout=0.5) == "timeout"  # NF_DROP
        assert lab.connect("backend/api-1", "frontend/web-0", 80) == "connected"  # not selected: not queued
        stats = nodes["node-a"].loop.stats
        assert stats.accepted >= 2 and stats.dropped >= 1
        assert all(c > 0 for c in stats.processing_ns)
    finally:
        for ne in nodes.values():
            ne.stop()
    for n in ("node-a", "node-b"):
        ns = lab.node_netns(n)
        assert "kube-network-policies" not in _tables(ns)
        assert _queues(ns) == []
        assert "NFQUEUE" not in netns.run(ns, ["iptables-nft-save", "-t", "mangle"], check=False).stdout
        assert not nodes[n].errors


@pytest.mark.parametrize("fail_open", [True, False])
def test_fail_open_with_the_bypass_on_and_off(lab, fail_open):
    """The controller dies, its rules stay: --fail-open (queue bypass) lets every connection of
    a selected pod through, denied ones too; without it every such connection is dropped."""
    nodes = _start(lab, fail_open=fail_open)
    try:
        assert lab.connect("backend/api-0", "db/mysql-0", 3306, timeout=0.5) == "timeout"
        for ne in nodes.values():
            ne.crash()
        assert _queues(lab.node_netns("node-a")) == []
        denied = lab.connect("backend/api-0", "db/mysql-0", 3306, timeout=0.5)
        allowed = lab.connect("frontend/web-0", "db/mysql-0", 3306, timeout=0.5)
        if fail_open:
            assert (denied, allowed) == ("connected", "connected")
        else:
            assert (denied, allowed) == ("timeout", "timeout")
    finally:
        for ne in nodes.values():
            ne.stop()


def test_queue_bench_smoke():
    """``bench queue`` at its smallest: every connection of the queue cell was a verdict."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    from harness.bench.queue import run_queue_bench

    syncs: dict[int, float] = {}
    rows = run_queue_bench((2,), connections=20, engines=("none", "kube-network-policies"), warmup=5,
                           sync_sizes=(10,), syncs=syncs)
    assert set(syncs) == {10} and syncs[10] > 0
    none, knp = rows
    assert (none.engine, none.connections, knp.connections) == ("none", 20, 20)
    # one verdict per connection: the accept verdict's label lets the rest of the flow skip the
    # queue (without it the SYN-ACK, the ACK and the RST would be queued too)
    assert knp.verdicts == 20 and knp.verdict_cpu_us and knp.verdict_cpu_us > 0
    assert knp.added_p50_us is not None and knp.p50_us > 0


def test_a_sync_drops_the_packets_waiting_in_the_queue(lab):
    """kube-network-policies replaces its table on every sync (add + delete + add): the kernel
    unregisters the old base chains' hooks, and nfnetlink_queue then flushes every packet waiting
    in the namespace's queues (nfqnl_nf_hook_drop). A SYN waiting for its verdict is lost and the
    client retransmits 1 s later: the policy-creation-latency tail of this engine. Control: the
    same late verdict without a sync in between lets the connection through."""
    import threading

    from harness.engines.kube_network_policies.policy import PolicyCache
    from harness.kernel import nfqueue

    a = lab.node_netns("node-a")
    opts = rs.NftOptions(datapath=dataplane.detect_datapath(a))
    cache = PolicyCache()
    cache.replace(_view(lab))
    batch = rs.render(cache.managed_ips("node-a"), opts)
    dataplane.apply(a, batch)
    if opts.datapath is rs.Datapath.COMPAT:
        dataplane.install_compat_queue(a, opts)
    q = nfqueue.Queue(a, opts.queue_id, fail_open=True)
    accept = {"mark": rs.ACCEPT_MARK} if opts.datapath is rs.Datapath.COMPAT else {
        "labels": rs.generate_label_mask(opts.ct_label_accept)}

    def attempt(sync: bool) -> str:
        result: dict[str, str] = {}
        t = threading.Thread(target=lambda: result.update(
            first=lab.connect("frontend/web-0", "db/mysql-0", 3306, timeout=0.8)))
        t.start()
        waiting = q.receive(timeout=2.0)  # the SYN, read and left without a verdict for now
        assert waiting, "the SYN was not queued"
        if sync:
            dataplane.apply(a, batch)  # the same table again: a sync that changes nothing
        q.verdict(waiting[0].packet_id, nfqueue.ACCEPT, mark=(waiting[0].mark & ~rs.QUEUE_MARK) | rs.ACCEPT_MARK
                  if "mark" in accept else None, labels=accept.get("labels"))
        t.join(5)
        return result["first"]

    try:
        assert attempt(sync=False) == "connected"
        assert attempt(sync=True) == "timeout"  # the SYN never left; its retransmission comes after 1 s
    finally:
        q.close()
        dataplane.remove(a, opts)

"""kube-router v2.11.1's nftables datapath in the kernel (root): the exec sequence knftables runs
per sync, the table the kernel holds afterwards, stale chains of the previous sync version
deleted, enforcement by real packets (REJECT = refused), fail-closed of a policy nft rejects,
and --netpol-default-deny's set-gated reject."""

from __future__ import annotations

import copy
import ipaddress
import os
import re

import pytest

from harness.engines.config import EnforcementConfig
from harness.engines.kube_router.apply import nftables as na
from harness.engines.kube_router.engine import KubeRouterEngine
from harness.errors import EnvironmentProblem
from harness.model.cluster import Pod
from harness.model.policy import IPBlock, LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule

pytestmark = pytest.mark.kernel

CONFIG = EnforcementConfig(profile="v2.11.1", datapath="nftables")


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    try:
        na.require_tools()
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    from harness.lab import Lab
    from harness.model.topology import load_topology

    with Lab(load_topology("default")) as lab:
        yield lab


def _pods(lab, node: str) -> list[str]:
    return sorted(k for k, p in lab.cluster.pods.items() if p.node == node and p.ip is not None)


def _nodes(lab, config: EnforcementConfig = CONFIG):
    eng = KubeRouterEngine()
    eng.validate(config)
    return {n: eng.node(n, lab.node_netns(n), config) for n in ("node-a", "node-b")}


def _program(nodes, view, version: int):
    return {n: ne.program(view, sync_version=version) for n, ne in nodes.items()}


def _deny_ingress(lab, target: str) -> NetworkPolicy:
    pod = lab.cluster.pods[target]
    return NetworkPolicy(pod.namespace, "deny-" + pod.name, LabelSelector.of(dict(pod.labels)), ("Ingress",))


def test_exec_sequence_table_and_stale_chain_gc(lab):
    nodes = _nodes(lab)
    view = copy.deepcopy(lab.cluster)
    first = _program(nodes, view, 1_000)["node-a"].timings
    steps = [e["step"] for e in first["exec_log"]]
    # knftables.New (nft --version, nft --check), initTable, Run()'s ensure* before the first sync
    assert steps[:6] == ["knftables.New", "knftables.New", "initTable", "ensureTopLevelChains",
                         "ensureDefaultNetworkPolicyChain", "ensureCommonPolicyChain"]
    assert first["exec_log"][1]["argv"] == ["nft", "--check", "-f", "-"]
    assert all(e["returncode"] == 0 for e in first["exec_log"]), first["exec_log"]
    local = _pods(lab, "node-a")
    assert first["execs"] == 3 + len(local) + 1 + 3  # ensure*, pods, top level, three listings
    second = _program(nodes, view, 2_000)["node-a"].timings
    assert "knftables.New" not in [e["step"] for e in second["exec_log"]]
    # the first sync's pod chains are gone (no policies: no policy chains to collect)
    assert len(second["stale_chains"]) == len(local) and not second["errors"]
    table = na.list_table(lab.node_netns("node-a"))
    assert table.count("chain KUBE-POD-FW-") == len(local)
    assert "type filter hook forward priority filter; policy accept;" in table
    assert second["rules_ns"] >= second["sets_ns"] >= second["start_ns"] > 0
    phases = ("static_chains_time", "policy_chains_sync_time", "pod_chains_time", "top_level_sync_time",
              "stale_cleanup_time")
    assert all(second[p] > 0 for p in phases if p != "policy_chains_sync_time"), second
    assert second["total"] >= sum(second[p] for p in phases)


def test_enforcement_reject_and_fail_closed(lab):
    nodes = _nodes(lab)
    a = _pods(lab, "node-a")
    src, dst = a[0], a[1]
    port = next(cp.port for cp in lab.cluster.pods[dst].ports if cp.protocol == "TCP")
    view = copy.deepcopy(lab.cluster)
    _program(nodes, view, 3_000)
    assert lab.connect(src, dst, port, "TCP", timeout=1.0) == "connected"
    deny = _deny_ingress(lab, dst)
    view.policies[deny.key] = deny
    _program(nodes, view, 4_000)
    assert lab.connect(src, dst, port, "TCP", timeout=1.0) == "refused"  # plain reject: ICMP port-unreachable
    # an egress policy with overlapping ipBlocks in one rule: nft rejects its transaction and the
    # source pod fails closed (npc_nftables.go failedPolicyChains)
    s = lab.cluster.pods[src]
    bad = NetworkPolicy(s.namespace, "overlap", LabelSelector.of(dict(s.labels)), ("Egress",), egress=(
        PolicyRule((PolicyPeer(ip_block=IPBlock(ipaddress.IPv4Network("10.244.0.0/16"))),
                    PolicyPeer(ip_block=IPBlock(ipaddress.IPv4Network(f"{lab.cluster.pods[a[2]].ip}/32")))),
                   (PolicyPort("TCP", port),)),))
    del view.policies[deny.key]
    view.policies[bad.key] = bad
    done = _program(nodes, view, 5_000)
    assert done["node-a"].timings["failed_policy_chains"], done["node-a"].timings["errors"]
    assert "conflicting intervals" in " ".join(nodes["node-a"].errors)
    assert lab.connect(src, dst, port, "TCP", timeout=1.0) == "refused"
    del view.policies[bad.key]
    _program(nodes, view, 6_000)
    assert lab.connect(src, dst, port, "TCP", timeout=1.0) == "connected"


def test_default_deny_rejects_unprogrammed_pod(lab):
    config = EnforcementConfig(profile="v2.11.1", datapath="nftables", default_deny=True)
    nodes = _nodes(lab, config)
    a = _pods(lab, "node-a")
    src, dst = a[0], a[1]
    port = next(cp.port for cp in lab.cluster.pods[dst].ports if cp.protocol == "TCP")
    view = copy.deepcopy(lab.cluster)
    _program(nodes, view, 7_000)
    assert lab.connect(src, dst, port, "TCP", timeout=1.0) == "connected"
    # a view in which dst is not known yet: no chain, not in kube-router-local-pods -> TAIL rejects
    p: Pod = view.pods[dst]
    view.pods[dst] = Pod(p.namespace, p.name, p.node, p.labels, None, p.ports)
    _program(nodes, view, 8_000)
    assert lab.connect(src, dst, port, "TCP", timeout=1.0) == "refused"
    _program(nodes, copy.deepcopy(lab.cluster), 9_000)


def test_second_listing_programs_a_pod_the_policies_did_not_see(lab):
    """Lister skew: ``relist_view`` (the controller's second read of the node's view) brings a pod
    the sync's first listing lacked; it gets its chain and jumps in this sync (DEFAULT only)."""
    nodes = _nodes(lab)
    a = _pods(lab, "node-a")
    src, dst = a[0], a[1]
    port = next(cp.port for cp in lab.cluster.pods[dst].ports if cp.protocol == "TCP")
    full = copy.deepcopy(lab.cluster)
    deny = _deny_ingress(lab, dst)
    full.policies[deny.key] = deny
    first = copy.deepcopy(full)
    p: Pod = first.pods[dst]
    first.pods[dst] = Pod(p.namespace, p.name, p.node, p.labels, None, p.ports)  # not listed yet
    done = nodes["node-a"].program(first, sync_version=10_000, relist_view=lambda: full)
    assert done.timings["pod_relist_time"] > 0 and not done.timings["errors"]
    table = na.list_table(lab.node_netns("node-a"))
    assert re.search(rf"ip daddr {lab.cluster.pods[dst].ip} counter packets \d+ bytes \d+ jump KUBE-POD-FW-", table)
    # the deny policy's set was filled from the first listing (no dst): dst is not its target yet
    assert lab.connect(src, dst, port, "TCP", timeout=1.0) == "connected"
    nodes["node-a"].program(full, sync_version=11_000)
    assert lab.connect(src, dst, port, "TCP", timeout=1.0) == "refused"
    _program(nodes, copy.deepcopy(lab.cluster), 12_000)

"""The nftables datapath's render (harness.engines.kube_router.render.nftables) against the
expected strings of kube-router's own unit tests (v2.11.1:pkg/controllers/netpol/npc_nftables_test.go:
TestBasicChains, TestNetworkPolicyBuilderNft, TestNftablesEnsureDefaultTailChain*,
TestNftablesPopulateProtectedPodsIPSet*, TestNftablesSyncTopLevelChainsAtomic,
TestAppendRuleToPolicyChainNftProtocolRendering), plus goldens of the example cluster.

Regenerate the goldens after a deliberate change with ``NPH_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from harness.engines.kube_router.render import nftables as nr
from harness.engines.kube_router.render.kube_router import ClusterIndex, _build_policy_info
from harness.engines.kube_router.render.synthetic import example_cluster
from harness.errors import ConfigError
from harness.model.cluster import Cluster, Namespace, Node, Pod
from harness.model.policy import LabelSelector, NetworkPolicy, PolicyPort, PolicyRule, SelectorRequirement

GOLDEN = Path(__file__).parent / "golden" / "render"
V = 1700000000000000000
P = "add rule ip kube-router-filter-ipv4 "


def _text(txs) -> str:
    return "".join(t.text for t in txs)


def test_basic_chains_match_kube_router_test():
    """TestBasicChains' strings (its validator: cluster IPs 10.43.0.0/16, external 10.44.0.0/16)."""
    dump = _text([nr.init_table(), nr.ensure_top_level_chains(), nr.ensure_default_chain(), nr.ensure_common_chain(),
                  nr.ensure_tail_chain(False, []),
                  nr.top_level_transaction([], service_ranges=["10.43.0.0/16"], node_port_range="30000-32767",
                                           external_ranges=["10.44.0.0/16"])])
    for want in (
        'add table ip kube-router-filter-ipv4 { comment "rules for kube-router-filter-ipv4" ; }',
        'add chain ip kube-router-filter-ipv4 KUBE-ROUTER-FORWARD { type filter hook forward priority 0 ; '
        'comment "top level KUBE-ROUTER-FORWARD chain for kube-router" ; }',
        'add chain ip kube-router-filter-ipv4 KUBE-ROUTER-INPUT { type filter hook input priority 0 ; '
        'comment "top level KUBE-ROUTER-INPUT chain for kube-router" ; }',
        'add chain ip kube-router-filter-ipv4 KUBE-ROUTER-OUTPUT { type filter hook output priority 0 ; '
        'comment "top level KUBE-ROUTER-OUTPUT chain for kube-router" ; }',
        P + "KUBE-ROUTER-INPUT ip daddr 10.43.0.0/16 counter return",
        P + "KUBE-ROUTER-INPUT meta l4proto tcp fib daddr type local tcp dport 30000-32767 counter return",
        P + "KUBE-ROUTER-INPUT meta l4proto udp fib daddr type local udp dport 30000-32767 counter return",
        P + "KUBE-ROUTER-INPUT ip daddr 10.44.0.0/16 counter return",
        'add chain ip kube-router-filter-ipv4 KUBE-NWPLCY-DEFAULT { comment "KUBE-NWPLCY-DEFAULT chain for kube-router" ; }',
        P + "KUBE-NWPLCY-DEFAULT counter meta mark set mark or 0x10000",
        'add chain ip kube-router-filter-ipv4 KUBE-NWPLCY-COMMON { comment "KUBE-NWPLCY-COMMON chain for kube-router" ; }',
        P + "KUBE-NWPLCY-COMMON ct state invalid counter drop",
        P + "KUBE-NWPLCY-COMMON ct state established,related counter",
        P + "KUBE-NWPLCY-COMMON icmp type echo-request counter accept",
        P + "KUBE-NWPLCY-COMMON icmp type destination-unreachable counter accept",
        P + "KUBE-NWPLCY-COMMON icmp type time-exceeded counter accept",
    ):
        assert want in dump, want


def _builder_cluster(policy: NetworkPolicy) -> Cluster:
    c = Cluster(name="t")
    c.nodes["node"] = Node("node", ipaddress.IPv4Address("10.10.10.10"), ipaddress.IPv4Network("10.244.0.0/24"))
    c.namespaces["nsA"] = Namespace("nsA", {})
    c.pods["nsA/pod-a"] = Pod("nsA", "pod-a", "node", {"app": "a"}, ipaddress.IPv4Address("10.244.0.2"))
    c.policies[policy.key] = policy
    return c


APP_IN_A = LabelSelector.of(match_expressions=[SelectorRequirement("app", "In", ("a",))])
BUILDER_CASES = {
    "simple-egress": (
        NetworkPolicy("nsA", "simple-egress", APP_IN_A, ("Egress",), egress=(PolicyRule((), (PolicyPort("TCP", 30000),)),)),
        P + 'KUBE-NWPLCY-C23KD7UE4TAT3Y5M tcp dport 30000 counter meta mark set meta mark or 0x10000 return '
            'comment "nsA/simple-egress egress any"\n'),
    "simple-ingress-egress": (
        NetworkPolicy("nsA", "simple-ingress-egress", APP_IN_A, ("Ingress", "Egress"),
                      ingress=(PolicyRule((), (PolicyPort("TCP", 37000),)),),
                      egress=(PolicyRule((), (PolicyPort("TCP", 30000),)),)),
        # kube-router's test runs the egress processor first; the expected text is in that order
        P + 'KUBE-NWPLCY-IDIX352DRLNY3D23 tcp dport 30000 counter meta mark set meta mark or 0x10000 return '
            'comment "nsA/simple-ingress-egress egress any"\n'
        + P + 'KUBE-NWPLCY-IDIX352DRLNY3D23 tcp dport 37000 counter meta mark set meta mark or 0x10000 return '
              'comment "nsA/simple-ingress-egress ingress any"\n'),
    "simple-egress-pr": (
        NetworkPolicy("nsA", "simple-egress-pr", APP_IN_A, ("Egress",), egress=(PolicyRule((), (
            PolicyPort("TCP", 30000, 31000), PolicyPort("TCP", 34000, 35000))),)),
        P + 'KUBE-NWPLCY-2UTXQIFBI5TAPUCL tcp dport 30000-31000 counter meta mark set meta mark or 0x10000 return '
            'comment "nsA/simple-egress-pr egress any"\n'
        + P + 'KUBE-NWPLCY-2UTXQIFBI5TAPUCL tcp dport 34000-35000 counter meta mark set meta mark or 0x10000 return '
              'comment "nsA/simple-egress-pr egress any"\n'),
    "invalid-endport": (
        NetworkPolicy("nsA", "invalid-endport", APP_IN_A, ("Egress",), egress=(PolicyRule((), (
            PolicyPort("TCP", 34000, 31000),)),)),
        P + 'KUBE-NWPLCY-N5DQE4SCQ56JEMH7 tcp dport 34000 counter meta mark set meta mark or 0x10000 return '
            'comment "nsA/invalid-endport egress any"\n'),
}


@pytest.mark.parametrize("name", sorted(BUILDER_CASES))
def test_policy_rules_match_kube_router_builder_test(name):
    """TestNetworkPolicyBuilderNft: version "1", empty target set names, egress before ingress."""
    policy, expected = BUILDER_CASES[name]
    cluster = _builder_cluster(policy)
    prof = nr.semantics_profile("v2.11.1")
    info = _build_policy_info(ClusterIndex(cluster, prof), policy, prof)
    sync = nr.NftSync("node", "v2.11.1", 1)
    tx = nr.policy_transaction(ClusterIndex(cluster, prof), info, "1", sync, target_sets=False)
    rules = [ln + "\n" for ln in tx.lines if ln.startswith("add rule")]
    if name == "simple-ingress-egress":  # our transaction writes ingress first (as syncNetworkPolicyChains)
        rules = rules[1:] + rules[:1]
    assert "".join(rules) == expected


def test_tail_chain_default_deny_matches_kube_router_test():
    on = _text([nr.ensure_tail_chain(True, ["10.10.0.0/16"]), nr.populate_protected(["10.10.0.5", "10.10.0.6"])])
    for want in ("add chain ip kube-router-filter-ipv4 KUBE-NWPLCY-TAIL",
                 "add set ip kube-router-filter-ipv4 kube-router-local-pods { type ipv4_addr ;",
                 P + "KUBE-NWPLCY-TAIL ip saddr 10.10.0.0/16 ip saddr != @kube-router-local-pods counter reject",
                 P + "KUBE-NWPLCY-TAIL ip daddr 10.10.0.0/16 ip daddr != @kube-router-local-pods counter reject",
                 P + "KUBE-NWPLCY-TAIL meta mark and 0x20000 == 0x20000 counter accept",
                 P + "KUBE-NWPLCY-TAIL ip saddr 10.10.0.0/16 counter reject",
                 P + "KUBE-NWPLCY-TAIL ip daddr 10.10.0.0/16 counter reject",
                 "add element ip kube-router-filter-ipv4 kube-router-local-pods { 10.10.0.5 }",
                 "add element ip kube-router-filter-ipv4 kube-router-local-pods { 10.10.0.6 }"):
        assert want in on, want
    off = nr.ensure_tail_chain(False, ["10.10.0.0/16"]).text
    assert "counter reject" not in off
    assert P + "KUBE-NWPLCY-TAIL meta mark and 0x20000 == 0x20000 counter accept" in off


def test_top_level_atomic_matches_kube_router_test():
    pod = Pod("ns1", "pod1", "node", {}, ipaddress.IPv4Address("10.10.0.5"))
    dump = nr.top_level_transaction([(pod, "KUBE-POD-FW-TESTCHAIN")], service_ranges=["10.96.0.0/16"]).text
    for chain in ("KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT"):
        assert P + chain + " counter jump KUBE-NWPLCY-TAIL" in dump
        assert P + chain + " " + nr.MARK_ACCEPT_RULE in dump
        assert P + chain + " ip saddr 10.10.0.5 counter jump KUBE-POD-FW-TESTCHAIN" in dump
    assert P + "KUBE-ROUTER-FORWARD ip daddr 10.10.0.5 counter jump KUBE-POD-FW-TESTCHAIN" in dump
    assert P + "KUBE-ROUTER-OUTPUT ip daddr 10.10.0.5 counter jump KUBE-POD-FW-TESTCHAIN" in dump
    assert P + "KUBE-ROUTER-INPUT ip daddr 10.96.0.0/16 counter return" in dump
    # one transaction: every base chain flushed before it is refilled
    lines = dump.splitlines()
    assert lines.index("flush chain ip kube-router-filter-ipv4 KUBE-ROUTER-OUTPUT") < min(
        i for i, ln in enumerate(lines) if ln.startswith("add rule"))


@pytest.mark.parametrize("proto,port,end,appear,absent", [
    ("UDP", "", "", " meta l4proto udp counter", " udp counter"),
    ("TCP", "", "", " meta l4proto tcp counter", " tcp counter"),
    ("SCTP", "", "", " meta l4proto sctp counter", " sctp counter"),
    ("UDP", "53", "", " udp dport 53 counter", "meta l4proto"),
    ("TCP", "8000", "9000", " tcp dport 8000-9000 counter", "meta l4proto"),
    ("", "", "", " counter meta mark set meta mark or 0x10000 return", "dport"),
    ("", "80", "", " tcp dport 80 counter", "meta l4proto"),  # no protocol with a port: TCP
])
def test_protocol_rendering_matches_kube_router_test(proto, port, end, appear, absent):
    rule = "KUBE-NWPLCY-TESTREND " + nr.policy_rule("", "", proto, port, end)
    assert "KUBE-NWPLCY-TESTREND" + appear in rule
    assert ("KUBE-NWPLCY-TESTREND" + absent if absent.startswith(" ") else absent) not in rule


def test_comment_clamp_and_quote():
    assert nr.id_comment("n" * 100, "p" * 100, "reject") == ("n" * 100 + "/" + "p" * 19)
    assert nr.go_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert nr.clamp_comment("a\tb\nc") == "abc"


GOLDENS = {"example_v2.11.1-nftables_node-a": {}, "example_v2.11.1-nftables_node-a_default-deny": {"default_deny": True}}


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_golden(name):
    text = nr.dump(nr.render_sync(example_cluster(), "node-a", sync_version=V, **GOLDENS[name]))
    path = GOLDEN / f"{name}.nft"
    if os.environ.get("NPH_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_sync_shape_and_gc_plan():
    sync = nr.render_sync(example_cluster(), "node-a", sync_version=V)
    steps = [t.step for t in sync.transactions]
    assert steps[:3] == ["ensureDefaultNetworkPolicyChain", "ensureCommonPolicyChain", "ensureDefaultTailChain"]
    assert steps.count("syncNetworkPolicyChains") == 3 and steps.count("syncPodFirewallChains") == 2
    assert steps[-1] == "syncTopLevelChainsAtomic"
    old = nr.render_sync(example_cluster(), "node-a", sync_version=V - 1)
    chains = sorted(old.active_pod_chains | old.active_policy_chains | sync.active_pod_chains
                    | sync.active_policy_chains | {"KUBE-NWPLCY-DEFAULT", "KUBE-NWPLCY-COMMON", "KUBE-NWPLCY-TAIL",
                                                   "KUBE-ROUTER-INPUT"})
    pods, pols = nr.gc_plan(sync, chains, sorted(sync.active_sets | {"KUBE-SRC-GONE", "kube-router-local-pods"}))
    deleted = [ln.split()[-1] for t in pods + pols for ln in t.lines if ln.startswith("delete")]
    assert sorted(deleted) == sorted(old.active_pod_chains | (old.active_policy_chains - sync.active_policy_chains)
                                     | {"KUBE-SRC-GONE"})
    assert pods[0].lines[0].startswith("flush chain") and len(pods) == 1 + len(old.active_pod_chains)


def test_wrong_profile_is_a_config_error():
    with pytest.raises(ConfigError, match="v2.11.1"):
        nr.render_sync(example_cluster(), "node-a", profile="v2.10", sync_version=V)


@pytest.mark.parametrize("fields,field_name", [
    ({"datapath": "ebpf"}, "datapath"),
    ({"datapath": "nftables", "profile": "v2.10"}, "datapath"),
    ({"datapath": "nftables", "profile": "v2.11.1", "strategy": "per-rule"}, "strategy"),
    ({"datapath": "nftables", "profile": "v2.11.1", "reject_with": "tcp-reset"}, "reject_with"),
])
def test_engine_rejects_bad_datapath_config(fields, field_name):
    from harness.engines.config import EnforcementConfig
    from harness.engines.kube_router.engine import KubeRouterEngine

    with pytest.raises(ConfigError, match=f"f.yaml: {field_name}"):
        KubeRouterEngine().validate(EnforcementConfig(**fields), "f.yaml")


def test_datapath_flag_round_trip():
    import argparse

    from harness.engines import options
    from harness.engines.config import EnforcementConfig
    from harness.engines.kube_router.engine import KubeRouterEngine
    from harness.engines.kube_router.nftables_node import KubeRouterNftNode
    from harness.suite import enforcement_args

    cfg = EnforcementConfig(profile="v2.11.1", datapath="nftables", default_deny=True)
    KubeRouterEngine().validate(cfg)
    p = argparse.ArgumentParser()
    options.add_arguments(p)
    back = options.from_args(p.parse_args(enforcement_args(cfg)))
    assert back.datapath == "nftables" and back.profile == "v2.11.1"
    assert cfg.describe()["datapath"] == "nftables" and cfg.label() == "kube-router v2.11.1/nftables"
    node = KubeRouterEngine().node("node-a", "unused-netns", cfg)
    assert isinstance(node, KubeRouterNftNode) and node.strategy == "nftables"
    sync = node.render(example_cluster(), sync_version=V)
    assert sync.step("populateProtectedPodsIPSet") and node.estimated_execs(sync) == len(sync.transactions) + 3


def test_pod_phase_from_a_second_listing():
    """Lister skew: syncPodFirewallChains' own listing (getLocalPods) knows a pod the policies'
    listing did not: it gets a chain with DEFAULT jumps only (targets come from the first listing)."""
    import copy

    cluster = example_cluster()
    sync = nr.render_sync(cluster, "node-a", sync_version=V)
    later = copy.deepcopy(cluster)
    p = later.pods["x/pending"]
    later.pods["x/pending"] = Pod(p.namespace, p.name, p.node, p.labels, ipaddress.IPv4Address("10.244.0.9"), p.ports)
    nr.with_pod_phase(sync, nr.pod_phase(sync, later))
    pods = sync.step("syncPodFirewallChains")
    assert len(pods) == 3 and len(sync.active_pod_chains) == 3
    new = next(t for t in pods if '"podfw x/pending"' in t.text)
    assert "KUBE-NWPLCY-DEFAULT" in new.text and "KUBE-NWPLCY-HDSJ7C67Y6UUC2CR" not in new.text  # not a deny-all target
    assert "ip daddr 10.244.0.9 counter jump" in sync.step("syncTopLevelChainsAtomic")[0].text
    assert [t.step for t in sync.transactions][-1] == "syncTopLevelChainsAtomic"
    # fail closed: the failed chain's jump is gone, the direction stays covered (no DEFAULT ingress)
    nr.with_pod_phase(sync, nr.pod_phase(sync, cluster, {"KUBE-NWPLCY-HDSJ7C67Y6UUC2CR"}))
    b = next(t for t in sync.step("syncPodFirewallChains") if '"podfw x/b"' in t.text)
    assert "KUBE-NWPLCY-HDSJ7C67Y6UUC2CR" not in b.text and "default ingress" not in b.text

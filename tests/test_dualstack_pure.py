"""Dual-stack without the kernel: the IPv6 address plan, IPv6 ipBlocks, the oracle per family, the
kube-router IPv6 render (names, set options, ICMPv6, ::/0) and the merged per-family timings."""

from __future__ import annotations

import ipaddress

import pytest

from harness.engines.kube_router.apply.strategies import SyncTimings, merge_family_timings
from harness.engines.kube_router.render import naming as nm
from harness.engines.kube_router.render.kube_router import dump, render_node
from harness.errors import ConfigError
from harness.kernel import rtnl
from harness.model.dualstack import enable_dual_stack, family_view
from harness.model.topology import topology_from_dict
from harness.oracle import Oracle

V6_BLOCK_POLICY = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "v6", "namespace": "x"},
    "spec": {"podSelector": {"matchLabels": {"app": "a"}},
             "ingress": [{"from": [{"ipBlock": {"cidr": "fd00:10:244::/56", "except": ["fd00:10:244:1::/64"]}},
                                   {"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
             "egress": [{"to": [{"ipBlock": {"cidr": "::/0"}}]}]},
}


def _topology(**extra) -> dict:
    return {"nodes": [{"name": "node-a"}, {"name": "node-b"}], "namespaces": [{"name": "x"}],
            "pods": [{"name": "a", "namespace": "x", "node": "node-a", "labels": {"app": "a"}},
                     {"name": "b", "namespace": "x", "node": "node-b", "labels": {"app": "b"}},
                     {"name": "c", "namespace": "x", "node": "node-a", "ip": "10.244.0.9"}],
            **extra}


def _cluster(policy: dict | None = None, tmp_path=None, **extra):
    data = _topology(ip_families=["IPv4", "IPv6"], **extra)
    if policy is not None:
        import yaml

        (tmp_path / "p.yaml").write_text(yaml.safe_dump(policy))
        data["manifests"] = ["p.yaml"]
    return topology_from_dict(data, "t.yaml", tmp_path)


# -- address plan ------------------------------------------------------------------------------
def test_ipv6_plan_mirrors_ipv4_offsets():
    c = topology_from_dict(_topology(ip_families=["IPv4", "IPv6"]), "t.yaml")
    a, b = c.nodes["node-a"], c.nodes["node-b"]
    assert (str(a.node_ip6), str(a.pod_cidr6), str(a.gateway_ip6)) == ("fd00:172:18::2", "fd00:10:244::/64",
                                                                       "fd00:10:244::1")
    assert (str(b.node_ip6), str(b.pod_cidr6)) == ("fd00:172:18::3", "fd00:10:244:1::/64")
    assert {k: (str(p.ip), str(p.ip6)) for k, p in c.pods.items()} == {
        "x/a": ("10.244.0.2", "fd00:10:244::2"), "x/b": ("10.244.1.2", "fd00:10:244:1::2"),
        "x/c": ("10.244.0.9", "fd00:10:244::9")}
    assert c.pod_by_ip("fd00:10:244::9").key == "x/c"


def test_ipv4_only_is_the_default_and_has_no_ipv6():
    c = topology_from_dict(_topology(), "t.yaml")
    assert c.ip_families == ("IPv4",) and not c.dual_stack
    assert all(p.ip6 is None for p in c.pods.values()) and all(n.pod_cidr6 is None for n in c.nodes.values())


def test_pods_added_at_run_time_get_both_addresses():
    from harness.model.cluster import Pod

    c = topology_from_dict(_topology(ip_families=["IPv4", "IPv6"]), "t.yaml")
    pod = c.add_pod(Pod("x", "late", "node-b"))
    assert (str(pod.ip), str(pod.ip6)) == ("10.244.1.3", "fd00:10:244:1::3")


@pytest.mark.parametrize("extra, message", [
    ({"ip_families": ["IPv6"]},
     "t.yaml: ip_families: must be [IPv4] or [IPv4, IPv6] (IPv4 is the primary family), got ['IPv6']"),
    ({"ip_families": ["IPv4", "IPv6", "IPv6"]}, "t.yaml: ip_families: must be [IPv4] or [IPv4, IPv6]"),
    ({"cluster_cidr_v6": "fd00::/48"}, "t.yaml: cluster_cidr_v6: needs ip_families: [IPv4, IPv6]"),
    ({"ip_families": ["IPv4", "IPv6"], "cluster_cidr_v6": "10.0.0.0/8"},
     "t.yaml: cluster_cidr_v6: '10.0.0.0/8' is not an IPv6 CIDR"),
    ({"ip_families": ["IPv4", "IPv6"], "node_cidr_mask_size_v6": 124},
     "t.yaml: node_cidr_mask_size_v6: 124 must be between the cluster_cidr_v6 prefix (56) and 120"),
    ({"ip_families": ["IPv4", "IPv6"], "cluster_cidr_v6": "fd00::/64"},
     "t.yaml: cluster_cidr_v6: no free /64 left in cluster_cidr_v6 fd00::/64 for node 'node-b'"),
    ({"ip_families": ["IPv4", "IPv6"], "service_cidr_v6": "fd00:10:244::/112"},
     "t.yaml: service_cidr_v6: fd00:10:244::/112 overlaps cluster_cidr_v6 (fd00:10:244::/56)"),
    ({"ip_families": ["IPv4", "IPv6"], "underlay_cidr_v6": "fd00:172:18::/120"},
     "t.yaml: underlay_cidr_v6: fd00:172:18::/120 has fewer host addresses than underlay_cidr (172.18.0.0/16)"),
])
def test_bad_ipv6_plans_are_one_line_errors(extra, message):
    with pytest.raises(ConfigError) as e:
        topology_from_dict(_topology(**extra), "t.yaml")
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(message)


def test_ipv6_ip_block_needs_a_dual_stack_topology(tmp_path):
    import yaml

    (tmp_path / "p.yaml").write_text(yaml.safe_dump(V6_BLOCK_POLICY))
    with pytest.raises(ConfigError) as e:
        topology_from_dict({**_topology(), "manifests": ["p.yaml"]}, "t.yaml", tmp_path)
    assert "\n" not in str(e.value)
    assert str(e.value).endswith("p.yaml: documents[0].spec.ingress[0].from[0].ipBlock.cidr: IPv6 CIDR fd00:10:244::/56 needs a "
                                 "dual-stack topology (ip_families: [IPv4, IPv6])")
    assert _cluster(V6_BLOCK_POLICY, tmp_path).policies["x/v6"].ingress[0].peers[0].ip_block.cidr.version == 6


def test_family_view_and_enable_dual_stack():
    c = enable_dual_stack(topology_from_dict(_topology(), "t.yaml"))
    v = family_view(c, "IPv6")
    assert str(v.pods["x/a"].ip) == "fd00:10:244::2" and str(v.nodes["node-b"].pod_cidr) == "fd00:10:244:1::/64"
    assert str(c.pods["x/a"].ip) == "10.244.0.2"  # the cluster itself is untouched
    assert family_view(c, "IPv4") is c


# -- oracle ------------------------------------------------------------------------------------
def test_oracle_matches_ip_blocks_of_the_probed_family(tmp_path):
    c = _cluster(V6_BLOCK_POLICY, tmp_path)
    v4, v6 = Oracle(c), Oracle(c, "IPv6")
    # IPv6: node-a's pods are in the block, node-b's in the except; IPv4: only 10.0.0.0/8 counts
    assert v6.allowed("x/c", "x/a", 80) and not v6.allowed("x/b", "x/a", 80)
    assert v4.allowed("x/c", "x/a", 80) and v4.allowed("x/b", "x/a", 80)
    with pytest.raises(ValueError):
        Oracle(topology_from_dict(_topology(), "t.yaml"), "IPv6")


# -- kube-router render ------------------------------------------------------------------------
def test_ipv6_half_names_options_and_entries(tmp_path):
    c = _cluster(V6_BLOCK_POLICY, tmp_path)
    rs = render_node(c, "node-a", profile="v2.10", sync_version=7, default_deny=True)
    v6 = rs.ipv6
    assert v6 is not None and v6.family == "IPv6" and rs.family == "IPv4"
    sets = {s.name: s for s in v6.sets}
    # kube-router v2.10.0 policy.go: policyDestinationPodIPSetName(ns, name, "IPv6") behind "inet6:"
    dst = "inet6:KUBE-DST-" + nm.kr_hash("x" + "v6" + "IPv6")
    blk = "inet6:KUBE-SRC-" + nm.kr_hash("x" + "v6" + "ingressrule0" + "IPv6" + "ipblock")
    eblk = "inet6:KUBE-DST-" + nm.kr_hash("x" + "v6" + "egressrule0" + "IPv6" + "ipblock")
    assert sets[dst].entries == ["fd00:10:244::2 timeout 0"]
    assert sets[dst].options == "timeout 0 family inet6"
    assert sets[blk].entries == ["fd00:10:244::/56 timeout 0", "fd00:10:244:1::/64 timeout 0 nomatch"]
    assert sets[eblk].entries == ["2000::/3 timeout 0", "fd00::/8 timeout 0"]  # evalIPBlockPeer's ::/0
    assert sets["inet6:kube-router-local-pods"].entries == ["fd00:10:244::2 timeout 0", "fd00:10:244::9 timeout 0"]
    assert all(s.name.startswith("inet6:") for s in v6.sets)
    assert not any(s.name.startswith("inet6:") for s in rs.sets)
    assert "10.244." not in dump(v6) and "10.0.0.0/8" not in dump(v6)
    assert nm.policy_chain("x", "v6", 7, "IPv6") in {ch.name for ch in v6.chains}
    common = v6.chain(nm.COMMON_CHAIN).rules
    assert any("--icmpv6-type neighbor-solicitation" in r for r in common)
    assert any("-d fd00:10:96::/112 -j RETURN" in r for r in v6.chain(nm.INPUT_CHAIN).rules)
    assert v6.owned_set_prefixes == ("inet6:KUBE-SRC-", "inet6:KUBE-DST-", "inet6:kube-router-")


def test_ipv4_half_of_a_dual_stack_node_is_the_ipv4_only_render(tmp_path):
    import yaml

    policy = {**V6_BLOCK_POLICY, "spec": {**V6_BLOCK_POLICY["spec"], "egress": []}}
    policy["spec"]["ingress"] = [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(policy))
    only4 = topology_from_dict({**_topology(), "manifests": ["p.yaml"]}, "t.yaml", tmp_path)
    dual = topology_from_dict({**_topology(ip_families=["IPv4", "IPv6"]), "manifests": ["p.yaml"]}, "t.yaml",
                              tmp_path)
    a = render_node(only4, "node-a", profile="v2.10", sync_version=3)
    b = render_node(dual, "node-a", profile="v2.10", sync_version=3)
    assert a.ipv6 is None and b.ipv6 is not None
    b.ipv6 = None
    assert dump(a) == dump(b)


@pytest.mark.parametrize("profile", ["v1.2.1", "v1.3.2", "v1.5.0"])
def test_v1_profiles_refuse_dual_stack(profile):
    c = topology_from_dict(_topology(ip_families=["IPv4", "IPv6"]), "t.yaml")
    with pytest.raises(ConfigError) as e:
        render_node(c, "node-a", profile=profile, sync_version=1)
    assert str(e.value).startswith(f"t.yaml: ip_families: kube-router {profile} is IPv4-only")


# -- timings and netlink -----------------------------------------------------------------------
def test_merged_timings_keep_each_family():
    t4 = SyncTimings("restore", "nft", "ns", 1, iptables_save_time=2_000_000, ipset_restore_time=1_000_000,
                     iptables_restore_time=3_000_000, total=10_000_000, execs=10, rules=5, end_ns=5)
    t6 = SyncTimings("restore", "nft", "ns", 1, iptables_save_time=4_000_000, ipset_restore_time=2_000_000,
                     iptables_restore_time=5_000_000, total=20_000_000, execs=11, rules=6, end_ns=9,
                     exec_log=[{"step": "Restore"}])
    m = merge_family_timings(t4, t6)
    assert (m.total, m.execs, m.rules, m.end_ns) == (30_000_000, 21, 11, 9)
    assert m.exec_log == [{"step": "Restore", "family": "IPv6"}]
    assert m.metrics() == {"controller_iptables_v4_save_time": 0.002, "controller_iptables_v6_save_time": 0.004,
                           "controller_policy_ipset_v4_restore_time": 0.001,
                           "controller_policy_ipset_v6_restore_time": 0.002,
                           "controller_iptables_v4_restore_time": 0.003, "controller_iptables_v6_restore_time": 0.005,
                           "controller_iptables_sync_time": 0.03}


def test_rtnl_ipv6_requests_pack_addresses():
    addr = rtnl.address6(3, "fd00::2", 64)
    assert ipaddress.IPv6Address("fd00::2").packed in addr.body and addr.body[0] == 10  # AF_INET6
    route = rtnl.route6("fd00:1::/64", gateway="fd00::1", oif=2, onlink=True)
    assert ipaddress.IPv6Address("fd00::1").packed in route.body and route.body[1] == 64


def test_bench_apply_dual_stack_sources_measure_the_same_cluster():
    from harness.engines.kube_router.apply.commands import _sources

    alone, both = _sources("render", ["small"], "v2.10", dual_stack=True)
    assert (alone.scale, both.scale) == ("small", "small-dual")
    a, b = alone.make(1), both.make(1)
    assert a.ipv6 is None and b.ipv6 is not None and b.ipv6.family == "IPv6"
    assert dump(a) == dump(b).split("# IPv6 (ip6tables-restore, inet6 sets)\n")[0]

"""Rule structure of the kube-router renderer per profile, ipsets, named ports, determinism."""

from __future__ import annotations

import ipaddress

import pytest

from harness.engines.kube_router.render import naming as nm
from harness.engines.kube_router.render.kube_router import dump, render_node
from harness.engines.kube_router.render.synthetic import example_cluster, synthetic_cluster
from harness.errors import ConfigError
from harness.model.cluster import ContainerPort, Pod
from harness.model.policy import IPBlock, LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule

V = 1700000000000000000
NET = ipaddress.IPv4Network


def _set(rs, name):
    return next(s for s in rs.sets if s.name == name)


def _pod_chain(rs, ns, pod):
    return rs.chain(nm.pod_chain(ns, pod, V)).rules


def test_v13_pod_chain_exactly_as_kube_router_writes_it():
    # pod.go (v1.3): -I 1 inserts of [policy jumps, default egress, local accept, stateful] end
    # up reversed; NFLOG/REJECT/mark rules are appended. Written out by hand from the source.
    rs = render_node(example_cluster(), "node-a", profile="v1.3", sync_version=V)
    deny_all = nm.policy_chain("x", "deny-all", V)
    egress_b = nm.policy_chain("x", "egress-b", V)
    assert _pod_chain(rs, "x", "b") == [
        '-m comment --comment "rule for stateful firewall for pod" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        "-m comment --comment \"rule to permit the traffic traffic to pods when source is the pod's local node\""
        " -m addrtype --src-type LOCAL -d 10.244.0.3 -j ACCEPT",
        f'-s 10.244.0.3 -m comment --comment "run through nw policy egress-b" -j {egress_b}',
        f'-d 10.244.0.3 -m comment --comment "run through nw policy deny-all" -j {deny_all}',
        '-m comment --comment "rule to log dropped traffic POD name:b namespace: x" -m mark ! --mark 0x10000/0x10000'
        " -j NFLOG --nflog-group 100 -m limit --limit 10/minute --limit-burst 10",
        '-m comment --comment "rule to REJECT traffic destined for POD name:b namespace: x"'
        " -m mark ! --mark 0x10000/0x10000 -j REJECT",
        "-j MARK --set-mark 0/0x10000",
        '-m comment --comment "set mark to ACCEPT traffic that comply to network policies"'
        " -j MARK --set-mark 0x20000/0x20000",
    ]
    assert rs.swap_sets is True
    assert "KUBE-NWPLCY-COMMON" not in [c.name for c in rs.chains]


def test_v12_refills_sets_in_place_and_hashes_no_family():
    rs = render_node(example_cluster(), "node-a", profile="v1.2", sync_version=V)
    assert rs.swap_sets is False
    assert nm.policy_chain("x", "allow-http", V, "") in [c.name for c in rs.chains]


def test_v26_pod_chain_jumps_to_common_chain_first():
    rs = render_node(example_cluster(), "node-a", profile="v2.6", sync_version=V)
    rules = _pod_chain(rs, "x", "a")
    assert rules[0].endswith("-j KUBE-NWPLCY-COMMON")
    assert not any("ctstate" in r for r in rules)
    common = rs.chain("KUBE-NWPLCY-COMMON").rules
    assert "--ctstate INVALID -j DROP" in common[0] and "RELATED,ESTABLISHED -j ACCEPT" in common[1]
    assert all("KUBE-NWPLCY-TAIL" not in r for c in rs.chains for r in c.rules)


def test_v210_every_top_level_chain_ends_with_tail_and_no_explicit_accept():
    # v2.10.0:network_policy_controller.go: ensureTailChainPosition replaced ensureExplicitAccept;
    # the 0x20000 accept lives in KUBE-NWPLCY-TAIL only (populateDefaultTailChain)
    rs = render_node(example_cluster(), "node-a", profile="v2.10", sync_version=V)
    for name in (nm.INPUT_CHAIN, nm.FORWARD_CHAIN, nm.OUTPUT_CHAIN):
        rules = rs.chain(name).rules
        assert rules[-1].endswith("-j KUBE-NWPLCY-TAIL")
        assert not any("0x20000" in r for r in rules)
    assert rs.chain("KUBE-NWPLCY-TAIL").rules == [
        '-m comment --comment "rule to explicitly ACCEPT traffic that comply to network policies" '
        '-m mark --mark 0x20000/0x20000 -j ACCEPT']
    assert [s.name for s in rs.sets if s.name == nm.LOCAL_PODS_SET] == []


def test_pod_jumps_sit_in_the_right_top_level_chains():
    rs = render_node(example_cluster(), "node-a", profile="v2.10", sync_version=V)
    chain = nm.pod_chain("x", "a", V)
    fwd = [r for r in rs.chain(nm.FORWARD_CHAIN).rules if r.endswith(chain)]
    out = [r for r in rs.chain(nm.OUTPUT_CHAIN).rules if r.endswith(chain)]
    inp = [r for r in rs.chain(nm.INPUT_CHAIN).rules if r.endswith(chain)]
    assert [("physdev" in r, "-d 10.244.0.2" in r) for r in fwd] == [(False, True), (True, True), (False, False),
                                                                      (True, False)]
    assert ["-d 10.244.0.2" in r for r in out] == [True, False]
    assert len(inp) == 1 and "-s 10.244.0.2" in inp[0]
    assert [b for b, _ in rs.builtin_jumps] == ["INPUT", "FORWARD", "OUTPUT"]


def test_default_deny_set_and_rejects():
    c = example_cluster()
    rs = render_node(c, "node-a", profile="v2.10", sync_version=V, default_deny=True)
    assert _set(rs, nm.LOCAL_PODS_SET).entries == ["10.244.0.2 timeout 0", "10.244.0.3 timeout 0"]
    tail = rs.chain(nm.TAIL_CHAIN).rules
    assert tail[0].startswith("-s 10.244.0.0/24 ") and "! --match-set kube-router-local-pods src -j REJECT" in tail[0]
    assert tail[1].startswith("-d 10.244.0.0/24 ") and "! --match-set kube-router-local-pods dst -j REJECT" in tail[1]
    # v2.10.0:network_policy_controller.go appendIPSetGatedRejects / appendCIDRRejects
    assert ('"REJECT traffic to/from local pods without a programmed firewall chain '
            '(--netpol-default-deny is enabled)"') in tail[0]
    assert "rule to explicitly ACCEPT traffic that comply to network policies" in tail[2]
    pre = '"REJECT traffic before NetPol is applied (--netpol-default-deny is enabled)"'
    assert tail[3:] == [f'-s 10.244.0.0/24 -m comment --comment {pre} -j REJECT',
                        f'-d 10.244.0.0/24 -m comment --comment {pre} -j REJECT']
    with pytest.raises(ConfigError, match="v2.10"):
        render_node(c, "node-a", profile="v2.6", sync_version=V, default_deny=True)


def test_ip_block_except_is_nomatch_and_slash_zero_is_split():
    rs = render_node(example_cluster(), "node-a", profile="v2.10", sync_version=V)
    s = _set(rs, nm.egress_ipblock_set("x", "egress-b", 0, "IPv4"))
    assert s.type == "hash:net"
    assert s.entries == ["0.0.0.0/1 timeout 0", "128.0.0.0/1 timeout 0", "10.244.0.0/16 timeout 0 nomatch"]


def test_except_slash_zero_is_split_too():
    c = example_cluster()
    c.policies["x/odd"] = NetworkPolicy("x", "odd", LabelSelector(), ("Ingress",), ingress=(PolicyRule(
        (PolicyPeer(ip_block=IPBlock(NET("10.0.0.0/8"), (NET("0.0.0.0/0"),))),)),))
    rs = render_node(c, "node-a", profile="v2.10", sync_version=V)
    assert _set(rs, nm.ingress_ipblock_set("x", "odd", 0, "IPv4")).entries == [
        "10.0.0.0/8 timeout 0", "0.0.0.0/1 timeout 0 nomatch", "128.0.0.0/1 timeout 0 nomatch"]


def test_named_port_resolves_per_destination_pod_into_one_set_per_port_number():
    c = example_cluster()
    # a second app=a pod serving "http" on another number: kube-router makes a second endpoint set
    c.pods["x/a2"] = Pod("x", "a2", "node-b", {"app": "a"}, ipaddress.IPv4Address("10.244.1.3"),
                         [ContainerPort(8080, "TCP", "http")])
    rs = render_node(c, "node-a", profile="v2.10", sync_version=V)
    s0 = _set(rs, nm.ingress_named_port_set("x", "allow-http", 0, 0, "IPv4"))
    s1 = _set(rs, nm.ingress_named_port_set("x", "allow-http", 0, 1, "IPv4"))
    assert (s0.entries, s1.entries) == (["10.244.0.2 timeout 0"], ["10.244.1.3 timeout 0"])
    rules = rs.chain(nm.policy_chain("x", "allow-http", V, "IPv4")).rules
    assert f"--match-set {s0.name} dst -p TCP --dport 80 -j MARK" in rules[0]
    assert f"--match-set {s1.name} dst -p TCP --dport 8080 -j MARK" in rules[2]


def test_named_port_nobody_serves_allows_nothing():
    c = example_cluster()
    c.policies["x/allow-http"].ingress = (PolicyRule((), (PolicyPort("TCP", "nope"),)),)
    rs = render_node(c, "node-a", profile="v2.10", sync_version=V)
    assert rs.chain(nm.policy_chain("x", "allow-http", V, "IPv4")).rules == []


def test_egress_named_port_to_all_destinations_uses_the_number_without_a_set():
    c = example_cluster()
    c.policies["x/dns"] = NetworkPolicy("x", "dns", LabelSelector.of({"app": "b"}), ("Egress",), egress=(
        PolicyRule((), (PolicyPort("TCP", "http"),)),))
    rs = render_node(c, "node-a", profile="v2.10", sync_version=V)
    rules = rs.chain(nm.policy_chain("x", "dns", V, "IPv4")).rules
    src = nm.policy_src_set("x", "dns", "IPv4")
    assert rules[0] == ('-m comment --comment "rule to ACCEPT traffic from source pods to all destinations selected '
                        f'by policy name: dns namespace x" -m set --match-set {src} src -p TCP --dport 80 '
                        "-j MARK --set-xmark 0x10000/0x10000")


def test_end_port_is_a_range_from_v131_and_ignored_before():
    # v1.3.1:pkg/controllers/netpol/policy.go passes portProtocol.endport to appendRuleToPolicyChain;
    # v1.2.x has no endport
    c = example_cluster()
    new = render_node(c, "node-a", profile="v2.6", sync_version=V)
    v13 = render_node(c, "node-a", profile="v1.3.1", sync_version=V)
    old = render_node(c, "node-a", profile="v1.2.2", sync_version=V)
    assert "-p TCP --dport 8000:8100 -j MARK" in new.chain(nm.policy_chain("x", "egress-b", V, "IPv4")).rules[0]
    assert "-p TCP --dport 8000:8100 -j MARK" in v13.chain(nm.policy_chain("x", "egress-b", V)).rules[0]
    assert "-p TCP --dport 8000 -j MARK" in old.chain(nm.policy_chain("x", "egress-b", V)).rules[0]


def test_sctp_rule():
    rs = render_node(example_cluster(), "node-a", profile="v2.10", sync_version=V)
    rules = rs.chain(nm.policy_chain("x", "egress-b", V, "IPv4")).rules
    assert any("-p SCTP --dport 5000 -j MARK --set-xmark 0x10000/0x10000" in r for r in rules)
    assert any("-p sctp" in r and "node ports" in r for r in rs.chain(nm.INPUT_CHAIN).rules)


def test_ingress_from_all_sources_on_a_port_and_policy_without_rules():
    c = example_cluster()
    c.policies["x/web"] = NetworkPolicy("x", "web", LabelSelector.of({"app": "a"}), ("Ingress",), ingress=(
        PolicyRule((), (PolicyPort("UDP", 53),)),))
    rs = render_node(c, "node-a", profile="v2.10", sync_version=V)
    dst = nm.policy_dst_set("x", "web", "IPv4")
    assert rs.chain(nm.policy_chain("x", "web", V, "IPv4")).rules[0] == (
        '-m comment --comment "rule to ACCEPT traffic from all sources to dest pods selected by policy name: web '
        f'namespace x" -m set --match-set {dst} dst -p UDP --dport 53 -j MARK --set-xmark 0x10000/0x10000')
    assert rs.chain(nm.policy_chain("x", "deny-all", V, "IPv4")).rules == []


def test_sets_hold_pods_of_all_nodes_and_pods_without_ip_are_ignored():
    c = example_cluster()
    rs = render_node(c, "node-a", profile="v2.10", sync_version=V)
    # y/c lives on the virtual node-b; it is the peer of allow-http
    assert _set(rs, nm.ingress_pod_set("x", "allow-http", 0, "IPv4")).entries == ["10.244.1.2 timeout 0"]
    assert nm.pod_chain("x", "pending", V) not in [ch.name for ch in rs.chains]
    assert all("None" not in e for s in rs.sets for e in s.entries)
    # x/pending matches app=a but has no IP: not in the target set
    assert _set(rs, nm.policy_dst_set("x", "allow-http", "IPv4")).entries == ["10.244.0.2 timeout 0"]


def test_determinism_and_sync_version_renames_every_pod_and_policy_chain():
    a = dump(render_node(example_cluster(), "node-a", sync_version=V))
    b = dump(render_node(example_cluster(), "node-a", sync_version=V))
    assert a == b
    r1 = render_node(example_cluster(), "node-a", sync_version=V)
    r2 = render_node(example_cluster(), "node-a", sync_version=V + 1)
    renamed = {c.name for c in r1.chains if c.name.startswith(("KUBE-POD-FW-", "KUBE-NWPLCY-"))} - {
        nm.DEFAULT_CHAIN, nm.COMMON_CHAIN, nm.TAIL_CHAIN}
    assert len(renamed) == 5 and renamed.isdisjoint({c.name for c in r2.chains})
    assert [s.name for s in r1.sets] == [s.name for s in r2.sets]


def test_synthetic_render_is_deterministic_and_works_for_a_virtual_node():
    c = synthetic_cluster(10, 20, 60, seed=3)
    assert dump(render_node(c, "node-005", sync_version=7)) == dump(render_node(c, "node-005", sync_version=7))
    rs = render_node(c, "node-005", sync_version=7)
    assert sum(ch.name.startswith("KUBE-POD-FW-") for ch in rs.chains) == 20
    assert sum(ch.name.startswith("KUBE-NWPLCY-") for ch in rs.chains) == 60 + 3  # + DEFAULT, COMMON, TAIL


def test_tcp_reset_variant_is_explicit():
    rs = render_node(example_cluster(), "node-a", sync_version=V, reject_with="tcp-reset")
    rules = _pod_chain(rs, "x", "a")
    i = next(i for i, r in enumerate(rules) if "tcp-reset" in r)
    assert rules[i].startswith("-p tcp ") and rules[i + 1].endswith("! --mark 0x10000/0x10000 -j REJECT")
    with pytest.raises(ConfigError):
        render_node(example_cluster(), "node-a", sync_version=V, reject_with="drop")


def test_unknown_node_and_profile_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown node"):
        render_node(example_cluster(), "nope", sync_version=V)
    with pytest.raises(ConfigError, match="profile"):
        render_node(example_cluster(), "node-a", profile="v9", sync_version=V)


def test_named_port_set_type_follows_kube_router_refresh_set():
    # ipBlock-only peers + named port: kube-router creates the named-port set as hash:net;
    # pods + ipBlock: the pods branch created it first as hash:ip and RefreshSet keeps the type.
    c = example_cluster()
    blk = PolicyPeer(ip_block=IPBlock(NET("192.168.0.0/16")))
    c.policies["x/only-block"] = NetworkPolicy("x", "only-block", LabelSelector.of({"app": "a"}), ("Ingress",),
                                               ingress=(PolicyRule((blk,), (PolicyPort("TCP", "http"),)),))
    c.policies["x/both"] = NetworkPolicy("x", "both", LabelSelector.of({"app": "a"}), ("Ingress",), ingress=(
        PolicyRule((blk, PolicyPeer(pod_selector=LabelSelector.of({"app": "b"}))), (PolicyPort("TCP", "http"),)),))
    rs = render_node(c, "node-a", profile="v2.10", sync_version=V)
    only = _set(rs, nm.ingress_named_port_set("x", "only-block", 0, 0, "IPv4"))
    both = _set(rs, nm.ingress_named_port_set("x", "both", 0, 0, "IPv4"))
    assert (only.type, only.entries) == ("hash:net", ["10.244.0.2 timeout 0"])
    assert (both.type, both.entries) == ("hash:ip", ["10.244.0.2 timeout 0"])
    rules = rs.chain(nm.policy_chain("x", "both", V, "IPv4")).rules
    assert len(rules) == 4  # pods->named port (MARK, RETURN), ipBlock->named port (MARK, RETURN)

"""kube-network-policies' engine, the pure parts: packet parsing, its own policy evaluation
(against the independent oracle on seeded random clusters, and on the cases where the source's
behaviour is its own: unknown IPs, ICMP, missing namespaces), the cache's managed IPs and the
informer handlers' filter, the nft batch it renders, the NFQUEUE messages. No root."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from harness.controller import events as ev
from harness.controller.timeline import Timeline
from harness.engines import registry
from harness.engines.config import EnforcementConfig
from harness.engines.kube_network_policies import ruleset as rs
from harness.engines.kube_network_policies.engine import KubeNetworkPoliciesNode
from harness.engines.kube_network_policies.packet import BadPacket, Packet, parse_packet
from harness.engines.kube_network_policies.policy import PolicyCache, evaluate_packet
from harness.errors import ConfigError
from harness.kernel import nfqueue
from harness.model.cluster import Cluster, Namespace, Node, Pod
from harness.model.policy import LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule
from harness.oracle import Oracle
from tests.test_oracle_random import PORTS, random_cluster


def ipv4(src: str, dst: str, proto: int, l4: bytes, ihl: int = 5) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(l4), 0, 0, 64, proto, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return hdr + b"\0" * (4 * ihl - 20) + l4


def tcp_syn(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)


# -- packet ----------------------------------------------------------------------------------------
def test_parse_tcp_udp_sctp_and_icmp():
    p = parse_packet(ipv4("10.244.0.2", "10.244.1.3", 6, tcp_syn(40000, 80)))
    assert p == Packet(4, ipaddress.IPv4Address("10.244.0.2"), ipaddress.IPv4Address("10.244.1.3"), "TCP", 40000, 80)
    assert parse_packet(ipv4("1.1.1.1", "2.2.2.2", 17, struct.pack("!HHHH", 5353, 53, 8, 0))).proto == "UDP"
    assert parse_packet(ipv4("1.1.1.1", "2.2.2.2", 132, struct.pack("!HHII", 7, 9000, 0, 0))).dst_port == 9000
    icmp = parse_packet(ipv4("1.1.1.1", "2.2.2.2", 1, b"\x08\0\0\0\0\0\0\0"))
    assert (icmp.proto, icmp.src_port, icmp.dst_port) == ("", 0, 0)
    assert parse_packet(ipv4("1.1.1.1", "2.2.2.2", 6, tcp_syn(1, 81), ihl=6)).dst_port == 81  # IP options


def test_parse_rejects_short_and_corrupt():
    with pytest.raises(BadPacket):
        parse_packet(b"\x45" + b"\0" * 10)
    with pytest.raises(BadPacket):
        parse_packet(ipv4("1.1.1.1", "2.2.2.2", 6, b"\0" * 12 + b"\x10" + b"\0" * 7))  # data offset 4 < 20
    with pytest.raises(BadPacket):
        parse_packet(b"\x70" + b"\0" * 30)


# -- evaluation: the engine's own code against the independent oracle ------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_evaluation_agrees_with_oracle_on_random_clusters(seed):
    c = random_cluster(seed)
    cache = PolicyCache()
    cache.replace(c)
    oracle = Oracle(c)
    pods = list(c.pods.values())
    checked = denied = 0
    for port, proto in PORTS:
        for s in pods:
            for d in pods:
                if s.key == d.key:
                    continue  # the oracle allows a pod to itself; the source evaluates hairpin traffic
                pkt = Packet(4, s.ip, d.ip, proto, 40000, port)
                want = oracle.verdict(s, d, port, proto).allowed
                assert evaluate_packet(cache, pkt) == want, (seed, s.key, d.key, port, proto)
                checked += 1
                denied += not want
    assert checked > 5000 and 0 < denied < checked  # both verdicts were exercised


def _small() -> Cluster:
    c = Cluster()
    c.nodes["n0"] = Node("n0", ipaddress.IPv4Address("172.18.0.2"), ipaddress.IPv4Network("10.244.0.0/24"))
    c.nodes["n1"] = Node("n1", ipaddress.IPv4Address("172.18.0.3"), ipaddress.IPv4Network("10.244.1.0/24"))
    c.namespaces["x"] = Namespace("x", {"team": "a"})
    c.add_pod(Pod("x", "db", "n0", {"app": "db"}))
    c.add_pod(Pod("x", "web", "n1", {"app": "web"}))
    c.add_pod(Pod("x", "other", "n1", {"app": "other"}))
    allow = NetworkPolicy("x", "db-from-web", LabelSelector.of({"app": "db"}), ("Ingress",),
                          (PolicyRule((PolicyPeer(pod_selector=LabelSelector.of({"app": "web"})),),
                                      (PolicyPort("TCP", 3306),)),))
    c.policies[allow.key] = allow
    return c


def test_unknown_source_is_no_pod():
    c = _small()
    cache = PolicyCache()
    cache.replace(c)
    db, web = c.pods["x/db"], c.pods["x/web"]
    assert evaluate_packet(cache, Packet(4, web.ip, db.ip, "TCP", 40000, 3306))
    assert not evaluate_packet(cache, Packet(4, web.ip, db.ip, "TCP", 40000, 3307))
    # a new pod whose IP is not in the cache yet: selectors never match "no pod" (networkpolicy.go)
    assert not evaluate_packet(cache, Packet(4, ipaddress.IPv4Address("10.244.1.99"), db.ip, "TCP", 1, 3306))
    # and an unselected destination is allowed whatever the source
    assert evaluate_packet(cache, Packet(4, ipaddress.IPv4Address("10.244.1.99"), web.ip, "TCP", 1, 80))


def test_icmp_matches_only_rules_without_ports():
    c = _small()
    cache = PolicyCache()
    cache.replace(c)
    db, web = c.pods["x/db"], c.pods["x/web"]
    assert not evaluate_packet(cache, Packet(4, web.ip, db.ip, "", 0, 0))
    c.policies["x/all"] = NetworkPolicy("x", "all", LabelSelector.of({"app": "db"}), ("Ingress",), (PolicyRule(),))
    assert evaluate_packet(cache, Packet(4, web.ip, db.ip, "", 0, 0))


def test_namespace_missing_from_cache_has_no_labels():
    c = _small()
    c.policies["x/ns"] = NetworkPolicy("x", "ns", LabelSelector.of({"app": "web"}), ("Ingress",), (PolicyRule(
        (PolicyPeer(namespace_selector=LabelSelector.of({"kubernetes.io/metadata.name": "x"})),)),))
    cache = PolicyCache()
    cache.replace(c)
    db, web = c.pods["x/db"], c.pods["x/web"]
    assert evaluate_packet(cache, Packet(4, db.ip, web.ip, "TCP", 1, 80))
    del c.namespaces["x"]  # the namespace informer has not delivered it (podinfo.go: nsLabels nil)
    assert not evaluate_packet(cache, Packet(4, db.ip, web.ip, "TCP", 1, 80))


# -- cache: managed IPs and the handlers' filter ----------------------------------------------------
def test_managed_ips_are_local_selected_pods():
    c = _small()
    cache = PolicyCache()
    cache.replace(c)
    assert cache.managed_ips("n0") == [c.pods["x/db"].ip]
    assert cache.managed_ips("n1") == []


class FakeNode(KubeNetworkPoliciesNode):
    """The node engine without a kernel: deliveries only (no start)."""

    def __init__(self, node: str, view: Cluster):
        super().__init__(node, "nowhere", EnforcementConfig(engine="kube-network-policies"), Timeline())
        self.cache.replace(view)


def test_handlers_ask_for_a_sync_only_for_local_selected_pods():
    c = _small()
    n0, n1 = FakeNode("n0", ev.view_of(c)), FakeNode("n1", ev.view_of(c))
    new_db = Pod("x", "db2", "n0", {"app": "db"}, ip=ipaddress.IPv4Address("10.244.0.50"))
    for n in (n0, n1):
        n.deliver(ev.ClusterEvent(ev.EventKind.POD_ADDED, new_db.key, pod=new_db, seq=1))
    assert n0._request.is_set() and not n1._request.is_set()
    assert n1.cache.pod_info(new_db.ip).name == "db2"  # the IP index follows the store
    # n1 recorded the pod in its cache only (a cache record), n0 waits for its nftables sync
    assert [s.strategy for s in n1.timeline.syncs] == ["cache"] and not n0.timeline.syncs
    # namespaces have no handler
    n1.deliver(ev.ClusterEvent(ev.EventKind.NAMESPACE_UPDATED, "x", labels={"team": "b"}, seq=2))
    assert not n1._request.is_set()
    # a policy selecting only n1's pods asks n1, not n0 (n0 already has a request pending)
    pol = NetworkPolicy("x", "web", LabelSelector.of({"app": "web"}))
    n0._request.clear()
    for n in (n0, n1):
        n.deliver(ev.ClusterEvent(ev.EventKind.POLICY_ADDED, pol.key, policy=pol, seq=3))
    assert n1._request.is_set() and not n0._request.is_set()


def test_cache_record_claims_only_events_before_a_pending_sync():
    c = _small()
    n0 = FakeNode("n0", ev.view_of(c))
    new_db = Pod("x", "db2", "n0", {"app": "db"}, ip=ipaddress.IPv4Address("10.244.0.50"))
    n0.deliver(ev.ClusterEvent(ev.EventKind.POD_ADDED, new_db.key, pod=new_db, seq=5))
    n0.deliver(ev.ClusterEvent(ev.EventKind.NAMESPACE_UPDATED, "x", labels={}, seq=6))
    assert [s.through_seq for s in n0.timeline.syncs] == [4]


# -- ruleset -----------------------------------------------------------------------------------------
def test_label_100_is_kernel_bit_28_on_little_endian():
    mask = rs.generate_label_mask(100)
    assert mask[3] == 0x10 and sum(mask) == 0x10  # conntrack.go: byte 16-12-1, bit 4
    assert rs.kernel_label_bit(mask, "little") == 28
    assert rs.kernel_label_bit(mask, "big") == 4


def test_native_ruleset_follows_the_source():
    ips = [ipaddress.IPv4Address("10.244.0.7"), ipaddress.IPv6Address("fd00::7")]
    text = rs.render(ips, rs.NftOptions())
    lines = [ln.strip() for ln in text.splitlines()]
    assert lines[:3] == ["add table inet kube-network-policies", "delete table inet kube-network-policies",
                         "table inet kube-network-policies {"]
    assert "set podips-v4 { type ipv4_addr; elements = { 10.244.0.7 }; }" in lines
    assert "set podips-v6 { type ipv6_addr; elements = { fd00::7 }; }" in lines
    post = lines[lines.index("chain postrouting {") + 1:]
    assert post[0] == "type filter hook postrouting priority 95; policy accept;"
    assert post[1] == "meta l4proto udp udp dport 53 accept"  # --netfilter-bug-1766-fix default true
    assert "meta skuid 0 counter accept" in post
    q = "queue flags bypass to 100"
    i = post.index(f"meta nfproto ipv4 ip saddr @podips-v4 {q}")
    assert post[i - 1] == f"ct label {rs.kernel_label_bit(rs.generate_label_mask(100))} ct state established,related counter accept"
    assert post[i + 4].startswith("ct label set ")
    assert f"meta nfproto ipv4 ip saddr @podips-v4 ct state new {q}" in lines  # input: new only
    assert "type filter hook input priority 101; policy accept;" in lines
    assert "type filter hook prerouting priority -95; policy accept;" in lines
    closed = rs.render(ips, rs.NftOptions(fail_open=False, netfilter_bug_1766_fix=False))
    assert "queue to 100" in closed and "bypass" not in closed and "prerouting" not in closed


def test_compat_ruleset_marks_instead_of_queueing():
    opts = rs.NftOptions(datapath=rs.Datapath.COMPAT)
    text = rs.render([], opts)
    assert " queue " not in text and "prerouting" not in text and "udp dport 53" not in text
    assert "meta nfproto ipv4 ip daddr @podips-v4 meta mark set meta mark | 0x01000000 accept" in text
    assert "priority -151" in text and "priority -149" in text
    rules = rs.compat_iptables_rules(opts)
    assert [r[3] for r in rules] == ["POSTROUTING", "INPUT"]
    assert rules[0][-4:] == ["NFQUEUE", "--queue-num", "100", "--queue-bypass"]
    assert "--queue-bypass" not in rs.compat_iptables_rules(rs.NftOptions(fail_open=False, datapath=rs.Datapath.COMPAT))[0]


# -- nfqueue messages ----------------------------------------------------------------------------------
def test_verdict_message_layout():
    msg = nfqueue.verdict_message(100, 7, nfqueue.ACCEPT, mark=0x2000000, labels=rs.generate_label_mask(100))
    length, mtype, flags, _seq, _pid = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) and mtype == (3 << 8) | 1 and flags == 1
    assert struct.unpack_from("!H", msg, 18)[0] == 100  # res_id: the queue number, big-endian
    assert struct.unpack_from("=HH", msg, 20) == (12, nfqueue.NFQA_VERDICT_HDR)  # nlattr: len, type
    assert struct.unpack_from("!II", msg, 24) == (nfqueue.ACCEPT, 7)
    assert struct.unpack_from("!I", msg, 36)[0] == 0x2000000


def test_parse_queued_packet():
    payload = ipv4("10.0.0.1", "10.0.0.2", 6, tcp_syn(1, 2))
    body = (struct.pack("=BBH", 0, 0, 0) + nfqueue.attr(nfqueue.NFQA_PACKET_HDR, struct.pack("!IHB", 42, 0x0800, 4))
            + nfqueue.attr(nfqueue.NFQA_MARK, struct.pack("!I", 0x1000000)) + nfqueue.attr(nfqueue.NFQA_PAYLOAD, payload))
    msg = struct.pack("=IHHII", 16 + len(body), 3 << 8, 0, 0, 0) + body
    (pkt,) = nfqueue.parse_packets(msg)
    assert (pkt.packet_id, pkt.hook, pkt.mark, pkt.payload) == (42, 4, 0x1000000, payload)


# -- the seam --------------------------------------------------------------------------------------
def test_registry_and_validation():
    eng = registry.get_engine("kube-network-policies")
    eng.validate(EnforcementConfig(engine="kube-network-policies"))
    eng.validate(EnforcementConfig(engine="kube-network-policies", profile="v1.1.1", fail_open=False))
    for bad, field in ((dict(profile="v0.1"), "profile"), (dict(default_deny=True), "default_deny"),
                       (dict(reject_with="tcp-reset"), "reject_with")):
        with pytest.raises(ConfigError, match=field):
            eng.validate(EnforcementConfig(engine="kube-network-policies", **bad))


def test_fail_open_flag():
    import argparse

    from harness.engines import options

    p = argparse.ArgumentParser()
    options.add_arguments(p)
    assert options.from_args(p.parse_args(["--engine", "kube-network-policies"])).fail_open is True
    cfg = options.from_args(p.parse_args(["--engine", "kube-network-policies", "--no-fail-open"]))
    assert cfg.fail_open is False and cfg.describe()["fail_open"] is False
    assert "fail_open" not in options.from_args(p.parse_args([])).describe()  # kube-router: not its option


def test_engines_compared_section():
    from harness.report.engines_compared import compared_rows, compared_section

    def entry(config, engine, p50, errors):
        params = {"engine": engine} if engine else {}
        return {"scenario": "job-to-mysql", "config": config, "params": params,
                "summary": {"stats": {"n": 3, "missing": 0, "p50": p50, "p90": p50, "max": p50},
                            "failures": 3, "runs": 3, "first_errors": errors}}

    one = {"scenarios": [entry("none", None, 305.0, {"2003 ECONNREFUSED": 3})]}
    assert compared_section(one) == []  # one engine: nothing to compare
    both = {"scenarios": [*one["scenarios"], entry("kube-network-policies", "kube-network-policies", 302.0,
                                                    {"2003 ETIMEDOUT": 3})]}
    rows = compared_rows(both)
    assert [(r[1], r[2], r[8]) for r in rows] == [("kube-network-policies", "kube-network-policies", "2003 ETIMEDOUT 3"),
                                                  ("kube-router", "none", "2003 ECONNREFUSED 3")]
    assert compared_section(both)[0] == "## Engines compared"


def test_queue_bench_baseline():
    from harness.bench.queue import QueueRow, format_rows, to_baseline

    rows = [QueueRow("none", 0, 10, 18.0, 19.0, 20.0),
            QueueRow("kube-network-policies", 10, 10, 80.0, 100.0, 120.0, added_p50_us=81.0, verdict_cpu_us=80.0,
                     verdict_conn_per_s_core=12500.0, verdicts=10, datapath="compat")]
    b = to_baseline(rows, "r", 10)
    assert b.metrics["queue.kube-network-policies.p10.connect_p50_us"].values == [100.0]
    assert b.metrics["queue.kube-network-policies.p10.verdicts_per_connection"].values == [1.0]
    assert "queue.none.p0.connect_p50_us" in b.metrics and b.extra["rows"][1]["datapath"] == "compat"
    assert "kube-network-policies (compat)" in format_rows(rows)

"""The cached oracle against a naive, direct transcription of the NetworkPolicy rules, on seeded
random clusters (named ports, endPort, ipBlock with except, expressions, both directions)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from harness.model.cluster import Cluster, ContainerPort, Namespace, Node, Pod
from harness.model.policy import (
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    SelectorRequirement,
)
from harness.oracle import Oracle

APPS = ("web", "api", "db")
PORTS = ((80, "TCP"), (81, "TCP"), (53, "UDP"), (8080, "TCP"), (9000, "SCTP"))


def naive_allowed(c: Cluster, src: Pod, dst: Pod, port: int, proto: str) -> bool:
    if src.key == dst.key:
        return True

    def peer_ok(peer: PolicyPeer, ns: str, other: Pod) -> bool:
        if peer.ip_block:
            return peer.ip_block.contains(other.ip)
        ns_ok = (other.namespace == ns if peer.namespace_selector is None
                 else peer.namespace_selector.matches(c.namespace_labels(other.namespace)))
        return ns_ok and (peer.pod_selector is None or peer.pod_selector.matches(other.labels))

    def port_ok(pp: PolicyPort) -> bool:
        if pp.protocol != proto:
            return False
        if pp.port is None:
            return True
        if isinstance(pp.port, str):
            return dst.named_port(pp.port, proto) == port
        return pp.port <= port <= (pp.end_port or pp.port)

    def side(pod: Pod, other: Pod, types: str) -> bool:
        pols = [p for p in c.policies.values()
                if p.namespace == pod.namespace and p.pod_selector.matches(pod.labels) and types in p.policy_types]
        if not pols:
            return True
        for p in pols:
            for r in (p.ingress if types == "Ingress" else p.egress):
                if (not r.peers or any(peer_ok(x, p.namespace, other) for x in r.peers)) and \
                        (not r.ports or any(port_ok(x) for x in r.ports)):
                    return True
        return False

    return side(dst, src, "Ingress") and side(src, dst, "Egress")


def random_selector(rng: random.Random, keys: tuple[str, ...], values: tuple[str, ...]) -> LabelSelector:
    roll = rng.random()
    if roll < 0.25:
        return LabelSelector()
    if roll < 0.6:
        return LabelSelector.of({rng.choice(keys): rng.choice(values)})
    op = rng.choice(("In", "NotIn", "Exists", "DoesNotExist"))
    vals = tuple(rng.sample(values, 2)) if op in ("In", "NotIn") else ()
    return LabelSelector.of(None, [SelectorRequirement(rng.choice(keys), op, vals)])


def random_cluster(seed: int) -> Cluster:
    rng = random.Random(seed)
    c = Cluster()
    for i in range(3):
        c.nodes[f"n{i}"] = Node(f"n{i}", ipaddress.IPv4Address(f"172.18.0.{i + 2}"),
                                ipaddress.IPv4Network(f"10.244.{i}.0/24"))
    for ns in ("a", "b", "c", "d"):
        c.namespaces[ns] = Namespace(ns, {"team": rng.choice(("red", "blue"))})
    for i in range(40):
        ports = [ContainerPort(80, "TCP", "http"), ContainerPort(53, "UDP", "dns")]
        if rng.random() < 0.5:
            ports.append(ContainerPort(8080, "TCP", "alt"))
        elif rng.random() < 0.5:
            ports.append(ContainerPort(81, "TCP", "alt"))
        c.add_pod(Pod(rng.choice("abcd"), f"p{i}", f"n{i % 3}", {"app": rng.choice(APPS)}, ports=ports))
    pods = list(c.pods.values())
    made: list[PolicyRule] = []
    for i in range(25):
        def rule() -> PolicyRule:
            # Generators (and YAML anchors) share rule objects between policies of different
            # namespaces: a cache keyed on the rule alone would get podSelector peers wrong.
            if made and rng.random() < 0.3:
                return rng.choice(made)
            made.append(new_rule())
            return made[-1]

        def new_rule() -> PolicyRule:
            peers = []
            for _ in range(rng.choice((0, 1, 1, 2))):
                kind = rng.random()
                if kind < 0.3:
                    peers.append(PolicyPeer(pod_selector=random_selector(rng, ("app",), APPS)))
                elif kind < 0.6:
                    peers.append(PolicyPeer(namespace_selector=random_selector(rng, ("team",), ("red", "blue")),
                                            pod_selector=(random_selector(rng, ("app",), APPS)
                                                          if rng.random() < 0.5 else None)))
                else:
                    ip = rng.choice(pods).ip
                    cidr = ipaddress.IPv4Network(f"{ip}/{rng.choice((16, 24))}", strict=False)
                    exc = (ipaddress.IPv4Network(f"{rng.choice(pods).ip}/32"),)
                    exc = exc if exc[0].subnet_of(cidr) and rng.random() < 0.7 else ()
                    peers.append(PolicyPeer(ip_block=IPBlock(cidr, exc)))
            ports = []
            for _ in range(rng.choice((0, 1, 2))):
                ports.append(rng.choice((
                    PolicyPort("TCP", 80), PolicyPort("TCP", "alt"), PolicyPort("UDP", "dns"),
                    PolicyPort("TCP", 80, 8080), PolicyPort("UDP"), PolicyPort("SCTP", 9000), PolicyPort("TCP", "http"),
                )))
            return PolicyRule(tuple(peers), tuple(ports))

        types = rng.choice((("Ingress",), ("Egress",), ("Ingress", "Egress")))
        p = NetworkPolicy(rng.choice("abcd"), f"np{i}", random_selector(rng, ("app",), APPS), types,
                          tuple(rule() for _ in range(rng.choice((0, 1, 2)))),
                          tuple(rule() for _ in range(rng.choice((0, 1, 2)))))
        c.policies[p.key] = p
    return c


@pytest.mark.parametrize("seed", range(6))
def test_oracle_agrees_with_naive_reading(seed):
    c = random_cluster(seed)
    pods = list(c.pods.values())
    for port, proto in PORTS:
        o = Oracle(c)
        allowed = denied = 0
        for s in pods:
            for d in pods:
                v = o.verdict(s, d, port, proto)
                assert v.allowed == naive_allowed(c, s, d, port, proto), str(v)
                assert v.allowed == (v.ingress.allowed and v.egress.allowed)
                allowed += v.allowed
                denied += not v.allowed
        # the generator must produce both outcomes, or this test proves little
        assert allowed and denied

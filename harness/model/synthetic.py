"""Generated clusters for render benchmarks and scale tests (pure, seeded, deterministic).

``synthetic_cluster(100, 50, 1000)`` is the ``scale-100`` shape: 100 nodes, 5,000 pods, 1,000
policies. The label and selector mix is meant to look like real clusters: every pod has
``app``/``tier``/``team`` labels and named container ports; policies select by app or tier
(sometimes everything, sometimes an expression), and allow peers by pod selector, namespace
selector (+ pod selector) or ipBlock with except, on numeric, named, ranged, UDP and SCTP ports.
"""

from __future__ import annotations

import ipaddress
import random
import re

from harness.errors import ConfigError
from harness.model.cluster import Cluster, ContainerPort, Namespace, Node, NodeKind, Pod, PodKind
from harness.model.policy import (
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    SelectorRequirement,
)

TIERS = ("web", "api", "db", "cache")
TEAMS = ("red", "blue", "green", "gold")
APPS_PER_NAMESPACE = 25
POD_PORTS = (
    ContainerPort(8080, "TCP", "http"),
    ContainerPort(9090, "TCP", "metrics"),
    ContainerPort(53, "UDP", "dns"),
)


def synthetic_cluster(nodes: int, pods_per_node: int, policies: int, seed: int = 0, *,
                      namespaces: int = 20, real_nodes: int = 1) -> Cluster:
    """A cluster of ``nodes`` nodes (the first ``real_nodes`` real, the rest virtual), each with
    ``pods_per_node`` pods spread over ``namespaces`` namespaces, and ``policies`` policies."""
    if nodes > 250:
        raise ValueError("at most 250 nodes (one /24 of 10.244.0.0/16 per node)")
    rng = random.Random(seed)
    c = Cluster(name=f"synthetic-{nodes}x{pods_per_node}x{policies}")
    for i in range(namespaces):
        name = f"ns-{i:02d}"
        c.namespaces[name] = Namespace(name, {"team": TEAMS[i % len(TEAMS)], "env": "prod" if i % 3 else "dev"})
    ns_names = list(c.namespaces)
    counter = 0
    for n in range(nodes):
        node = Node(f"node-{n:03d}", ipaddress.IPv4Address(f"172.18.{n // 250}.{n % 250 + 2}"),
                    ipaddress.IPv4Network(f"10.244.{n}.0/24"),
                    NodeKind.REAL if n < real_nodes else NodeKind.VIRTUAL)
        c.nodes[node.name] = node
        for j in range(pods_per_node):
            ns = ns_names[counter % namespaces]
            app = rng.randrange(APPS_PER_NAMESPACE)
            labels = {"app": f"app-{app:02d}", "tier": TIERS[app % len(TIERS)], "team": c.namespaces[ns].labels["team"]}
            ports = list(POD_PORTS[: 1 + app % 3])
            # Direct address assignment: Cluster.allocate_ip scans all pods, too slow for 5,000.
            pod = Pod(ns, f"pod-{counter:05d}", node.name, labels, node.pod_cidr.network_address + 2 + j, ports,
                      PodKind.FULL if node.kind is NodeKind.REAL else PodKind.VIRTUAL)
            c.pods[pod.key] = pod
            counter += 1
    return add_synthetic_policies(c, policies, seed)


class _Vocabulary:
    """What a cluster offers to select on: label pairs per namespace, namespace label pairs,
    named ports. Sorted, so a seed gives the same policies for the same cluster."""

    def __init__(self, cluster: Cluster):
        pairs: dict[str, set[tuple[str, str]]] = {}
        named: set[tuple[str, str]] = set()
        for p in cluster.pods.values():
            pairs.setdefault(p.namespace, set()).update(p.labels.items())
            named.update((cp.name, cp.protocol) for cp in p.ports if cp.name)
        self.namespaces = sorted(pairs)
        self.pairs = {ns: sorted(v) for ns, v in pairs.items()}
        self.ns_pairs = sorted({kv for ns in self.namespaces for kv in cluster.namespace_labels(ns).items()})
        self.named = sorted(named)


def _selector(rng: random.Random, vocab: _Vocabulary, ns: str) -> LabelSelector:
    pairs = vocab.pairs[ns]
    r = rng.random()
    if r < 0.85:
        return LabelSelector.of(dict([rng.choice(pairs)]))
    if r < 0.95:
        return LabelSelector()
    key = rng.choice(pairs)[0]
    values = sorted({v for k, v in pairs if k == key})
    return LabelSelector.of(match_expressions=[
        SelectorRequirement(key, "In", tuple(rng.sample(values, min(2, len(values)))))])


def _peer(rng: random.Random, vocab: _Vocabulary, ns: str) -> PolicyPeer:
    r = rng.random()
    if r < 0.6:
        return PolicyPeer(pod_selector=LabelSelector.of(dict([rng.choice(vocab.pairs[ns])])))
    if r < 0.9:
        other = rng.choice(vocab.namespaces)
        return PolicyPeer(namespace_selector=LabelSelector.of(dict([rng.choice(vocab.ns_pairs)])),
                          pod_selector=LabelSelector.of(dict([rng.choice(vocab.pairs[other])])))
    octet = rng.randrange(256)
    return PolicyPeer(ip_block=IPBlock(ipaddress.IPv4Network(f"192.168.{octet}.0/24"),
                                       (ipaddress.IPv4Network(f"192.168.{octet}.128/25"),)))


def _ports(rng: random.Random, vocab: _Vocabulary) -> tuple[PolicyPort, ...]:
    r = rng.random()
    if r < 0.2:
        return ()
    if r < 0.5:
        return (PolicyPort("TCP", 80),)
    if r < 0.7 and vocab.named:
        name, proto = rng.choice(vocab.named)
        return (PolicyPort(proto, name),)
    if r < 0.8:
        return (PolicyPort("UDP", 53), PolicyPort("TCP", 53))
    if r < 0.92:
        return (PolicyPort("TCP", 8000, 8100),)
    return (PolicyPort("SCTP", 5000),)


def add_synthetic_policies(cluster: Cluster, count: int, seed: int = 0, prefix: str = "np") -> Cluster:
    """Add ``count`` generated policies to ``cluster`` (in place; returned for chaining).

    Selectors use the labels the cluster's pods and namespaces really carry, so any topology
    (e.g. ``scale-100``) gets policies that select something. Mix: 60% Ingress, 15% Egress, 25%
    both; 1-2 rules of 1-2 peers (pod selector, namespace + pod selector, ipBlock with except;
    5% empty = all) on numeric, named, ranged, UDP or SCTP ports (20% all ports)."""
    rng = random.Random(seed)
    vocab = _Vocabulary(cluster)
    if not vocab.namespaces:
        return cluster
    for k in range(count):
        ns = rng.choice(vocab.namespaces)
        r = rng.random()
        types = ("Ingress",) if r < 0.6 else ("Egress",) if r < 0.75 else ("Ingress", "Egress")

        def rules(ns: str = ns) -> tuple[PolicyRule, ...]:
            out = []
            for _ in range(rng.randint(1, 2)):
                peers = () if rng.random() < 0.05 else tuple(_peer(rng, vocab, ns) for _ in range(rng.randint(1, 2)))
                out.append(PolicyRule(peers, _ports(rng, vocab)))
            return tuple(out)

        pol = NetworkPolicy(ns, f"{prefix}-{k:04d}", _selector(rng, vocab, ns), types,
                            ingress=rules() if "Ingress" in types else (),
                            egress=rules() if "Egress" in types else ())
        cluster.policies[pol.key] = pol
    return cluster


def example_cluster() -> Cluster:
    """A small hand-checkable cluster (used by the golden tests and ``render example``).

    node-a (real): x/a (app=a, named port http=80/TCP), x/b (app=b), x/pending (no IP yet);
    node-b (virtual): y/c (app=c, team=blue namespace). Policies:
    - x/allow-http: pods app=a accept from namespaces team=blue on the named port ``http``;
    - x/egress-b: pods app=b may reach 0.0.0.0/0 except 10.244.0.0/16 on TCP 8000-8100 and
      pods app=a on SCTP 5000 (Egress only);
    - x/deny-all: all pods of x, Ingress, no rules.
    """
    c = Cluster(name="example")
    c.nodes["node-a"] = Node("node-a", ipaddress.IPv4Address("172.18.0.2"), ipaddress.IPv4Network("10.244.0.0/24"))
    c.nodes["node-b"] = Node("node-b", ipaddress.IPv4Address("172.18.0.3"), ipaddress.IPv4Network("10.244.1.0/24"),
                             NodeKind.VIRTUAL)
    c.namespaces["x"] = Namespace("x", {"team": "red"})
    c.namespaces["y"] = Namespace("y", {"team": "blue"})
    ip = ipaddress.IPv4Address
    c.pods["x/a"] = Pod("x", "a", "node-a", {"app": "a"}, ip("10.244.0.2"), [ContainerPort(80, "TCP", "http")])
    c.pods["x/b"] = Pod("x", "b", "node-a", {"app": "b"}, ip("10.244.0.3"))
    c.pods["x/pending"] = Pod("x", "pending", "node-a", {"app": "a"}, None)
    c.pods["y/c"] = Pod("y", "c", "node-b", {"app": "c"}, ip("10.244.1.2"), kind=PodKind.VIRTUAL)
    pols = [
        NetworkPolicy("x", "allow-http", LabelSelector.of({"app": "a"}), ("Ingress",), ingress=(
            PolicyRule((PolicyPeer(namespace_selector=LabelSelector.of({"team": "blue"})),),
                       (PolicyPort("TCP", "http"),)),)),
        NetworkPolicy("x", "egress-b", LabelSelector.of({"app": "b"}), ("Egress",), egress=(
            PolicyRule((PolicyPeer(ip_block=IPBlock(ipaddress.IPv4Network("0.0.0.0/0"),
                                                    (ipaddress.IPv4Network("10.244.0.0/16"),))),),
                       (PolicyPort("TCP", 8000, 8100),)),
            PolicyRule((PolicyPeer(pod_selector=LabelSelector.of({"app": "a"})),), (PolicyPort("SCTP", 5000),)),
        )),
        NetworkPolicy("x", "deny-all", LabelSelector(), ("Ingress",)),
    ]
    for p in pols:
        c.policies[p.key] = p
    return c


_SYNTHETIC = re.compile(r"^synthetic:(\d+)x(\d+)x(\d+)$")


def load_cluster(spec: str, manifests: list[str] | None = None) -> Cluster:
    """A cluster from a CLI spec: ``example`` (the built-in example), ``synthetic:NxPxQ``
    (N nodes, P pods per node, Q policies) or a topology (shipped name or path)."""
    if spec == "example":
        return example_cluster()
    m = _SYNTHETIC.match(spec)
    if m:
        nodes, pods, policies = (int(g) for g in m.groups())
        if not 1 <= nodes <= 250:
            raise ConfigError(spec, None, "synthetic clusters have 1 to 250 nodes")
        return synthetic_cluster(nodes, pods, policies)
    from harness.model.topology import load_topology  # imported late: keeps `render example` light

    return load_topology(spec, manifests or ())

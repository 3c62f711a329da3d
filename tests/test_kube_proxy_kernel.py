"""kube-proxy iptables mode on the real kernel: a pod reaches a ClusterIP on the same and the
other node, a Service without endpoints is refused by kube-proxy's REJECT, an endpoint change
travels the event path, and the root namespace stays untouched."""

from __future__ import annotations

import ipaddress
import time

import pytest

from harness.cluster.kube_proxy import proxy_view, start_on_lab, stop_all
from harness.kernel import netns
from harness.lab.rootns import root_namespace_snapshot
from harness.model.cluster import Cluster, ContainerPort, Namespace, Node, Pod, PodKind
from harness.model.service import Service, ServiceDecl, ServicePort, add_services

pytestmark = pytest.mark.kernel
IP = ipaddress.IPv4Address


def service_cluster() -> Cluster:
    c = Cluster(name="svc-test")
    for i, n in enumerate(["node-a", "node-b"]):
        c.nodes[n] = Node(n, IP(f"172.18.0.{i + 2}"), ipaddress.IPv4Network(f"10.244.{i}.0/24"))
    c.namespaces["x"] = Namespace("x")
    web = [ContainerPort(80, "TCP", "http")]
    c.add_pod(Pod("x", "client", "node-a"))
    c.add_pod(Pod("x", "light-client", "node-a", kind=PodKind.LIGHT))
    c.add_pod(Pod("x", "web-a", "node-a", {"app": "web", "at": "a"}, ports=web))
    c.add_pod(Pod("x", "web-b", "node-b", {"app": "web", "at": "b", "udp": "yes"},
                  ports=[*web, ContainerPort(80, "UDP", "echo")]))
    c.add_pod(Pod("x", "light-web", "node-a", {"at": "light"}, ports=web, kind=PodKind.LIGHT))
    svcs = [Service("x", "web-a", [ServicePort(8080, "TCP", "", "http")], {"at": "a"}),
            Service("x", "web-b", [ServicePort(8080, "TCP", "", 80)], {"at": "b"}),
            Service("x", "empty", [ServicePort(80)], {"app": "nothing"}),
            Service("x", "light", [ServicePort(8080, "TCP", "", 80)], {"at": "light"}),
            Service("x", "udp", [ServicePort(5353, "UDP", "", 80)], {"udp": "yes"})]
    add_services(c, [ServiceDecl(s, None, s.name) for s in svcs])
    return c


def cip(lab, name: str) -> str:
    return str(lab.cluster.services[f"x/{name}"].cluster_ip)


def counter(lab, node: str, backend: str, table: str, chain: str, needle: str) -> int:
    """Packets counted by the rule of ``chain`` whose line contains ``needle``."""
    tool = "iptables-nft" if backend == "nft" else "iptables-legacy"
    out = lab.exec(node, [tool, "-w", "-t", table, "-L", chain, "-v", "-x", "-n"]).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if needle in line)


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_cluster_ip_same_node_other_node_and_reject_without_endpoints(lab_factory, backend):
    before = root_namespace_snapshot()
    lab = lab_factory(service_cluster())
    proxies = start_on_lab(lab, backend=backend)
    try:
        # A full pod (default route via kube-bridge) reaches a ClusterIP whose endpoint is on its
        # node and one whose endpoint is on the other node; so does a light pod.
        for client in ("x/client", "x/light-client"):
            assert lab.connect(client, cip(lab, "web-a"), 8080) == "connected", client
            assert lab.connect(client, cip(lab, "web-b"), 8080) == "connected", client
        # A light endpoint is reached from a full pod; from a light pod of the same host namespace
        # the DNATed SYN returns into the namespace it left with a local source address and dies:
        # such pairs are excluded (the matrix's n/a-same-light-host).
        assert lab.connect("x/client", cip(lab, "light"), 8080) == "connected"
        assert lab.connect("x/light-client", cip(lab, "light"), 8080, timeout=0.3) == "timeout"
        # The DNAT really happened: node-a's conntrack holds the ClusterIP flow answered by web-b.
        ct = lab.exec("node-a", ["conntrack", "-L", "-d", cip(lab, "web-b")]).stdout
        assert f"src={lab.cluster.pods['x/web-b'].ip}" in ct and "dport=80" in ct, ct
        # No endpoints: kube-proxy's filter REJECT answers the SYN -> refused (ICMP port unreachable).
        assert counter(lab, "node-a", backend, "filter", "KUBE-SERVICES", "has no endpoints") == 0
        assert lab.connect("x/client", cip(lab, "empty"), 80) == "refused"
        assert counter(lab, "node-a", backend, "filter", "KUBE-SERVICES", "has no endpoints") == 1
        # A port the Service does not define is not captured: it is routed toward the underlay's
        # unheld .1 and dies there (nothing leaves the lab).
        assert lab.connect("x/client", cip(lab, "web-a"), 9999, timeout=0.3) == "timeout"
        assert lab.connect("x/client", cip(lab, "udp"), 5353, "UDP") == "connected"
        records = [r for p in proxies.values() for r in p.records]
        assert all(r.full for r in records) and all(r.phases["iptables_restore"] > 0 for r in records)
    finally:
        stop_all(proxies)
        lab.down()
    assert root_namespace_snapshot() == before


def test_endpoint_change_travels_the_event_path_and_partial_sync(lab_factory):
    lab = lab_factory(service_cluster())
    delay_ns = 50_000_000
    proxies = start_on_lab(lab, delivery="fixed:0.05")  # harness.controller.delivery spec
    try:
        assert lab.connect("x/client", cip(lab, "web-b"), 8080) == "connected"
        lab.cluster.pods["x/web-b"].ready = False  # readiness lost: the EndpointSlice lists it not ready
        emitted = time.time_ns()
        view = proxy_view(lab.cluster)
        for p in proxies.values():
            p.deliver(view, emitted)
        rec = proxies["node-a"].wait_synced(emitted)
        assert rec.start_ns - emitted >= delay_ns  # the sync waited for the delivery delay
        # web-a and light unchanged (left out); web-b has no endpoints now: no nat chains, a filter REJECT
        assert not rec.full and rec.services_skipped == 2 and rec.services_written == 0
        assert rec.stale_chains == 4  # the KUBE-SVC and KUBE-SEP chains of web-b's two services deleted
        assert lab.connect("x/client", cip(lab, "web-b"), 8080) == "refused"
        assert lab.connect("x/client", cip(lab, "web-a"), 8080) == "connected"
        nat = netns.run(lab.node_netns("node-a"), ["iptables-nft-save", "-t", "nat"]).stdout
        assert "KUBE-SEP-" in nat and str(lab.cluster.pods["x/web-b"].ip) not in nat
    finally:
        stop_all(proxies)


def test_service_path_bench_small():
    from harness.bench.service_path import run_service_bench

    r = run_service_bench(pods=100, services=10)
    assert r.endpoints == 100 and r.full_sync_ms > 0 and r.partial_sync_ms > 0
    # a sanity bound only (it checks the bench measures, not the target): at 100 pods the fixed
    # per-sync cost dominates and under load it reached 66 ms; the <= 5 ms target at 1,000 pods
    # is checked by `bench lab --services` and reported in the README
    assert r.per_pod_ms < 250


def test_removed_udp_endpoint_loses_its_conntrack_entries(lab_factory):
    lab = lab_factory(service_cluster())
    proxies = start_on_lab(lab, delivery=0.0)
    web_b = str(lab.cluster.pods["x/web-b"].ip)
    try:
        assert lab.connect("x/client", cip(lab, "udp"), 5353, "UDP") == "connected"
        listed = ["conntrack", "-L", "-p", "udp", "--orig-dst", cip(lab, "udp"), "--dst-nat", web_b]
        assert web_b in lab.exec("node-a", listed).stdout  # the flow's entry, NATed to web-b
        lab.cluster.pods["x/web-b"].ready = False
        emitted = time.time_ns()
        view = proxy_view(lab.cluster)
        for p in proxies.values():
            p.deliver(view, emitted)
        rec = proxies["node-a"].wait_synced(emitted)
        # v1.28.0 conntrack/cleanup.go deleteStaleEndpointConntrackEntries: -D --orig-dst --dst-nat
        assert rec.conntrack_deleted == 1 and rec.phases["conntrack_cleanup"] > 0
        assert web_b not in lab.exec("node-a", listed).stdout
    finally:
        stop_all(proxies)


# kube-router v1.3+ ends KUBE-ROUTER-FORWARD by accepting what its pod chains passed (mark
# 0x20000: the explicit ACCEPT, v2.10 KUBE-NWPLCY-TAIL), and its jump sits first in FORWARD
# (v1.3.2 network_policy_controller.go ensureTopLevelChains keeps it at position 1; the order
# kube-router #1453 reports): a
# pod's SYN to a ClusterIP without endpoints is accepted there and never meets kube-proxy's
# REJECT further down; v1.2 has no such ACCEPT, so the REJECT answers.
NO_ENDPOINTS = {"v1.2.1": ("refused", 1), "v1.3.2": ("timeout", 0), "v2.10": ("timeout", 0)}


@pytest.mark.parametrize("profile", list(NO_ENDPOINTS))
def test_kube_router_full_syncs_keep_kube_proxys_rules(lab_factory, profile):
    """kube-router rewrites the whole filter table (iptables-restore without --noflush) but keeps
    every chain and rule that is not its own: kube-proxy's REJECT, KUBE-FORWARD and jumps survive
    kube-router syncs made after kube-proxy's, and the policy applies to the DNATed packets."""
    import yaml

    from harness.engines import registry
    from harness.engines.config import EnforcementConfig
    from harness.model.manifests import apply_manifest_documents

    cluster = service_cluster()
    lab = lab_factory(cluster)
    proxies = start_on_lab(lab)
    try:
        enforcement = EnforcementConfig(profile=profile)
        engine = registry.get_engine(enforcement.engine)
        nodes = [engine.node(n.name, lab.node_netns(n.name), enforcement) for n in cluster.real_nodes()]
        for ne in nodes:
            ne.program(cluster, sync_version=time.time_ns(), full=True)
        assert lab.connect("x/client", cip(lab, "web-b"), 8080) == "connected"
        saved = lab.exec("node-a", ["iptables-nft-save", "-t", "filter"]).stdout
        assert "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD" in saved
        assert "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP" in saved
        assert "x/empty has no endpoints" in saved  # kube-proxy's REJECT is still there ...
        outcome, rejected = NO_ENDPOINTS[profile]
        assert lab.connect("x/client", cip(lab, "empty"), 80) == outcome  # ... but reached only under v1.2
        assert counter(lab, "node-a", "nft", "filter", "KUBE-SERVICES", "has no endpoints") == rejected
        # a policy isolating web-b (ingress from nothing): kube-router refuses the DNATed SYN on node-b
        apply_manifest_documents(list(yaml.safe_load_all(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\n"
            "spec: {podSelector: {matchLabels: {at: b}}, policyTypes: [Ingress]}\n")), cluster, "deny.yaml")
        for ne in nodes:
            ne.program(cluster, sync_version=time.time_ns(), full=True)
        assert lab.connect("x/client", cip(lab, "web-b"), 8080) == "refused"
        assert lab.connect("x/client", cip(lab, "web-a"), 8080) == "connected"
    finally:
        stop_all(proxies)

"""The cost of realizing the Service path (``netpol-harness bench lab --services N``): EndpointSlice
derivation from the model, kube-proxy's render, and its apply on every real node, per pod.

One lab of ``nodes`` real nodes with ``pods`` light pods (the proxy's rules do not depend on how
pods are realized), ``services`` ClusterIP Services each selecting ``pods / services`` pods by
label, so every pod is an endpoint of exactly one Service. Timed: the derivation (``proxy_view``:
EndpointSlices + ready endpoints per service port), the render, the first (full) sync on every
node and a partial sync on every node after one pod lost readiness.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass

from harness.cluster.kube_proxy.proxy import KubeProxyNode
from harness.cluster.kube_proxy.render import proxy_view, render
from harness.model.cluster import Cluster, ContainerPort, Namespace, Node, Pod, PodKind
from harness.model.service import Service, ServiceDecl, ServicePort, add_services


def service_bench_cluster(pods: int, services: int, nodes: int = 2) -> Cluster:
    """``nodes`` real nodes, ``pods`` light pods round-robin, ``services`` Services over them."""
    import ipaddress

    c = Cluster(name=f"svc-bench-{pods}p-{services}s", cluster_cidr=ipaddress.IPv4Network("10.0.0.0/14"),
                service_cidr=ipaddress.IPv4Network("10.96.0.0/12"))
    per_node = pods // max(nodes, 1) + 2
    prefix = min(24, 32 - max(per_node - 1, 1).bit_length())
    subnets = c.cluster_cidr.subnets(new_prefix=prefix)
    hosts = {}
    for i in range(nodes):
        name = f"node-{i}"
        c.nodes[name] = Node(name, ipaddress.IPv4Address("172.18.0.2") + i, next(subnets))
        hosts[name] = c.nodes[name].pod_cidr.hosts()
        next(hosts[name])  # the gateway
    c.namespaces["bench"] = Namespace("bench")
    for j in range(pods):
        node = f"node-{j % nodes}"
        p = Pod("bench", f"p-{j}", node, {"svc": f"s{j % services}"}, ip=next(hosts[node]),
                ports=[ContainerPort(8080, "TCP", "http")], kind=PodKind.LIGHT)
        c.pods[p.key] = p
    add_services(c, [ServiceDecl(Service("bench", f"s{i}", [ServicePort(80, "TCP", "http", "http")],
                                         {"svc": f"s{i}"}), None, f"s{i}") for i in range(services)])
    return c


@dataclass
class ServiceBenchResult:
    kernel: str
    backend: str
    nodes: int
    pods: int
    services: int
    endpoints: int
    derive_ms: float  # EndpointSlices + ready endpoints of every service port (proxy_view)
    render_ms: float  # kube-proxy's restore text for one node
    full_sync_ms: float  # first sync, summed over nodes (jump rules + save + restore)
    partial_sync_ms: float  # after one endpoint change, summed over nodes
    restore_lines: int

    @property
    def per_pod_ms(self) -> float:
        """(derive + render per node + full sync on every node) / pods: the Service path's cost per pod."""
        return (self.derive_ms + self.render_ms * self.nodes + self.full_sync_ms) / max(self.pods, 1)


def run_service_bench(pods: int = 1000, services: int = 100, nodes: int = 2,
                      backend: str = "nft") -> ServiceBenchResult:
    """Build the lab, time derivation, render and kube-proxy's syncs, tear everything down."""
    from harness.lab.lab import Lab

    c = service_bench_cluster(pods, services, nodes)
    t0 = time.perf_counter()
    view = proxy_view(c)
    derive_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    text = render(view).restore_text()
    render_ms = (time.perf_counter() - t0) * 1e3
    with Lab(c, servers=False) as lab:
        proxies = [KubeProxyNode(n.name, lab.node_netns(n.name), backend=backend) for n in c.real_nodes()]
        full = sum(p.sync(view).total_ns for p in proxies) / 1e6
        c.pods["bench/p-0"].ready = False
        view2 = proxy_view(c)
        partial = sum(p.sync(view2).total_ns for p in proxies) / 1e6
    return ServiceBenchResult(platform.release(), backend, nodes, pods, services, view.total_endpoints, derive_ms,
                              render_ms, full, partial, text.count("\n"))

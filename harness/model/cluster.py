"""The cluster model: pure data, no kernel.

``Cluster`` holds nodes, namespaces, pods and network policies. Loading and validation live in
``harness.model.topology`` (topology YAML) and ``harness.model.manifests`` (Kubernetes YAML).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from harness.errors import ConfigError
from harness.model import host_local

if TYPE_CHECKING:
    from harness.model.policy import NetworkPolicy
    from harness.model.service import Service

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")


class NodeKind(StrEnum):
    REAL = "real"  # realized in the kernel: a node namespace with kube-bridge
    VIRTUAL = "virtual"  # model only: its pod CIDR shows up in routes and its pods in ipsets


class PodKind(StrEnum):
    FULL = "full"  # own namespace and veth, like a CNI-wired pod
    LIGHT = "light"  # one address in a shared per-node namespace: cheap, for scale
    VIRTUAL = "virtual"  # on a virtual node: model only


@dataclass(frozen=True)
class ContainerPort:
    """A port a pod serves (``spec.containers[].ports[]``); ``name`` makes it usable as a named port."""

    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass
class Node:
    name: str
    node_ip: ipaddress.IPv4Address
    pod_cidr: ipaddress.IPv4Network
    kind: NodeKind = NodeKind.REAL
    # dual-stack only (harness.model.dualstack): the node's IPv6 underlay address and pod CIDR
    node_ip6: ipaddress.IPv6Address | None = None
    pod_cidr6: ipaddress.IPv6Network | None = None

    @property
    def gateway_ip(self) -> ipaddress.IPv4Address:
        """The first address of the pod CIDR, held by kube-bridge on a real node."""
        return self.pod_cidr.network_address + 1

    @property
    def gateway_ip6(self) -> ipaddress.IPv6Address | None:
        """The first address of the IPv6 pod CIDR (dual-stack), also held by kube-bridge."""
        return self.pod_cidr6.network_address + 1 if self.pod_cidr6 is not None else None

    @property
    def is_real(self) -> bool:
        return self.kind is NodeKind.REAL


@dataclass
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Kubernetes sets this label on every namespace (since 1.21); policies select on it.
        self.labels[NAMESPACE_NAME_LABEL] = self.name


@dataclass
class Pod:
    namespace: str
    name: str
    node: str
    labels: dict[str, str] = field(default_factory=dict)
    ip: ipaddress.IPv4Address | None = None
    ports: list[ContainerPort] = field(default_factory=list)
    kind: PodKind = PodKind.FULL
    ready: bool = True  # the pod's Ready condition: EndpointSlices list only ready pods as ready
    # status.phase (Pending, Running, Succeeded, Failed) and spec.hostNetwork: policy controllers
    # ignore finished and host-network pods (kube-router isNetPolActionable)
    phase: str = "Running"
    host_network: bool = False
    # status.podIPs[1] of a dual-stack cluster (harness.model.dualstack.pod_ipv6); None when IPv4-only
    ip6: ipaddress.IPv6Address | None = None

    @property
    def key(self) -> str:
        """``namespace/name``, the pod's unique key everywhere in the harness."""
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: str) -> int | None:
        """The port number a named port resolves to on this pod, or None."""
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


@dataclass
class Cluster:
    """Nodes, namespaces, pods, policies and services, all keyed by name (the namespaced ones by
    ``ns/name``)."""

    name: str = "cluster"
    underlay_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("172.18.0.0/16")
    cluster_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.244.0.0/16")
    service_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.96.0.0/12")  # kubeadm's default
    nodes: dict[str, Node] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    policies: dict[str, NetworkPolicy] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)  # harness.model.service
    source: str | None = None  # the file it was loaded from, for error messages
    # node -> the last pod IP reserved on it (host-local's last_reserved_ip): where allocate_ip
    # goes on round-robin; bookkeeping of the allocator, not part of the cluster's identity
    last_reserved: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = field(
        default_factory=dict, compare=False, repr=False)
    # ("IPv4",) or ("IPv4", "IPv6") (topology ``ip_families``; harness.model.dualstack)
    ip_families: tuple[str, ...] = ("IPv4",)
    cluster_cidr6: ipaddress.IPv6Network | None = None
    underlay_cidr6: ipaddress.IPv6Network | None = None
    service_cidr6: ipaddress.IPv6Network | None = None

    @property
    def dual_stack(self) -> bool:
        """True when pods get an IPv6 address next to their IPv4 one."""
        return "IPv6" in self.ip_families

    # -- queries -------------------------------------------------------------------------------
    def real_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_real]

    def pods_on(self, node: str) -> list[Pod]:
        return [p for p in self.pods.values() if p.node == node]

    def pod_by_ip(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> Pod | None:
        """The pod holding ``ip`` (either family), or None."""
        addr = ipaddress.ip_address(ip)
        for p in self.pods.values():
            if p.ip == addr or (p.ip6 is not None and p.ip6 == addr):
                return p
        return None

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        ns = self.namespaces.get(namespace)
        return ns.labels if ns else {NAMESPACE_NAME_LABEL: namespace}

    # -- changes (used at run time, like API server events) -----------------------------------
    def allocate_ip(self, node: str) -> ipaddress.IPv4Address:
        """Reserve and return the node's next pod IP as host-local IPAM hands it out: the first
        free address after the last one reserved on the node, round-robin over the pod CIDR
        (``harness.model.host_local``), so a deleted pod's IP is not given again until the rest
        of the range was used. Deterministic."""
        n = self.nodes[node]
        used = {p.ip for p in self.pods.values() if p.node == node and p.ip is not None}
        ip = host_local.round_robin(n.pod_cidr, n.gateway_ip, used, self.last_reserved.get(node))
        if ip is None:
            raise ConfigError(self.source, f"nodes.{node}.pod_cidr", f"{n.pod_cidr} has no free address left")
        self.last_reserved[node] = ip
        return ip  # type: ignore[return-value]  # IPv4 pod CIDRs give IPv4 addresses

    def add_pod(self, pod: Pod) -> Pod:
        """Add a pod (allocating its IP if it has none) and return it."""
        if pod.key in self.pods:
            raise ConfigError(self.source, f"pods.{pod.key}", "duplicate pod")
        if pod.node not in self.nodes:
            raise ConfigError(self.source, f"pods.{pod.key}.node", f"unknown node {pod.node!r}")
        if pod.namespace not in self.namespaces:
            self.namespaces[pod.namespace] = Namespace(pod.namespace)
        if pod.ip is None:
            pod.ip = self.allocate_ip(pod.node)
        else:  # a given IP is a reservation too (host-local's Reserve of a requested IP)
            self.last_reserved[pod.node] = pod.ip
        if self.dual_stack and pod.ip6 is None:
            from harness.model.dualstack import pod_ipv6  # the v6 plan lives with its reader

            pod.ip6 = pod_ipv6(self.nodes[pod.node], pod.ip)
        if not self.nodes[pod.node].is_real:
            pod.kind = PodKind.VIRTUAL
        self.pods[pod.key] = pod
        return pod

    def remove_pod(self, key: str) -> Pod:
        return self.pods.pop(key)

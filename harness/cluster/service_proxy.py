"""The seam for service proxies: what a node runs to turn ClusterIPs into pod addresses.

A service proxy is handed in (never imported by name outside its package), like an engine:
``proxy.node(node, netns_name, backend=...) -> ServiceProxyNode``; the node object is synced with
a pure view of the cluster's services and returns a record with timed phases. kube-proxy's
iptables mode (``harness.cluster.kube_proxy``) implements it; kube-router's IPVS proxy can too.
Kept small on purpose: a view type of the proxy's own choosing (``view(cluster)``), ``sync`` for
one synchronous sync, ``start``/``deliver``/``stop`` for the event path with its own delays.
"""

from __future__ import annotations

from typing import Any, Protocol

from harness.model.cluster import Cluster


class ServiceProxySync(Protocol):
    """One sync: CLOCK_REALTIME ns start/end and phases (name -> ns)."""

    node: str
    start_ns: int
    end_ns: int
    phases: dict[str, int]

    def as_dict(self) -> dict[str, Any]: ...


class ServiceProxyNode(Protocol):
    """A service proxy on one real node."""

    def sync(self, view: Any) -> ServiceProxySync: ...

    def start(self, view: Any) -> ServiceProxySync: ...

    def deliver(self, view: Any, emitted_ns: int | None = None) -> int: ...

    def stop(self, timeout: float = 10.0) -> None: ...


class ServiceProxy(Protocol):
    """A kind of service proxy: makes node objects and the view they sync from."""

    name: str

    def view(self, cluster: Cluster) -> Any: ...

    def node(self, node: str, netns_name: str, **options: Any) -> ServiceProxyNode: ...

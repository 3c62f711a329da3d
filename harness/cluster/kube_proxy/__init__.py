"""kube-proxy in iptables mode per real node (kubernetes v1.28.0 pkg/proxy/iptables): ``render``
(pure: the filter + nat content syncProxyRules writes), ``apply`` (the iptables calls in a node's
namespace, nft or legacy), ``proxy`` (one node's syncs and its event path with delivery delay and
the BoundedFrequencyRunner). ``KUBE_PROXY`` implements ``harness.cluster.service_proxy.ServiceProxy``.

Its state is the node namespace's nat and filter tables only: the lab's teardown and ``gc``
delete the namespace and with it every chain and conntrack entry kube-proxy made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.cluster.kube_proxy.proxy import KubeProxyNode, ProxySync
from harness.cluster.kube_proxy.render import DEFAULT_CONFIG, KubeProxyConfig, ProxyView, proxy_view, render
from harness.model.cluster import Cluster


class KubeProxy:
    """The ServiceProxy for kube-proxy's iptables mode."""

    name = "kube-proxy-iptables"

    def __init__(self, config: KubeProxyConfig = DEFAULT_CONFIG):
        self.config = config

    def view(self, cluster: Cluster) -> ProxyView:
        return proxy_view(cluster)

    def node(self, node: str, netns_name: str, *, backend: str = "nft",
             delay_ns: Callable[[], int] | None = None, cluster: Cluster | None = None,
             **options: Any) -> KubeProxyNode:
        """kube-proxy on ``node``; with ``cluster``, its service CIDR is routed via the underlay's
        ``.1`` (see NodeIptables.route_service_cidr)."""
        if cluster is not None:
            gateway = cluster.underlay_cidr.network_address + 1
            # the underlay bridge's MAC as harness.lab.lab makes it: 0a:59 + the .1 address
            mac = ":".join(f"{b:02x}" for b in b"\x0a\x59" + gateway.packed)
            options.setdefault("service_route", (str(cluster.service_cidr), str(gateway), mac))
        return KubeProxyNode(node, netns_name, backend=backend, config=self.config, delay_ns=delay_ns, **options)


def start_on_lab(lab: Any, *, backend: str = "nft", proxy: KubeProxy | None = None,
                 delay_ns: Callable[[], int] | None = None, delivery: str | float | None = None,
                 seed: int = 0) -> dict[str, KubeProxyNode]:
    """kube-proxy started on every real node of an up ``lab`` (initial full sync done);
    stop them with ``stop_all``. An event reaches a node after ``delay_ns()`` or, with
    ``delivery``, a delay drawn per node from that model (``harness.controller.delivery``
    specs: ``0.05``, ``lognormal:0.08,0.5`` ..., seeded with ``(seed, node)``). The rules live in
    the node namespaces: ``lab.down()`` and ``gc`` remove them with the namespaces."""
    from harness.controller.delivery import parse_delay

    proxy = proxy or KUBE_PROXY
    view = proxy.view(lab.cluster)
    model = parse_delay(delivery) if delivery is not None else None
    nodes: dict[str, KubeProxyNode] = {}
    try:
        for n in lab.cluster.real_nodes():
            delay = model.sampler(n.name, seed).next_ns if model is not None else delay_ns
            node = proxy.node(n.name, lab.node_netns(n.name), backend=backend, delay_ns=delay, cluster=lab.cluster)
            nodes[n.name] = node
            node.start(view)
    except BaseException:
        stop_all(nodes)
        raise
    return nodes


def stop_all(nodes: dict[str, KubeProxyNode]) -> None:
    """Stop every node's event thread (the rules stay until the namespaces go)."""
    for node in nodes.values():
        node.stop()


KUBE_PROXY = KubeProxy()

__all__ = ["KUBE_PROXY", "KubeProxy", "start_on_lab", "stop_all", "KubeProxyConfig", "KubeProxyNode", "ProxySync", "ProxyView",
           "proxy_view", "render"]

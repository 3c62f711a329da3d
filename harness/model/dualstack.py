"""Dual-stack address plan: the IPv6 half of a topology, and a cluster seen in one IP family.

A topology opts in with ``ip_families: [IPv4, IPv6]`` (Kubernetes' ``spec.ipFamilies`` words;
IPv4 stays the primary family, as in kubeadm's dual-stack examples). Then::

    cluster_cidr_v6: fd00:10:244::/56   # pod IPv6 addresses (default)
    node_cidr_mask_size_v6: 64          # each node's IPv6 pod CIDR (kube-controller-manager's default)
    underlay_cidr_v6: fd00:172:18::/64  # node IPv6 addresses (default)
    service_cidr_v6: fd00:10:96::/112   # IPv6 ClusterIPs (kube-router's INPUT whitelist; default)

Addresses are derived from the IPv4 plan, deterministically: a node's IPv6 address has the host
offset of its IPv4 one within the underlay (``172.18.0.3`` -> ``fd00:172:18::3``); node pod
CIDRs are the lowest free ``/node_cidr_mask_size_v6`` blocks of ``cluster_cidr_v6`` in node order;
a pod's IPv6 address has the host offset of its IPv4 address in its node's pod CIDR
(``10.244.1.7`` on a node with ``fd00:10:244:1::/64`` -> ``fd00:10:244:1::7``). Assumption (not
Kubernetes): host-local IPAM allocates the two families independently; mirroring offsets keeps
the two addresses of a pod recognisable and costs no second allocator.

The defaults lie in ``fd00::/8``, which kube-router's ``::/0`` ipBlock expansion covers
(v2.10.0:pkg/controllers/netpol/policy.go evalIPBlockPeer: ``2000::/3`` + ``fd00::/8``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from harness.errors import ConfigError
from harness.model.cluster import Cluster, Node

IPV4, IPV6 = "IPv4", "IPv6"
FAMILIES = (IPV4, IPV6)
DEFAULT_CLUSTER_CIDR6 = "fd00:10:244::/56"
DEFAULT_UNDERLAY_CIDR6 = "fd00:172:18::/64"
DEFAULT_SERVICE_CIDR6 = "fd00:10:96::/112"  # kubeadm's dual-stack example range
DEFAULT_NODE_CIDR_MASK_SIZE6 = 64
MAX_NODE_CIDR_MASK_SIZE6 = 126
V6_KEYS = ("cluster_cidr_v6", "underlay_cidr_v6", "service_cidr_v6", "node_cidr_mask_size_v6")


def read_ip_families(f: Any, cluster: Cluster, mask4: int) -> int | None:
    """Read ``ip_families`` and the ``*_v6`` keys of a topology mapping (a ``Fields``) into
    ``cluster``; the IPv6 node mask, or None for an IPv4-only topology. Errors name the field."""
    raw = f.opt("ip_families", list, [IPV4])
    field = f.field("ip_families")
    if raw not in ([IPV4], [IPV4, IPV6]):
        raise ConfigError(f.source, field, f"must be [IPv4] or [IPv4, IPv6] (IPv4 is the primary family), "
                          f"got {raw!r}")
    if raw == [IPV4]:
        present = [k for k in V6_KEYS if f.has(k)]
        if present:
            raise f.error(present[0], "needs ip_families: [IPv4, IPv6]")
        return None
    cluster.ip_families = (IPV4, IPV6)
    cluster.cluster_cidr6 = _network6(f, "cluster_cidr_v6", DEFAULT_CLUSTER_CIDR6)
    cluster.underlay_cidr6 = _network6(f, "underlay_cidr_v6", DEFAULT_UNDERLAY_CIDR6)
    cluster.service_cidr6 = _network6(f, "service_cidr_v6", DEFAULT_SERVICE_CIDR6)
    named = {"cluster_cidr_v6": cluster.cluster_cidr6, "underlay_cidr_v6": cluster.underlay_cidr6,
             "service_cidr_v6": cluster.service_cidr6}
    keys = list(named)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if named[a].overlaps(named[b]):
                raise f.error(b, f"{named[b]} overlaps {a} ({named[a]})")
    host_bits4 = 32 - cluster.underlay_cidr.prefixlen
    if 128 - cluster.underlay_cidr6.prefixlen < host_bits4:
        raise f.error("underlay_cidr_v6", f"{cluster.underlay_cidr6} has fewer host addresses than "
                      f"underlay_cidr ({cluster.underlay_cidr}): node addresses are mirrored")
    mask6 = f.opt("node_cidr_mask_size_v6", int, DEFAULT_NODE_CIDR_MASK_SIZE6)
    top = min(MAX_NODE_CIDR_MASK_SIZE6, 128 - (32 - mask4))
    if not cluster.cluster_cidr6.prefixlen <= mask6 <= top:
        raise f.error("node_cidr_mask_size_v6", f"{mask6} must be between the cluster_cidr_v6 prefix "
                      f"({cluster.cluster_cidr6.prefixlen}) and {top} (room for every IPv4 pod offset of a "
                      f"/{mask4} node CIDR)")
    return mask6


def _network6(f: Any, key: str, default: str) -> ipaddress.IPv6Network:
    value = f.opt(key, str, default)
    try:
        return ipaddress.IPv6Network(value)
    except ValueError as e:
        raise f.error(key, f"{value!r} is not an IPv6 CIDR ({e})") from None


def assign_node_ipv6(cluster: Cluster, mask6: int) -> None:
    """Give every node its IPv6 address (the IPv4 host offset mirrored) and IPv6 pod CIDR (the
    lowest free ``/mask6`` blocks in node order); ConfigError when ``cluster_cidr_v6`` runs out
    or a node's IPv4 pod CIDR has more host bits than the IPv6 block."""
    assert cluster.cluster_cidr6 is not None and cluster.underlay_cidr6 is not None
    blocks = cluster.cluster_cidr6.subnets(new_prefix=mask6)
    for node in cluster.nodes.values():
        offset = int(node.node_ip) - int(cluster.underlay_cidr.network_address)
        node.node_ip6 = cluster.underlay_cidr6.network_address + offset
        node.pod_cidr6 = next(blocks, None)
        if node.pod_cidr6 is None:
            raise ConfigError(cluster.source, "cluster_cidr_v6", f"no free /{mask6} left in cluster_cidr_v6 "
                              f"{cluster.cluster_cidr6} for node {node.name!r}")
        if 128 - mask6 < 32 - node.pod_cidr.prefixlen:
            raise ConfigError(cluster.source, "node_cidr_mask_size_v6", f"/{mask6} blocks cannot mirror node "
                              f"{node.name!r}'s pod CIDR {node.pod_cidr}")


def pod_ipv6(node: Node, ip: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    """The IPv6 address of the pod with IPv4 ``ip`` on ``node``: the same host offset in the node's
    IPv6 pod CIDR (module docstring)."""
    assert node.pod_cidr6 is not None, f"node {node.name} has no IPv6 pod CIDR"
    return node.pod_cidr6.network_address + (int(ip) - int(node.pod_cidr.network_address))


def assign_pod_ipv6(cluster: Cluster) -> None:
    """Fill ``ip6`` of every pod that has an IPv4 address but no IPv6 one (dual-stack clusters)."""
    for pod in cluster.pods.values():
        if pod.ip is not None and pod.ip6 is None:
            pod.ip6 = pod_ipv6(cluster.nodes[pod.node], pod.ip)


def family_view(cluster: Cluster, family: str) -> Cluster:
    """``cluster`` as one IP family sees it: for ``IPv6`` a shallow copy whose nodes and pods carry
    their IPv6 addresses in ``node_ip``/``pod_cidr``/``ip`` (pods without one are left out) and
    whose ``service_cidr`` is the IPv6 one; policies are shared. ``IPv4`` returns ``cluster``.
    A renderer that reads addresses from those fields renders the family unchanged, as kube-router
    runs one code path per family (v2.10.0:pkg/controllers/netpol/pod.go getPodIPForFamily)."""
    if family == IPV4:
        return cluster
    if family != IPV6 or not cluster.dual_stack:
        raise ConfigError(cluster.source, "ip_families", f"the cluster has no {family} family")
    nodes = {name: dataclasses.replace(n, node_ip=n.node_ip6, pod_cidr=n.pod_cidr6)  # type: ignore[arg-type]
             for name, n in cluster.nodes.items()}
    pods = {key: dataclasses.replace(p, ip=p.ip6) for key, p in cluster.pods.items()  # type: ignore[arg-type]
            if p.ip6 is not None}
    return dataclasses.replace(cluster, nodes=nodes, pods=pods, service_cidr=cluster.service_cidr6,
                               underlay_cidr=cluster.underlay_cidr6, cluster_cidr=cluster.cluster_cidr6)


def enable_dual_stack(cluster: Cluster) -> Cluster:
    """Make an IPv4-only ``cluster`` dual-stack in place with the default IPv6 plan (as if its
    topology said ``ip_families: [IPv4, IPv6]``) and return it; e.g. to run a conformance case of an
    IPv4 topology over IPv6. A cluster that is dual-stack already is returned unchanged."""
    if cluster.dual_stack:
        return cluster
    cluster.ip_families = FAMILIES
    cluster.cluster_cidr6 = ipaddress.IPv6Network(DEFAULT_CLUSTER_CIDR6)
    cluster.underlay_cidr6 = ipaddress.IPv6Network(DEFAULT_UNDERLAY_CIDR6)
    cluster.service_cidr6 = ipaddress.IPv6Network(DEFAULT_SERVICE_CIDR6)
    assign_node_ipv6(cluster, DEFAULT_NODE_CIDR_MASK_SIZE6)
    assign_pod_ipv6(cluster)
    return cluster

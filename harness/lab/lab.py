"""The Lab: a ``Cluster`` realized in the kernel, kube-router style, and taken down again.

Layout (every namespace named ``nph-<run_id>-<kind>-...``; no link lives in the root namespace):

- ``nph-<rid>-u`` underlay: bridge ``underlay`` with one veth port per real node.
- ``nph-<rid>-n-<node>`` per real node: ``eth0`` with the node IP (peer on the underlay bridge),
  ``kube-bridge`` with the gateway IP (first address of the pod CIDR), ip_forward=1,
  bridge-nf-call-iptables=1 (br_netfilter, so bridged pod traffic passes iptables FORWARD as in
  kube-router), a route to every other node's pod CIDR via that node's IP (direct routing;
  routes to virtual nodes are installed ``onlink`` and end in failed ARP on the closed
  underlay), no default route: anything else gets ICMP net-unreachable, nothing leaves.
- ``nph-<rid>-p-<hash>`` per full pod: ``eth0`` (peer ``veth<hash>`` on kube-bridge) with
  pod IP/prefix of the node's CIDR, default route via the gateway, ``lo`` up.
- ``nph-<rid>-l-<node>-<k>`` light-pod hosts of a real node, each holding up to
  ``LIGHT_CHUNK`` light pods: ``eth0`` (peer ``vethlight<k>`` on kube-bridge) with each light
  pod's IP as a /32, a link route for the node's CIDR and a default route via the gateway.
  (The kernel inserts an address in time linear in the addresses already on the device, so
  10,000 addresses on one device cost ~10x more than ten devices of 1,000.) Light pods in one
  host namespace share it: traffic between them never crosses the bridge, so ``matrix``
  reports it as ``n/a-same-light-host``.
- virtual nodes and pods: model only.

Permanent ARP entries (node -> each local pod IP, pod -> gateway; MACs fixed as 0a:58 + IP)
keep the host-wide neighbour table limit (gc_thresh3, 1,024 by default, shared by every
namespace) from capping probes that cross a node; pod-to-pod traffic within a node still
learns entries by ARP, so probing more than ~1,000 distinct same-node pairs within 5 s can
overflow it (the probe then fails with ENOBUFS).

Every namespace gets IPv6 off (no DAD/router-solicitation noise on the bridges) and ICMP rate
limits off (so REJECT/unreachable answers are not dropped when many probes run).

Dual-stack (``ip_families: [IPv4, IPv6]``, harness.model.dualstack): IPv6 stays on in the lab's
namespaces with DAD, router solicitations and RAs off (``DUAL_STACK_SYSCTLS``; addresses are added
``nodad``, so they are usable at once), and every IPv4 object above gets its IPv6 twin: node
address on eth0, gateway on kube-bridge, routes to the other nodes' IPv6 pod CIDRs, pod address and
default route, permanent NDP entries with the same MACs; node namespaces forward IPv6 and pass
bridged IPv6 through ip6tables (bridge-nf-call-ip6tables). Only sysctls of harness namespaces are set.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from harness.errors import HarnessError
from harness.kernel import netns, rtnl
from harness.lab import reach, state
from harness.lab.check import ensure_br_netfilter, require_privileges
from harness.lab.servers import EchoServers
from harness.model.cluster import Cluster, Node, Pod, PodKind

log = logging.getLogger(__name__)
T = TypeVar("T")

# Pinned ifindexes: every link the lab makes has a known index, so no request waits on a lookup.
LO = 1
ETH0 = 2  # node: underlay port; pod and light namespaces: the pod side of the veth
KUBE_BRIDGE = 3
UNDERLAY_BRIDGE = 2
FIRST_DYNAMIC = 16
BUILD_THREADS = 2

KUBE_BRIDGE_NAME = "kube-bridge"
LIGHT_VETH_NAME = "vethlight"
LIGHT_CHUNK = 1024
UNDERLAY_BRIDGE_NAME = "underlay"

_SAFE_NODE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,38})$")


def _hash(text: str, n: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _node_label(name: str) -> str:
    return name if _SAFE_NODE.match(name) else _hash(name)


def pod_mac(ip: ipaddress.IPv4Address) -> bytes:
    """A pod's eth0 MAC, 0a:58 + its IPv4 address (as the CNI bridge plugin does); kube-bridge
    gets the same from its gateway IP."""
    return b"\x0a\x58" + ip.packed


def _write_sysctl(key: str, value: str | int) -> None:
    """Write a sysctl of the calling thread's current namespace."""
    with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(str(value))


COMMON_SYSCTLS = (
    # Links made after this get no IPv6 (lo keeps ::1; "all" would cost a walk of every device).
    ("net.ipv6.conf.default.disable_ipv6", 1),
    ("net.ipv4.icmp_ratelimit", 0),
    ("net.ipv4.icmp_msgs_per_sec", 1000000),
    ("net.ipv4.icmp_msgs_burst", 1000000),
)
NODE_SYSCTLS = (
    ("net.ipv4.ip_forward", 1),
    ("net.ipv4.conf.all.rp_filter", 0),
    ("net.ipv4.conf.default.rp_filter", 0),
    ("net.bridge.bridge-nf-call-iptables", 1),
)
# dual-stack labs instead of IPv6 off (written before any link exists, so "default" covers them)
DUAL_STACK_SYSCTLS = (
    ("net.ipv6.conf.default.accept_dad", 0),
    ("net.ipv6.conf.all.accept_dad", 0),
    ("net.ipv6.conf.default.dad_transmits", 0),
    ("net.ipv6.conf.default.accept_ra", 0),
    ("net.ipv6.conf.default.router_solicitations", 0),
    ("net.ipv6.icmp.ratelimit", 0),
)
DUAL_STACK_NODE_SYSCTLS = (
    ("net.ipv6.conf.all.forwarding", 1),
    ("net.bridge.bridge-nf-call-ip6tables", 1),
)
LIGHT_SYSCTLS = (
    ("net.ipv4.conf.all.rp_filter", 0),
    ("net.ipv4.conf.default.rp_filter", 0),
)
# Not set: the neighbour table limits (net.ipv4.neigh.default.gc_thresh*) are one host-wide
# table shared by every namespace and only writable in the root namespace; with the default
# gc_thresh3 = 1024, talking to more than ~1,000 distinct pod IPs at once can overflow it.


@dataclass
class _LightHost:
    netns: str
    rtnl: rtnl.Rtnl
    mac: bytes
    pods: int = 0


@dataclass
class _NodeRt:
    node: Node
    number: int
    netns: str
    rtnl: rtnl.Rtnl | None = None
    light_hosts: list[_LightHost] = field(default_factory=list)
    next_index: int = FIRST_DYNAMIC
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alloc_index(self) -> int:
        i = self.next_index
        self.next_index += 1
        return i


@dataclass
class _PodRt:
    netns: str
    light: bool
    veth: str | None = None  # host end on kube-bridge (full pods)
    ready_ns: int = 0
    backend: str | None = None  # who made the sandbox when not the lab (adopt_pod), e.g. "docker"


@dataclass
class LabTimings:
    """Seconds spent per phase of ``up()`` and in ``down()`` (perf_counter)."""

    infrastructure: float = 0.0
    full_pods: float = 0.0
    light_pods: float = 0.0
    servers: float = 0.0
    up: float = 0.0
    down: float = 0.0


class Lab:
    """A ``Cluster`` realized in the kernel. ``up()`` builds it, ``down()`` removes every trace;
    use it as a context manager. ``run_id`` defaults to 6 random hex digits."""

    def __init__(self, cluster: Cluster, *, run_id: str | None = None, servers: bool = True,
                 topology: str | None = None):
        self.cluster = cluster
        self.run_id = run_id
        self.servers = servers
        self.topology = topology
        self.state: state.RunState | None = None
        self.timings = LabTimings()
        self.kept = False
        self._nodes: dict[str, _NodeRt] = {}
        self._pods: dict[str, _PodRt] = {}
        self._underlay: str | None = None
        self._servers: EchoServers | None = None
        self._lock = threading.RLock()
        self._pool: ThreadPoolExecutor | None = None
        self._up = False
        self._subscribers: list[Callable[[str], None]] = []  # pod-change hooks (the API publisher)
        self._scheduled: list[Callable[[str], None]] = []  # pod-entered-the-model hooks (before wiring)

    # -- naming --------------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        """``nph-<run_id>-``: the start of every namespace name of this lab."""
        if not self.run_id:
            raise HarnessError("lab is not up")
        return state.netns_prefix(self.run_id)

    @property
    def underlay_netns(self) -> str:
        """The underlay namespace (its bridge links the nodes; the API server listens there)."""
        if not self._underlay:
            raise HarnessError("lab is not up")
        return self._underlay

    def subscribe(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(pod_key)`` after every pod added or removed."""
        self._subscribers.append(fn)

    def unsubscribe(self, fn: Callable[[str], None]) -> None:
        if fn in self._subscribers:
            self._subscribers.remove(fn)
        if fn in self._scheduled:
            self._scheduled.remove(fn)

    def subscribe_scheduled(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(pod_key)`` when a pod has entered the model (bound to its node) and before
        its network is wired: the moment a kubelet publishes it ``Pending``."""
        self._scheduled.append(fn)

    def is_realized(self, key: str) -> bool:
        """True once pod ``key``'s network is wired in the kernel (until it is removed)."""
        return key in self._pods

    def _pod_ns_name(self, key: str) -> str:
        return f"{self.prefix}p-{_hash(key)}"

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        if not self._up:
            self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.kept:
            self.down()

    def up(self) -> Lab:
        """Build everything: underlay, nodes, full pods, light pods, echo servers. On any error
        the partial lab is removed before the error propagates."""
        if self._up:
            raise HarnessError(f"lab {self.run_id} is already up")
        require_privileges()
        ensure_br_netfilter()
        self.state = state.new_run(run_id=self.run_id)
        self.run_id = self.state.run_id
        self._up = True  # at once: a signal from here on reaches down() through the except below
        t0 = time.perf_counter()
        try:
            self.state.cluster_name = self.cluster.name
            self.state.topology = self.topology
            self._build_infrastructure()
            t1 = time.perf_counter()
            full = [p for p in self.cluster.pods.values() if self._kind(p) is PodKind.FULL]
            self._build_full_pods(full)
            t2 = time.perf_counter()
            self._build_light_pods()
            t3 = time.perf_counter()
            if self.servers:
                self._start_servers()
            t4 = time.perf_counter()
            self._save_state()
        except BaseException:
            self.down()
            raise
        self.timings.infrastructure = t1 - t0
        self.timings.full_pods = t2 - t1
        self.timings.light_pods = t3 - t2
        self.timings.servers = t4 - t3
        self.timings.up = time.perf_counter() - t0
        log.info("lab %s up: %d nodes, %d full + %d light pods in %.3f s", self.run_id, len(self._nodes),
                 len(full), sum(1 for p in self._pods.values() if p.light), self.timings.up)
        return self

    def down(self) -> None:
        """Remove everything this lab made (servers, namespaces, run record). Idempotent."""
        if not self._up:
            return
        t0 = time.perf_counter()
        self._stop_servers()
        if self.state is not None:  # what components left running for the run (e.g. a MariaDB server)
            state.remove_owned(self.state)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for n in self._nodes.values():
            if n.rtnl is not None:
                n.rtnl.close()
            for h in n.light_hosts:
                h.rtnl.close()
        assert self.run_id is not None
        recorded = list(self._all_netns())
        # Nodes and underlay first: their bridges go, then the pods' veths go with the pods.
        state.delete_namespaces(self.run_id, recorded)
        # A build interrupted by Ctrl-C may still have a worker thread creating namespaces:
        # sweep the prefix until it stays empty, and keep the record (for gc) if it does not.
        for _ in range(40):
            if not netns.list_names(self.prefix):
                break
            time.sleep(0.05)
            state.delete_namespaces(self.run_id)
        if self.state is not None and not netns.list_names(self.prefix):
            shutil.rmtree(self.state.dir, ignore_errors=True)
        self._nodes.clear()
        self._pods.clear()
        self._up = False
        self.timings.down = time.perf_counter() - t0
        log.info("lab %s down in %.3f s", self.run_id, self.timings.down)

    def detach(self) -> str:
        """Keep the lab after this process exits (``up --keep``): mark the record kept and let
        the echo server outlive us. Returns the run id; ``netpol-harness down`` removes it."""
        assert self.state is not None and self.run_id is not None
        self.kept = True
        self.state.kept = True
        if self._servers is not None:
            self._servers.detach()
        self._save_state()
        return self.run_id

    # -- building ------------------------------------------------------------------------------
    def _kind(self, pod: Pod) -> PodKind:
        node = self.cluster.nodes.get(pod.node)
        if node is None or not node.is_real:
            return PodKind.VIRTUAL
        return pod.kind

    def _all_netns(self) -> Iterable[str]:
        for n in self._nodes.values():
            yield n.netns
            for h in n.light_hosts:
                yield h.netns
        if self._underlay:
            yield self._underlay
        for p in self._pods.values():
            if not p.light:
                yield p.netns

    def _ns_setup(self, name: str) -> None:
        """Runs inside each new namespace (netns.create_many): sysctls by namespace kind."""
        kind = name[len(self.prefix)]
        dual = self.cluster.dual_stack
        for k, v in COMMON_SYSCTLS:
            if not (dual and k == "net.ipv6.conf.default.disable_ipv6"):
                _write_sysctl(k, v)
        extra = {"n": NODE_SYSCTLS, "l": LIGHT_SYSCTLS}.get(kind, ())
        if dual:
            extra = DUAL_STACK_SYSCTLS + extra + (DUAL_STACK_NODE_SYSCTLS if kind == "n" else ())
        for k, v in extra:
            _write_sysctl(k, v)

    def _build_infrastructure(self) -> None:
        real = self.cluster.real_nodes()
        if not real:
            raise HarnessError(f"{self.cluster.source or self.cluster.name}: nodes: no real node to build")
        self._underlay = f"{self.prefix}u"
        for i, node in enumerate(real):
            self._nodes[node.name] = _NodeRt(node, i, f"{self.prefix}n-{_node_label(node.name)}")
        sockets: dict[str, rtnl.Rtnl] = {}

        def setup(name: str) -> None:
            self._ns_setup(name)
            sockets[name] = rtnl.Rtnl.here(name)

        netns.create_many([self._underlay] + [n.netns for n in self._nodes.values()], setup=setup)
        for n in self._nodes.values():
            n.rtnl = sockets.pop(n.netns)
        under = sockets.pop(self._underlay)
        try:
            ucidr = self.cluster.underlay_cidr
            reqs = [rtnl.bridge(UNDERLAY_BRIDGE_NAME, index=UNDERLAY_BRIDGE,
                                mac=b"\x0a\x59" + (ucidr.network_address + 1).packed)]
            fds = []
            try:
                for n in self._nodes.values():
                    fd = os.open(netns.path(n.netns), os.O_RDONLY)
                    fds.append(fd)
                    reqs.append(rtnl.veth(f"node{n.number}", "eth0", peer_netns_fd=fd, master=UNDERLAY_BRIDGE,
                                          index=FIRST_DYNAMIC + n.number, peer_index=ETH0))
                under.run(reqs)
            finally:
                for fd in fds:
                    os.close(fd)
        finally:
            under.close()
        for n in self._nodes.values():
            node = n.node
            reqs = [rtnl.link_up(LO, "lo"), rtnl.link_up(ETH0, "eth0"),
                    rtnl.address(ETH0, node.node_ip, ucidr.prefixlen),
                    rtnl.bridge(KUBE_BRIDGE_NAME, index=KUBE_BRIDGE, mac=b"\x0a\x58" + node.gateway_ip.packed),
                    rtnl.address(KUBE_BRIDGE, node.gateway_ip, node.pod_cidr.prefixlen)]
            for other in self.cluster.nodes.values():
                if other.name != node.name:
                    reqs.append(rtnl.route(other.pod_cidr, gateway=other.node_ip, oif=ETH0, onlink=True))
            if self.cluster.dual_stack:
                reqs += self._node_v6_requests(node)
            assert n.rtnl is not None
            n.rtnl.run(reqs)

    def _node_v6_requests(self, node: Node) -> list:
        """The IPv6 twins of a node's addresses and routes (dual-stack)."""
        u6 = self.cluster.underlay_cidr6
        assert u6 is not None and node.node_ip6 is not None and node.pod_cidr6 is not None
        reqs = [rtnl.address6(ETH0, node.node_ip6, u6.prefixlen),
                rtnl.address6(KUBE_BRIDGE, node.gateway_ip6, node.pod_cidr6.prefixlen)]  # type: ignore[arg-type]
        for other in self.cluster.nodes.values():
            if other.name != node.name and other.pod_cidr6 is not None:
                reqs.append(rtnl.route6(other.pod_cidr6, gateway=other.node_ip6, oif=ETH0, onlink=True))
        return reqs

    def _ensure_ip(self, pod: Pod) -> ipaddress.IPv4Address:
        if pod.ip is None:
            pod.ip = self.cluster.allocate_ip(pod.node)
        return pod.ip

    def _build_full_pods(self, pods: list[Pod]) -> None:
        """Create and wire pod namespaces from ``BUILD_THREADS`` workers: namespace creation
        runs in parallel in the kernel, veth creation is serialized by the rtnl lock anyway."""
        by_ns = {self._pod_ns_name(p.key): p for p in pods}
        names = list(by_ns)
        nthreads = max(1, min(BUILD_THREADS, len(names) // 50))
        if nthreads == 1:
            netns.create_many(names, setup=lambda name: self._wire_full_pod(name, by_ns[name]))
            return
        errors: list[BaseException] = []

        def work(chunk: list[str]) -> None:
            try:
                netns.create_many(chunk, setup=lambda name: self._wire_full_pod(name, by_ns[name]))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(names[i::nthreads],), name=f"lab-build-{i}")
                   for i in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def _wire_full_pod(self, name: str, pod: Pod) -> None:
        """Runs inside the pod's new namespace: veth from the node side with its peer put
        straight in here as eth0, then eth0 configured from here."""
        self._ns_setup(name)
        n = self._nodes[pod.node]
        ip = self._ensure_ip(pod)
        veth = "veth" + _hash(pod.key, 11)
        here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            assert n.rtnl is not None
            with n.lock:  # one node socket shared by the build threads: acks must not interleave
                n.rtnl.run([rtnl.veth(veth, "eth0", peer_netns_fd=here, master=KUBE_BRIDGE,
                                      index=n.alloc_index(), peer_index=ETH0, peer_mac=pod_mac(ip)),
                            rtnl.neighbour(KUBE_BRIDGE, ip, pod_mac(ip))]
                           + ([rtnl.neighbour6(KUBE_BRIDGE, pod.ip6, pod_mac(ip))] if pod.ip6 is not None else []))
        finally:
            os.close(here)
        v6 = []
        if pod.ip6 is not None:
            assert n.node.pod_cidr6 is not None and n.node.gateway_ip6 is not None
            v6 = [rtnl.address6(ETH0, pod.ip6, n.node.pod_cidr6.prefixlen),
                  rtnl.neighbour6(ETH0, n.node.gateway_ip6, pod_mac(n.node.gateway_ip)),
                  rtnl.route6("::/0", gateway=n.node.gateway_ip6, oif=ETH0)]
        with rtnl.Rtnl.here(name) as r:
            r.run([rtnl.link_up(LO, "lo"), rtnl.link_up(ETH0, "eth0"),
                   rtnl.address(ETH0, ip, n.node.pod_cidr.prefixlen),
                   rtnl.neighbour(ETH0, n.node.gateway_ip, pod_mac(n.node.gateway_ip)),
                   rtnl.route("0.0.0.0/0", gateway=n.node.gateway_ip, oif=ETH0)] + v6)
        self._pods[pod.key] = _PodRt(name, light=False, veth=veth, ready_ns=time.time_ns())

    def _await_link_active(self, pod: Pod, timeout_s: float = 2.0) -> int:
        """Wait until the pod's host-side veth is really forwarding and return that time (ns).

        Bringing eth0 up turns the host end's carrier on, but the kernel activates its qdisc
        and enables the bridge port later, in linkwatch work. A packet in between is dropped
        (tx_dropped on the veth): measured here, 14 of 100 connects started right after the
        netlink acks timed out. So: poll the host end's operstate (set by that work item), then
        send one RTNL-locked no-op request, which cannot run before the work item finished."""
        rt = self._pods[pod.key]
        n = self._nodes[pod.node]
        assert rt.veth is not None and n.rtnl is not None
        deadline = time.monotonic() + timeout_s
        with netns.ipr(n.netns) as ipr:
            while True:
                link = ipr.link("get", ifname=rt.veth)[0]
                if link.get_attr("IFLA_OPERSTATE") == "UP":
                    break
                if time.monotonic() > deadline:
                    raise HarnessError(f"pod {pod.key}: veth {rt.veth} not up after {timeout_s} s")
                time.sleep(0.0002)
        with n.lock:
            n.rtnl.run([rtnl.link_up(link["index"], rt.veth)])
        rt.ready_ns = time.time_ns()
        return rt.ready_ns

    def _light_host(self, n: _NodeRt) -> _LightHost:
        """The node's light-pod host with room left, made on demand."""
        if n.light_hosts and n.light_hosts[-1].pods < LIGHT_CHUNK:
            return n.light_hosts[-1]
        k = len(n.light_hosts)
        name = f"{self.prefix}l-{_node_label(n.node.name)}-{k}"
        mac = b"\x0a\x5a" + struct.pack("!HH", n.number, k)
        holder: list[rtnl.Rtnl] = []

        def setup(ns: str) -> None:
            self._ns_setup(ns)
            holder.append(rtnl.Rtnl.here(ns))
            fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                assert n.rtnl is not None
                with n.lock:
                    n.rtnl.run([rtnl.veth(f"{LIGHT_VETH_NAME}{k}", "eth0", peer_netns_fd=fd, master=KUBE_BRIDGE,
                                          index=n.alloc_index(), peer_index=ETH0, peer_mac=mac)])
            finally:
                os.close(fd)

        netns.create_many([name], setup=setup)
        host = _LightHost(name, holder[0], mac)
        n.light_hosts.append(host)
        node = n.node
        host.rtnl.run([rtnl.link_up(LO, "lo"), rtnl.link_up(ETH0, "eth0"),
                       rtnl.route(node.pod_cidr, oif=ETH0),
                       rtnl.neighbour(ETH0, node.gateway_ip, pod_mac(node.gateway_ip)),
                       rtnl.route("0.0.0.0/0", gateway=node.gateway_ip, oif=ETH0)])
        if node.pod_cidr6 is not None and self.cluster.dual_stack:
            host.rtnl.run([rtnl.route6(node.pod_cidr6, oif=ETH0),
                           rtnl.neighbour6(ETH0, node.gateway_ip6, pod_mac(node.gateway_ip)),  # type: ignore[arg-type]
                           rtnl.route6("::/0", gateway=node.gateway_ip6, oif=ETH0)])
        return host

    def _add_light(self, n: _NodeRt, pods: list[Pod]) -> int:
        """Put light pods on the node's hosts; returns CLOCK_REALTIME ns after the last ack."""
        now = time.time_ns()
        i = 0
        while i < len(pods):
            host = self._light_host(n)
            chunk = pods[i:i + LIGHT_CHUNK - host.pods]
            host.rtnl.run([rtnl.address(ETH0, self._ensure_ip(p), 32) for p in chunk]
                          + [rtnl.address6(ETH0, p.ip6, 128) for p in chunk if p.ip6 is not None])
            assert n.rtnl is not None
            with n.lock:
                n.rtnl.run([rtnl.neighbour(KUBE_BRIDGE, p.ip, host.mac) for p in chunk]  # type: ignore[arg-type]
                           + [rtnl.neighbour6(KUBE_BRIDGE, p.ip6, host.mac) for p in chunk if p.ip6 is not None])
            now = time.time_ns()
            host.pods += len(chunk)
            for p in chunk:
                self._pods[p.key] = _PodRt(host.netns, light=True, ready_ns=now)
            i += len(chunk)
        return now

    def _build_light_pods(self) -> None:
        by_node: dict[str, list[Pod]] = {}
        for p in self.cluster.pods.values():
            if self._kind(p) is PodKind.LIGHT:
                by_node.setdefault(p.node, []).append(p)
        for node, pods in by_node.items():
            self._add_light(self._nodes[node], pods)

    # -- echo servers ----------------------------------------------------------------------------
    def _listeners(self, pod: Pod) -> list[list[Any]]:
        light = self._pods[pod.key].light
        binds = [str(pod.ip) if light else "0.0.0.0"]
        if pod.ip6 is not None:  # dual-stack: the IPv6 twin (echo_server binds "::" IPv6-only)
            binds.append(str(pod.ip6) if light else "::")
        seen = set()
        out = []
        for cp in pod.ports:
            if cp.protocol in ("TCP", "UDP") and (cp.port, cp.protocol) not in seen:
                seen.add((cp.port, cp.protocol))
                out.extend([bind, cp.port, cp.protocol] for bind in binds)
        return out

    def _server_spec(self, pods: Iterable[Pod]) -> list[dict[str, Any]]:
        spec = []
        for p in pods:
            if p.key in self._pods:
                ls = self._listeners(p)
                if ls:
                    spec.append({"key": p.key, "netns": self._pods[p.key].netns, "listeners": ls})
        return spec

    def _start_servers(self) -> None:
        assert self.state is not None and self.run_id is not None
        self._servers = EchoServers(self.run_id, os.path.join(self.state.dir, "server.log"))
        spec = self._server_spec(self.cluster.pods.values())
        try:
            if spec:
                self._servers.add(spec)
        finally:
            self.state.servers = self._servers.pids()
            self.state.save()

    def _stop_servers(self) -> None:
        srv, self._servers = self._servers, None
        if srv is not None:
            srv.stop()

    def _save_state(self) -> None:
        st = self.state
        if st is None:
            return
        st.namespaces = list(self._all_netns())
        st.nodes = {n.node.name: {"netns": n.netns, "light_netns": [h.netns for h in n.light_hosts],
                                  "node_ip": str(n.node.node_ip),
                                  "pod_cidr": str(n.node.pod_cidr), "kind": str(n.node.kind)}
                    for n in self._nodes.values()}
        for node in self.cluster.nodes.values():
            st.nodes.setdefault(node.name, {"netns": None, "light_netns": [], "node_ip": str(node.node_ip),
                                            "pod_cidr": str(node.pod_cidr), "kind": str(node.kind)})
        st.pods = {p.key: self._pod_record(p) for p in self.cluster.pods.values()}
        st.save()

    def _pod_record(self, p: Pod) -> dict[str, Any]:
        return {"netns": self._pods[p.key].netns if p.key in self._pods else None,
                "ip": str(p.ip) if p.ip else None, "node": p.node, "kind": str(self._kind(p))}

    # -- runtime changes (CNI ADD / DEL) ---------------------------------------------------------
    @property
    def is_up(self) -> bool:
        """True between ``up()`` and ``down()``."""
        return bool(self._up)

    def add_pod(self, pod: Pod) -> int:
        """Add ``pod`` to the model and wire it like a CNI ADD (its echo listeners included).
        Returns CLOCK_REALTIME ns at which the pod's network became ready (forwarding).
        Virtual pods (on virtual nodes) only enter the model."""
        return self._add_pod(pod, None, None)

    def adopt_pod(self, pod: Pod, netns_name: str, record: dict[str, Any] | None = None) -> int:
        """Like ``add_pod`` for a full pod whose namespace already exists under /run/netns
        (e.g. a container's sandbox): the same veth, address, routes and listeners, like a CNI
        plugin wiring a sandbox it did not create. ``record`` adds fields to the run journal.
        ``remove_pod`` undoes it (veth deleted, namespace name unmounted)."""
        if self._kind(pod) is not PodKind.FULL:
            raise HarnessError(f"pod {pod.key}: only full pods can adopt a namespace")
        return self._add_pod(pod, netns_name, record)

    def _add_pod(self, pod: Pod, adopt_netns: str | None, record: dict[str, Any] | None) -> int:
        with self._lock:
            self._require_up()
            self.cluster.add_pod(pod)
            try:
                for fn in list(self._scheduled):
                    fn(pod.key)
                kind = self._kind(pod)
                if adopt_netns is not None:
                    netns.call_in(adopt_netns, self._wire_full_pod, adopt_netns, pod)
                    self._pods[pod.key].backend = (record or {}).get("backend", "adopted")
                    ready = self._await_link_active(pod)
                elif kind is PodKind.FULL:
                    self._build_full_pods([pod])
                    ready = self._await_link_active(pod)
                elif kind is PodKind.LIGHT:
                    ready = self._add_light(self._nodes[pod.node], [pod])
                else:
                    ready = time.time_ns()
                if self._servers is not None and pod.key in self._pods:
                    spec = self._server_spec([pod])
                    if spec:
                        n_before = len(self._servers.procs)
                        self._servers.add(spec)
                        if len(self._servers.procs) != n_before and self.state is not None:
                            self.state.servers = self._servers.pids()
                            self.state.save()
            except BaseException:
                with contextlib.suppress(Exception):
                    self._unwire(pod)
                self.cluster.pods.pop(pod.key, None)
                raise
            if self.state is not None:
                self.state.journal(pod.key, {**self._pod_record(pod), **(record or {})})
            for fn in list(self._subscribers):
                fn(pod.key)
            return ready

    def remove_pod(self, key: str) -> int:
        """Remove a pod like a CNI DEL (listeners closed, veth deleted, namespace dropped) and
        from the model. Returns CLOCK_REALTIME ns right after its network was gone."""
        with self._lock:
            self._require_up()
            pod = self.cluster.pods.get(key)
            if pod is None:
                raise HarnessError(f"no pod {key!r} in lab {self.run_id}")
            if self._servers is not None and key in self._pods:
                self._servers.remove(key)
            gone = self._unwire(pod)
            self.cluster.remove_pod(key)
            if self.state is not None:
                self.state.journal(key, None)
            for fn in list(self._subscribers):
                fn(key)
            return gone

    def _unwire(self, pod: Pod) -> int:
        rt = self._pods.pop(pod.key, None)
        if rt is None:
            return time.time_ns()
        n = self._nodes[pod.node]
        if rt.light:
            host = next(h for h in n.light_hosts if h.netns == rt.netns)
            host.rtnl.run([rtnl.address(ETH0, str(pod.ip), 32, delete=True)]
                          + ([rtnl.address6(ETH0, pod.ip6, 128, delete=True)] if pod.ip6 is not None else []))
            t = time.time_ns()
            host.pods -= 1
            with n.lock:
                n.rtnl.run([rtnl.neighbour(KUBE_BRIDGE, str(pod.ip), delete=True)]  # type: ignore[union-attr]
                           + ([rtnl.neighbour6(KUBE_BRIDGE, pod.ip6, delete=True)] if pod.ip6 is not None else []))
            return t
        assert n.rtnl is not None and rt.veth is not None
        # Delete the veth explicitly (like CNI DEL): the pod is cut off now, not whenever the
        # kernel gets round to freeing its namespace.
        with n.lock:
            n.rtnl.run([rtnl.link_delete(rt.veth)])
            t = time.time_ns()
            n.rtnl.run([rtnl.neighbour(KUBE_BRIDGE, str(pod.ip), delete=True)]
                       + ([rtnl.neighbour6(KUBE_BRIDGE, pod.ip6, delete=True)] if pod.ip6 is not None else []))
        netns.delete(rt.netns)
        return t

    def _require_up(self) -> None:
        if not self._up:
            raise HarnessError("lab is not up")

    # -- running things inside -----------------------------------------------------------------
    def pod_netns(self, key: str) -> str:
        """The namespace a pod's traffic comes from (light pods share their node's light one)."""
        rt = self._pods.get(key)
        if rt is None:
            if key in self.cluster.pods:
                raise HarnessError(f"pod {key} is virtual: it exists in the model only")
            raise HarnessError(f"no pod {key!r} in lab {self.run_id}")
        return rt.netns

    def node_netns(self, node: str) -> str:
        """The namespace of a real node (kube-bridge, routes, later iptables and ipsets)."""
        n = self._nodes.get(node)
        if n is None:
            raise HarnessError(f"no real node {node!r} in lab {self.run_id}")
        return n.netns

    def netns_of(self, target: str) -> str:
        """A pod key (``ns/name``) or a real node name -> its namespace."""
        return self.node_netns(target) if target in self._nodes else self.pod_netns(target)

    def realized_pods(self) -> list[str]:
        """Keys of the pods realized in the kernel (full and light), in model order."""
        return [k for k in self.cluster.pods if k in self._pods]

    def same_light_host(self, a: str, b: str) -> bool:
        """True for two different light pods in one host namespace (their traffic stays local)."""
        ra, rb = self._pods.get(a), self._pods.get(b)
        return a != b and ra is not None and rb is not None and ra.light and rb.light and ra.netns == rb.netns

    def is_light(self, key: str) -> bool:
        return self._pods[key].light if key in self._pods else False

    def ready_time(self, key: str) -> int:
        """CLOCK_REALTIME ns at which the pod's network became ready."""
        return self._pods[key].ready_ns

    def exec(self, target: str, argv: list[str], *, timeout: float | None = 120,
             input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` inside a pod's (or node's) namespace; never raises on a non-zero exit."""
        return netns.run(self.netns_of(target), argv, check=False, timeout=timeout, input=input)

    def call(self, target: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` in a thread inside a pod's (or node's) namespace and return its result."""
        return netns.call_in(self.netns_of(target), fn, *args, **kwargs)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"lab-{self.run_id}")
        return self._pool

    def _probe_args(self, src: str, dst: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
                    family: str = "IPv4") -> tuple[str, str | None, str] | str:
        ns = self.pod_netns(src)
        v6 = family == "IPv6"
        if v6 and not self.cluster.dual_stack:
            raise HarnessError(f"lab {self.run_id} is IPv4-only: no IPv6 probes (topology ip_families)")
        spod = self.cluster.pods[src]
        src_ip = str(spod.ip6 if v6 else spod.ip) if self._pods[src].light else None
        if isinstance(dst, str) and dst in self.cluster.pods:
            dpod = self.cluster.pods[dst]
            if self.same_light_host(src, dst):
                return reach.SAME_LIGHT_HOST
            dst_ip = str(dpod.ip6 if v6 else dpod.ip)
        else:
            try:
                dst_ip = str(ipaddress.ip_address(dst))
            except ValueError:
                raise HarnessError(f"no pod {dst!r} in lab {self.run_id} (and not an IP address)") from None
        return ns, src_ip, dst_ip

    def connect(self, src: str, dst: str | ipaddress.IPv4Address, port: int = 80, protocol: str = "TCP",
                timeout: float = 0.5, family: str = "IPv4") -> str:
        """One real attempt from pod ``src`` to pod ``dst`` (a key) or an address: ``connected``,
        ``refused``, ``reset``, ``timeout``, ``unreachable`` (see harness.lab.reach), or
        ``n/a-same-light-host`` for two light pods sharing a namespace. ``protocol`` TCP, UDP
        or ICMP (port ignored). ``family`` ``IPv6`` (dual-stack labs): between the pods' IPv6 addresses."""
        args = self._probe_args(src, dst, family)
        if isinstance(args, str):
            return args
        return self._executor().submit(reach.probe, *args, port, protocol, timeout).result()

    def matrix(self, pods: Iterable[str] | None = None, port: int = 80, protocol: str = "TCP",
               timeout: float = 0.5, workers: int = 32, family: str = "IPv4") -> dict[tuple[str, str], str]:
        """Every (src, dst) pair of ``pods`` (default: all realized pods, self included) probed
        with ``connect`` (over ``family``) using at most ``workers`` threads."""
        keys = list(pods) if pods is not None else [k for k in self.cluster.pods if k in self._pods]
        cells = [(s, d) for s in keys for d in keys]
        out: dict[tuple[str, str], str] = {}
        todo = []
        for s, d in cells:
            args = self._probe_args(s, d, family)
            if isinstance(args, str):
                out[(s, d)] = args
            else:
                todo.append(((s, d), args))
        if todo:
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))),
                                    thread_name_prefix=f"matrix-{self.run_id}") as ex:
                futs = {cell: ex.submit(reach.probe, *args, port, protocol, timeout) for cell, args in todo}
                for cell, f in futs.items():
                    out[cell] = f.result()
        return {c: out[c] for c in cells}

    # -- description ---------------------------------------------------------------------------
    def describe(self) -> tuple[list[list[str]], list[list[str]]]:
        """Rows for tables: nodes (name, kind, node IP, pod CIDR, namespace) and pods (key,
        node, kind, IP, ports, namespace)."""
        nodes = []
        for node in self.cluster.nodes.values():
            rt = self._nodes.get(node.name)
            nodes.append([node.name, str(node.kind), str(node.node_ip), str(node.pod_cidr), rt.netns if rt else "-"])
        pods = []
        for p in self.cluster.pods.values():
            rt = self._pods.get(p.key)
            ports = ",".join(f"{c.port}/{c.protocol}" for c in p.ports)
            kind = (rt.backend if rt and rt.backend else None) or str(self._kind(p))
            pods.append([p.key, p.node, kind, str(p.ip), ports, rt.netns if rt else "-"])
        return nodes, pods

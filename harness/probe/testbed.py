"""A tiny one-node pod network for the probe engine's own tests, calibration and benchmark.

The lab proper (``harness.lab``) realizes whole clusters; the probe engine only needs one node
namespace with ``kube-bridge`` (br_netfilter on, so the node's iptables FORWARD chain sees
bridged pod-to-pod traffic, as on a kube-router node), a few full pods (own namespace, ``eth0``)
and one light-pod namespace holding several pod addresses, plus TCP/UDP echo servers. It is built
with the same namespace primitives (``harness.lab.netns``) and never touches the root namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import selectors
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness.errors import EnvironmentProblem
from harness.lab import netns
from harness.probe.packet import relax_icmp_ratelimit

log = logging.getLogger(__name__)

POD_CIDR = ipaddress.IPv4Network("10.244.0.0/24")
GATEWAY = "10.244.0.1"


@dataclass(frozen=True)
class Endpoint:
    """Where a pod lives in the kernel: its namespace and its IP (light pods share a namespace)."""

    key: str
    netns: str
    ip: str


def require_root() -> None:
    """Raise EnvironmentProblem unless we may create namespaces."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("the probe engine needs root (CAP_NET_ADMIN, CAP_NET_RAW)",
                                 "run as root")


def _write_sysctl(ns: str, path: str, value: str) -> None:
    def write() -> None:
        with open(path, "w") as f:
            f.write(value)
    netns.call_in(ns, write)


class EchoServers:
    """TCP and UDP echo listeners in lab namespaces, served by one selector thread."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        self._stop_r, self._stop_w = os.pipe()
        self._sel.register(self._stop_r, selectors.EVENT_READ, ("stop", None))
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, ns: str, ip: str, port: int, proto: str = "TCP") -> None:
        """Listen on ``ip:port`` (TCP or UDP) inside namespace ``ns``."""
        kind = socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
            if proto == "TCP":
                s.listen(4096)
            s.setblocking(False)
            return s

        s = netns.call_in(ns, make)
        with self._lock:
            self._socks.append(s)
            self._sel.register(s, selectors.EVENT_READ, ("listen" if proto == "TCP" else "udp", s))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="echo-servers", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        conns: set[socket.socket] = set()
        try:
            while True:
                for key, _ in self._sel.select():
                    kind, s = key.data
                    if kind == "stop":
                        return
                    try:
                        if kind == "listen":
                            c, _addr = s.accept()
                            c.setblocking(False)
                            conns.add(c)
                            self._sel.register(c, selectors.EVENT_READ, ("conn", c))
                        elif kind == "udp":
                            data, addr = s.recvfrom(65535)
                            s.sendto(data, addr)
                        else:
                            data = s.recv(65535)
                            if data:
                                s.send(data)
                            else:
                                raise ConnectionResetError
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        if kind == "conn":
                            self._sel.unregister(s)
                            conns.discard(s)
                            s.close()
        finally:
            for c in conns:
                c.close()

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        if self._thread:
            self._thread.join(5)
        for s in self._socks:
            s.close()
        self._sel.close()
        os.close(self._stop_r)
        os.close(self._stop_w)


@dataclass
class Testbed:
    """One node, ``full`` full pods and ``light`` light pods on 10.244.0.0/24, echo servers on
    ``ports`` (TCP and UDP) of every pod. Use as a context manager; everything is removed on exit."""

    full: int = 2
    light: int = 2
    ports: tuple[int, ...] = (80, 81)
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    servers: EchoServers | None = None
    _namespaces: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"nph-{self.run_id}-"

    @property
    def node_ns(self) -> str:
        return f"{self.prefix}node"

    @property
    def light_ns(self) -> str:
        return f"{self.prefix}light"

    def __enter__(self) -> Testbed:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        """Build the node, pods and servers."""
        require_root()
        if not os.path.exists("/proc/sys/net/bridge"):
            os.system("modprobe br_netfilter >/dev/null 2>&1")  # noqa: S605 - loads a module, no netns change
            if not os.path.exists("/proc/sys/net/bridge"):
                raise EnvironmentProblem("br_netfilter is not available", "modprobe br_netfilter")
        names = [self.node_ns] + [f"{self.prefix}p{i}" for i in range(self.full)]
        if self.light:
            names.append(self.light_ns)
        netns.create_many(names)
        self._namespaces = names
        try:
            self._wire()
        except BaseException:
            self.down()
            raise

    def _wire(self) -> None:
        node = self.node_ns
        _write_sysctl(node, "/proc/sys/net/ipv4/ip_forward", "1")
        _write_sysctl(node, "/proc/sys/net/bridge/bridge-nf-call-iptables", "1")
        for ns in self._namespaces:  # every REJECT / port-unreachable answered, whatever the rate
            relax_icmp_ratelimit(ns)
        with netns.ipr(node) as ipr:
            ipr.link("add", ifname="kube-bridge", kind="bridge")
            br = ipr.link_lookup(ifname="kube-bridge")[0]
            ipr.addr("add", index=br, address=GATEWAY, prefixlen=24)
            ipr.link("set", index=br, state="up")
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
        hosts = POD_CIDR.hosts()
        next(hosts)  # the gateway
        pods: list[tuple[str, str, list[str]]] = []
        for i in range(self.full):
            ip = str(next(hosts))
            pods.append((f"default/full-{i}", f"{self.prefix}p{i}", [ip]))
        if self.light:
            ips = [str(next(hosts)) for _ in range(self.light)]
            pods.append(("", self.light_ns, ips))
        for i, (key, ns, ips) in enumerate(pods):
            host_if = f"veth{i}"
            self._veth(node, ns, host_if, ips)
            if key:
                self.endpoints[key] = Endpoint(key, ns, ips[0])
            else:
                for j, ip in enumerate(ips):
                    k = f"default/light-{j}"
                    self.endpoints[k] = Endpoint(k, ns, ip)
        self.servers = EchoServers()
        for ep in self.endpoints.values():
            for port in self.ports:
                self.servers.add(ep.netns, ep.ip, port, "TCP")
                self.servers.add(ep.netns, ep.ip, port, "UDP")
        self.servers.start()

    @staticmethod
    def _veth(node: str, ns: str, host_if: str, ips: Iterable[str]) -> None:
        fd = os.open(netns.path(ns), os.O_RDONLY)
        try:
            with netns.ipr(node) as ipr:
                ipr.link("add", ifname=host_if, kind="veth", peer="eth0")
                peer = ipr.link_lookup(ifname="eth0")[0]
                ipr.link("set", index=peer, net_ns_fd=fd)
                idx = ipr.link_lookup(ifname=host_if)[0]
                br = ipr.link_lookup(ifname="kube-bridge")[0]
                ipr.link("set", index=idx, master=br, state="up")
        finally:
            os.close(fd)
        with netns.ipr(ns) as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            for ip in ips:
                ipr.addr("add", index=eth0, address=ip, prefixlen=24)
            ipr.link("set", index=eth0, state="up")
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=GATEWAY)

    def iptables(self, *args: str) -> None:
        """Run ``iptables ARGS`` in the node namespace (raises KernelError on failure)."""
        netns.run(self.node_ns, ["iptables", "-w", *args])

    def down(self) -> None:
        """Stop servers and delete every namespace this testbed made."""
        if self.servers is not None:
            with contextlib.suppress(Exception):
                self.servers.stop()
            self.servers = None
        for ns in self._namespaces:
            with contextlib.suppress(Exception):
                netns.delete(ns)
        self._namespaces = []

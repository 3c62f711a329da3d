"""The IPVS proxy measured in a real kernel (``netpol-harness bench ipvs``; the kernel matrix's
``ipvs`` suite runs it inside a guest, since the host may lack CONFIG_IP_VS).

A lab of one real node and three pods (a client and two servers of one Service) gets kube-router's
IPVS proxy in the node namespace (``apply.IpvsProxy``), then:

1. **reachability**: the client connects to ClusterIP:80 and exchanges a line with the real
   server behind it; a port the Service does not have is answered by KUBE-ROUTER-SERVICES'
   REJECT.
2. **a real server removed mid-connection**, for ``net/ipv4/vs/expire_nodest_conn`` 1
   (kube-router's setting) and 0 (the kernel default), with the endpoint replaced by another
   pod and with no endpoint left: an established client sends a line after the sync deleted
   its destination and the socket's verbatim error, errno and time are recorded, with the IPVS
   connection table before and after.
3. **sync cost**: the first sync and an unchanged re-sync of N services (2 endpoints each), per
   phase, divided by N.

Results are a bench Baseline (metrics: sync cost; ``extra``: the observations).
"""

from __future__ import annotations

import errno as errno_mod
import ipaddress
import logging
import select
import socket
import subprocess
import threading
import time
from contextlib import suppress
from dataclasses import dataclass

from harness.bench.baseline import Baseline
from harness.bench.common import progress
from harness.cluster.ipvs_proxy import detect
from harness.cluster.ipvs_proxy.apply import IpvsProxy, cluster_ip_of
from harness.cluster.ipvs_proxy.plan import ProxyConfig, ServicePort
from harness.errors import EnvironmentProblem
from harness.kernel import netns
from harness.model.cluster import Cluster, ContainerPort, Node, Pod

log = logging.getLogger(__name__)

NODE, NODE_IP, POD_CIDR = "node-a", "172.18.0.2", "10.244.0.0/24"
NS = "ipvs"
CLIENT, SERVERS = f"{NS}/client", (f"{NS}/srv-1", f"{NS}/srv-2")
TARGET_PORT, SERVICE_PORT = 8080, 80
CLUSTER_IP = "10.96.0.10"
GUEST_MODULES = ("ip_vs", "ip_vs_rr", "dummy", "xt_ipvs", "iptable_nat", "nf_nat")


@dataclass(frozen=True)
class Sizes:
    services: tuple[int, ...] = (1, 10, 50, 200)
    wait_s: float = 10.0  # how long an established client waits for an answer after the removal


SMOKE = Sizes(services=(1, 10, 30), wait_s=6.0)


def require() -> None:
    """EnvironmentProblem (exit 4, skip in pytest) with the detected reason if IPVS cannot run."""
    reason = detect.missing()
    if reason:
        raise EnvironmentProblem(f"ipvs proxy: {reason}",
                                 "run it in the kernel matrix: netpol-harness kernels run --kernel 6.1.0-47 --suite ipvs")


def load_modules() -> list[str]:
    """modprobe the IPVS pieces (a module load is the only host-wide action; run only where
    ``require`` passed, i.e. in a guest kernel that has them). Returns the modules that loaded."""
    ok = []
    for m in GUEST_MODULES:
        if subprocess.run(["modprobe", "-q", m], capture_output=True, timeout=60).returncode == 0:
            ok.append(m)
    return ok


def cluster() -> Cluster:
    """One real node, a client and two server pods (their port: TARGET_PORT)."""
    c = Cluster(name="ipvs-proxy")
    c.nodes[NODE] = Node(NODE, ipaddress.IPv4Address(NODE_IP), ipaddress.IPv4Network(POD_CIDR))
    for key in (CLIENT, *SERVERS):
        ns, name = key.split("/")
        c.add_pod(Pod(ns, name, NODE, {"app": name}, ports=[ContainerPort(TARGET_PORT, "TCP")]))
    return c


class LineServer:
    """A TCP server in a pod's namespace: greets each connection with its pod name, then echoes
    lines. The listening socket is made inside the namespace; serving runs in a thread here."""

    def __init__(self, lab, key: str, ip: str, port: int) -> None:
        self.name = key.split("/")[1]
        self.sock = lab.call(key, socket.create_server, (ip, port))
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, name=f"line-server-{self.name}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            readable = [self.sock, *self.conns]
            r, _, _ = select.select(readable, [], [], 0.2)
            for s in r:
                if s is self.sock:
                    with suppress(OSError):
                        c, _ = self.sock.accept()
                        c.sendall(f"hello from {self.name}\n".encode())
                        self.conns.append(c)
                    continue
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if data:
                    with suppress(OSError):
                        s.sendall(data)
                else:
                    self.conns.remove(s)
                    s.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for c in self.conns:
            c.close()
        self.sock.close()


def _error(e: BaseException) -> dict:
    code = getattr(e, "errno", None)
    return {"error": f"{type(e).__name__}: {e}", "errno": code,
            "errno_name": errno_mod.errorcode.get(code, "") if code else ""}


def _client_socket(lab) -> socket.socket:
    return lab.call(CLIENT, socket.socket, socket.AF_INET, socket.SOCK_STREAM)


def reachability(lab) -> dict:
    """Connect to ClusterIP:80 (greeting + echo) and to a port the Service lacks."""
    out: dict = {}
    s = _client_socket(lab)
    s.settimeout(5)
    t0 = time.perf_counter()
    try:
        s.connect((CLUSTER_IP, SERVICE_PORT))
        f = s.makefile("rwb")
        greeting = f.readline().decode().strip()
        f.write(b"ping\n")
        f.flush()
        echo = f.readline().decode().strip()
        out["service_port"] = {"outcome": "connected", "greeting": greeting, "echo": echo,
                               "ms": round((time.perf_counter() - t0) * 1e3, 3)}
    except OSError as e:
        out["service_port"] = {"outcome": "failed", **_error(e)}
    finally:
        s.close()
    s = _client_socket(lab)
    s.settimeout(5)
    try:
        s.connect((CLUSTER_IP, SERVICE_PORT + 1))
        out["other_port"] = {"outcome": "connected"}
    except OSError as e:
        out["other_port"] = {"outcome": "refused" if e.errno == errno_mod.ECONNREFUSED else "failed", **_error(e)}
    finally:
        s.close()
    return out


def tcp_out_rsts(netns_name: str) -> int:
    """The namespace's TCP OutRsts counter: which stack sent a reset. (/proc/thread-self/net: the
    calling thread is the one inside the namespace; /proc/net follows the main thread.)"""
    def read() -> int:
        with open("/proc/thread-self/net/snmp") as f:
            rows = [ln.split() for ln in f if ln.startswith("Tcp:")]
        return int(rows[1][rows[0].index("OutRsts")])
    return netns.call_in(netns_name, read)


def _conn_table(proxy: IpvsProxy) -> str:
    return netns.run(proxy.netns, ["ipvsadm", "-L", "-n", "-c"], check=False).stdout.strip()


def removal(lab, proxy: IpvsProxy, ips: dict[str, str], expire_nodest_conn: int, replace: bool,
            wait_s: float) -> dict:
    """An established client through the ClusterIP; its real server removed by a sync (replaced
    by the other server pod, or no endpoint left); the client then sends a line and reads."""
    proxy.set_sysctl("net/ipv4/vs/expire_nodest_conn", expire_nodest_conn)
    one = [ServicePort(CLUSTER_IP, SERVICE_PORT, endpoints=((ips[SERVERS[0]], TARGET_PORT),), namespace=NS,
                       name="db")]
    proxy.sync(one)
    s = _client_socket(lab)
    s.settimeout(5)
    res: dict = {"expire_nodest_conn": expire_nodest_conn, "endpoint_change": "replaced" if replace else "emptied"}
    try:
        s.connect((CLUSTER_IP, SERVICE_PORT))
        f = s.makefile("rb")
        res["greeting"] = f.readline().decode().strip()
        res["conn_table_before"] = _conn_table(proxy)
        after = [ServicePort(CLUSTER_IP, SERVICE_PORT, namespace=NS, name="db",
                             endpoints=((ips[SERVERS[1]], TARGET_PORT),) if replace else ())]
        rec = proxy.sync(after)
        removed_ns = rec.end_ns
        res["sync_ops"] = rec.ops
        s.settimeout(wait_s)
        where = {"node": proxy.netns, **{k.split("/")[1]: lab.pod_netns(k) for k in SERVERS}}
        rsts0 = {k: tcp_out_rsts(v) for k, v in where.items()}
        t0 = time.clock_gettime_ns(time.CLOCK_REALTIME)
        try:
            s.sendall(b"after-removal\n")
            line = f.readline()
            res.update(outcome="answered" if line else "eof", answer=line.decode(errors="replace").strip())
        except TimeoutError as e:
            res.update(outcome="timeout", **_error(e))
        except OSError as e:
            res.update(outcome="reset" if e.errno == errno_mod.ECONNRESET else "error", **_error(e))
        t1 = time.clock_gettime_ns(time.CLOCK_REALTIME)
        res["ms_send_to_outcome"] = round((t1 - t0) / 1e6, 3)
        res["ms_removal_to_outcome"] = round((t1 - removed_ns) / 1e6, 3)
        res["conn_table_after"] = _conn_table(proxy)
        # who answered with a reset: the node's own stack (the ClusterIP is local on kube-dummy-if)
        # or a server pod
        res["out_rsts"] = {k: tcp_out_rsts(v) - rsts0[k] for k, v in where.items()}
    except OSError as e:
        res.update(outcome="setup-failed", **_error(e))
    finally:
        s.close()
    return res


def sync_cost(proxy: IpvsProxy, ips: dict[str, str], n: int) -> dict:
    """First sync of ``n`` services (2 endpoints each) on an empty table, then an unchanged
    re-sync (kube-router's periodic sync), then back to none; per-service ms and phases."""
    eps = tuple((ips[k], TARGET_PORT) for k in SERVERS)
    svcs = [ServicePort(cluster_ip_of(100 + i), SERVICE_PORT, endpoints=eps, namespace=NS, name=f"svc-{i}")
            for i in range(n)]
    first = proxy.sync(svcs)
    again = proxy.sync(svcs)
    installed = len(proxy.state())
    gone = proxy.sync([])
    return {"services": n, "installed": installed, "first": first.as_dict(), "resync": again.as_dict(),
            "remove_all": gone.as_dict()}


def _versions() -> dict:
    def first(argv: list[str]) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except OSError:
            return ""
        return next((ln.strip() for ln in (p.stdout + p.stderr).splitlines() if ln.strip()), "")

    return {"ipvsadm": first(["ipvsadm", "--version"]), "iptables": first(["iptables", "--version"]),
            "ipset": first(["ipset", "--version"])}


def run(sizes: Sizes = Sizes(), repeat: int = 2, verbose: bool = True) -> Baseline:
    """The whole experiment in a fresh lab; the Baseline's metrics are sync costs, ``extra``
    holds reachability, removals and per-size syncs."""
    from harness.lab import Lab

    require()
    modules = load_modules()
    b = Baseline("ipvs", params={"sizes": list(sizes.services), "repeat": repeat, "wait_s": sizes.wait_s,
                                 "kube_router": "v2.10.0", "modules": modules})
    b.versions = {"tools": _versions()}
    with Lab(cluster(), servers=False) as lab:
        ips = {k: str(lab.cluster.pods[k].ip) for k in (CLIENT, *SERVERS)}
        servers = [LineServer(lab, k, ips[k], TARGET_PORT) for k in SERVERS]
        try:
            for masq_all in (False, True):
                proxy = IpvsProxy(lab.node_netns(NODE), ProxyConfig(NODE_IP, POD_CIDR, masquerade_all=masq_all))
                label = "masquerade_all" if masq_all else "default"
                progress(f"ipvs: proxy ({label}) start + reachability", verbose)
                start_ms = proxy.start()
                proxy.sync([ServicePort(CLUSTER_IP, SERVICE_PORT, endpoints=((ips[SERVERS[0]], TARGET_PORT),),
                                        namespace=NS, name="db")])
                b.extra.setdefault("start_ms", {})[label] = start_ms
                b.extra.setdefault("sysctls", {})[label] = {p: proxy.sysctl(p) for p, _ in
                                                            proxy.plan([]).sysctls}
                b.extra.setdefault("reachability", {})[label] = reachability(lab)
                for expire in (1, 0):
                    for replace in (True, False):
                        progress(f"ipvs: {label} removal expire_nodest_conn={expire} "
                                 f"{'replaced' if replace else 'emptied'}", verbose)
                        r = removal(lab, proxy, ips, expire, replace, sizes.wait_s)
                        r["proxy"] = label
                        b.extra.setdefault("removal", []).append(r)
                proxy.set_sysctl("net/ipv4/vs/expire_nodest_conn", 1)
                if not masq_all:
                    for n in sizes.services:
                        for _ in range(repeat):
                            progress(f"ipvs: sync cost, {n} services", verbose)
                            b.extra.setdefault("syncs", []).append(sync_cost(proxy, ips, n))
                proxy.teardown()
        finally:
            for s in servers:
                s.close()
    _metrics(b)
    return b


def _metrics(b: Baseline) -> None:
    """Per-service sync cost (ms) by size and kind, and its phases at the largest size."""
    syncs = b.extra.get("syncs", [])
    sizes = sorted({s["services"] for s in syncs})
    for n in sizes:
        rows = [s for s in syncs if s["services"] == n]
        for kind in ("first", "resync", "remove_all"):
            b.add(f"ipvs.sync_{kind}.n{n}.per_service_ms", "ms", [r[kind]["total_ms"] / n for r in rows])
    if sizes:
        top = [s for s in syncs if s["services"] == sizes[-1]]
        for phase in top[0]["first"]["phases_ms"]:
            b.add(f"ipvs.sync_first.n{sizes[-1]}.{phase}_ms", "ms", [r["first"]["phases_ms"][phase] for r in top],
                  gate=False)
    for r in b.extra.get("removal", []):
        b.notes.append(f"{r['proxy']}: expire_nodest_conn={r['expire_nodest_conn']} {r['endpoint_change']}: "
                       f"{r.get('outcome')} {r.get('error', '')} after {r.get('ms_send_to_outcome', '?')} ms")

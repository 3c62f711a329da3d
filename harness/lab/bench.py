"""``netpol-harness bench lab``: how fast the lab realizes and removes pods on this kernel."""

from __future__ import annotations

import ipaddress
import math
import os
import platform
import resource
import time
from dataclasses import dataclass

from harness.model.cluster import Cluster, ContainerPort, Namespace, Node, Pod, PodKind


def bench_cluster(full: int, light: int, nodes: int = 2, ports: bool = True) -> Cluster:
    """``nodes`` real nodes with ``full`` full and ``light`` light pods spread round-robin, each
    serving 80/TCP and 80/UDP. Pod CIDRs are sized to fit (at least /24), carved from 10.244.0.0/16
    or, if that is too small, 10.0.0.0/8."""
    per_node = math.ceil((full + light) / max(nodes, 1)) + 2
    prefix = min(24, 32 - math.ceil(math.log2(per_node)))
    cluster_cidr = ipaddress.IPv4Network("10.244.0.0/16")
    if 2 ** (prefix - 16) < nodes:
        cluster_cidr = ipaddress.IPv4Network("10.0.0.0/8")
    subnets = cluster_cidr.subnets(new_prefix=prefix)
    c = Cluster(name=f"bench-{full}f-{light}l", cluster_cidr=cluster_cidr)
    hosts: dict[str, object] = {}
    for i in range(nodes):
        name = f"node-{i}"
        c.nodes[name] = Node(name, ipaddress.IPv4Address("172.18.0.2") + i, next(subnets))
        hosts[name] = c.nodes[name].pod_cidr.hosts()
        next(hosts[name])  # type: ignore[call-overload]  # the gateway
    c.namespaces["bench"] = Namespace("bench")
    served = [ContainerPort(80, "TCP"), ContainerPort(80, "UDP")] if ports else []
    for kind, count in ((PodKind.FULL, full), (PodKind.LIGHT, light)):
        for j in range(count):
            node = f"node-{j % nodes}"
            # IPs assigned here: Cluster.allocate_ip scans all pods, quadratic at 10,000 pods.
            ip = next(hosts[node])  # type: ignore[call-overload]
            p = Pod("bench", f"{kind.value}-{j}", node, {"app": "bench"}, ip=ip, ports=list(served), kind=kind)
            c.pods[p.key] = p
    return c


@dataclass
class LabBenchResult:
    kernel: str
    nodes: int
    full: int
    light: int
    servers: bool
    infrastructure_s: float
    full_pods_s: float
    light_pods_s: float
    servers_s: float
    up_s: float
    down_s: float
    add_pod_ms: float  # one more full pod at run time, like CNI ADD
    settled_s: float | None  # down() until the kernel had freed the namespaces (None: not observable)
    up_cpu_s: float  # CPU time (user + system, all threads) this process spent in up(): wall - cpu = waiting


def net_namespace_objects() -> int | None:
    """Live ``struct net`` objects (slab net_namespace): namespaces whose name is gone are freed
    asynchronously by the kernel; this shows when it is done. None if /proc/slabinfo is closed."""
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def wait_kernel_settled(timeout: float = 60.0, quiet: float = 0.5) -> float | None:
    """Wait until the count of live namespaces stops falling for ``quiet`` seconds (a previous
    lab's asynchronous cleanup would otherwise be measured as part of the next one). Returns
    seconds waited, or None when the count cannot be read."""
    t0 = time.perf_counter()
    last = net_namespace_objects()
    if last is None:
        return None
    stable_since = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        time.sleep(0.05)
        now = net_namespace_objects() or 0
        if now < last:
            stable_since = time.perf_counter()
        last = now
        if time.perf_counter() - stable_since >= quiet:
            return time.perf_counter() - t0 - quiet
    return time.perf_counter() - t0


def run_lab_bench(full: int, light: int, nodes: int = 2, servers: bool = True) -> LabBenchResult:
    """Build and remove one lab, timing each phase (perf_counter seconds)."""
    from harness.lab.lab import Lab

    c = bench_cluster(full, light, nodes)
    wait_kernel_settled()
    lab = Lab(c, servers=servers)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    lab.up()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        extra = Pod("bench", "added", "node-0", ports=[ContainerPort(80)])
        t0 = time.perf_counter()
        lab.add_pod(extra)
        add_ms = (time.perf_counter() - t0) * 1000
    finally:
        lab.down()
    settled = wait_kernel_settled()
    t = lab.timings
    return LabBenchResult(kernel=platform.release(), nodes=nodes, full=full, light=light, servers=servers,
                          infrastructure_s=t.infrastructure, full_pods_s=t.full_pods, light_pods_s=t.light_pods,
                          servers_s=t.servers, up_s=t.up, down_s=t.down, add_pod_ms=add_ms,
                          settled_s=None if settled is None else t.down + settled,
                          up_cpu_s=(r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))

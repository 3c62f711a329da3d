"""New-connection cost through kube-network-policies' queue against kube-router's rules, at the
same number of policies (``netpol-harness bench queue``).

One lab of the default topology. The client ``frontend/web-0`` opens TCP connections one after
the other to ``db/mysql-0:3306`` on the same node (node-a); P policies select mysql-0: P - 1 that
allow other peers (podSelector app=peer-i, never the client) and, last, the one that allows the
client, so both engines walk all P before the verdict (kube-router: the pod chain jumps every
policy chain; kube-network-policies: its evaluation iterates every policy of the pod).

Per (engine, P): ``connections`` connect() calls timed in the client's namespace (a SYN, the
SYN-ACK, the client's ACK; closed with RST so no TIME_WAIT piles up); each is a new conntrack
entry, so kube-network-policies queues its SYN to userspace, and kube-router's SYN walks the
pod chain. ``none`` is the same lab without any engine. Reported: connect p10/p50/p90 (µs), the
added p50 against ``none``, the client's sequential connections/s, and for the queue the
verdict loop's own cost: CPU per verdict (receive + parse + evaluate + verdict, the loop
thread's CPU time) and the connections/s one core could decide at that cost. First, the one
step of this engine whose cost grows with the cluster: an nftables sync (render + ``nft -f`` of
the whole table) by podips size (``sync_times``).
"""

from __future__ import annotations

import copy
import socket
import statistics
import struct
import time
from dataclasses import asdict, dataclass
from typing import Any

from harness.bench.baseline import Baseline
from harness.controller.timeline import Timeline
from harness.engines import registry
from harness.engines.config import EnforcementConfig
from harness.kernel import netns
from harness.model.cluster import Cluster
from harness.model.policy import LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule

CLIENT, SERVER, PORT, NODE = "frontend/web-0", "db/mysql-0", 3306, "node-a"
ENGINES = ("none", "kube-router", "kube-network-policies")
DEFAULT_POLICIES = (1, 10, 100)
SMOKE_POLICIES = (1, 10)


@dataclass
class QueueRow:
    """One (engine, policies) cell; times in µs."""

    engine: str
    policies: int
    connections: int
    p10_us: float
    p50_us: float
    p90_us: float
    added_p50_us: float | None = None
    client_conn_per_s: float = 0.0
    verdict_cpu_us: float | None = None  # kube-network-policies: loop CPU per verdict
    verdict_conn_per_s_core: float | None = None
    verdicts: int = 0  # verdicts during the timed connections: 1 each when the accept label works
    datapath: str = ""  # kube-network-policies: native | compat (ruleset.Datapath)


def bench_policies(n: int) -> list[NetworkPolicy]:
    """``n`` ingress policies selecting mysql; the last one allows the client (see the module docstring)."""
    sel = LabelSelector.of({"app": "mysql"})
    port = (PolicyPort("TCP", PORT),)
    out = [NetworkPolicy("db", f"bench-{i:04d}", sel, ("Ingress",),
                         (PolicyRule((PolicyPeer(pod_selector=LabelSelector.of({"app": f"peer-{i}"})),), port),))
           for i in range(n - 1)]
    out.append(NetworkPolicy("db", "bench-zz-allow-web", sel, ("Ingress",), (PolicyRule(
        (PolicyPeer(namespace_selector=LabelSelector.of({"tier": "frontend"}),
                    pod_selector=LabelSelector.of({"app": "web"})),), port),)))
    return out


def connect_times(dst: str, port: int, count: int, timeout: float = 3.0) -> list[int]:
    """ns per connect() to ``dst:port``, ``count`` times (run inside the client's namespace)."""
    out = []
    linger = struct.pack("ii", 1, 0)
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        t0 = time.perf_counter_ns()
        try:
            s.connect((dst, port))
            out.append(time.perf_counter_ns() - t0)
        except OSError:
            pass
        finally:
            s.close()
    return out


def _view(cluster: Cluster, n: int) -> Cluster:
    view = copy.deepcopy(cluster)
    for pol in bench_policies(n):
        view.policies[pol.key] = pol
    return view


def _measure(lab: Any, engine: str, n: int, connections: int, warmup: int) -> tuple[list[int], tuple[Any, str]]:
    ne = None
    if engine != "none":
        cfg = EnforcementConfig(engine=engine)
        eng = registry.resolve(cfg)
        eng.require_tools(cfg)
        ne = eng.node(NODE, lab.node_netns(NODE), cfg, Timeline())
        view = _view(lab.cluster, n)
        ne.start(view)
        if not ne.reports_syncs:
            ne.program(view, sync_version=time.time_ns())
    try:
        dst = str(lab.cluster.pods[SERVER].ip)
        lab.call(CLIENT, connect_times, dst, PORT, warmup)
        loop = getattr(ne, "loop", None)
        if loop is not None:
            time.sleep(0.3)  # the loop counts a verdict after sending it: let the warm-up's last one land
        before = (loop.stats.cpu_ns, loop.stats.accepted + loop.stats.dropped) if loop else (0, 0)
        times = lab.call(CLIENT, connect_times, dst, PORT, connections)
        stats = None
        if loop is not None:
            time.sleep(0.3)  # the loop's last receive timeout ends, its CPU time is added
            stats = (loop.stats.cpu_ns - before[0], loop.stats.accepted + loop.stats.dropped - before[1])
        return times, (stats, str(ne.opts.datapath) if loop is not None else "")
    finally:
        if ne is not None:
            ne.stop()
        if engine == "kube-router":  # its rules stay for the lab otherwise: empty the filter table
            netns.run(lab.node_netns(NODE), ["iptables-nft", "-F"], check=False)
            netns.run(lab.node_netns(NODE), ["iptables-nft", "-X"], check=False)


SYNC_SIZES = (1, 1000, 10_000)  # podips entries (the local pods some policy selects)


def sync_times(netns_name: str, sizes: tuple[int, ...], repeat: int = 3) -> dict[int, float]:
    """ms of one nftables sync (render + ``nft -f`` of the whole table) per podips size, the
    median of ``repeat`` (the one step of this engine whose cost grows with the cluster)."""
    import ipaddress

    from harness.engines.kube_network_policies import dataplane
    from harness.engines.kube_network_policies import ruleset as rs

    opts = rs.NftOptions(datapath=dataplane.detect_datapath(netns_name))
    out = {}
    try:
        for n in sizes:
            ips = [ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.128.0.0")) + i) for i in range(n)]
            runs = []
            for _ in range(repeat):
                t0 = time.perf_counter_ns()
                dataplane.apply(netns_name, rs.render(ips, opts))
                runs.append((time.perf_counter_ns() - t0) / 1e6)
            out[n] = statistics.median(runs)
    finally:
        dataplane.remove(netns_name, opts)
    return out


def run_queue_bench(policy_counts: tuple[int, ...] = DEFAULT_POLICIES, connections: int = 500,
                    engines: tuple[str, ...] = ENGINES, warmup: int = 20, sync_sizes: tuple[int, ...] = (),
                    syncs: dict[int, float] | None = None) -> list[QueueRow]:
    """Every (engine, P) cell in one lab of the default topology (see the module docstring);
    with ``sync_sizes``, ``syncs`` (a dict) receives ``sync_times`` of node-a first."""
    syncs = {} if syncs is None else syncs
    from harness.lab import Lab
    from harness.model.topology import load_topology

    rows: list[QueueRow] = []
    with Lab(load_topology("default")) as lab:
        if sync_sizes:
            syncs.update(sync_times(lab.node_netns(NODE), sync_sizes))
        for engine in engines:
            for n in (policy_counts if engine != "none" else (0,)):
                times, (stats, datapath) = _measure(lab, engine, n, connections, warmup)
                if not times:
                    rows.append(QueueRow(engine, n, 0, 0.0, 0.0, 0.0))
                    continue
                q = statistics.quantiles(times, n=10)
                p50 = statistics.median(times) / 1e3
                row = QueueRow(engine, n, len(times), q[0] / 1e3, p50, q[-1] / 1e3,
                               client_conn_per_s=1e6 / p50, datapath=datapath)
                if stats and stats[1]:
                    cpu_us = stats[0] / stats[1] / 1e3
                    row.verdict_cpu_us, row.verdict_conn_per_s_core, row.verdicts = cpu_us, 1e6 / cpu_us, stats[1]
                rows.append(row)
    base = next((r.p50_us for r in rows if r.engine == "none" and r.connections), None)
    for r in rows:
        if base is not None and r.engine != "none" and r.connections:
            r.added_p50_us = r.p50_us - base
    return rows


def format_rows(rows: list[QueueRow]) -> str:
    """The table ``bench queue`` prints."""
    from tabulate import tabulate

    def f(v: float | None, d: int = 1) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    table = [[r.engine + (f" ({r.datapath})" if r.datapath else ""), r.policies, r.connections, f(r.p10_us),
              f(r.p50_us), f(r.p90_us), f(r.added_p50_us), f(r.client_conn_per_s, 0), f(r.verdict_cpu_us),
              f(r.verdict_conn_per_s_core, 0), f(r.verdicts / r.connections if r.verdicts else None, 2)]
             for r in rows]
    return tabulate(table, headers=["engine", "policies", "conns", "p10 µs", "p50 µs", "p90 µs", "added p50 µs",
                                    "client conn/s", "verdict CPU µs", "verdicts/s/core", "verdicts/conn"])


def to_baseline(rows: list[QueueRow], run: str, connections: int, syncs: dict[int, float] | None = None) -> Baseline:
    """The rows as a bench baseline (``queue.<engine>.p<P>.<metric>``: comparable across kernels
    with ``compare`` and the kernel matrix); the rows themselves in ``extra``."""
    b = Baseline("queue", params={"connections": connections, "run": run})
    for r in rows:
        if not r.connections:
            continue
        key = f"queue.{r.engine}.p{r.policies}"
        b.add(f"{key}.connect_p50_us", "us", [r.p50_us])
        if r.added_p50_us is not None:
            b.add(f"{key}.added_p50_us", "us", [r.added_p50_us], floor=5.0, gate=False)
        if r.verdict_cpu_us is not None:
            b.add(f"{key}.verdict_cpu_us", "us", [r.verdict_cpu_us])
            b.add(f"{key}.verdicts_per_connection", "count", [r.verdicts / r.connections], gate=False)
    for n, ms in (syncs or {}).items():
        b.add(f"queue.nftables_sync.podips{n}_ms", "ms", [ms])
    b.extra["rows"] = [asdict(r) for r in rows]
    b.extra["nftables_sync_ms"] = {str(n): ms for n, ms in (syncs or {}).items()}
    return b

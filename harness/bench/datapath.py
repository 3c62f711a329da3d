"""Datapath cost of rules: per-packet latency and throughput between two pods with N
non-matching rules in the path, against the same policy expressed with one ipset.

Topology (lab primitives only: three ``nph-`` namespaces, two veth pairs, no link to the root
namespace)::

    client pod 10.244.1.2 --veth-- node (forwarding, rules in FORWARD) --veth-- server pod 10.244.2.2

Modes, programmed with one ``iptables-restore`` of the node's filter table:

- ``rules``: N rules ``-s <ip>/32 -p udp -m udp --dport 7 -j DROP`` whose sources never match
  the flow, so every forwarded packet walks all N (no conntrack shortcut is installed);
- ``ipset``: one rule ``-m set --match-set <set> src -j DROP`` over a hash:ip set of the same N
  addresses: one hash lookup.

Latency: UDP ping-pong to an echo server process in the server pod; the request leaves at
``time.time_ns()`` just before ``send`` and the reply's arrival is the kernel receive timestamp
(SO_TIMESTAMPNS, same CLOCK_REALTIME), so client wake-up is not counted. One round trip crosses
FORWARD twice: ``ns_per_rule_rtt = slope(10th-percentile RTT vs N) / 2`` (the median is reported
too, but on a busy 2-CPU machine the echo server's wake-up makes it bimodal); from throughput,
``ns_per_rule_pps = slope(1/pps vs N)`` (for ``ipset`` both are per set entry, expected ~0).
Throughput: the client sends 64-byte UDP datagrams as fast as one Python thread can for a
window; forwarded packets are counted as the server veth's rx_packets (kernel counter).
Forwarding runs in the sender's softirq, so the rate falls as per-packet cost grows; at small N
the Python sender is the limit.

Repeats: for each (backend, mode, N) the rules are loaded once and ``repeat`` batches of pings
and ``repeat`` throughput windows are measured (batch medians are the repeats); the per-rule
slopes are computed per repeat (the i-th batch at every N), giving them a min-max too.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from harness.bench.baseline import BENCH_BACKENDS, Baseline
from harness.bench.common import progress, timed_run
from harness.errors import KernelError
from harness.kernel import netns
from harness.kernel.backends import IPSET, forget, get_backend

log = logging.getLogger(__name__)

CLIENT_IP, SERVER_IP = "10.244.1.2", "10.244.2.2"
ECHO_PORT, SINK_PORT = 9000, 9001
DEFAULT_COUNTS = (0, 100, 1000, 5000, 10_000, 50_000)
SMOKE_COUNTS = (0, 200)
SO_TIMESTAMPNS = 35  # == SCM_TIMESTAMPNS (Python lacks the constant); struct timespec on 64-bit
MODES = ("rules", "ipset")
NS_FLOOR = 1.0  # ns per rule: smaller changes are never a regression (ipset: ~0 per entry)
RTT_FLOOR_US = 2.0  # scheduling noise of one wake-up on a busy machine

# The echo server: its own process (no GIL shared with the measuring client); a sink socket
# that is never read makes datagrams of the throughput test land on a bound port.
_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
k = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); k.bind(("0.0.0.0", int(sys.argv[2])))
k.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
print("ready", flush=True)
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
"""


@dataclass
class PodPair:
    client: str
    node: str
    server: str
    echo: subprocess.Popen | None = None


def _ip(n: int) -> str:
    return str(ipaddress.IPv4Address("10.128.0.0") + n)


@contextmanager
def pod_pair(run: str, tag: str) -> Iterator[PodPair]:
    """Client, node and server namespaces wired by veths, the echo server started; all removed on exit."""
    tb = PodPair(f"nph-{run}-dp{tag}-c", f"nph-{run}-dp{tag}-n", f"nph-{run}-dp{tag}-s")
    made: list[str] = []
    try:
        for name in (tb.node, tb.client, tb.server):
            netns.create(name)
            made.append(name)
        for pod, ip, gw, dev in ((tb.client, CLIENT_IP, "10.244.1.1", "vc"), (tb.server, SERVER_IP, "10.244.2.1", "vs")):
            netns.run(tb.node, ["ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", pod])
            netns.run(tb.node, ["ip", "addr", "add", f"{gw}/24", "dev", dev])
            netns.run(tb.node, ["ip", "link", "set", dev, "up"])
            netns.run(pod, ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
            netns.run(pod, ["ip", "link", "set", "eth0", "up"])
            netns.run(pod, ["ip", "link", "set", "lo", "up"])
            netns.run(pod, ["ip", "route", "add", "default", "via", gw])
        netns.run(tb.node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        tb.echo = netns.popen(tb.server, [sys.executable, "-c", _ECHO, str(ECHO_PORT), str(SINK_PORT)],
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        if tb.echo.stdout.readline().strip() != "ready":
            raise KernelError("datapath echo server did not start")
        yield tb
    finally:
        if tb.echo is not None:
            tb.echo.kill()
            tb.echo.wait()
        for name in reversed(made):
            try:
                netns.delete(name)
            finally:
                forget(name)


def ruleset_text(mode: str, n: int) -> tuple[str, str]:
    """(ipset restore input, iptables-restore input) of the node's filter table for ``mode``/``n``."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}")
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    sets = ""
    if mode == "rules":
        lines += [f"-A FORWARD -s {_ip(i)}/32 -p udp -m udp --dport 7 -j DROP" for i in range(n)]
    elif n:
        maxelem = max(65536, 1 << (n - 1).bit_length())
        sets = f"create dp-block hash:ip family inet hashsize 1024 maxelem {maxelem}\n" + "".join(
            f"add dp-block {_ip(i)}\n" for i in range(n))
        lines.append("-A FORWARD -m set --match-set dp-block src -j DROP")
    lines.append("COMMIT")
    return sets, "\n".join(lines) + "\n"


def _load(tb: PodPair, backend: str, mode: str, n: int) -> float:
    b = get_backend(backend)
    sets, table = ruleset_text(mode, n)

    def job() -> float:
        # empty the table first (a previous mode's rule may reference the set), then drop the sets
        timed_run(b.restore_argv(), ruleset_text("rules", 0)[1])
        timed_run([IPSET, "destroy"])  # all sets of this namespace: ours only
        t = timed_run([IPSET, "restore"], sets) if sets else 0
        return (t + timed_run(b.restore_argv(), table)) / 1e6

    return netns.call_in(tb.node, job)


def _udp_socket(ns: str) -> socket.socket:
    s = netns.call_in(ns, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    return s


def ping_batch(sock: socket.socket, count: int, timeout_s: float = 1.0) -> tuple[list[int], int]:
    """``count`` UDP round trips on a connected socket: (RTTs in ns from the kernel receive
    timestamp, lost)."""
    sock.settimeout(timeout_s)
    rtts, lost = [], 0
    for i in range(count):
        payload = struct.pack("!Q", i)
        t0 = time.time_ns()
        sock.send(payload)
        while True:
            try:
                data, anc, _, _ = sock.recvmsg(64, 64)
            except TimeoutError:
                lost += 1
                break
            if data != payload:
                continue  # a late reply of an earlier timed-out ping
            ts = next((struct.unpack("qq", d[:16]) for lvl, typ, d in anc
                       if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS), None)
            rtts.append((ts[0] * 1_000_000_000 + ts[1] if ts else time.time_ns()) - t0)
            break
    return rtts, lost


def _rx_packets(ns: str) -> int:
    with netns.ipr(ns) as ipr:
        link = ipr.link_lookup(ifname="eth0")[0]
        return ipr.get_links(link)[0].get_attr("IFLA_STATS64")["rx_packets"]


def throughput_window(tb: PodPair, sock: socket.socket, window_s: float) -> float:
    """Datagrams per second forwarded to the server pod while one thread sends for ``window_s``."""
    before = _rx_packets(tb.server)
    payload = b"x" * 64
    sent = 0
    t0 = time.perf_counter()
    end = t0 + window_s
    while True:
        for _ in range(256):
            try:
                sock.send(payload)
            except OSError:  # ENOBUFS/ECONNREFUSED from a queued ICMP error: keep sending
                pass
        sent += 256
        if time.perf_counter() >= end:
            break
    elapsed = time.perf_counter() - t0
    time.sleep(0.05)  # let queued packets drain through the node before reading the counter
    return (_rx_packets(tb.server) - before) / elapsed


@dataclass
class DatapathConfig:
    counts: tuple[int, ...] = DEFAULT_COUNTS
    backends: tuple[str, ...] = BENCH_BACKENDS
    modes: tuple[str, ...] = MODES
    repeat: int = 5
    pings: int = 200  # per repeat
    window_s: float = 0.5  # per repeat
    budget_s: float = 300.0
    verbose: bool = True


@dataclass
class DatapathRow:
    backend: str
    mode: str
    rules: int
    load_ms: float
    rtt_us: list[float] = field(default_factory=list)  # repeat medians
    rtt_p10_us: list[float] = field(default_factory=list)  # repeat 10th percentiles (less scheduling noise)
    pps: list[float] = field(default_factory=list)
    lost: int = 0


def _p10(values: list[int]) -> float:
    v = sorted(values)
    return v[len(v) // 10]


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (pure); None with fewer than two distinct xs."""
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def run_datapath(run: str, cfg: DatapathConfig) -> Baseline:
    """Measure every backend x mode x N; returns a Baseline of suite ``datapath`` with rows in
    ``extra["rows"]`` and ``ns_per_rule`` per backend/mode in ``extra["ns_per_rule"]``."""
    result = Baseline("datapath", params=asdict(cfg))
    result.params.pop("verbose", None)
    rows: list[DatapathRow] = []
    t_start = time.monotonic()
    stop = False
    for bi, backend in enumerate(cfg.backends):
        if stop:
            break
        with pod_pair(run, str(bi)) as tb:  # one namespace set per backend: never mix backends
            sock = _udp_socket(tb.client)
            tsock = _udp_socket(tb.client)
            try:
                sock.connect((SERVER_IP, ECHO_PORT))
                tsock.connect((SERVER_IP, SINK_PORT))
                ping_batch(sock, 20)  # warm up: neighbour resolution, caches
                for mode in cfg.modes:
                    for n in cfg.counts:
                        if time.monotonic() - t_start > cfg.budget_s:
                            note = f"budget {cfg.budget_s:.0f} s spent: stopped before {backend} {mode} N={n}"
                            result.notes.append(note)
                            progress(note, cfg.verbose)
                            stop = True
                            break
                        row = DatapathRow(backend, mode, n, _load(tb, backend, mode, n))
                        ping_batch(sock, 10)
                        for _ in range(cfg.repeat):
                            rtts, lost = ping_batch(sock, cfg.pings)
                            row.lost += lost
                            if rtts:
                                row.rtt_us.append(statistics.median(rtts) / 1e3)
                                row.rtt_p10_us.append(_p10(rtts) / 1e3)
                            row.pps.append(throughput_window(tb, tsock, cfg.window_s))
                        rows.append(row)
                        if row.rtt_us:
                            # the median is bimodal (echo server wake-up): informational; p10 gates
                            result.add(f"{backend}.{mode}.N{n}.rtt_us", "us", row.rtt_us, floor=RTT_FLOOR_US,
                                       gate=False)
                            result.add(f"{backend}.{mode}.N{n}.rtt_p10_us", "us", row.rtt_p10_us,
                                       floor=RTT_FLOOR_US)
                        # a Python sender's rate on a shared machine: informational; the slopes gate
                        result.add(f"{backend}.{mode}.N{n}.pps", "pps", row.pps, better="higher", gate=False)
                        progress(f"datapath {backend} {mode:5} N={n:6}: load {row.load_ms:.0f} ms, RTT "
                                 f"{statistics.median(row.rtt_us) if row.rtt_us else float('nan'):.1f} us, "
                                 f"{statistics.median(row.pps):,.0f} pps, lost {row.lost}", cfg.verbose)
                    if stop:
                        break
            finally:
                sock.close()
                tsock.close()
    per_rule = {}
    for backend in cfg.backends:
        for mode in cfg.modes:
            rs = [r for r in rows if r.backend == backend and r.mode == mode]
            reps = min((min(len(r.rtt_p10_us), len(r.pps)) for r in rs), default=0)
            # one slope per repeat (the i-th batch at every N) gives the metric its min-max;
            # RTT on the 10th percentile: the echo server's wake-up (same CPU or not) makes the
            # median bimodal on a busy 2-CPU machine; a round trip crosses FORWARD twice
            rtt = [slope([r.rules for r in rs], [r.rtt_p10_us[i] * 1e3 for r in rs]) for i in range(reps)]
            # throughput: ns per packet; a packet crosses FORWARD once
            pps = [slope([r.rules for r in rs], [1e9 / r.pps[i] for r in rs]) for i in range(reps)]
            if rtt and None not in rtt:
                per_rule[f"{backend} {mode} (RTT)"] = round(statistics.median(rtt) / 2, 3)
                result.add(f"{backend}.{mode}.ns_per_rule_rtt", "ns", [v / 2 for v in rtt], floor=NS_FLOOR)
            if pps and None not in pps:
                per_rule[f"{backend} {mode} (pps)"] = round(statistics.median(pps), 3)
                result.add(f"{backend}.{mode}.ns_per_rule_pps", "ns", pps, floor=NS_FLOOR)
    result.extra = {"rows": [asdict(r) for r in rows], "ns_per_rule": per_rule,
                    "topology": "client pod -veth- node (FORWARD) -veth- server pod; UDP 64 B"}
    return result

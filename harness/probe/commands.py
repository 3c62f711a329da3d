"""CLI commands of the probe engine: ``calibrate`` and ``bench probe``.

Both build a small lab of their own (two real nodes; on node-a two full pods and two light pods,
on node-b one of each; echo servers on 80/81 TCP+UDP) and remove it on every exit path.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import platform
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from tabulate import tabulate

from harness.argtypes import positive_float
from harness.errors import ConfigError, EnvironmentProblem

PAIRS = {  # name -> (source pod, destination pod), both on node-a so the rule goes in one FORWARD
    "full": ("full-a", "full-a2"),
    "light": ("light-a", "full-a2"),
    "to-light": ("full-a", "light-a"),
}


def register(sub: Any, bench: Any) -> None:
    """Add ``calibrate`` to the top-level subparsers and ``probe`` to the bench suites."""
    p = sub.add_parser("calibrate", help="check the prober's observed transitions against rule changes")
    p.add_argument("--transitions", type=_positive_int, default=50,
                   help="rule insert/delete pairs per pod pair (default 50: 50 each direction)")
    p.add_argument("--rate", type=_rate, default=1000.0, help="probes per second (default 1000)")
    p.add_argument("--action", choices=("REJECT", "DROP"), default="REJECT", help="blocking rule target")
    p.add_argument("--pairs", default="full,light", type=_pairs,
                   help=f"pod pairs to calibrate, comma separated from {', '.join(PAIRS)} (default full,light)")
    p.add_argument("--json", metavar="FILE", help="also write every transition as JSON")
    p.add_argument("--no-realtime", action="store_true",
                   help="run the prober and commit watcher at normal priority (default: SCHED_FIFO)")
    p.set_defaults(func=cmd_calibrate)

    p = bench.add_parser("probe", help="sustained probes/s with correct classification, CPU per 1,000 probes")
    p.add_argument("--rates", type=_rates, default=[1000.0, 2000.0, 5000.0, 8000.0, 10000.0],
                   help="comma-separated target rates, probes/s (default 1000,2000,5000,8000,10000)")
    p.add_argument("--duration", type=positive_float, default=3.0, help="seconds per rate (default 3)")
    p.add_argument("--flows", type=_positive_int, default=1, help="concurrent flows sharing each rate")
    p.add_argument("--proto", choices=("TCP", "UDP", "ICMP"), default="TCP", help="probe protocol (default TCP)")
    p.add_argument("--repeat", type=_positive_int, default=1, help="runs per rate (one row each)")
    p.set_defaults(func=cmd_bench_probe)


# -- argument types (argparse turns ValueError into a one-line usage error) -------------------------
def _positive_int(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be > 0")
    return v


def _rate(text: str) -> float:
    v = float(text)
    if not 0 < v <= 100_000:
        raise argparse.ArgumentTypeError(f"{text}: probes/s must be in (0, 100000]")
    return v


def _rates(text: str) -> list[float]:
    return [_rate(t) for t in text.split(",") if t.strip()]


def _pairs(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    for n in names:
        if n not in PAIRS:
            raise argparse.ArgumentTypeError(f"unknown pair {n!r} (choose from {', '.join(PAIRS)})")
    return names


# -- the lab both commands use --------------------------------------------------------------------
def probe_cluster() -> Any:
    """Two real nodes, full and light pods serving 80/81 TCP+UDP (namespace ``probe``)."""
    from harness.model.cluster import Cluster, ContainerPort, Node, Pod, PodKind

    cluster = Cluster(name="probe-calibration")
    cluster.nodes["node-a"] = Node("node-a", ipaddress.IPv4Address("172.18.0.2"),
                                   ipaddress.IPv4Network("10.244.0.0/24"))
    cluster.nodes["node-b"] = Node("node-b", ipaddress.IPv4Address("172.18.0.3"),
                                   ipaddress.IPv4Network("10.244.1.0/24"))
    ports = [ContainerPort(p, proto) for p in (80, 81) for proto in ("TCP", "UDP")]
    for name, node, kind in (("full-a", "node-a", PodKind.FULL), ("full-a2", "node-a", PodKind.FULL),
                             ("light-a", "node-a", PodKind.LIGHT), ("light-a2", "node-a", PodKind.LIGHT),
                             ("full-b", "node-b", PodKind.FULL), ("light-b", "node-b", PodKind.LIGHT)):
        cluster.add_pod(Pod("probe", name, node, labels={"app": name}, ports=list(ports), kind=kind))
    return cluster


@contextlib.contextmanager
def probe_lab() -> Iterator[Any]:
    if os.geteuid() != 0:
        raise EnvironmentProblem("the probe engine needs root (network namespaces, raw sockets)",
                                 "run as root")
    from harness.lab import Lab

    with Lab(probe_cluster()) as lab:
        yield lab


def _ep(lab: Any, name: str) -> tuple[str, str]:
    key = f"probe/{name}"
    return lab.pod_netns(key), str(lab.cluster.pods[key].ip)


def machine_line() -> str:
    import pyroute2
    import scapy

    return (f"kernel {platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"scapy {scapy.VERSION}, pyroute2 {pyroute2.__version__}, load {os.getloadavg()[0]:.2f}")


# -- calibrate ------------------------------------------------------------------------------------
def cmd_calibrate(args: argparse.Namespace) -> int:
    from harness.probe import calibrate

    results = []
    with probe_lab() as lab:
        node = lab.node_netns("node-a")
        for name in args.pairs:
            src, dst = PAIRS[name]
            sns, sip = _ep(lab, src)
            _, dip = _ep(lab, dst)
            results.append(calibrate.run_calibration(
                node, sns, sip, dip, 80, transitions=args.transitions, rate=args.rate, action=args.action,
                label=f"{name}: {src}->{dst}", realtime=not args.no_realtime))
    rows = [row for r in results for row in r.summary_rows()]
    print(machine_line())
    print(f"rule: iptables {args.action} in node-a FORWARD; {args.rate:g} probes/s; "
          f"prober priority {'normal' if args.no_realtime else 'SCHED_FIFO'}; "
          f"error = first probe with the new outcome - nf_tables commit; bound = interval + 1 ms "
          f"= {results[0].bound_ns / 1000:.0f} µs\n")
    print(tabulate(rows, headers=calibrate.HEADERS, disable_numparse=True))
    for r in results:
        print(f"{r.label}: {r.probes} probes, missing {r.missing()} (of which unprobed {r.unprobed()}), "
              f"flaps {r.flaps()}, uncertain send times {r.uncertain}, "
              f"max send lag {r.max_send_lag_ns / 1000:.0f} µs, schedule restarts {r.rescheduled}, "
              "change times: " + ", ".join(f"{src} {n}" for src, n in
                                            sorted(Counter(c.source for c in r.changes).items())))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"label": r.label, "rate": r.rate, "action": r.action, "bound_ns": r.bound_ns,
                        "transitions": [t.__dict__ | {"error_ns": t.error_ns} for t in r.transitions]}
                       for r in results], f, indent=1)
    ok = all(r.missing() == 0 and r.flaps() == 0 for r in results)
    return 0 if ok else 1


# -- bench probe ----------------------------------------------------------------------------------
def cmd_bench_probe(args: argparse.Namespace) -> int:
    from harness.probe.classify import Outcome
    from harness.probe.packet import FlowSpec, PacketProber

    if args.duration <= 0:
        raise ConfigError(None, "--duration", "must be > 0")
    rows = []
    with probe_lab() as lab:
        sns, sip = _ep(lab, "full-a")
        _, dip = _ep(lab, "full-a2")
        port = 0 if args.proto == "ICMP" else 80
        for rate in args.rates:
            for _ in range(args.repeat):
                per_flow = rate / args.flows
                count = max(1, int(per_flow * args.duration))
                # Answers come within µs here; a shorter timeout keeps fast flows in their port range.
                prober = PacketProber(timeout_s=min(0.5, 10_000 / per_flow / args.flows))
                try:
                    flows = [prober.add_flow(FlowSpec(sns, sip, dip, port, args.proto, rate=per_flow,
                                                      count=count, flow_id=f"bench-{i}",
                                                      port_range=_split_range(args.proto, i, args.flows)))
                             for i in range(args.flows)]
                except ValueError as e:
                    prober.stop()
                    raise ConfigError(None, "--rates", str(e)) from None
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                prober.start()
                prober.wait(timeout=args.duration * 3 + 10)
                t_sent = max((f.records[-1].send_ns for f in flows if f.records), default=0)
                prober.stop()
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                wall = time.perf_counter() - t0
                sent = sum(f.sent for f in flows)
                first = min(r.send_ns for f in flows for r in f.records)
                span = max(1, t_sent - first) / 1e9
                recs = [r for f in flows for r in f.records]
                answered = sum(1 for r in recs if r.recv_ns is not None)
                correct = sum(1 for r in recs if r.outcome is Outcome.CONNECTED)
                rtts = sorted(r.recv_ns - r.send_ns for r in recs if r.recv_ns is not None)
                cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
                lag = max(f.max_send_lag_ns for f in flows)
                rows.append([args.proto, f"{rate:g}", args.flows, sent, f"{sent / span:,.0f}",
                             f"{100 * answered / max(1, sent):.2f}", f"{100 * correct / max(1, sent):.2f}",
                             f"{1e6 * cpu / max(1, sent):.1f}", f"{100 * cpu / wall:.0f}",
                             f"{rtts[len(rtts) // 2] / 1000:.0f}" if rtts else "-",
                             f"{rtts[int(len(rtts) * 0.99)] / 1000:.0f}" if rtts else "-",
                             f"{lag / 1000:.0f}", sum(f.rescheduled for f in flows)])
    print(machine_line())
    print("one prober process, one loop thread; full pod -> full pod on one node (bridged, empty FORWARD);"
          " CPU = user+sys of this process (includes the kernel's forwarding work done in sendto)\n")
    print(tabulate(rows, headers=["proto", "target/s", "flows", "sent", "sent/s", "answered %", "classified ok %",
                                  "CPU ms / 1000", "CPU %", "RTT p50 µs", "RTT p99 µs", "max send lag µs",
                                  "restarts"], disable_numparse=True))
    return 0


def _split_range(proto: str, i: int, n: int) -> tuple[int, int] | None:
    """Concurrent flows to one pair share the 4-tuple space: give each its own slice of ports."""
    if n == 1:
        return None
    from harness.probe.packet import ICMP_IDS, TCP_PORTS, UDP_PORTS

    lo, hi = {"TCP": TCP_PORTS, "UDP": UDP_PORTS, "ICMP": ICMP_IDS}[proto]
    size = (hi - lo + 1) // n
    return lo + i * size, lo + (i + 1) * size - 1


if __name__ == "__main__":  # pragma: no cover - for trying the commands before the CLI wires them
    parser = argparse.ArgumentParser(prog="netpol-harness")
    top = parser.add_subparsers(dest="command", required=True)
    bench_parser = top.add_parser("bench")
    register(top, bench_parser.add_subparsers(dest="bench", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))

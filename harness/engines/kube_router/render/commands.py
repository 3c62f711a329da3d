"""CLI: ``netpol-harness render`` (print what kube-router programs on a node) and
``netpol-harness bench render`` (render time at several scales)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

from harness.argtypes import int_in, non_negative_int, positive_int
from harness.engines.kube_router.render.kube_router import ClusterIndex, dump, render_node
from harness.engines.kube_router.render.profiles import PROFILE_NAMES
from harness.errors import ConfigError
from harness.model.cluster import Cluster
from harness.model.synthetic import add_synthetic_policies, load_cluster, synthetic_cluster

SYNC_VERSION = int_in(0, 2**63 - 1)  # nanoseconds since the epoch, as kube-router uses


def _render(args: argparse.Namespace) -> int:
    cluster = load_cluster(args.topology, args.manifest)
    if args.synthetic_policies:
        add_synthetic_policies(cluster, args.synthetic_policies, args.seed)
    node = args.node or next(iter(cluster.nodes), None)
    if node is None:
        raise ConfigError(args.topology, "nodes", "the cluster has no node")
    version = args.sync_version if args.sync_version is not None else time.time_ns()
    rs = render_node(cluster, node, profile=args.profile, sync_version=version,
                     default_deny=args.default_deny, reject_with=args.reject_with)
    sys.stdout.write(dump(rs))
    return 0


def _scales(quick: bool) -> list[tuple[str, Cluster, str]]:
    """(label, cluster, node to render) for the benchmark; scale-100 from the shipped topology
    plus 1,000 generated policies when it loads, else a synthetic cluster of the same size."""
    out = [("synthetic 10x50, 100 policies", synthetic_cluster(10, 50, 100, seed=1), "node-000")]
    if quick:
        return out
    out.append(("synthetic 50x50, 500 policies", synthetic_cluster(50, 50, 500, seed=1), "node-000"))
    out.append(("synthetic 100x50, 1000 policies", synthetic_cluster(100, 50, 1000, seed=1), "node-000"))
    try:
        from harness.model.topology import load_topology

        c = add_synthetic_policies(load_topology("scale-100"), 1000, seed=1)
        real = [n.name for n in c.nodes.values() if n.is_real]
        out.append(("scale-100 + 1000 policies", c, real[0] if real else next(iter(c.nodes))))
    except (ImportError, ConfigError) as e:  # topology loader or file missing: synthetic only
        print(f"(scale-100 topology not available: {e})", file=sys.stderr)
    return out


def _bench(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    profiles = args.profile or ["v1.2", "v2.10"]
    rows = []
    for label, cluster, node in _scales(args.quick):
        for prof in profiles:
            times = []
            for i in range(args.repeat):
                t0 = time.perf_counter()
                # a fresh index each time: a sync sees a changed cluster, nothing may be cached
                rs = render_node(cluster, node, profile=prof, sync_version=1_700_000_000_000_000_000 + i,
                                 index=ClusterIndex(cluster))
                times.append(time.perf_counter() - t0)
            rows.append({"cluster": label, "node": node, "nodes": len(cluster.nodes), "pods": len(cluster.pods),
                         "policies": len(cluster.policies), "profile": prof, "rules": rs.rule_count,
                         "sets": len(rs.sets), "set_entries": rs.set_entry_count,
                         "render_ms_median": round(statistics.median(times) * 1000, 1),
                         "render_ms_max": round(max(times) * 1000, 1)})
    machine = (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
               f"Python {platform.python_version()}")
    if args.json:
        print(json.dumps({"machine": machine, "repeat": args.repeat, "rows": rows}, indent=2))
        return 0
    print(f"render_node benchmark, median of {args.repeat} (machine: {machine})")
    print(tabulate([list(r.values()) for r in rows], headers=list(rows[0]), tablefmt="github"))
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``render`` to the top-level commands and ``render`` to the bench suites."""
    p = sub.add_parser("render", help="print the ipsets and iptables rules kube-router programs on a node",
                       description="Render kube-router's ruleset for one node of a topology and print it "
                                   "(ipset entries, then the filter table in iptables-save form).")
    p.add_argument("topology", help="shipped topology name or path, 'example', or 'synthetic:NODESxPODSxPOLICIES'")
    p.add_argument("--node", help="node to render (default: the first node)")
    p.add_argument("--profile", default="v2.10", choices=list(PROFILE_NAMES), help="kube-router version profile")
    p.add_argument("--sync-version", type=SYNC_VERSION, help="sync version hashed into chain names (default: now, in ns)")
    p.add_argument("--default-deny", action="store_true", help="--netpol-default-deny (v2.10)")
    p.add_argument("--reject-with", choices=["icmp-port-unreachable", "tcp-reset"],
                   help="not a kube-router option: explicit REJECT type, for contrast")
    p.add_argument("--manifest", action="append", default=[], help="extra manifest file (repeatable)")
    p.add_argument("--synthetic-policies", type=non_negative_int, default=0, metavar="N", help="add N generated policies")
    p.add_argument("--seed", type=int, default=1, help="seed for --synthetic-policies")
    p.set_defaults(func=_render)

    b = bench.add_parser("render", help="render time of kube-router rulesets at several scales",
                         description="Time render_node on generated clusters and on scale-100 with 1,000 "
                                     "generated policies; prints rules, set entries and the median time.")
    b.add_argument("--repeat", type=positive_int, default=5, help="renders per cell (median reported)")
    b.add_argument("--profile", action="append", choices=list(PROFILE_NAMES), help="profile (repeatable)")
    b.add_argument("--quick", action="store_true", help="smallest scale only")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(func=_bench)

"""CLI: ``netpol-harness bench proxy-load`` — kube-router's sync cost with kube-proxy's rules on the
node (harness.bench.proxy_load)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.argtypes import non_negative_int, positive_int

DEFAULT_DIR = Path("reports/bench")


def format_proxy_load(b) -> str:
    """The table of a proxy-load Baseline: one row per cell, ratio to 0 Services of the same row group."""
    from tabulate import tabulate

    from harness.bench.baseline import machine_label

    rows = []
    for c in b.extra.get("cells", []):
        rows.append([c["backend"], c["variant"], f"{c['strategy']} ({c['profile']})", c["services"],
                     c["filter_rules"], c["nat_rules"], c["execs"],
                     None if c["median_ms"] is None else round(c["median_ms"], 1),
                     None if c["ms_per_exec"] is None else round(c["ms_per_exec"], 2), c["ratio"]])
    head = [f"machine: {machine_label(b.machine)}; load average {b.load} (shared machines inflate times)"]
    for backend, v in b.versions.items():
        head.append(f"{backend}: {v.get('iptables')}; {v.get('ipset')}")
    table = tabulate(rows, headers=["backend", "kube-proxy", "strategy", "Services", "filter rules", "nat rules",
                                    "execs", "sync ms (median)", "ms/exec", "x vs 0"], tablefmt="github")
    return "\n".join([*head, "", table, *[f"note: {n}" for n in b.notes]])


def _proxy_load(args: argparse.Namespace) -> int:
    from harness.bench import baseline as bl
    from harness.bench.commands import BENCH_BACKENDS, _require
    from harness.bench.common import run_id
    from harness.bench.proxy_load import (
        DEFAULT_SERVICES,
        SMOKE_SERVICES,
        STRATEGY_PROFILES,
        VARIANTS,
        ProxyLoadConfig,
        run_proxy_load,
    )

    backends = args.backend or list(BENCH_BACKENDS)
    smoke = args.smoke
    cfg = ProxyLoadConfig(
        services=tuple(args.services) if args.services else (SMOKE_SERVICES if smoke else DEFAULT_SERVICES),
        variants=tuple(args.variant or VARIANTS), backends=tuple(backends),
        strategies=tuple(args.strategy or STRATEGY_PROFILES),
        nodes=3 if smoke else args.nodes, pods_per_node=3 if smoke else args.pods_per_node,
        policies=2 if smoke else args.policies, endpoints=args.endpoints,
        repeat=1 if smoke else args.repeat, verbose=not args.quiet)
    tool_versions = _require(backends)
    b = run_proxy_load(run_id(), cfg)
    b.versions = tool_versions
    bl.stamp(b)
    out = Path(args.out) if args.out else DEFAULT_DIR / f"proxy-load-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    bl.save(b, out)
    print(format_proxy_load(b))
    print(f"saved {out}")
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``bench proxy-load``."""
    p = bench.add_parser("proxy-load", help="kube-router's sync cost with kube-proxy's rules of N Services on the node",
                         description="Program kube-proxy's iptables rules for N Services into a fresh node namespace, "
                                     "then time kube-router's full re-syncs on top (restore at the default profile, "
                                     "per-rule = v1.1.1's call-by-call sync), per backend; ratios to 0 Services.")
    p.add_argument("--services", action="append", type=non_negative_int, metavar="N",
                   help="Service counts (repeatable; default 0 100 1000 5000)")
    p.add_argument("--variant", action="append", choices=["ready", "none"],
                   help="ready: Services with endpoints (nat rules); none: without (a filter REJECT each); default both")
    p.add_argument("--strategy", action="append", choices=["restore", "per-rule"])
    p.add_argument("--backend", action="append", choices=["legacy", "nft"], help="default both")
    p.add_argument("--nodes", type=positive_int, default=10, help="kube-router cluster: nodes (10)")
    p.add_argument("--pods-per-node", type=positive_int, default=10, help="pods per node (10)")
    p.add_argument("--policies", type=non_negative_int, default=10, help="policies (10)")
    p.add_argument("--endpoints", type=positive_int, default=2, help="ready endpoints per Service (2)")
    p.add_argument("--repeat", type=positive_int, default=5, help="timed re-syncs per cell (5)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): checks the bench works")
    p.add_argument("--out", help="baseline JSON path (default reports/bench/proxy-load-<UTC time>.json)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_proxy_load)

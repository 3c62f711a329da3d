"""CLI: ``netpol-harness bench sweep|datapath|canaries|plot`` and ``netpol-harness compare BASE NEW``.

Every bench run saves its result as a baseline JSON (``--out``, default
``reports/bench/<suite>-<UTC time>.json``) with the machine, tool versions and load.
``compare`` exits 0 (no regression), 1 (a metric regressed) or 2 (bad input).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from harness.argtypes import positive_float, positive_int
from harness.bench import baseline as bl
from harness.bench.baseline import BENCH_BACKENDS, Baseline, fmt, machine_label
from harness.engines.config import DEFAULT_ENGINE, DEFAULT_PROFILE
from harness.engines.registry import ENGINE_NAMES
from harness.errors import ConfigError

DEFAULT_DIR = Path("reports/bench")


def _require(backends: list[str]) -> dict:
    """Root and tools for each backend; their versions (read in a throwaway namespace)."""
    from harness.bench.common import fresh_ns, run_id
    from harness.kernel.backends import require_tools, versions

    for b in backends:
        require_tools(b)
    with fresh_ns(f"nph-{run_id()}-ver") as ns:
        return {b: versions(b, ns) for b in backends}


def _finish(b: Baseline, args: argparse.Namespace, tool_versions: dict) -> Path:
    b.versions = tool_versions
    bl.stamp(b)
    out = Path(args.out) if args.out else DEFAULT_DIR / f"{b.suite}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    bl.save(b, out)
    return out


def _head(b: Baseline) -> list[str]:
    lines = [f"machine: {machine_label(b.machine)}; load average {b.load} (shared machines inflate times)"]
    for backend, v in b.versions.items():
        lines.append(f"{backend}: {v.get('iptables')}; {v.get('ipset')}")
    return lines


def _positive(args: argparse.Namespace, *names: str) -> None:
    for n in names:
        v = getattr(args, n)
        if v is not None and v <= 0:
            raise ConfigError(None, "--" + n.replace("_", "-"), "must be positive")


# ---- sweep ---------------------------------------------------------------------------------------

def _sweep(args: argparse.Namespace) -> int:

    from harness.bench.common import run_id
    from harness.bench.sweep import (
        DEFAULT_POINTS,
        SMOKE_POINTS,
        STRATEGIES,
        SweepConfig,
        parse_point,
        run_sweep,
    )

    _positive(args, "repeat", "budget", "cell_budget", "max_execs")
    try:
        points = tuple(parse_point(p) for p in args.point) if args.point else (
            SMOKE_POINTS if args.smoke else DEFAULT_POINTS)
    except ValueError as e:
        raise ConfigError(None, "--point", str(e)) from None
    backends = args.backend or list(BENCH_BACKENDS)
    cfg = SweepConfig(points=points, backends=tuple(backends), strategies=tuple(args.strategy or STRATEGIES),
                      repeat=args.repeat, budget_s=args.budget, cell_budget_s=args.cell_budget,
                      max_execs=args.max_execs, engine=args.engine, profile=args.profile, verbose=not args.quiet)
    tool_versions = _require(backends)
    b = run_sweep(run_id(), cfg)
    out = _finish(b, args, tool_versions)
    print(format_sweep(b))
    print(f"saved {out}")
    if args.plot:
        from harness.bench.plots import plot_sweep

        print(f"plot {plot_sweep(b, args.plot)}")
    return 0


def _ms(v: float | None, approx: bool = False) -> str:
    return "" if v is None else ("~" if approx else "") + fmt(v)


def format_sweep(b: Baseline) -> str:
    """The sweep's tables: render time per point, sync cost per cell, where 2 s is crossed."""
    from tabulate import tabulate

    lines = [f"sync-cost sweep ({b.params.get('engine', DEFAULT_ENGINE)} {b.params.get('profile')} layout, node-000's ruleset); medians "
             f"of re-syncs [min-max]; phases in ms", *_head(b)]
    lines.append(tabulate([[r["point"], r["rules"], r["sets"], r["entries"], fmt(r["render_ms"])]
                           for r in b.extra.get("render", [])],
                          headers=["cluster", "rules", "sets", "entries", "render_ms"], tablefmt="github"))
    rows = []
    for c in b.extra.get("cells", []):
        ph = c["phases_ms"]
        total = _ms(c["median_ms"], c["extrapolated"])
        if c["min_ms"] is not None and not c["extrapolated"] and c["runs"] > 1:
            total += f" [{fmt(c['min_ms'])}-{fmt(c['max_ms'])}]"
        rows.append([c["point"], c["backend"], c["strategy"], c["runs"] or "", total,
                     _ms(ph.get("top_level_time")), _ms(ph.get("iptables_save_time")),
                     _ms(ph.get("ipset_save_time")), _ms(ph.get("ipset_restore_time")), _ms(ph.get("iptables_restore_time")),
                     _ms(ph.get("stale_cleanup_time")), _ms(c["per_1k_rules_ms"]), _ms(c["per_1k_entries_ms"]),
                     c["execs"] or "", c["skipped"]])
    lines.append(tabulate(rows, headers=["cluster", "backend", "strategy", "runs", "sync_ms", "top", "save",
                                         "ipset_save", "sets", "rules", "stale", "ms/1k rules", "ms/1k entries", "execs", "note"],
                          tablefmt="github"))
    lines.append("phases: top = individual iptables calls for top-level chains/jumps, save = iptables-save, "
                 "ipset_save = reading existing sets, sets = programming sets, rules = iptables-restore, "
                 "stale = destroying stale sets; the rest of sync_ms is building texts in this Python process")
    lines.append("incremental = one pod added/removed on this node (only changed sets and chains; rules/entries "
                 "columns count what changed); ms/1k rules = iptables-restore phase, ms/1k entries = set phase")
    lines.append("summary: median sync ms per strategy / backend (~ extrapolated, - not run)")
    lines.append(sweep_pivot(b))
    lines.append("where a full sync passes 2 s:")
    lines += [f"  {k}: {v}" for k, v in b.extra.get("over_2s", {}).items()]
    lines += [f"note: {n}" for n in b.notes]
    return "\n".join(lines)


def sweep_pivot(b: Baseline) -> str:
    """One row per cluster, one column per strategy/backend: the median sync time in ms."""
    from tabulate import tabulate

    cells = b.extra.get("cells", [])
    cols = list(dict.fromkeys((c["strategy"], c["backend"]) for c in cells))
    render = {r["point"]: r for r in b.extra.get("render", [])}
    rows = []
    for point in dict.fromkeys(c["point"] for c in cells):
        r = render.get(point, {})
        row = [point, r.get("rules", ""), r.get("entries", ""), fmt(r["render_ms"]) if r else ""]
        for strategy, backend in cols:
            c = next((c for c in cells if c["point"] == point and (c["strategy"], c["backend"]) == (strategy, backend)),
                     None)
            row.append("-" if c is None or c["median_ms"] is None else _ms(c["median_ms"], c["extrapolated"]))
        rows.append(row)
    return tabulate(rows, headers=["cluster", "rules", "entries", "render", *[f"{s} {b}" for s, b in cols]],
                    tablefmt="github")


# ---- datapath ------------------------------------------------------------------------------------

def _datapath(args: argparse.Namespace) -> int:
    from harness.bench.common import run_id
    from harness.bench.datapath import DEFAULT_COUNTS, MODES, SMOKE_COUNTS, DatapathConfig, run_datapath

    _positive(args, "repeat", "pings", "window", "budget")
    if args.count and any(n < 0 for n in args.count):
        raise ConfigError(None, "--count", "must be 0 or more")
    backends = args.backend or list(BENCH_BACKENDS)
    cfg = DatapathConfig(counts=tuple(args.count or (SMOKE_COUNTS if args.smoke else DEFAULT_COUNTS)),
                         backends=tuple(backends), modes=tuple(args.mode or MODES), repeat=args.repeat,
                         pings=args.pings, window_s=args.window, budget_s=args.budget, verbose=not args.quiet)
    tool_versions = _require(backends)
    b = run_datapath(run_id(), cfg)
    out = _finish(b, args, tool_versions)
    print(format_datapath(b))
    print(f"saved {out}")
    if args.plot:
        from harness.bench.plots import plot_datapath

        print(f"plot {plot_datapath(b, args.plot)}")
    return 0


def format_datapath(b: Baseline) -> str:
    """The datapath table (medians of repeats [min-max]) and the per-rule costs."""
    from tabulate import tabulate

    lines = ["datapath cost: client pod -> node (rules in FORWARD) -> server pod, UDP 64 B", *_head(b)]
    rows = []
    for r in b.extra.get("rows", []):
        rtt = (f"{fmt(statistics.median(r['rtt_us']))} [{fmt(min(r['rtt_us']))}-{fmt(max(r['rtt_us']))}]"
               if r["rtt_us"] else "lost")
        pps = f"{statistics.median(r['pps']):,.0f} [{min(r['pps']):,.0f}-{max(r['pps']):,.0f}]"
        p10 = fmt(statistics.median(r["rtt_p10_us"])) if r.get("rtt_p10_us") else ""
        rows.append([r["backend"], r["mode"], r["rules"], fmt(r["load_ms"]), rtt, p10, pps, r["lost"]])
    lines.append(tabulate(rows, headers=["backend", "mode", "N", "load_ms", "rtt_us median [min-max]", "rtt_p10_us",
                                         "pps median [min-max]", "lost"],
                          tablefmt="github"))
    lines.append("ns per rule (slope; 'ipset' = per set entry):")
    lines += [f"  {k}: {v}" for k, v in b.extra.get("ns_per_rule", {}).items()]
    lines += [f"note: {n}" for n in b.notes]
    return "\n".join(lines)


# ---- canaries ------------------------------------------------------------------------------------

def _canaries(args: argparse.Namespace) -> int:
    from harness.bench.canaries import CANARIES, SMOKE_SIZES, CanarySizes, run_canaries
    from harness.bench.common import run_id

    _positive(args, "repeat", "calls", "swaps", "rules", "entries")
    base = SMOKE_SIZES if args.smoke else CanarySizes()
    sizes = CanarySizes(calls=args.calls or base.calls, swaps=args.swaps or base.swaps,
                        rules=args.rules or base.rules, entries=args.entries or base.entries)
    backends = args.backend or list(BENCH_BACKENDS)
    tool_versions = _require(backends)
    b = run_canaries(run_id(), sizes=sizes, backends=backends, which=args.canary or list(CANARIES),
                     repeat=args.repeat, verbose=not args.quiet)
    out = _finish(b, args, tool_versions)
    print(format_metrics(b, f"canaries (sizes {b.params['sizes']}); median [min-max] of {args.repeat} runs, "
                            "each in a fresh namespace"))
    print(f"saved {out}")
    return 0


def format_metrics(b: Baseline, title: str) -> str:
    """Every metric of ``b`` as a table: name, median, min-max, n."""
    from tabulate import tabulate

    rows = [[k, m.unit, fmt(m.median), f"{fmt(m.min)}-{fmt(m.max)}", m.n] for k, m in sorted(b.metrics.items())]
    return "\n".join([title, *_head(b), tabulate(rows, headers=["metric", "unit", "median", "min-max", "n"],
                                                  tablefmt="github"), *[f"note: {n}" for n in b.notes]])


def _plot(args: argparse.Namespace) -> int:
    from harness.bench.plots import plot_file

    print(f"plot {plot_file(args.result, args.png)}")
    return 0


# ---- compare -------------------------------------------------------------------------------------

def _compare(args: argparse.Namespace) -> int:
    from harness.bench.compare import compare, render

    if args.threshold <= 1:
        raise ConfigError(None, "--threshold", "must be greater than 1 (e.g. 1.5)")
    base, new = bl.load(args.base), bl.load(args.new)
    if base.suite != new.suite:
        raise ConfigError(args.new, "suite", f"is {new.suite!r}, the base is {base.suite!r}")
    c = compare(base, new, args.threshold, strict=args.strict, fail_missing=args.fail_missing)
    print(render(c))
    return 1 if c.failed else 0


COMPARE_HELP = """Compare two baseline JSON files of one suite. For each metric: new/base of the medians, and a
verdict. A metric REGRESSED when its median is THRESHOLD times worse (slower, or lower throughput) AND
every repeat of NEW is worse than every repeat of BASE (NEW's best beyond BASE's worst: the min-max
ranges do not overlap), so one noisy repeat on a shared runner neither causes nor hides a
regression. Past the threshold with overlapping ranges: 'noisy' (not a failure). --strict uses the
medians only. Exit status: 0 no regression, 1 regression, 2 bad input."""


def _queue(args: argparse.Namespace) -> int:
    from harness.bench.common import run_id
    from harness.bench.queue import (
        DEFAULT_POLICIES,
        SMOKE_POLICIES,
        SYNC_SIZES,
        format_rows,
        run_queue_bench,
        to_baseline,
    )

    counts = tuple(args.policies or (SMOKE_POLICIES if args.smoke else DEFAULT_POLICIES))
    connections = 50 if args.smoke else args.connections
    syncs: dict[int, float] = {}
    rows = run_queue_bench(counts, connections, sync_sizes=(1, 100) if args.smoke else SYNC_SIZES, syncs=syncs)
    b = to_baseline(rows, run_id(), connections, syncs)
    out = _finish(b, args, {})
    print("new connections (sequential client): " + _head(b)[0])
    print(format_rows(rows))
    print("nftables sync (render + nft -f of the table) by podips entries: "
          + ", ".join(f"{n}: {ms:.1f} ms" for n, ms in syncs.items()))
    print(f"saved {out}")
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``bench sweep``, ``bench datapath``, ``bench canaries``, ``bench queue``, ``bench plot`` and the top-level
    ``compare``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", help="baseline JSON path (default reports/bench/<suite>-<UTC time>.json)")
    common.add_argument("--repeat", type=positive_int, default=5, help="repeats per measurement (median, min-max; default 5)")
    common.add_argument("--backend", action="append", choices=list(BENCH_BACKENDS),
                        help="iptables backend (repeatable; default both)")
    common.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): checks the suite works")
    common.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    s = bench.add_parser("sweep", parents=[common], help="sync cost vs cluster size per strategy and backend",
                         description=("Render node-000 of generated clusters (default 300 -> 10,000 pods, 10 -> "
                                      "2,000 policies) and time full re-syncs per strategy and backend "
                                      "(incremental: one pod added). Bounded by --budget; per-rule is "
                                      "extrapolated past --max-execs."))
    s.add_argument("--point", action="append", metavar="NxPxQ",
                   help="cluster: N nodes x P pods per node x Q policies (repeatable; default 5 points)")
    s.add_argument("--strategy", action="append", choices=["restore", "netlink", "incremental", "per-rule"])
    s.add_argument("--budget", type=positive_float, default=600, help="seconds; no new point is started after it (600)")
    s.add_argument("--cell-budget", type=positive_float, default=20,
                   help="seconds; a strategy/backend slower than this is skipped at larger points (20)")
    s.add_argument("--max-execs", type=positive_int, default=6000,
                   help="per-rule re-syncs spawning more processes are extrapolated, not run (6000)")
    s.add_argument("--engine", choices=ENGINE_NAMES, default=DEFAULT_ENGINE,
                   help=f"policy engine whose rules are rendered and applied (default {DEFAULT_ENGINE})")
    s.add_argument("--profile", default=DEFAULT_PROFILE, help=f"engine release profile (default {DEFAULT_PROFILE})")
    s.add_argument("--plot", help="write a PNG of sync time vs scale")
    s.set_defaults(func=_sweep)

    d = bench.add_parser("datapath", parents=[common], help="per-packet cost of N rules vs one ipset",
                         description="RTT and forwarded pps between two pods with N non-matching rules in the "
                                     "node's FORWARD chain, or one rule over an ipset of N entries.")
    d.add_argument("--count", action="append", type=positive_int, metavar="N",
                   help="rule counts (repeatable; default 0 100 1000 5000 10000 50000)")
    d.add_argument("--mode", action="append", choices=["rules", "ipset"])
    d.add_argument("--pings", type=positive_int, default=200, help="round trips per repeat (200)")
    d.add_argument("--window", type=positive_float, default=0.5, help="seconds of sending per throughput repeat (0.5)")
    d.add_argument("--budget", type=positive_float, default=300, help="seconds; later cells are skipped with a note (300)")
    d.add_argument("--plot", help="write a PNG of latency and throughput vs N")
    d.set_defaults(func=_datapath)

    c = bench.add_parser("canaries", parents=[common], help="canaries for known netfilter regressions",
                         description="200 single iptables calls, 1,000 ipset swaps, 100k-rule iptables-restore "
                                     "and -save (legacy vs nft), ipset restore of 100k entries; each run in a "
                                     "fresh namespace.")
    c.add_argument("--canary", action="append", choices=["iptables_calls", "ipset_swap", "iptables_restore",
                                                         "ipset_restore"])
    c.add_argument("--calls", type=positive_int, help="sequential iptables calls (200)")
    c.add_argument("--swaps", type=positive_int, help="ipset swaps (1000)")
    c.add_argument("--rules", type=positive_int, help="rules in the big restore (100000)")
    c.add_argument("--entries", type=positive_int, help="entries in the big ipset restore (100000)")
    c.set_defaults(func=_canaries)

    q = bench.add_parser("queue", help="new-connection cost: kube-network-policies' NFQUEUE vs kube-router's rules",
                         description="connect() latency from a pod to a pod selected by P policies, with no "
                                     "engine, kube-router (v2.10, nft) and kube-network-policies (v1.1.1); the "
                                     "verdict loop's CPU per verdict and verdicts/s per core "
                                     "(harness/bench/queue.py).")
    q.add_argument("--policies", action="append", type=positive_int, metavar="P",
                   help="policies selecting the server (repeatable; default 1 10 100)")
    q.add_argument("--connections", type=positive_int, default=500, help="timed connections per cell (500)")
    q.add_argument("--smoke", action="store_true", help="P = 1, 10 and 50 connections")
    q.add_argument("--out", help="baseline JSON path (default reports/bench/queue-<UTC time>.json)")
    q.add_argument("--quiet", action="store_true", help="(no progress lines: accepted for the kernel matrix)")
    q.set_defaults(func=_queue)

    g = bench.add_parser("plot", help="PNG of a saved sweep or datapath result",
                         description="Plot a result JSON written by bench sweep or bench datapath.")
    g.add_argument("result", help="result JSON")
    g.add_argument("png", help="output PNG path")
    g.set_defaults(func=_plot)

    p = sub.add_parser("compare", help="compare two bench baselines; non-zero exit on regression",
                       description=COMPARE_HELP)
    p.add_argument("base", help="baseline JSON (before)")
    p.add_argument("new", help="baseline JSON (after)")
    p.add_argument("--threshold", type=positive_float, default=1.5, help="regression factor (default 1.5)")
    p.add_argument("--strict", action="store_true", help="medians only, ignore the min-max ranges")
    p.add_argument("--fail-missing", action="store_true", help="a metric missing on one side is a failure")
    p.set_defaults(func=_compare)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (until the CLI lists this module): ``python -m harness.bench.commands ...``."""
    from harness.errors import EnvironmentProblem, HarnessError

    parser = argparse.ArgumentParser(prog="netpol-harness")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench").add_subparsers(dest="bench", required=True)
    register(sub, bench)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HarnessError as e:
        print(f"netpol-harness: error: {e}", file=sys.stderr)
        return 4 if isinstance(e, EnvironmentProblem) else 2


if __name__ == "__main__":
    sys.exit(main())

"""``netpol-harness bench apply``: sync cost per apply strategy and iptables backend at three scales.

Each cell (scale x backend x strategy) runs in fresh ``nph-<run id>-apply-<n>`` namespaces:
a first sync into an empty node, then a full re-sync with a new sync version (every pod and
policy chain renamed, every set swapped: kube-router's periodic sync). Reported: medians over
``--repeat`` runs, the re-sync's phases, the execs and netlink requests, tool and kernel versions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.argtypes import positive_int
from harness.engines.kube_router.apply.exec_sequence import IPSetHandler
from harness.engines.kube_router.apply.restore_text import ipset_ops
from harness.engines.kube_router.apply.strategies import STRATEGIES, SyncTimings, apply
from harness.engines.kube_router.apply.synthetic import SCALES, scaled_ruleset
from harness.engines.kube_router.render.ruleset import Ruleset
from harness.errors import ConfigError, EnvironmentProblem
from harness.kernel import netns
from harness.kernel.backends import BACKENDS, forget, require_tools, versions

log = logging.getLogger(__name__)

# synthetic_cluster(nodes, pods_per_node, policies) per scale; "large" is the scale-100 shape
RENDER_SCALES = {"small": (10, 20, 20), "medium": (50, 50, 200), "large": (100, 50, 1000)}


@dataclass
class Source:
    """Where rulesets come from: ``make(version)`` renders one node's ruleset for a sync version."""

    scale: str
    label: str
    make: Callable[[int], Ruleset]


def _sources(kind: str, scales: list[str], profile: str, dual_stack: bool = False) -> list[Source]:
    out = []
    if kind == "render" and dual_stack:
        return _dual_stack_sources(scales, profile)
    if kind == "render":
        try:
            from harness.engines.kube_router.render.kube_router import ClusterIndex, render_node
            from harness.engines.kube_router.render.synthetic import synthetic_cluster
        except ImportError as e:
            raise EnvironmentProblem(f"the renderer is not available ({e})", "use --source synthetic") from e
        for scale in scales:
            nodes, pods, policies = RENDER_SCALES[scale]
            cluster = synthetic_cluster(nodes, pods, policies, seed=1)
            index = ClusterIndex(cluster)
            label = f"{scale}: render {profile}, {nodes} nodes x {pods} pods, {policies} policies"
            out.append(Source(scale, label, lambda v, c=cluster, i=index: render_node(
                c, "node-000", profile=profile, sync_version=v, index=i)))
    else:
        for scale in scales:
            s = SCALES[scale]
            label = f"{scale}: synthetic, {s.local_pods} local pods, {s.policies} policies x {s.peers} peers"
            out.append(Source(scale, label, lambda v, s=s: scaled_ruleset(s, sync_version=v)))
    return out


def _dual_stack_sources(scales: list[str], profile: str) -> list[Source]:
    """Per scale, the same dual-stack cluster twice: its IPv4 half alone, then both halves (one sync
    applies the IPv4 and the IPv6 ruleset, harness.engines.kube_router.apply.strategies), so one run
    compares IPv4-only with dual-stack sync cost on the same pods and policies."""
    import dataclasses

    from harness.engines.kube_router.render.kube_router import render_node
    from harness.engines.kube_router.render.synthetic import synthetic_cluster
    from harness.model.dualstack import enable_dual_stack

    out = []
    for scale in scales:
        nodes, pods, policies = RENDER_SCALES[scale]
        cluster = enable_dual_stack(synthetic_cluster(nodes, pods, policies, seed=1))
        base = f"{scale}: render {profile}, {nodes} nodes x {pods} pods, {policies} policies"

        def make(v: int, c=cluster, both: bool = False) -> Ruleset:
            rs = render_node(c, "node-000", profile=profile, sync_version=v)
            return rs if both else dataclasses.replace(rs, ipv6=None)
        out.append(Source(scale, f"{base}, IPv4 half only", make))
        out.append(Source(f"{scale}-dual", f"{base}, dual-stack (IPv4 + IPv6)",
                          lambda v, c=cluster: make(v, c, both=True)))
    return out


def _rules(rs: Ruleset) -> int:
    """Rules of a node's sync, both halves of a dual-stack one."""
    return rs.rule_count + (rs.ipv6.rule_count if rs.ipv6 is not None else 0)


def _entries(rs: Ruleset) -> int:
    return rs.set_entry_count + (rs.ipv6.set_entry_count if rs.ipv6 is not None else 0)


# processes per v1.1.1 call of a re-sync (harness.engines.kube_router.apply.per_rule): a set is
# list + Refresh (list, create, swap, destroy) + one add per entry; -C before each -A/-I
_V111_EXECS = {"version": 1, "new_chain": 1, "set": 5, "append_unique": 2, "insert_if_missing": 2,
               "exists_append_unique": 3}


def estimated_execs(rs: Ruleset) -> int:
    """Roughly how many processes a per-rule re-sync spawns: v1.1.1's calls (``rs.calls``) plus
    its top-level checks and stale cleanup (~3 per owned chain), else ipset ops + rules added and
    deleted (the generic model)."""
    if rs.calls:
        return (sum(_V111_EXECS.get(c.op, 1) + len(c.entries) for c in rs.calls) + 20 + 3 * len(rs.chains))
    return (len(ipset_ops(rs)) + 2 * rs.rule_count + 2 * len(rs.chains)
            + (estimated_execs(rs.ipv6) if rs.ipv6 is not None else 0))


def _one_run(rs1: Ruleset, rs2: Ruleset, backend: str, strategy: str, run_id: str, n: int
             ) -> tuple[SyncTimings, SyncTimings]:
    name = f"nph-{run_id}-apply-{n}"
    netns.create(name)
    try:
        handler = IPSetHandler()  # one controller: v2.0.0-v2.1.1 restore what its handler kept
        first = apply(rs1, name, backend, strategy, ipset_handler=handler)
        resync = apply(rs2, name, backend, strategy, ipset_handler=handler)
        return first, resync
    finally:
        netns.delete(name)
        forget(name)


def _ms(values: list[int]) -> float:
    return round(statistics.median(values) / 1e6, 1)


def _machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} CPUs{' (' + model + ')' if model else ''}, Linux {platform.release()}"


def _bench(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    scales = args.scale or list(RENDER_SCALES)
    backends = args.backend or sorted(BACKENDS)
    strategies = args.strategy or list(STRATEGIES)
    for b in backends:
        require_tools(b)
    from harness.bench.common import run_id as bench_run_id

    run_id = bench_run_id()  # under this process's run record: gc removes them after a SIGKILL
    tool_versions: dict[str, dict[str, str]] = {}
    probe = f"nph-{run_id}-apply-probe"
    netns.create(probe)
    try:
        for b in backends:
            tool_versions[b] = versions(b, probe)
    finally:
        netns.delete(probe)

    rows = []
    n = 0
    for src in _sources(args.source, scales, args.profile, args.dual_stack):
        rs1 = src.make(1_700_000_000_000_000_001)
        rs2 = src.make(1_700_000_000_000_000_002)
        print(f"# {src.label}: {_rules(rs2)} rules, {len(rs2.sets)} sets, {_entries(rs2)} entries",
              file=sys.stderr)
        for backend in backends:
            for strategy in strategies:
                repeat = args.repeat
                if rs2.ipv6 is not None and strategy == "netlink":  # programs IPv4 sets only
                    rows.append({"scale": src.scale, "rules": _rules(rs2), "entries": _entries(rs2),
                                 "backend": backend, "strategy": strategy, "first_ms": "skipped (IPv4 only)"})
                    continue
                if strategy == "per-rule":
                    if estimated_execs(rs2) > args.max_execs:
                        rows.append({"scale": src.scale, "rules": _rules(rs2), "entries": _entries(rs2),
                                     "backend": backend, "strategy": strategy,
                                     "first_ms": f"skipped (~{estimated_execs(rs2)} execs)"})
                        continue
                    repeat = min(repeat, args.per_rule_repeat)
                firsts, resyncs = [], []
                for _ in range(repeat):
                    n += 1
                    t0 = time.perf_counter()
                    first, resync = _one_run(rs1, rs2, backend, strategy, run_id, n)
                    firsts.append(first)
                    resyncs.append(resync)
                    print(f"#   {backend:6} {strategy:8} first {first.total / 1e6:9.1f} ms  re-sync "
                          f"{resync.total / 1e6:9.1f} ms  ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
                rows.append({
                    "scale": src.scale, "rules": _rules(rs2), "entries": _entries(rs2),
                    "backend": backend, "strategy": strategy, "runs": repeat,
                    "first_ms": _ms([t.total for t in firsts]),
                    "resync_ms": _ms([t.total for t in resyncs]),
                    "top_level_ms": _ms([t.top_level_time for t in resyncs]),
                    "save_ms": _ms([t.iptables_save_time for t in resyncs]),
                    "ipset_save_ms": _ms([t.ipset_save_time for t in resyncs]),
                    "ipset_ms": _ms([t.ipset_restore_time for t in resyncs]),
                    "restore_ms": _ms([t.iptables_restore_time for t in resyncs]),
                    "stale_ms": _ms([t.stale_cleanup_time for t in resyncs]),
                    # cleanupStaleRules' iptables -S and v2.10 default deny's kube-router-local-pods refresh
                    "list_ms": _ms([t.list_chains_time + t.local_pods_ipset_time for t in resyncs]),
                    # building texts/ops and parsing saves in the controller process (Python here)
                    "other_ms": _ms([t.total - t.top_level_time - t.iptables_save_time - t.ipset_save_time
                                     - t.ipset_restore_time - t.iptables_restore_time - t.stale_cleanup_time
                                     - t.list_chains_time - t.local_pods_ipset_time
                                     for t in resyncs]),
                    "execs": resyncs[0].execs, "netlink_req": resyncs[0].netlink_requests,
                })
    header = {"machine": _machine(), "python": platform.python_version(), "tools": tool_versions,
              "source": args.source, "profile": args.profile if args.source == "render" else None,
              "scales": [s.label for s in _sources(args.source, scales, args.profile, args.dual_stack)] if args.json else None}
    if args.json:
        print(json.dumps({**header, "rows": rows}, indent=2))
        return 0
    print(f"apply benchmark ({args.source}{', profile ' + args.profile if args.source == 'render' else ''}); "
          f"medians; times in ms; phases are of the re-sync (other = building texts and parsing saves "
          f"in this Python process)")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (shared machines inflate times)")
    print(f"machine: {header['machine']}")
    for b, v in tool_versions.items():
        print(f"{b}: {v['iptables']}; {v['ipset']}")
    cols = ["scale", "rules", "entries", "backend", "strategy", "runs", "first_ms", "resync_ms", "top_level_ms",
            "save_ms", "ipset_save_ms", "ipset_ms", "restore_ms", "stale_ms", "list_ms", "other_ms", "execs", "netlink_req"]
    print(tabulate([[r.get(c, "") for c in cols] for r in rows], headers=cols, tablefmt="github"))
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add the ``apply`` bench suite (no top-level command)."""
    b = bench.add_parser("apply", help="sync time per apply strategy and iptables backend at three scales",
                         description="Apply kube-router rulesets (first sync, then a full re-sync with a new "
                                     "sync version) into fresh namespaces with each strategy and backend; "
                                     "print medians and the re-sync's phases.")
    b.add_argument("--scale", action="append", choices=list(RENDER_SCALES), help="scale (repeatable; default all)")
    b.add_argument("--backend", action="append", choices=sorted(BACKENDS), help="backend (repeatable; default both)")
    b.add_argument("--strategy", action="append", choices=list(STRATEGIES), help="strategy (repeatable; default all)")
    b.add_argument("--source", choices=["render", "synthetic"], default="render",
                   help="rulesets from the kube-router renderer on generated clusters (default) or "
                        "the apply module's own kube-router-shaped generator")
    b.add_argument("--profile", default="v2.10", help="kube-router profile for --source render")
    b.add_argument("--repeat", type=positive_int, default=3, help="runs per cell (median reported)")
    b.add_argument("--per-rule-repeat", type=positive_int, default=1, help="runs per per-rule cell (they are slow)")
    b.add_argument("--max-execs", type=positive_int, default=25000,
                   help="skip per-rule cells whose re-sync would spawn more processes than this")
    b.add_argument("--dual-stack", action="store_true",
                   help="--source render: each scale's cluster dual-stack, measured as its IPv4 half alone "
                        "(scale) and with both halves (scale-dual) in the same run")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(func=_bench_checked)


def _bench_checked(args: argparse.Namespace) -> int:
    if args.repeat < 1 or args.per_rule_repeat < 1:
        raise ConfigError(None, "--repeat", "must be at least 1")
    return _bench(args)

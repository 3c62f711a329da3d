"""CLI: ``netpol-harness bench churn`` (root: a lab, controllers on its real nodes, probes)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from harness.argtypes import non_negative_float, positive_float, positive_int
from harness.model import churn as ch

DEFAULT_DIR = Path("reports/bench")


def _spec(args: argparse.Namespace) -> ch.ChurnSpec:
    if args.churn:
        return ch.load_churn(args.churn)
    return ch.churn_from_dict({"duration_s": args.duration, "seed": args.seed, "namespaces": args.namespaces,
                               "pods": {"create_per_s": args.create_per_s, "lifetime_s": args.lifetime,
                                        "status_update_delay": args.status_delay},
                               "bursts": {"every_s": args.burst_every, "pods": args.burst_pods, "spread_s": 1.0},
                               "label_changes_per_s": args.label_rate,
                               "policy_changes_per_s": args.policy_rate}, "command line")


def _bench_churn(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from harness.bench.baseline import machine_label
    from harness.bench.churn import ChurnRunConfig, run_churn
    from harness.report.machine import machine_info

    spec = _spec(args)
    cfg = ChurnRunConfig(nodes=args.nodes, pods_per_node=args.pods_per_node, policies=args.policies,
                         real_nodes=args.real_nodes, client_share=args.client_share, strategy=args.strategy,
                         backend=args.backend, profile=args.profile, delivery=args.delivery,
                         rate=args.probe_rate, probe_s=args.probe_s, ipam=args.ipam, seed=args.seed)
    cfg.validate(spec)  # a bad flag is one line before the lab is built
    console = Console(stderr=True)
    with Progress(TextColumn("churn"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s schedule"),
                  TextColumn("{task.fields[op]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  console=console, disable=args.quiet, transient=True) as bar:
        task = bar.add_task("churn", total=max(spec.duration_s, 1.0), op="building the lab")

        def progress(t: float, horizon: float, kind: str) -> None:
            bar.update(task, completed=t, total=max(horizon, 1.0), op=kind)

        result = run_churn(spec, cfg, progress)
    machine = machine_info()
    result["machine"] = machine
    result["load"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out) if args.out else DEFAULT_DIR / f"churn-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    r, f = result["reach"], result["fail_open"]

    def s(v):
        return "-" if v is None else f"{v:.3f}"

    print(f"machine: {machine_label(machine)}; load {result['load']} (shared machines inflate times)")
    print(f"{cfg.nodes} nodes ({cfg.real_nodes} real), {cfg.strategy}/{cfg.backend}, churn "
          f"{spec.creations_per_s:g} pods/s for {spec.duration_s:g} s: {r['n']} probed pods")
    print(f"pod_creation_reachability_latency p50 {s(r['p50'])} s  p99 {s(r['p99'])} s  max {s(r['max'])} s"
          f"  (unfinished {r['unfinished']})")
    print(f"fail_open_window                  p50 {s(f['p50'])} s  p99 {s(f['p99'])} s  max {s(f['max'])} s")
    lag = result["probe_lag_s"]
    print(f"probe start lag p99 {s(lag['p99'])} s; {result['censored']} pod(s) connected on their first probe "
          f"(reach is an upper bound there)")
    for node, sy in result["syncs"].items():
        print(f"{node}: {sy['n']} syncs, mean {s(sy['mean_s'])} s, failed {sy['failed']}")
    print(f"wrote {out}")
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``bench churn``."""
    b = bench.add_parser("churn", help="churn against a lab: reach latency and fail-open window by probes",
                         description=("Play a churn workload (pod creations, CronJob bursts, label and policy "
                                      "changes, IPs by status update) against a lab with controllers on its real "
                                      "nodes; measure pod_creation_reachability_latency and the fail-open window "
                                      "of every churn pod on a real node with packet probes."))
    b.add_argument("--churn", metavar="FILE", help="YAML file with a churn: block (else the flags below)")
    b.add_argument("--duration", type=positive_float, default=30.0)
    b.add_argument("--create-per-s", type=non_negative_float, default=1.0)
    b.add_argument("--burst-pods", type=int, default=0)
    b.add_argument("--burst-every", type=positive_float, default=60.0)
    b.add_argument("--lifetime", type=positive_float, default=15.0)
    b.add_argument("--status-delay", default="fixed:0.1")
    b.add_argument("--label-rate", type=non_negative_float, default=0.1)
    b.add_argument("--policy-rate", type=non_negative_float, default=0.05)
    b.add_argument("--namespaces", type=positive_int, default=4)
    b.add_argument("--nodes", type=positive_int, default=10)
    b.add_argument("--pods-per-node", type=positive_int, default=10)
    b.add_argument("--policies", type=int, default=10)
    b.add_argument("--real-nodes", type=positive_int, default=2)
    b.add_argument("--client-share", type=positive_float, default=1.0,
                   help="share of churn pods on the real client nodes (the probed ones; 1.0)")
    b.add_argument("--strategy", choices=["restore", "incremental"], default="restore")
    b.add_argument("--backend", choices=["legacy", "nft"], default="legacy")
    b.add_argument("--profile", default=None, help="kube-router profile (default: the engine's)")
    b.add_argument("--delivery", default="fixed:0.05", help="event delivery delay spec (fixed:0.05)")
    b.add_argument("--probe-rate", type=positive_float, default=100.0)
    b.add_argument("--probe-s", type=positive_float, default=5.0)
    b.add_argument("--ipam", choices=["round-robin", "lowest"], default="round-robin",
                   help="churn pod IPs: round-robin like host-local (default) or lowest free (immediate reuse)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", help="result JSON (default reports/bench/churn-<UTC time>.json)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_bench_churn)

"""CLI: ``netpol-harness controller`` (run the controllers of a topology, add client pods one by
one, print enforcement lag and sync metrics) and ``netpol-harness bench controller`` (the same
run per apply strategy, side by side)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

from harness.argtypes import non_negative_float, non_negative_int, positive_float, positive_int
from harness.controller.delivery import Delivery
from harness.controller.loop import Controller, ControllerConfig
from harness.controller.metrics import quantile
from harness.engines import options as engine_options
from harness.errors import ConfigError
from harness.model.cluster import Pod, PodKind


def _delivery(specs: list[str], seed: int) -> Delivery:
    """``--delivery SPEC`` (all nodes) or ``--delivery node=SPEC`` (repeatable)."""
    mapping: dict[str, Any] = {}
    for spec in specs:
        node, eq, value = spec.partition("=")
        if eq and not node.replace("-", "").replace(".", "").isalnum():
            raise ConfigError("--delivery", None, f"{spec!r}: expected SPEC or NODE=SPEC")
        mapping[node if eq else "default"] = value if eq else spec
    return Delivery.parse(mapping, seed, "--delivery", "delivery")


def _ms(values: list[int]) -> dict[str, float | None]:
    s = sorted(v / 1e6 for v in values)
    if not s:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    return {"p50": round(quantile(s, 0.5), 2), "p90": round(quantile(s, 0.9), 2),
            "p99": round(quantile(s, 0.99), 2), "max": round(s[-1], 2)}


def run_lag(args: argparse.Namespace, strategy: str) -> dict[str, Any]:
    """Build the lab, start one controller per real node, add ``args.pods`` client pods on
    ``args.node`` every ``args.interval`` s, wait until everything is in force; return per-node
    enforcement lag (pod-added emitted -> rules in force), delivery lag, sync times and metrics."""
    from harness.lab import Lab
    from harness.model.synthetic import add_synthetic_policies, load_cluster

    cluster = load_cluster(args.topology, args.manifest)
    if args.synthetic_policies:
        add_synthetic_policies(cluster, args.synthetic_policies, args.seed)
    real = [n.name for n in cluster.real_nodes()]
    if not real:
        raise ConfigError(args.topology, "nodes", "no real node to run a controller on")
    node = args.node or real[-1]
    if node not in cluster.nodes:
        raise ConfigError("--node", None, f"unknown node {node!r} (nodes: {', '.join(cluster.nodes)})")
    config = ControllerConfig(default_deny=args.default_deny, delivery=_delivery(args.delivery, args.delivery_seed),
                              resync_period_s=args.resync_period,
                              lister_skew=not args.no_lister_skew).with_enforcement(
        engine_options.from_args(args, strategy=strategy))
    config.validated()  # a bad flag is one line before the lab is built
    from harness.engines import registry

    if not getattr(registry.get_engine(config.engine), "sync_records", True):
        raise ConfigError("--engine", None, f"{config.engine} sends no sync records, so this command has no lag to "
                          "print: its lag is measured by probes (netpol-harness conformance, or suite)")
    events = []
    with Lab(cluster, servers=False) as lab, Controller(lab, config) as ctl:
        for i in range(args.pods):
            pod = Pod("lag", f"client-{i}", node, {"app": "lag-client"},
                      kind=PodKind.LIGHT if args.light else PodKind.FULL)
            events.append(ctl.add_pod(pod).event)
            time.sleep(args.interval)
        if events:
            ctl.await_event(events[-1].seq, timeout=args.timeout)
        ctl.wait_idle(args.timeout)
        tl = ctl.timeline
        nodes: dict[str, Any] = {}
        for name in ctl.nodes:
            lags = [tl.lag_ns(e.seq, name) for e in events]
            syncs = tl.node_syncs(name, done_only=True)
            nodes[name] = {
                "syncs": len(syncs), "failed_syncs": sum(1 for s in syncs if not s.ok),
                "sync_ms": _ms([s.total_ns for s in syncs[1:] if s.ok]),
                "initial_sync_ms": round(syncs[0].total_ns / 1e6, 2) if syncs else None,
                "lag_ms": _ms([x for x in lags if x is not None]),
                "delivery_ms": _ms([d for e in events if (d := tl.delivery_lag_ns(e.seq, name)) is not None]),
                "unprogrammed": sum(1 for x in lags if x is None),
            }
        return {"engine": config.engine, "strategy": strategy, "profile": args.profile, "backend": args.backend, "topology": args.topology,
                "pods": args.pods, "node": node, "interval_s": args.interval, "delivery": str(config.validated().delivery),
                "nodes": nodes, "metrics": ctl.metrics().to_dict(), "prometheus": ctl.metrics().to_prometheus(),
                "timeline": tl.to_dict(), "errors": ctl.errors}


def _rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        for node, n in r["nodes"].items():
            rows.append({"strategy": r["strategy"], "node": node, "syncs": n["syncs"],
                         "initial ms": n["initial_sync_ms"], "sync p50 ms": n["sync_ms"]["p50"],
                         "sync max ms": n["sync_ms"]["max"], "lag p50 ms": n["lag_ms"]["p50"],
                         "lag p90 ms": n["lag_ms"]["p90"], "lag max ms": n["lag_ms"]["max"],
                         "delivery p50 ms": n["delivery_ms"]["p50"]})
    return rows


def _machine() -> str:
    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def _print(results: list[dict[str, Any]], args: argparse.Namespace, title: str) -> None:
    from tabulate import tabulate

    rows = _rows(results)
    print(f"{title} (machine: {_machine()})")
    print(tabulate([list(r.values()) for r in rows], headers=list(rows[0]), tablefmt="github"))
    for r in results:
        if r["errors"]:
            print(f"errors ({r['strategy']}): {r['errors']}", file=sys.stderr)


def _write(results: list[dict[str, Any]], out: str | None) -> None:
    if out:
        with open(out, "w") as f:
            json.dump({"machine": _machine(), "runs": results}, f, indent=1)


def _controller(args: argparse.Namespace) -> int:
    result = run_lag(args, args.strategy)
    _write([result], args.out)
    if args.metrics == "json":
        print(json.dumps(result["metrics"], indent=2))
    elif args.metrics == "prometheus":
        sys.stdout.write(result["prometheus"])
    else:
        _print([result], args, f"{args.pods} pods added on {result['node']} every {args.interval:g} s, "
                               f"{result['engine']} {args.profile}/{args.strategy}/{args.backend}, "
                               f"delivery {result['delivery']}")
    return 1 if result["errors"] else 0


def _bench(args: argparse.Namespace) -> int:
    strategies = args.strategy or ["restore", "incremental", "netlink"]
    results = [run_lag(args, s) for s in strategies]
    _write(results, args.out)
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k not in ("timeline", "prometheus")} for r in results],
                         indent=1))
    else:
        _print(results, args, f"controller lag per strategy: {args.pods} pods on {results[0]['node']} "
                              f"every {args.interval:g} s, {args.profile}/{args.backend}, topology {args.topology}")
    return 1 if any(r["errors"] for r in results) else 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology", nargs="?", default="default",
                   help="shipped topology name or path, 'example', or 'synthetic:NODESxPODSxPOLICIES'")
    p.add_argument("--manifest", action="append", default=[], help="extra manifest file (repeatable)")
    p.add_argument("--synthetic-policies", type=non_negative_int, default=0, metavar="N", help="add N generated policies")
    p.add_argument("--seed", type=int, default=1, help="seed for --synthetic-policies")
    engine_options.add_arguments(p, strategy=False)
    p.add_argument("--default-deny", action="store_true", help="--netpol-default-deny (v2.10)")
    p.add_argument("--delivery", action="append", default=[], metavar="[NODE=]SPEC",
                   help="event delivery delay: 0.05, uniform:0.01,0.2, lognormal:0.08,0.5, exponential:0.05 "
                        "(repeatable with NODE=)")
    p.add_argument("--delivery-seed", type=int, default=0, help="seed of the delivery delay draws")
    p.add_argument("--resync-period", type=positive_float, default=300.0, metavar="S", help="periodic full sync (s)")
    p.add_argument("--no-lister-skew", action="store_true",
                   help="program each sync from one snapshot (kube-router lists pods twice per sync: the default)")
    p.add_argument("--pods", type=positive_int, default=10, help="client pods to add, one by one")
    p.add_argument("--node", help="node the pods are added to (default: the last real node)")
    p.add_argument("--interval", type=non_negative_float, default=0.2, metavar="S", help="seconds between pod additions")
    p.add_argument("--light", action="store_true", help="add light pods (an address each) instead of full pods")
    p.add_argument("--timeout", type=positive_float, default=60.0, metavar="S", help="wait for the last sync at most")
    p.add_argument("--out", metavar="FILE", help="write the runs (timeline, metrics) as JSON")


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``controller`` to the top-level commands and ``controller`` to the bench suites."""
    p = sub.add_parser("controller", help="run a policy engine's controller per node on a lab and measure enforcement lag",
                       description="Build the lab of a topology, run one controller per real node, add client "
                                   "pods one by one and print per node: syncs, sync time and enforcement lag "
                                   "(pod-added emitted -> rules in force on that node).")
    _common(p)
    p.add_argument("--strategy", default="restore", help="apply strategy (default restore: the full sync)")
    p.add_argument("--metrics", choices=["table", "json", "prometheus"], default="table",
                   help="print the lag table, or the sync metrics as JSON or Prometheus text")
    p.set_defaults(func=_controller)

    b = bench.add_parser("controller", help="enforcement lag and sync time per apply strategy",
                         description="The `controller` run once per strategy on a fresh lab, side by side.")
    _common(b)
    b.add_argument("--strategy", action="append",
                   help="strategy (repeatable; default restore, incremental, netlink)")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(func=_bench)

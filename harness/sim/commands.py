"""CLI: ``netpol-harness simulate run|grid|validate|fit`` (pure: no root, no kernel).

- ``run``: one point (cluster, churn, strategy...) -> p50/p99/max of reach and fail-open;
- ``grid``: the extrapolation grid (10 -> 5,000 nodes, two churn rates, both strategies), the
  2/5/10 s boundaries, a table, ``--plot`` PNG and ``--json``;
- ``validate KERNEL.json...``: replay kernel churn runs (``bench churn --out``) and report the error;
- ``fit``: the cost model's per-phase fits and residuals.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.argtypes import non_negative_float, positive_float, positive_int
from harness.errors import ConfigError
from harness.model import churn as ch

# the grid's sizes (nodes, pods, policies all grow): the sweep's measured range, then what one
# machine cannot hold
GRID_SIZES = [(10, 300, 10), (50, 2500, 200), (100, 5000, 1000), (250, 12500, 1500), (500, 25000, 2000),
              (1000, 50000, 3000), (2000, 80000, 5000), (3000, 100000, 7500), (5000, 150000, 10000)]


def grid_churn(duration_s: float = 600.0) -> dict[str, ch.ChurnSpec]:
    """The grid's two churn rates (assumptions, see docs/churn-and-simulation.md): ``low`` 1 pod/s + 10 CronJob pods at
    every minute; ``high`` 10 pods/s + 100 per minute; label and policy changes with them."""
    status = ch.Delay("lognormal", (0.2, 0.5))
    return {
        "low": ch.ChurnSpec(duration_s, 1, 20, 1.0, 120.0, status, ch.Bursts(60.0, 10, 2.0), 0.1, 0.01),
        "high": ch.ChurnSpec(duration_s, 1, 20, 10.0, 120.0, status, ch.Bursts(60.0, 100, 5.0), 1.0, 0.05),
    }


def _model(args: argparse.Namespace):
    from harness.sim.costfit import default_baseline, load_cost_model

    return load_cost_model(args.cost_from or default_baseline())


def _mutex(text: str | None):
    from harness.sim.des import Mutex

    if not text:
        return None
    try:
        every, hold = (float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError("--ipset-mutex", None, f"{text!r}: expected EVERY_S,HOLD_S (e.g. 30,0.5)") from None
    if every <= 0 or hold < 0 or hold >= every:
        raise ConfigError("--ipset-mutex", None, f"{text!r}: need EVERY_S > 0 and 0 <= HOLD_S < EVERY_S")
    return Mutex(every, hold)


def _base_config(args: argparse.Namespace):
    from harness.sim.des import SimConfig

    return SimConfig(nodes=args.nodes, pods=args.pods, policies=args.policies, namespaces=args.namespaces,
                     backend=args.backend, delivery=ch.parse_delay(args.delivery, "--delivery", "delivery"),
                     resync_period_s=args.resync_period, lister_skew_s=args.lister_skew, mutex=_mutex(args.ipset_mutex),
                     client_nodes=args.client_nodes, client_share=1.0, probe_interval_s=1.0 / args.probe_rate,
                     cost_sigma=args.cost_sigma, cost_scale=args.cost_scale, seed=args.seed)


def _spec(args: argparse.Namespace) -> ch.ChurnSpec:
    if args.churn:
        return ch.load_churn(args.churn)
    return ch.churn_from_dict({"duration_s": args.duration, "seed": args.seed, "namespaces": 20,
                               "pods": {"create_per_s": args.create_per_s, "lifetime_s": args.lifetime,
                                        "status_update_delay": args.status_delay},
                               "bursts": {"every_s": 60.0, "pods": args.burst_pods, "spread_s": 2.0},
                               "label_changes_per_s": args.label_rate,
                               "policy_changes_per_s": args.policy_rate}, "command line")


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def _write_json(path: str | None, data: Any) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=1, default=str) + "\n")
        print(f"wrote {path}")


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tabulate import tabulate

    from harness.sim.des import simulate

    model, spec, base = _model(args), _spec(args), _base_config(args)
    rows, out = [], []
    for strategy in args.strategy or ["restore", "incremental"]:
        s = simulate(spec, replace(base, strategy=strategy), model).summary()
        out.append(s)
        rows.append([strategy, s["reach"]["n"], _fmt(s["reach"]["p50"]), _fmt(s["reach"]["p99"]), _fmt(s["reach"]["max"]),
                     _fmt(s["fail_open"]["p99"]), s["server_node_syncs"]["n"], _fmt(s["server_node_syncs"]["mean_s"]),
                     f"{100 * s['server_node_syncs']['busy_fraction']:.0f}%"])
    print(f"simulation (cost fitted from {model.source}): {args.nodes} nodes, {args.pods} pods, {args.policies} "
          f"policies; churn {spec.creations_per_s:g} pods/s for {spec.duration_s:g} s")
    print(tabulate(rows, headers=["strategy", "pods", "reach p50 s", "p99", "max", "fail-open p99", "syncs",
                                  "sync mean s", "busy"]))
    _write_json(args.json, out)
    return 0


def _grid(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from harness.sim.study import boundaries, grid

    model, base = _model(args), _base_config(args)
    rows = grid(grid_churn(args.duration), GRID_SIZES, args.strategy or ["restore", "incremental"], model, base)
    print(f"simulation grid (cost fitted from {model.source}; delivery {base.delivery}; simulation, not measured)")
    print(tabulate([[r["nodes"], r["pods"], r["policies"], r["churn"], r["strategy"], _fmt(r["reach_p50"]),
                     _fmt(r["reach_p99"]), _fmt(r["fail_open_p99"]), _fmt(r["sync_mean_s"]), f"{100 * r['busy']:.0f}%"]
                    for r in rows],
                   headers=["nodes", "pods", "policies", "churn", "strategy", "reach p50 s", "reach p99 s",
                            "fail-open p99 s", "sync mean s", "busy"]))
    print()
    print(tabulate(boundaries(rows), headers="keys"))
    kernel = []
    for path in args.kernel or []:
        from harness.sim.study import validate

        run = json.loads(Path(path).read_text())
        c = run["config"]
        v = validate(run, model)
        kernel.append({"pods": c["nodes"] * c["pods_per_node"], "reach_p99": v["kernel"]["reach"]["p99"],
                       "sim_reach_p99": v["calibrated"]["reach"]["p99"]})
    if args.plot:
        from harness.sim.plots import plot_grid

        print(f"wrote {plot_grid(rows, args.plot, kernel_points=kernel)}")
    _write_json(args.json, {"cost_source": model.source, "rows": rows, "boundaries": boundaries(rows)})
    return 0


def _validate(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from harness.sim.study import validate

    model = _model(args)
    points, table = [], []
    for path in args.runs:
        try:
            run = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(path, None, f"not a bench churn result: {e}") from None
        if not isinstance(run, dict) or "played" not in run:
            raise ConfigError(path, "played", "not a bench churn result (no played events)")
        v = validate(run, model)
        c = run["config"]
        v["label"] = (f"{c['nodes']}n {c['strategy']} {run['churn']['create_per_s']:g}/s"
                      f"+{run['churn']['bursts']['pods']}/min")
        v["source"] = path
        points.append(v)
        for cost in ("baseline", "calibrated"):
            for what in ("reach", "fail_open"):
                k, s = v["kernel"][what], v[cost][what]
                table.append([v["label"], cost, what, k["n"], _fmt(k["p50"]), _fmt(s["p50"]), _pct(s["err_p50"]),
                              _fmt(k["p99"]), _fmt(s["p99"]), _pct(s["err_p99"])])
    print(f"simulation vs kernel (cost fitted from {model.source}; calibrated = cost scaled to the run's own "
          f"mean sync time)")
    print(tabulate(table, headers=["run", "cost", "what", "n", "kernel p50", "sim p50", "err", "kernel p99",
                                   "sim p99", "err"]))
    if args.plot:
        from harness.sim.plots import plot_validation

        print(f"wrote {plot_validation(points, args.plot)}")
    _write_json(args.json, points)
    return 0


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.0f}%"


def _fit(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    model = _model(args)
    print(f"cost model fitted from {model.source} (machine: {model.machine.get('cpu_model')}, "
          f"kernel {model.machine.get('kernel')})")
    print(tabulate(model.residual_table(), headers="keys"))
    sh = model.shape
    print(f"shape: rules = {sh.rules[0]:.3g} + {sh.rules[1]:.3g}*policies + {sh.rules[2]:.3g}*local_pods + "
          f"{sh.rules[3]:.3g}*local_pods*policies/namespaces; sets = {sh.sets:.3g}*policies; entries = "
          f"({sh.entries[0]:.3g}*policies*pods + {sh.entries[1]:.3g}*policies)*20/namespaces; worst residuals "
          + ", ".join(f"{k} {100 * max(abs(x) for x in v):.0f}%" for k, v in sh.residuals.items()))
    _write_json(args.json, model.describe())
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``simulate run|grid|validate|fit``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cost-from", metavar="SWEEP.json",
                        help="bench sweep baseline to fit the sync cost from (default: the shipped one)")
    common.add_argument("--json", metavar="OUT", help="write the result as JSON")
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("--nodes", type=positive_int, default=100)
    cluster.add_argument("--pods", type=positive_int, default=5000, help="steady pods besides the churn's (5000)")
    cluster.add_argument("--policies", type=positive_int, default=1000)
    cluster.add_argument("--namespaces", type=positive_int, default=20)
    cluster.add_argument("--strategy", action="append", choices=["restore", "incremental"])
    cluster.add_argument("--backend", choices=["legacy", "nft"], default="legacy")
    cluster.add_argument("--delivery", default="lognormal:0.1,0.5",
                         help="event delivery delay per node (fixed:S, uniform:A,B, lognormal:MEDIAN,SIGMA, "
                              "exponential:MEAN[,MIN]; default lognormal:0.1,0.5)")
    cluster.add_argument("--resync-period", type=positive_float, default=300.0, help="ticker period s (300)")
    cluster.add_argument("--lister-skew", type=non_negative_float, default=0.0,
                         help="s the listers lag the handler (0)")
    cluster.add_argument("--ipset-mutex", metavar="EVERY,HOLD",
                         help="other controllers hold the shared ipset mutex HOLD s every EVERY s")
    cluster.add_argument("--client-nodes", type=positive_int, default=2, help="simulated client nodes (2)")
    cluster.add_argument("--probe-rate", type=positive_float, default=100.0, help="probes/s (100)")
    cluster.add_argument("--cost-sigma", type=non_negative_float, default=0.1, help="lognormal noise of sync cost")
    cluster.add_argument("--cost-scale", type=positive_float, default=1.0, help="machine/load factor on sync cost")
    cluster.add_argument("--seed", type=int, default=0)
    cluster.add_argument("--duration", type=positive_float, default=600.0, help="churn duration s (600)")

    p = sub.add_parser("simulate", help="discrete-event simulation of the controllers under churn (pure)",
                       description=__doc__.split("\n\n")[0])
    modes = p.add_subparsers(dest="mode", metavar="MODE")
    modes.required = True
    r = modes.add_parser("run", parents=[common, cluster], help="one point")
    r.add_argument("--churn", metavar="FILE", help="YAML file with a churn: block (else the flags below)")
    r.add_argument("--create-per-s", type=non_negative_float, default=2.0)
    r.add_argument("--burst-pods", type=int, default=20, help="CronJob pods at every minute boundary (20)")
    r.add_argument("--lifetime", type=positive_float, default=120.0)
    r.add_argument("--status-delay", default="lognormal:0.2,0.5", help="CNI ADD -> IP status update delay")
    r.add_argument("--label-rate", type=non_negative_float, default=0.1)
    r.add_argument("--policy-rate", type=non_negative_float, default=0.01)
    r.set_defaults(func=_run)
    g = modes.add_parser("grid", parents=[common, cluster], help="extrapolation grid with 2/5/10 s boundaries")
    g.add_argument("--plot", metavar="PNG")
    g.add_argument("--kernel", action="append", metavar="KERNEL.json", help="kernel churn runs to mark on the plot")
    g.set_defaults(func=_grid)
    v = modes.add_parser("validate", parents=[common], help="replay kernel churn runs and report the error")
    v.add_argument("runs", nargs="+", metavar="KERNEL.json")
    v.add_argument("--plot", metavar="PNG")
    v.set_defaults(func=_validate)
    f = modes.add_parser("fit", parents=[common], help="the fitted cost model and its residuals")
    f.set_defaults(func=_fit)


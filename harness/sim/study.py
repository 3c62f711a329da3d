"""What the simulation is used for: validation against kernel churn runs, and the extrapolation
grid (cluster size x churn rate x strategy) with the 2/5/10 s boundaries. Pure.

Validation replays a kernel run's events exactly as they were played (``played`` of
``harness.bench.churn``) through the simulation of the same cluster shape and controller
settings, twice: with the sweep-fitted cost as is (``baseline``: a prediction from another
measurement on a quieter machine) and with the cost scaled so the simulated syncs of
each node take as long on average as the kernel run's did there (``calibrated``: the
machine's load factor, one number per node and run; and the lognormal spread of the sync
times as the kernel run's server node showed it). The error of p50/p99 of reach and fail-open is reported for both.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from harness.model import churn as ch
from harness.sim.costfit import CostModel
from harness.sim.des import SimConfig, quantile, replay_events, simulate, simulate_stream

BOUNDARIES_S = (2.0, 5.0, 10.0)


def config_of_kernel_run(run: dict[str, Any]) -> SimConfig:
    """The SimConfig that matches a kernel churn run's cluster and controller (``run["config"]``)."""
    c, spec = run["config"], run["churn"]
    n_churn_ns = int(spec["namespaces"])
    return SimConfig(
        nodes=int(c["nodes"]), pods=int(c["nodes"]) * int(c["pods_per_node"]) + 2,
        policies=int(c["policies"]) + 1 + n_churn_ns, namespaces=20 + 1 + n_churn_ns,
        strategy=c["strategy"], backend=c["backend"], delivery=ch.parse_delay(c["delivery"], "run", "delivery"),
        resync_period_s=float(c["resync_period_s"]), client_nodes=int(c["real_nodes"]) - 1,
        client_share=float(c["client_share"]), probe_interval_s=1.0 / float(c["rate"]), seed=int(c.get("seed", 0)))


def _err(sim: float | None, kernel: float | None) -> float | None:
    if sim is None or kernel is None or kernel <= 0:
        return None
    return (sim - kernel) / kernel


def validate(run: dict[str, Any], model: CostModel) -> dict[str, Any]:
    """Sim vs kernel for one kernel churn run: p50/p99 of reach and fail-open, relative errors,
    for the baseline and the calibrated cost (see the module docstring)."""
    events, ready, place = replay_events(run["played"])
    # the pods both sides measure: probed, and not censored (a first probe that connected gives
    # only an upper bound; it happens when a new pod reuses a deleted pod's IP the nodes still
    # admit, which the simulation does not model)
    compared = [p for p in run["pods"] if not p.get("censored")]
    probed = {int(p["index"]) for p in compared}
    kernel = {"reach": _kstats([p["reach_s"] for p in compared]),
              "fail_open": _kstats([p["fail_open_s"] for p in compared])}
    base = config_of_kernel_run(run)
    first = simulate_stream(events, ready, place, base, model)
    scales: dict[int, float] = {}
    for n, syncs in first.syncs.items():  # per node: the kernel's mean sync / the simulated one
        kernel_mean = (run.get("syncs", {}).get(f"node-{n:03d}") or {}).get("mean_s")
        sim_mean = sum(s.end - s.start for s in syncs) / len(syncs) if syncs else None
        scales[n] = kernel_mean / sim_mean if kernel_mean and sim_mean else 1.0
    scale = scales.get(0, 1.0)
    # the spread of the kernel's sync times (lognormal sigma of the server node's durations;
    # the cluster barely changes size within a run, so the spread is the machine's)
    durations = [d for d in (run.get("syncs", {}).get("node-000") or {}).get("durations_s", []) if d > 0]
    sigma = base.cost_sigma
    if len(durations) >= 5:
        logs = [math.log(d) for d in durations]
        mean = sum(logs) / len(logs)
        sigma = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
        # a lognormal factor of mean 1: the scale was fitted to the mean
        for n in scales:
            scales[n] /= math.exp(sigma ** 2 / 2) / math.exp(base.cost_sigma ** 2 / 2)
        scale = scales.get(0, 1.0)
    kernel_sync = (run.get("syncs", {}).get("node-000") or {}).get("mean_s")
    out: dict[str, Any] = {"kernel": {**kernel, "server_sync_mean_s": kernel_sync,
                                      "censored": len(run["pods"]) - len(compared)},
                           "cost_scale": scale, "cost_scale_per_node": scales, "cost_sigma": sigma,
                           "config": base.describe()}
    for label, cfg in (("baseline", base), ("calibrated", replace(base, cost_scale=scale, cost_sigma=sigma,
                                                                   cost_scale_per_node=scales))):
        res = first if label == "baseline" else simulate_stream(events, ready, place, cfg, model)
        # only the pods the kernel run probed (those on its real client nodes)
        res.pods = [p for p in res.pods if p.index in probed]
        s = res.summary()
        row: dict[str, Any] = {"server_sync_mean_s": s["server_node_syncs"]["mean_s"]}
        for what in ("reach", "fail_open"):
            row[what] = {q: s[what][q] for q in ("n", "p50", "p99", "max")}
            row[what]["err_p50"] = _err(s[what]["p50"], kernel[what]["p50"])
            row[what]["err_p99"] = _err(s[what]["p99"], kernel[what]["p99"])
        out[label] = row
    return out


def _kstats(values: list[float | None]) -> dict[str, Any]:
    v = sorted(x for x in values if x is not None)
    return {"n": len(v), "p50": quantile(v, 0.5), "p99": quantile(v, 0.99), "max": v[-1] if v else None}


def grid(spec_for_rate: dict[str, ch.ChurnSpec], sizes: list[tuple[int, int, int]], strategies: list[str],
         model: CostModel, base: SimConfig) -> list[dict[str, Any]]:
    """One row per (size, churn rate, strategy): the simulated p50/p99/max of reach and
    fail-open and the server node's sync load. ``sizes`` = (nodes, pods, policies); namespaces
    scale with pods (one per 100 pods, at least 20: assumption, see docs/churn-and-simulation.md)."""
    rows = []
    for nodes, pods, policies in sizes:
        for rate_label, spec in spec_for_rate.items():
            for strategy in strategies:
                cfg = replace(base, nodes=nodes, pods=pods, policies=policies, strategy=strategy,
                              namespaces=max(20, pods // 100))
                s = simulate(spec, cfg, model).summary()
                rows.append({"nodes": nodes, "pods": pods, "policies": policies, "churn": rate_label,
                             "strategy": strategy,
                             "reach_p50": s["reach"]["p50"], "reach_p99": s["reach"]["p99"], "reach_max": s["reach"]["max"],
                             "fail_open_p99": s["fail_open"]["p99"], "unfinished": s["reach"]["unfinished"],
                             "sync_mean_s": s["server_node_syncs"]["mean_s"],
                             "busy": s["server_node_syncs"]["busy_fraction"], "syncs": s["server_node_syncs"]["n"]})
    return rows


def boundaries(rows: list[dict[str, Any]], key: str = "reach_p99") -> list[dict[str, Any]]:
    """Per (churn, strategy): the smallest simulated size (pods) whose ``key`` passes 2, 5, 10 s."""
    out = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["churn"], r["strategy"]), []).append(r)
    for (churn, strategy), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: (r["pods"], r["policies"]))
        row: dict[str, Any] = {"churn": churn, "strategy": strategy}
        for b in BOUNDARIES_S:
            hit = next((r for r in rs if r[key] is not None and r[key] > b), None)
            row[f">{b:g}s"] = "not reached" if hit is None else f"{hit['nodes']}n/{hit['pods']}p/{hit['policies']}np"
        out.append(row)
    return out

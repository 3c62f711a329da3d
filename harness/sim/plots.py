"""PNG plots of the simulation's grid and its validation against kernel runs (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.figures import pyplot, save_figure
from harness.sim.study import BOUNDARIES_S


def plot_grid(rows: list[dict[str, Any]], path: str | Path, key: str = "reach_p99",
              kernel_points: list[dict[str, Any]] | None = None) -> Path:
    """``key`` (default reach p99) vs cluster size (pods, log x) per strategy (colour) and churn
    rate (line style), with the 2/5/10 s lines; kernel-measured points as black markers."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = {"restore": "tab:red", "incremental": "tab:blue"}
    styles = ["-", "--", ":", "-."]
    churns = sorted({r["churn"] for r in rows})
    for (strategy, colour) in colours.items():
        for i, churn in enumerate(churns):
            rs = sorted((r for r in rows if r["strategy"] == strategy and r["churn"] == churn and r[key] is not None),
                        key=lambda r: r["pods"])
            if rs:
                ax.plot([r["pods"] for r in rs], [r[key] for r in rs], styles[i % len(styles)], color=colour,
                        marker="o", ms=3, label=f"{strategy}, churn {churn}")
    for p in kernel_points or []:
        ax.plot([p["pods"]], [p[key]], "kx", ms=8)
        if p.get(f"sim_{key}") is not None:
            ax.plot([p["pods"]], [p[f"sim_{key}"]], "k+", ms=10)
    if kernel_points:
        ax.plot([], [], "kx", label="kernel run (measured under load; its own cluster shape)")
        ax.plot([], [], "k+", label="simulation of that run (calibrated)")
    for b in BOUNDARIES_S:
        ax.axhline(b, color="grey", lw=0.8, ls=":")
        ax.text(1.0, b, f" {b:g} s", transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pods in the cluster (nodes and policies grow with them, see the table)")
    ax.set_ylabel(f"{key.replace('_', ' ')} (s)")
    ax.set_title("pod_creation_reachability_latency p99 under churn (simulation, kube-router v2.10 semantics)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_validation(points: list[dict[str, Any]], path: str | Path) -> Path:
    """Relative error (sim - kernel) / kernel of p50 and p99 (reach, fail-open) per validation
    point, for the baseline and the calibrated cost; the +-20 % band shaded."""
    plt = pyplot()

    labels, series = [], {}
    for p in points:
        labels.append(p["label"])
        for cost in ("baseline", "calibrated"):
            for what in ("reach", "fail_open"):
                for q in ("p50", "p99"):
                    v = p[cost][what][f"err_{q}"]
                    series.setdefault(f"{cost} {what} {q}", []).append(100 * v if v is not None else 0.0)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(series), 1)
    for j, (name, vals) in enumerate(series.items()):
        ax.bar([i + j * width for i in range(len(labels))], vals, width, label=name)
    ax.axhspan(-20, 20, color="green", alpha=0.08)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.set_ylabel("sim error vs kernel (%)")
    ax.set_title("simulation vs kernel churn runs (kernel measured under load)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)

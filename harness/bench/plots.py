"""PNG figures of bench results (matplotlib, Agg backend): sync time vs scale, datapath cost vs N."""

from __future__ import annotations

import statistics
from pathlib import Path

from harness.bench.baseline import Baseline, machine_label
from harness.figures import pyplot, save_figure

COLORS = {"restore": "tab:blue", "netlink": "tab:green", "incremental": "tab:purple", "per-rule": "tab:red",
          "rules": "tab:red", "ipset": "tab:blue"}


def plot_sweep(b: Baseline, path: str | Path, limit_ms: float = 2000.0) -> Path:
    """Median sync time (log) vs pods in the cluster, one line per strategy (colour) and backend
    (solid legacy, dashed nft); hollow markers are extrapolated per-rule points; the 2 s line."""
    plt = pyplot()
    cells = b.extra.get("cells", [])
    fig, ax = plt.subplots(figsize=(11, 5.5))
    keys = list(dict.fromkeys((c["backend"], c["strategy"]) for c in cells))
    for backend, strategy in keys:
        pts = [c for c in cells if c["backend"] == backend and c["strategy"] == strategy and c["median_ms"]]
        if not pts:
            continue
        style = "-" if backend == "legacy" else "--"
        color = COLORS.get(strategy, "black")
        measured = [c for c in pts if not c["extrapolated"]]
        label = ("incremental (1 pod)" if strategy == "incremental" else strategy) + f" / {backend}"
        ax.plot([c["pods"] for c in pts], [c["median_ms"] for c in pts], style, color=color, label=label)
        ax.plot([c["pods"] for c in measured], [c["median_ms"] for c in measured], "o", color=color)
        extra = [c for c in pts if c["extrapolated"]]
        ax.plot([c["pods"] for c in extra], [c["median_ms"] for c in extra], "o", mfc="none", color=color)
    ax.axhline(limit_ms, color="grey", lw=1, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.text(0.01, limit_ms * 1.1, f"{limit_ms / 1000:g} s", color="grey", transform=ax.get_yaxis_transform())
    ticks = sorted({c["pods"] for c in cells})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{c['point']}" for c in sorted({c["pods"]: c for c in cells}.values(),
                                                          key=lambda c: c["pods"])], rotation=20, fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("cluster (nodes / pods / policies); ruleset of one node")
    ax.set_ylabel("sync time, median (ms)")
    ax.set_title(f"Full re-sync cost vs scale\n{machine_label(b.machine)}; hollow = extrapolated", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save_figure(fig, path)


def plot_datapath(b: Baseline, path: str | Path) -> Path:
    """Median RTT (left) and forwarded packets/s (right) vs N rules or set entries, per backend
    (solid legacy, dashed nft) and mode (red rules, blue one ipset)."""
    plt = pyplot()
    rows = b.extra.get("rows", [])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.8))
    keys = list(dict.fromkeys((r["backend"], r["mode"]) for r in rows))
    for backend, mode in keys:
        pts = [r for r in rows if r["backend"] == backend and r["mode"] == mode]
        style = "o-" if backend == "legacy" else "s--"
        color = COLORS.get(mode, "black")
        xs = [max(r["rules"], 1) for r in pts]  # N=0 drawn at 1 on the log axis
        label = f"{mode} / {backend}"
        if any(r["rtt_us"] for r in pts):
            ax1.plot([x for x, r in zip(xs, pts, strict=True) if r["rtt_us"]],
                     [statistics.median(r["rtt_us"]) for r in pts if r["rtt_us"]], style, color=color, label=label)
        if any(r.get("rtt_p10_us") for r in pts):  # faint: the fast tenth, without wake-up noise
            ax1.plot([x for x, r in zip(xs, pts, strict=True) if r.get("rtt_p10_us")],
                     [statistics.median(r["rtt_p10_us"]) for r in pts if r.get("rtt_p10_us")], style,
                     color=color, alpha=0.35, lw=1, ms=4)
        ax2.plot(xs, [statistics.median(r["pps"]) for r in pts], style, color=color, label=label)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N non-matching rules / set entries (N=0 drawn at 1)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("UDP round trip (us): median; faint = 10th percentile")
    ax2.set_ylabel("forwarded 64 B datagrams per second")
    fig.suptitle(f"Datapath cost of rules (client pod -> node FORWARD -> server pod)\n{machine_label(b.machine)}",
                 fontsize=10)
    return save_figure(fig, path)


def plot_file(result: str | Path, out: str | Path) -> Path:
    """Plot a saved sweep or datapath result (suite read from the file)."""
    from harness.bench.baseline import load
    from harness.errors import ConfigError

    b = load(result)
    if b.suite == "sweep":
        return plot_sweep(b, out)
    if b.suite == "datapath":
        return plot_datapath(b, out)
    raise ConfigError(str(result), "suite", f"no plot for suite {b.suite!r} (sweep or datapath)")

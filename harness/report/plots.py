"""PNG plots of a run (matplotlib, Agg backend: no display needed), from results.json alone.

- ``cdf-<scenario>.png``: empirical CDF of the scenario's latency per configuration (runs
  without a value keep a curve below 1);
- ``timeline-job-to-mysql.png``: one job-to-mysql run on one time axis (ms from the job pod's
  network ready): pod ready, event emitted and delivered per node, node-a's sync phases, every
  SYN probe outcome and every client attempt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.analysis.stats import ecdf
from harness.figures import pyplot, save_figure
from harness.outcome import Outcome
from harness.scenarios.declaration import declared

plt = pyplot()

PHASE_COLORS = {"render": "#c6dbef", "top_level_time": "#9ecae1", "iptables_save_time": "#6baed6",
                "ipset_save_time": "#fdd0a2", "ipset_restore_time": "#fd8d3c", "iptables_restore_time": "#e6550d",
                "stale_cleanup_time": "#bdbdbd"}


def outcome_colour(word: str) -> str:
    """The plot colour of a stored outcome word (``Outcome.colour``); black for a word this
    version does not know (a run written by a newer harness)."""
    try:
        return Outcome.parse(word).colour
    except ValueError:
        return "black"


def render_plots(results: dict[str, Any], folder: Path) -> dict[str, list[str]]:
    """Write every plot of ``results`` into ``folder``; returns {section: [file names]}."""
    out: dict[str, list[str]] = {}
    for scenario, label in ((sc.name, f"{sc.metric} (ms)") for sc in declared() if sc.cdf):
        entries = [e for e in results.get("scenarios", []) if e["scenario"] == scenario]
        if entries and any(e["summary"]["samples"] for e in entries):
            name = f"cdf-{scenario}.png"
            cdf_plot(entries, label, f"{scenario}: {label} per configuration", folder / name)
            out[scenario] = [name]
    job = pick_timeline_run(results)
    if job is not None:
        entry, obs = job
        name = "timeline-job-to-mysql.png"
        timeline_plot(entry, obs, folder / name)
        out["timeline"] = [name]
        # the same race on a large cluster: node-a's longer sync is the grown window
        scale = pick_timeline_run(results, scale=True)
        if scale is not None and scale[0] is not entry:
            name = "timeline-job-to-mysql-scale.png"
            timeline_plot(scale[0], scale[1], folder / name)
            out["timeline"].append(name)
    return out


def cdf_plot(entries: list[dict[str, Any]], xlabel: str, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 5))
    colors = plt.get_cmap("tab10").colors
    styles = ("-", "--", ":", "-.")
    lo = None
    for i, e in enumerate(entries):
        samples = e["summary"]["samples"]
        runs = e["summary"]["runs"]
        xs, ys = ecdf(samples)
        style = {"color": colors[i % len(colors)], "linestyle": styles[(i // len(colors)) % len(styles)]}
        if not xs:  # e.g. a fail-closed configuration: no window in any run
            ax.plot([], [], label=f"{e['config']}: no value in {runs} runs", **style)
            continue
        lo = xs[0] if lo is None else min(lo, xs[0])
        ax.step([xs[0], *xs], [0.0, *ys], where="post", label=f"{e['config']} (n={len(samples)})", **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of runs")
    ax.set_ylim(0, 1.02)
    if lo is not None:  # zoom on the data; the axis says where it starts
        right = ax.get_xlim()[1]
        ax.set_xlim(max(0.0, lo - 0.1 * (right - lo) - 1), right)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


def pick_timeline_run(results: dict[str, Any], *, scale: bool = False) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The first run of the first job-to-mysql configuration without mitigation whose first
    attempt failed (the race itself), else any job-to-mysql run. ``scale``: only among the
    configurations on a cluster other than the default topology (None if there are none)."""
    entries = [e for e in results.get("scenarios", []) if e["scenario"] == "job-to-mysql" and e["observations"]]
    if scale:
        entries = [e for e in entries if (e["params"].get("topology") or "default") != "default"]
    for e in entries:
        if e["params"].get("mitigation") == "none":
            for o in e["observations"]:
                if o.get("first_failed") and o.get("server_sync"):
                    return e, o
    return (entries[0], entries[0]["observations"][0]) if entries else None


def timeline_plot(entry: dict[str, Any], obs: dict[str, Any], path: Path) -> None:
    t0 = obs["ready_ns"]

    def ms(t: int | None) -> float | None:
        return None if t is None else (t - t0) / 1e6

    lanes = ["job client", "SYN probes", "node-a sync", "events", "pod"]
    y = {name: i for i, name in enumerate(lanes)}
    fig, ax = plt.subplots(figsize=(12, 4.8))
    # pod ready and client start
    ax.scatter([0], [y["pod"]], marker="^", s=80, color="black", zorder=3)
    ax.annotate("network ready", (0, y["pod"]), textcoords="offset points", xytext=(4, 6), fontsize=8)
    # events
    ev = obs["event"]
    ax.scatter([ms(ev["emitted_ns"])], [y["events"]], marker="o", color="black", zorder=3)
    ax.annotate("pod-added emitted", (ms(ev["emitted_ns"]), y["events"]), textcoords="offset points",
                xytext=(4, 6), fontsize=8)
    for node, t in sorted(ev["delivered_ns"].items()):
        ax.scatter([ms(t)], [y["events"]], marker="v", color="tab:blue", zorder=3)
        ax.annotate(f"delivered {node}", (ms(t), y["events"]), textcoords="offset points", xytext=(4, -12),
                    fontsize=8)
    # sync phases
    sync = obs.get("server_sync")
    if sync:
        for name, s, e in sync["phases"]:
            ax.barh(y["node-a sync"], (e - s) / 1e6, left=ms(s), height=0.5, color=PHASE_COLORS.get(name, "#ccc"),
                    edgecolor="black", linewidth=0.3, label=name)
        ax.axvline(ms(sync["in_force_ns"]), color="tab:orange", linestyle="--", linewidth=1)
        ax.annotate("node-a rules in force", (ms(sync["in_force_ns"]), y["node-a sync"] + 0.3),
                    textcoords="offset points", xytext=(4, 0), fontsize=8, color="tab:orange")
    # probes
    by_outcome: dict[str, list[float]] = {}
    for t, outcome in obs["probe"]["series"]:
        by_outcome.setdefault(outcome, []).append(ms(t))
    for outcome, xs in sorted(by_outcome.items()):
        ax.scatter(xs, [y["SYN probes"]] * len(xs), marker="|", s=120, color=outcome_colour(outcome),
                   label=f"probe {outcome} ({len(xs)})")
    # client attempts
    for a in obs["attempts"]:
        color = outcome_colour(a["outcome"])
        ax.barh(y["job client"], max((a["end_ns"] - a["start_ns"]) / 1e6, 0.5), left=ms(a["start_ns"]), height=0.4,
                color=color, edgecolor="black", linewidth=0.3)
        text = "ok" if a["ok"] else f"{a['code']} {a['errno']}"
        ax.annotate(text, (ms(a["start_ns"]), y["job client"] + 0.25), fontsize=8)
    if obs.get("success_ns") and obs.get("client_ok_ns") is None:
        ax.scatter([ms(obs["success_ns"])], [y["job client"]], marker="*", s=120, color="tab:green", zorder=3)
        ax.annotate("first success (poller)", (ms(obs["success_ns"]), y["job client"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, labels, strict=False):
        seen.setdefault(lab, h)
    ax.legend(seen.values(), seen.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    # zoom on the race: up to a little after the later of success and enforcement
    ends = [ms(t) for t in (obs.get("success_ns"), sync and sync["in_force_ns"],
                            *(a["end_ns"] for a in obs["attempts"])) if t]
    if ends:
        right = max(ends)
        ax.set_xlim(-0.05 * right - 10, right * 1.25 + 50)
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels(lanes)
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    ax.set_xlabel("ms since the job pod's network was ready (CLOCK_REALTIME)")
    ax.grid(True, axis="x", alpha=0.3)
    p = entry["params"]
    ax.set_title(f"job-to-mysql, configuration {entry['config']} (mitigation {p.get('mitigation')}, "
                 f"profile {p.get('profile')}, job on {p.get('job_node')}), run {obs['run']}")
    save_figure(fig, path)

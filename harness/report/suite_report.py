"""The suite report: ``results.json`` (everything, machine-readable) and ``report.md`` (what a
person reads), the latter rendered from the former only, so ``netpol-harness report RUN`` can
re-render any past run. Pure: no kernel, no clock.
"""

from __future__ import annotations

import statistics
from typing import Any

from tabulate import tabulate

from harness.engines.config import DEFAULT_ENGINE
from harness.report.machine import machine_lines

PHASES = (  # (our field, the sync-metric name, or a description where there is none)
    ("top_level_time", "top-level chains and jumps ensured (single iptables calls; no metric)"),
    ("iptables_save_time", "controller_iptables_v4_save_time"),
    ("ipset_restore_time", "controller_policy_ipset_v4_restore_time"),
    ("iptables_restore_time", "controller_iptables_v4_restore_time"),
    ("stale_cleanup_time", "stale sets destroyed (no metric)"),
    ("total", "controller_iptables_sync_time"),
)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def case_rows(results: dict[str, Any]) -> list[list[Any]]:
    """One row per case run: the summary table of the report."""
    rows = []
    for case in results["cases"]:
        steps = case["steps"]
        syncs = [s for s in steps if s["sync_version"]]
        sync_ms = [n["timings"]["total"] / 1e6 for s in syncs for n in s["syncs"]]
        rows.append([
            case["file"], case["topology"], len(steps), len(syncs),
            sum(s["cells_checked"] for s in steps), case["mismatches"],
            f"{statistics.median(sync_ms):.1f}" if sync_ms else "",
            f"{case['total_ns'] / 1e9:.2f}", case["verdict"],
        ])
    return rows


def sync_phase_rows(results: dict[str, Any]) -> list[list[Any]]:
    """p50/p90/p99/max per sync phase over every node sync of the run, in ms."""
    samples: dict[str, list[float]] = {ours: [] for ours, _ in PHASES}
    for case in results["cases"]:
        for step in case["steps"]:
            for node_sync in step["syncs"]:
                for ours, _ in PHASES:
                    samples[ours].append(node_sync["timings"].get(ours, 0) / 1e6)
    rows = []
    for ours, metric in PHASES:
        v = samples[ours]
        if not v:
            continue
        rows.append([metric, len(v), f"{percentile(v, 50):.2f}", f"{percentile(v, 90):.2f}",
                     f"{percentile(v, 99):.2f}", f"{max(v):.2f}"])
    return rows


def outcome_rows(results: dict[str, Any]) -> list[list[Any]]:
    """How every probe of the run ended (connected, refused, timeout, ...)."""
    totals: dict[str, int] = {}
    for case in results["cases"]:
        for step in case["steps"]:
            for word, count in step["outcomes"].items():
                totals[word] = totals.get(word, 0) + count
    return [[w, c] for w, c in sorted(totals.items(), key=lambda kv: -kv[1])]


def render_markdown(results: dict[str, Any]) -> str:
    """``report.md`` from a ``results.json`` document."""
    opts = results["options"]
    s = results["summary"]
    out = [
        f"# netpol-harness suite run {results['run_id']}",
        "",
        f"- started: {results['started']}  (wall time {results['wall_s']:.1f} s)",
        f"- verdict: **{s['verdict']}** — {s['cases_passed']}/{s['cases']} cases passed, "
        f"{s['cells_checked']} truth-table cells checked, {s['mismatches']} mismatches",
        f"- configuration: engine `{opts.get('engine', DEFAULT_ENGINE)}`, profile `{opts['profile']}`, "
        f"apply strategy `{opts['strategy']}`, backend `{opts['backend']}`, probe timeout {opts['timeout']} s",
        "",
        "## Machine",
        "",
        *[f"- {line}" for line in machine_lines(results["machine"])],
        "",
        "## Cases",
        "",
        "Each case builds its topology in the kernel, and per step changes the model, has the engine",
        "run a full sync on every real node (render + apply), probes every pair of pods and",
        "compares the observed truth table with the expected one (hand-written, else the oracle's).",
        "",
        tabulate(case_rows(results), headers=["case", "topology", "steps", "syncs", "cells", "mismatches",
                                              "median sync ms", "time s", "verdict"], tablefmt="github"),
        "",
        "## Sync cost per phase (every node sync of the run, ms)",
        "",
        tabulate(sync_phase_rows(results), headers=["metric", "samples", "p50", "p90", "p99", "max"],
                 tablefmt="github"),
        "",
        "## Probe outcomes",
        "",
        tabulate(outcome_rows(results), headers=["outcome", "probes"], tablefmt="github"),
    ]
    failing = [c for c in results["cases"] if c["verdict"] != "pass"]
    if failing:
        out += ["", "## Failures", ""]
        for case in failing:
            out.append(f"### {case['file']}: {case['name']}")
            if case.get("error"):
                out.append(f"\nerror: `{case['error']}`")
            for step in case["steps"]:
                if step["mismatch_lines"]:
                    out.append(f"\nstep {step['index']} ({step['description']}, {step['probe']}):\n")
                    out += [f"- {line}" for line in step["mismatch_lines"]]
            out.append("")
    return "\n".join(out) + "\n"

"""The run report: ``results.json`` (every observation and summary) -> ``report.md`` (tables a
person reads) and PNG plots, rendered from the JSON alone so ``netpol-harness report RUN``
re-renders any past run. Pure apart from writing the files. Which scenarios there are, their
order, description and section come from their declarations
(``harness.scenarios.declaration``); this module renders what every run shares.

results.json layout::

    {"run_id", "started", "wall_s", "mode": "smoke" | "full", "machine": {...},
     "scenarios": [{"scenario", "config", "params", "expectation", "verdict": pass|fail|info,
                    "summary": {"metric", "stats": {n, p50, p90, p99, max, ...}, "failures",
                                "runs", "failure_label", ...}, "observations": [...],
                    "runtime_s"}, ...],
     "scenario_run": {"exit_code", "wall_s", "tests": {...}},
     "conformance": {... the conformance section, see harness.report.suite_report ...} | absent,
     "summary": {"verdict", ...}}
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.report.engines_compared import compared_section
from harness.report.format import num as _f
from harness.report.machine import machine_lines
from harness.report.symptom_map import symptom_map_lines
from harness.scenarios.declaration import declared

log = logging.getLogger(__name__)


def summary_rows(results: dict[str, Any]) -> list[list[Any]]:
    """One row per (scenario, configuration): the table the README's main job prints. ``node-a
    sync p50``: node-a's sync that made the change, start -> rules in force (job-to-mysql and
    policy-creation-latency), so a latency reads next to the sync time it contains."""
    rows = []
    for e in ordered(results.get("scenarios", [])):
        s = e["summary"]
        st = s["stats"]
        rows.append([e["scenario"], e["config"], e["verdict"].upper(), s["metric"], st.get("n", 0) - st.get("missing", 0),
                     _f(st.get("p50")), _f(st.get("p90")), _f(st.get("p99")), _f(st.get("max")),
                     _f((s.get("server_sync") or {}).get("p50")), enforcement_label(e["params"]),
                     f"{s['failures']}/{s['runs']} {s['failure_label']}"])
    return rows


def enforcement_label(params: dict[str, Any]) -> str:
    """``engine profile/strategy/backend`` of a configuration's recorded params (the defaults of
    ``harness.engines.config`` for a field an older results.json lacks)."""
    from harness.engines.config import DEFAULT_BACKEND, DEFAULT_ENGINE, DEFAULT_PROFILE, DEFAULT_STRATEGY

    return (f"{params.get('engine') or DEFAULT_ENGINE} {params.get('profile') or DEFAULT_PROFILE}/"
            f"{params.get('strategy') or DEFAULT_STRATEGY}/{params.get('backend') or DEFAULT_BACKEND}")


def ordered(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``entries`` in the declared scenarios' order (stable; undeclared names last)."""
    rank = {sc.name: i for i, sc in enumerate(declared())}
    return sorted(entries, key=lambda e: rank.get(e["scenario"], len(rank)))


def summary_table(results: dict[str, Any], fmt: str = "github") -> str:
    return tabulate(summary_rows(results), headers=["scenario", "configuration", "verdict", "metric (ms)", "samples",
                                                   "p50", "p90", "p99", "max", "node-a sync p50",
                                                   "engine profile/strategy/backend", "failures"], tablefmt=fmt)


def _by(results: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    return [e for e in results.get("scenarios", []) if e["scenario"] == scenario]


def render_markdown(results: dict[str, Any]) -> str:
    """``report.md`` from a results.json document (scenarios, and the conformance section if any)."""
    s = results.get("summary", {})
    out = [f"# netpol-harness run {results.get('run_id')}", "",
           f"- started {results.get('started')}, wall time {_f(results.get('wall_s'))} s, "
           f"mode **{results.get('mode', '?')}**",
           f"- verdict: **{s.get('verdict', '?')}** — {s.get('scenario_configs_passed', 0)}/"
           f"{s.get('scenario_configs', 0)} scenario configurations as expected"
           + (f"; conformance {s['conformance_passed']}/{s['conformance_cases']} cases passed"
              if "conformance_cases" in s else ""), ""]
    sr = results.get("scenario_run")
    if sr:
        out.append(f"- scenario tests: exit code {sr.get('exit_code')}, {_f(sr.get('wall_s'))} s, "
                   + ", ".join(f"{k} {v}" for k, v in sorted(sr.get("tests", {}).items())))
        out.append("")
    out += ["## Machine", "", *[f"- {ln}" for ln in machine_lines(results.get("machine", {}))]]
    if results.get("mariadb"):
        out.append(f"- MariaDB server: {results['mariadb']}")
    out += ["", "## Summary", "",
            "Verdict: PASS = the configuration behaved as its expectation says, FAIL = it did not, INFO = "
            "measured, no expectation. Latencies in ms (samples = runs with a value).", "",
            summary_table(results), ""]
    out += compared_section(results)
    for sc in declared():  # a section per declared scenario that has entries
        name = sc.name
        entries = _by(results, name)
        if not entries:
            continue
        out += [f"## {name}", "", sc.what, ""]
        out += [f"- **{e['config']}**: expected {e['expectation']} — **{e['verdict'].upper()}** "
                f"({e['runtime_s']:.1f} s)" for e in entries]
        out.append("")
        out += sc.section(entries)
        for plot in results.get("plots", {}).get(name, []):
            out += [f"![{plot}]({plot})", ""]
    out += symptom_map_lines(results.get("scenarios", []))
    for plot in results.get("plots", {}).get("timeline", []):
        if plot.endswith("-scale.png"):
            out += ["## Timeline of one job-to-mysql run at scale", "",
                    "The same race on the scale configuration's cluster (its title names it): the same delivery "
                    "delay to node-a, and node-a's longer sync is the grown window.", "", f"![{plot}]({plot})", ""]
            continue
        out += ["## Timeline of one job-to-mysql run", "",
                "One run without mitigation on one clock (ms from the job pod's network ready): the pod-added "
                "event reaches node-b at once and node-a late; node-a's sync (render, then the apply's phases: "
                "top-level chains with single iptables calls, iptables-save, ipset restore, iptables-restore, "
                "stale cleanup); every SYN probe by outcome; the job's client attempts. Gaps in the probe lane "
                "are the prober not sending while this process was busy (it shares the interpreter with the "
                "client and the controllers' tool calls): the outcome of every probe sent is exact, the "
                "transition time is known to the gap around it.", "", f"![{plot}]({plot})", ""]
    conf = results.get("conformance")
    if conf:
        from harness.report.suite_report import render_markdown as conformance_md

        text = conformance_md(conf)
        out += ["## Conformance cases", ""] + ["#" + ln if ln.startswith("#") else ln
                                                for ln in text.splitlines()[1:]]
    return "\n".join(out) + "\n"


def write_run(results: dict[str, Any], folder: Path, *, plots: bool = True) -> Path:
    """Write results.json, the PNG plots and report.md into ``folder``; return report.md's path."""
    folder.mkdir(parents=True, exist_ok=True)
    if plots:
        try:
            from harness.report.plots import render_plots

            results["plots"] = render_plots(results, folder)
        except Exception as e:  # noqa: BLE001 - a plot problem must not lose the measurements
            log.warning("plots failed: %s", e, exc_info=True)
            results["plots_error"] = str(e)
    tmp = folder / "results.json.tmp"
    tmp.write_text(json.dumps(results, default=str) + "\n")
    os.replace(tmp, folder / "results.json")
    report = folder / "report.md"
    report.write_text(render_markdown(results))
    return report


def overall(results: dict[str, Any]) -> dict[str, Any]:
    """The run's summary block from its scenario entries and conformance section."""
    entries = results.get("scenarios", [])
    judged = [e for e in entries if e["verdict"] != "info"]
    passed = sum(1 for e in judged if e["verdict"] == "pass")
    out: dict[str, Any] = {"scenario_configs": len(judged), "scenario_configs_passed": passed}
    sr = results.get("scenario_run")
    # A scenario run that recorded nothing failed; a run without scenarios (--no-scenarios) did not.
    ok = passed == len(judged) and (bool(entries) or sr is None)
    if sr and sr.get("exit_code") not in (0, None):
        ok = False
    conf = results.get("conformance")
    if conf:
        cs = conf["summary"]
        out["conformance_cases"], out["conformance_passed"] = cs["cases"], cs["cases_passed"]
        ok = ok and cs["verdict"] == "PASS"
    out["verdict"] = "PASS" if ok else "FAIL"
    return out

"""ipset-update-window: allowed traffic during repeated updates of the policy's source set
(kube-router v1.2 flush+refill vs v1.3+ TMP set + swap). Its declaration, summarizer and report
section; the run code is ``harness.scenarios.windows`` (``SetUpdateWindow``), the test
``cases/scenarios/test_ipset_update_window.py``."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from harness.analysis.stats import summarize as stats_of
from harness.report.format import num
from harness.scenarios.declaration import Scenario

WHAT = (
    "An allowed client probes continuously (2,000 SYN/s) while the policy's source set is "
    "updated repeatedly (a new backup pod per update, each a full sync on node-a). kube-router "
    "v1.2 flushes and refills the set in place; v1.3+ restores into a TMP set and swaps. "
    "Failure: an allowed probe refused; metric: the refused window's duration (bounded by the "
    "neighbouring connected probes).")


def summarize(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """Refused probes (count, windows and their durations) of allowed traffic during set updates
    (one observation: the configuration runs once)."""
    (observation,) = observations
    wins = observation["windows"]
    out = SCENARIO.head([w["bound_ms"] if w["bound_ms"] is not None else w["observed_ms"] for w in wins],
                        observation["refused"], observation["probe"]["sent"])
    out["updates"] = observation["updates"]
    out["windows"] = len(wins)
    out["set_mode"] = observation["set_mode"]
    out["ipset_restore"] = stats_of(observation["ipset_restore_ms"]).as_dict()
    out["probe_rate"] = observation["probe"]["rate"]
    return out


def section(entries: list[dict[str, Any]]) -> list[str]:
    """One row per configuration: set update mode, refused probes and windows."""
    rows = []
    for e in entries:
        s = e["summary"]
        rows.append([e["config"], s["set_mode"], s["updates"], s["runs"], s["failures"], s["windows"],
                     num(s["stats"].get("max"), 3), num(s["ipset_restore"].get("p50"), 2)])
    return [tabulate(rows, headers=["configuration", "set update", "updates", "probes", "refused", "windows",
                                    "longest window ms (bound)", "ipset restore p50 ms"], tablefmt="github"), "",
            "A window's bound is the gap between the connected probes around it, so it is at most one probe "
            "interval (0.5 ms) coarser than the truth.", ""]


SCENARIO = Scenario(name="ipset-update-window", order=30, what=WHAT, metric="refused_window",
                    failure_label="allowed probes refused", summarize=summarize, section=section)

"""policy-creation-latency: an allow policy created while deny-all is in force; how long until
the allowed client stays connected. Its declaration, summarizer and report section; the run
code is ``harness.scenarios.windows`` (``PolicyCreation``), the test
``cases/scenarios/test_policy_creation_latency.py``."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from harness.analysis.stats import summarize as stats_of
from harness.report.format import cluster_label, num
from harness.scenarios.declaration import Scenario

WHAT = (
    "A deny-all ingress policy is in force in db; an allow policy is created at t0 while the "
    "allowed client probes at 1,000 SYN/s. Metric: policy_enforcement_latency = first probe "
    "from which every probe is connected - t0 (controller delivery delay 0). Per apply strategy and "
    "cluster: the `-scale-100` configurations run on scale-100 + 100 synthetic policies.")


def summarize(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """policy_enforcement_latency: from the policy's creation to the first probe from which the
    allowed client stays connected."""
    lat = [o.get("enforcement_latency_ms") for o in observations]
    out = SCENARIO.head(lat, sum(1 for v in lat if v is None), len(observations))
    out["controller_lag"] = stats_of([o.get("controller_lag_ms") for o in observations]).as_dict()
    out["sync_total"] = stats_of([o["sync"]["total_ms"] for o in observations if o.get("sync")]).as_dict()
    # start -> rules in force, as for job-to-mysql's server_sync
    out["server_sync"] = stats_of([(o["sync"]["in_force_ns"] - o["sync"]["start_ns"]) / 1e6
                                   for o in observations if o.get("sync")]).as_dict()
    return out


def section(entries: list[dict[str, Any]]) -> list[str]:
    """One row per configuration: cluster, strategy and the latency next to the sync it contains."""
    rows = []
    for e in entries:
        s = e["summary"]
        rows.append([e["config"], cluster_label(e["params"]), e["params"].get("strategy"), s["runs"],
                     num(s["stats"].get("p50")), num(s["stats"].get("p99")), num(s["controller_lag"].get("p50")),
                     num((s.get("server_sync") or {}).get("p50")), num(s["sync_total"].get("p50"))])
    return [tabulate(rows, headers=["configuration", "cluster", "strategy", "runs", "enforcement p50 ms", "p99 ms",
                                    "controller in force p50 ms", "sync to in force p50 ms", "sync total p50 ms"],
                     tablefmt="github"), ""]


SCENARIO = Scenario(name="policy-creation-latency", order=50, what=WHAT, metric="policy_enforcement_latency",
                    failure_label="never enforced", summarize=summarize, section=section, cdf=True)

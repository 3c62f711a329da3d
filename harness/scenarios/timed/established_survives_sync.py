"""established-survives-sync: long-lived allowed connections across forced full syncs (each
renames every chain). Its declaration, summarizer and report section; the run code is
``harness.scenarios.windows`` (``EstablishedSurvivesSync``), the test
``cases/scenarios/test_established_survives_sync.py``."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from harness.report.format import num
from harness.scenarios.declaration import Scenario

WHAT = (
    "Long-lived allowed connections (an echo every 20 ms) across forced full syncs of node-a "
    "(every sync renames every chain). Failure: a connection reset or closed. Metric: the "
    "sync's total time.")


def summarize(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """Resets of long-lived allowed connections across forced full syncs (sync time as metric;
    one observation: the configuration runs once)."""
    (o,) = observations
    out = SCENARIO.head(o["sync_ms"], o["resets"] + o["closed"], o["flows"])
    out.update({k: o[k] for k in ("syncs", "flows", "established", "resets", "stalls", "closed", "connect_failed",
                                  "exchanges", "versions")})
    return out


def section(entries: list[dict[str, Any]]) -> list[str]:
    """One row per configuration: syncs, connections, echoes, resets."""
    rows = []
    for e in entries:
        s = e["summary"]
        rows.append([e["config"], s["syncs"], s["versions"], s["flows"], s["exchanges"], s["resets"], s["closed"],
                     s["stalls"], num(s["stats"].get("p50"))])
    return [tabulate(rows, headers=["configuration", "full syncs", "sync versions", "connections", "echoes",
                                    "resets", "closed", "stalls", "sync p50 ms"], tablefmt="github"), ""]


SCENARIO = Scenario(name="established-survives-sync", order=40, what=WHAT, metric="controller_iptables_sync_time",
                    failure_label="connections reset", summarize=summarize, section=section)

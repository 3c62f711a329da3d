"""fail-open (kube-router #873): a new pod the policy selects is reachable by a pod it denies
until node-a's sync includes it. Its declaration, summarizer and report section; the run code is
``harness.scenarios.windows`` (``FailOpen``), the test ``cases/scenarios/test_fail_open.py``."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tabulate import tabulate

from harness.report.format import num
from harness.scenarios.declaration import Scenario

WHAT = (
    "kube-router #873. A new pod selected by the policy is created on node-a; a pod the policy "
    "denies (frontend/web-1) probes it from the start (1,000 SYN/s). Metric: fail_open_window = "
    "last denied-but-connected probe - network ready. A long-lived connection opened inside the "
    "window is checked after enforcement (conntrack ESTABLISHED, data still flowing).")


def summarize(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """fail_open_window per run (last denied-but-connected probe after network ready; None = the
    traffic was never let through), and whether the connection opened inside it survived."""
    wins = [o.get("fail_open_ms") for o in observations]
    opened = [o for o in observations if o["long_lived"]["established_in_window"]]
    let_through = [w for w in wins if w is not None]  # runs without a window add no sample
    out = SCENARIO.head(let_through, len(let_through), len(observations))
    out["established_in_window"] = len(opened)
    out["survived_enforcement"] = sum(1 for o in opened if not o["long_lived"]["reset"]
                                      and o["long_lived"]["exchanges_after_enforcement"] > 0)
    out["conntrack_established"] = sum(1 for o in opened if o["long_lived"]["conntrack_established"])
    out["new_connection_after"] = dict(Counter(o["new_connection_after"]["errno"] or "ok" for o in observations))
    return out


def section(entries: list[dict[str, Any]]) -> list[str]:
    """One row per configuration: runs let through, the window, and the connection opened in it."""
    rows = []
    for e in entries:
        s = e["summary"]
        rows.append([e["config"], f"{s['failures']}/{s['runs']}", num(s["stats"].get("p50")), num(s["stats"].get("max")),
                     s["established_in_window"], s["survived_enforcement"], s["conntrack_established"],
                     ", ".join(f"{k} x{v}" for k, v in s["new_connection_after"].items())])
    return [tabulate(rows, headers=["configuration", "runs let through", "window p50", "window max",
                                    "conn. opened in window", "survived enforcement", "conntrack ESTABLISHED",
                                    "new connection after"], tablefmt="github"), ""]


SCENARIO = Scenario(name="fail-open", order=20, what=WHAT, metric="fail_open_window",
                    failure_label="denied traffic let through", summarize=summarize, section=section, cdf=True)

"""The report section that sets the engines side by side: for every scenario that ran on more
than one engine, one row per configuration with its engine, the scenario's metric and what the
clients saw (first errors, probe outcomes). Pure: reads a results.json document.

The configurations of one scenario share the lab, the delivery delays and the probes (each
scenario file declares them together), so the rows compare the engines' designs on the same runs:
kube-router's window is delivery + sync, kube-network-policies' is delivery (its cache) and, for
a newly selected pod, the nftables sync that puts its IP in the podips set.
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from harness.report.format import num

DEFAULT_ENGINE = "kube-router"


def _engine(entry: dict[str, Any]) -> str:
    return (entry.get("params") or {}).get("engine") or DEFAULT_ENGINE


def _counts(d: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted((d or {}).items()))


def compared_rows(results: dict[str, Any]) -> list[list[Any]]:
    """Rows (scenario, engine, configuration, samples, p50, p90, max, failures, first errors,
    probe outcomes) of every scenario with entries of two engines or more."""
    entries = results.get("scenarios", [])
    by: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by.setdefault(e["scenario"], []).append(e)
    rows = []
    for scenario, es in by.items():
        if len({_engine(e) for e in es}) < 2:
            continue
        for e in sorted(es, key=lambda e: (_engine(e), e["config"])):
            s = e["summary"]
            st = s.get("stats", {})
            rows.append([scenario, _engine(e), e["config"], st.get("n", 0) - st.get("missing", 0), num(st.get("p50")),
                         num(st.get("p90")), num(st.get("max")), f"{s.get('failures')}/{s.get('runs')}",
                         _counts(s.get("first_errors")), _counts(s.get("probe_outcomes"))])
    return rows


def compared_section(results: dict[str, Any]) -> list[str]:
    """Markdown lines of the section ([] when no scenario ran on two engines)."""
    rows = compared_rows(results)
    if not rows:
        return []
    return ["## Engines compared", "",
            "The same scenarios, labs and probes on each engine (metric in ms, as in the summary). "
            "kube-router REJECTs (ECONNREFUSED), kube-network-policies drops (NF_DROP: the client "
            "times out, the probe sees no answer).", "",
            tabulate(rows, headers=["scenario", "engine", "configuration", "samples", "p50", "p90", "max",
                                    "failures", "first errors", "probe outcomes"], tablefmt="github"), ""]

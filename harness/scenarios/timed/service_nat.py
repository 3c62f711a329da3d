"""service-nat: an established MySQL connection through a ClusterIP (kube-proxy iptables mode)
when the NAT state under it changes. Its declaration, summarizer, report section and the
symptom-map rows; the run code is ``harness.scenarios.service_nat`` (``ServiceNat``), the test
``cases/scenarios/test_service_nat.py``.

``summary["symptom_rows"]``: one row per trial, shaped ``{client_saw, errno_or_code, mechanism,
configuration}`` for the symptom map (``harness.analysis.symptoms`` counts them); ``client_saw``
is a ``harness.outcome.Outcome`` word (connected, reset_after_established, timeout, refused ...)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tabulate import tabulate

from harness.analysis.symptoms import SYMPTOM_ROWS
from harness.outcome import Outcome
from harness.report.format import num
from harness.scenarios.declaration import Scenario

WHAT = (
    "A real PyMySQL client in a job pod on node-a holds a connection to a Service's ClusterIP "
    "(kube-proxy iptables mode, v1.28.0 layout, on both nodes; MariaDB endpoints on node-a and "
    "node-b; kube-router policy on the servers), runs SELECT 1, then the NAT state changes under "
    "it and it runs SELECT 1 again on the same connection. `ct-delete`: node-a's conntrack entry "
    "of the flow is deleted (conntrack -D). `ct-delete-in-query`: the same while the server "
    "works on a query (SELECT SLEEP(1)), so its reply comes first. `endpoint-removed`: the servers lose readiness and "
    "kube-proxy removes the endpoints (event path, delivery delay, min sync period). Recorded: the "
    "client's verbatim error, MySQL code and socket errno; `endpoint after` is the endpoint the "
    "DNAT chose at the second query (a conntrack NEW event on node-a). Metric: time from the "
    "change to the client's verdict.")

MECHANISMS = {
    ("ct-delete", Outcome.CONNECTED): "NAT state lost; nf_conntrack_tcp_loose=1 picks the next segment up as NEW and "
                         "KUBE-SERVICES DNATs it again, to the same endpoint: the flow survives",
    ("ct-delete", Outcome.RESET_AFTER_ESTABLISHED): "NAT state lost; nf_conntrack_tcp_loose=1 picks the next segment up as NEW and "
                            "KUBE-SERVICES DNATs it to another endpoint, which answers the unknown segment "
                            "with an RST",
    ("ct-delete", Outcome.TIMEOUT): "NAT state lost; nf_conntrack_tcp_loose=0 makes the next segment INVALID: never "
                              "NATed; dropped by the first INVALID drop it meets (kube-router v1.3.2+ pod chain, "
                              "kube-proxy KUBE-FORWARD) or, accepted or passed, routed toward the ClusterIP and lost",
    ("ct-delete-in-query", Outcome.TIMEOUT): "NAT state lost while the server works on a query: the first segment "
                                       "after the loss is the server's reply, which never reaches the client's "
                                       "socket as the ClusterIP's (not de-NATed if picked up, dropped if INVALID); "
                                       "the client waits",
    ("no-endpoints", Outcome.REFUSED): "no ready endpoint: kube-proxy's filter KUBE-SERVICES REJECT answers the SYN "
                                 "(ICMP port unreachable)",
    ("no-endpoints", Outcome.TIMEOUT): "no ready endpoint: kube-router's KUBE-ROUTER-FORWARD, first in FORWARD, accepts "
                                 "the SYN its pod chain passed (mark 0x20000: explicit ACCEPT, v2.10 "
                                 "KUBE-NWPLCY-TAIL) before kube-proxy's REJECT; not DNATed, it leaves toward the "
                                 "ClusterIP and is lost",
    ("endpoint-removed", Outcome.CONNECTED): "endpoint removed by kube-proxy's sync; the established flow keeps its conntrack "
                                "entry and NAT mapping (kube-proxy flushes conntrack for UDP only)",
}


def _errno_or_code(t: dict[str, Any]) -> str:
    if t["client_saw"] == Outcome.CONNECTED:
        return "-"
    return " ".join(str(x) for x in (t.get("code"), t.get("errno")) if x is not None) or "-"


def _configuration(cfg: dict[str, Any]) -> str:
    drop = "on" if cfg.get("kube_proxy_invalid_drop", True) else "off"
    return (f"{cfg['mechanism']}, {cfg['endpoints']} endpoint(s), tcp_loose={cfg['nf_conntrack_tcp_loose']}, "
            f"kube-router {cfg['kube_router_profile']}, kube-proxy INVALID drop {drop}")


def _mechanism(cfg: dict[str, Any], t: dict[str, Any]) -> str:
    text = MECHANISMS.get((cfg["mechanism"], Outcome(t["client_saw"])), f"{cfg['mechanism']}: {t['client_saw']}")
    drops = t.get("rule_counts") or {}
    if cfg["mechanism"] == "no-endpoints":
        by = ", ".join(f"{rule} {n}" for rule, n in sorted(drops.items())) or "no counter moved"
        return text + f" [node-a: {by}]"
    if cfg["mechanism"].startswith("ct-delete") and t["client_saw"] == Outcome.TIMEOUT:
        # which rule took the segments, from node-a's counters (none: lost toward the ClusterIP)
        by = ", ".join(f"{chain} {n}" for chain, n in sorted(drops.items())) or (
            "none matched: accepted first by kube-router's explicit ACCEPT (v1.3.1) or passed, then lost")
        text += f" [INVALID drops on node-a: {by}]"
    return text


def rows_of(observation: dict[str, Any]) -> list[dict[str, str]]:
    """The symptom-map rows of one observation: one per trial."""
    cfg = observation["config"]
    return [{"client_saw": t["client_saw"], "errno_or_code": _errno_or_code(t), "mechanism": _mechanism(cfg, t),
             "configuration": _configuration(cfg)} for t in observation["trials"]]


def summarize(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of what the client saw, the verbatim messages, the symptom rows and whether every
    reset came with a change of endpoint (the mechanism's fingerprint)."""
    (o,) = observations
    trials = o["trials"]
    failed = [t for t in trials if t["client_saw"] != Outcome.CONNECTED]
    out = SCENARIO.head([t["after_ms"] for t in trials], len(failed), len(trials))
    out["counts"] = dict(Counter(t["client_saw"] for t in trials))
    out["messages"] = dict(Counter(f"{_errno_or_code(t)}: {t['message']}" for t in failed))
    out["resets_with_endpoint_change"] = sum(1 for t in trials if t["client_saw"] == Outcome.RESET_AFTER_ESTABLISHED
                                             and t.get("endpoint_after") and t["endpoint_after"] != t["endpoint"])
    out["survived_same_endpoint"] = sum(1 for t in trials if t["client_saw"] == Outcome.CONNECTED
                                        and t.get("endpoint_after") == t["endpoint"])
    out["new_connection"] = dict(Counter(t["new_connection"] for t in trials if t.get("new_connection")))
    out[SYMPTOM_ROWS] = rows_of(o)  # the report's symptom map collects these
    out["config"] = o["config"]
    return out


def section(entries: list[dict[str, Any]]) -> list[str]:
    """One row per (configuration, what the client saw): counts, error, mechanism."""
    rows = []
    for e in entries:
        s = e["summary"]
        by: Counter = Counter((r["client_saw"], r["errno_or_code"], r["mechanism"]) for r in s[SYMPTOM_ROWS])
        for (saw, err, mech), n in sorted(by.items()):
            rows.append([e["config"], saw, err, n, mech])
    lines = [tabulate(rows, headers=["configuration", "client saw", "code errno", "trials", "mechanism"],
                      tablefmt="github"), ""]
    msgs = sorted({m for e in entries for m in e["summary"]["messages"]})
    if msgs:
        lines += ["Verbatim client errors:", "", *[f"- `{m}`" for m in msgs], ""]
    p50 = [[e["config"], num(e["summary"]["stats"].get("p50"))] for e in entries]
    lines += [tabulate(p50, headers=["configuration", "change -> verdict p50 ms"], tablefmt="github"), ""]
    return lines


SCENARIO = Scenario(name="service-nat", order=70, what=WHAT, metric="change_to_client_verdict_ms",
                    failure_label="queries failed after the change", summarize=summarize, section=section)

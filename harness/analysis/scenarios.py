"""Per-scenario summaries of observations (the dicts ``harness.scenarios`` returns), and the
checks of each configuration's expectation. Pure: what goes into results.json and the report.

Every summary has the same head, so the report can put all scenarios in one table:
``metric`` (name of the latency it summarizes, ms), ``stats`` (``stats.Summary`` dict),
``failures`` / ``runs`` (what counts as a failure is the scenario's: a failed first attempt, a
fail-open window, a refused probe, a reset), ``failure_label`` and scenario-specific extras.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from harness.analysis.stats import summarize


def _head(metric: str, samples: list[float | None], failures: int, runs: int, label: str) -> dict[str, Any]:
    return {"metric": metric, "samples": samples, "stats": summarize(samples).as_dict(),
            "failures": failures, "runs": runs, "failure_label": label}


def job_to_mysql(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """pod_creation_reachability_latency (probe: first SYN answered by the server after network
    ready), first-attempt failures with their exact errors, time until the client succeeded, when
    the client started after network ready (``app_start``; a container pod's command exec), and
    for container pods their sandbox -> network ready time and exit codes."""
    lat = [o.get("reachability_latency_ms") for o in observations]
    failed = [o for o in observations if o.get("first_failed")]
    errors = Counter(f"{o['first'].get('code')} {o['first'].get('errno')}" for o in failed)
    messages = Counter(o["first"].get("message", "") for o in failed)
    out = _head("pod_creation_reachability_latency", lat, len(failed), len(observations), "first attempt failed")
    out["client_success"] = summarize([o.get("client_success_ms") for o in observations]).as_dict()
    out["first_errors"] = dict(errors)
    out["first_messages"] = dict(messages)
    out["never_succeeded"] = sum(1 for o in observations if o.get("success_ns") is None)
    # fail-closed: a first attempt that succeeded must have ended after node-a's rules allowed
    # the job (default-deny may drop the first SYN; TCP's retransmission 1 s later then passes)
    out["first_held"] = sum(1 for o in observations if not o.get("first_failed") and _ended_after_sync(o))
    out["connected_before_server_sync"] = sum(
        1 for o in observations if not o.get("first_failed") and o.get("server_sync") and not _ended_after_sync(o))
    out["attempts"] = summarize([len(o.get("attempts", [])) for o in observations]).as_dict()
    out["probe_outcomes"] = dict(sum((Counter(o["probe"]["counts"]) for o in observations), Counter()))
    out["server_lag"] = summarize([None if not o.get("programmed_ns") else (o["programmed_ns"] - o["ready_ns"]) / 1e6
                                   for o in observations]).as_dict()
    out["app_start"] = summarize([o.get("app_start_ms") for o in observations]).as_dict()
    # the latency's parts on node-a (latency ~= delivery + wait + sync): what grows with scale
    for key in ("server_delivery", "server_sync_wait", "server_sync"):
        out[key] = summarize([o.get(f"{key}_ms") for o in observations]).as_dict()
    containers = [o["container"] for o in observations if o.get("container")]
    if containers:
        out["container"] = {
            "runs": len(containers),
            "sandbox_to_ready": summarize([(c["network_ready_ns"] - c["sandbox_ns"]) / 1e6
                                           for c in containers]).as_dict(),
            "exit_codes": dict(Counter(str(c["exit_code"]) for c in containers)),
        }
    return out


def _ended_after_sync(o: dict[str, Any]) -> bool:
    """The job's first attempt ended once node-a's sync including the job was in force."""
    sync, attempts = o.get("server_sync"), o.get("attempts") or []
    if not sync or not attempts or attempts[0].get("end_ns") is None:
        return False
    return attempts[0]["end_ns"] >= sync["in_force_ns"]


def fail_open(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """fail_open_window per run (last denied-but-connected probe after network ready; None = the
    traffic was never let through), and whether the connection opened inside it survived."""
    wins = [o.get("fail_open_ms") for o in observations]
    opened = [o for o in observations if o["long_lived"]["established_in_window"]]
    let_through = [w for w in wins if w is not None]  # runs without a window add no sample
    out = _head("fail_open_window", let_through, len(let_through), len(observations), "denied traffic let through")
    out["established_in_window"] = len(opened)
    out["survived_enforcement"] = sum(1 for o in opened if not o["long_lived"]["reset"]
                                      and o["long_lived"]["exchanges_after_enforcement"] > 0)
    out["conntrack_established"] = sum(1 for o in opened if o["long_lived"]["conntrack_established"])
    out["new_connection_after"] = dict(Counter(o["new_connection_after"]["errno"] or "ok" for o in observations))
    return out


def set_update_window(observation: dict[str, Any]) -> dict[str, Any]:
    """Refused probes (count, windows and their durations) of allowed traffic during set updates."""
    wins = observation["windows"]
    out = _head("refused_window", [w["bound_ms"] if w["bound_ms"] is not None else w["observed_ms"] for w in wins],
                observation["refused"], observation["probe"]["sent"], "allowed probes refused")
    out["updates"] = observation["updates"]
    out["windows"] = len(wins)
    out["set_mode"] = observation["set_mode"]
    out["ipset_restore"] = summarize(observation["ipset_restore_ms"]).as_dict()
    out["probe_rate"] = observation["probe"]["rate"]
    return out


def established(observation: dict[str, Any]) -> dict[str, Any]:
    """Resets of long-lived allowed connections across forced full syncs (sync time as metric)."""
    o = observation
    out = _head("controller_iptables_sync_time", o["sync_ms"], o["resets"] + o["closed"], o["flows"],
                "connections reset")
    out.update({k: o[k] for k in ("syncs", "flows", "established", "resets", "stalls", "closed", "connect_failed",
                                  "exchanges", "versions")})
    return out


def policy_creation(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """policy_enforcement_latency: from the policy's creation to the first probe from which the
    allowed client stays connected."""
    lat = [o.get("enforcement_latency_ms") for o in observations]
    out = _head("policy_enforcement_latency", lat, sum(1 for v in lat if v is None), len(observations),
                "never enforced")
    out["controller_lag"] = summarize([o.get("controller_lag_ms") for o in observations]).as_dict()
    out["sync_total"] = summarize([o["sync"]["total_ms"] for o in observations if o.get("sync")]).as_dict()
    # start -> rules in force, as for job-to-mysql's server_sync
    out["server_sync"] = summarize([(o["sync"]["in_force_ns"] - o["sync"]["start_ns"]) / 1e6
                                    for o in observations if o.get("sync")]).as_dict()
    return out


SUMMARIZERS = {"job-to-mysql": job_to_mysql, "fail-open": fail_open, "ipset-update-window": set_update_window,
               "established-survives-sync": established, "policy-creation-latency": policy_creation}

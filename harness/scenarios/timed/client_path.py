"""client-path: the reporter's whole client path (kube-router #1652): cluster DNS, TLS, the
``mariadb-dump --host=<service name> --ssl`` job. Its declaration, summarizer and report
section; the run code is ``harness.scenarios.client_path``, the test
``cases/scenarios/test_client_path.py``."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tabulate import tabulate

from harness.analysis.stats import summarize as stats_of
from harness.analysis.symptoms import SYMPTOM_ROWS
from harness.report.format import num
from harness.scenarios.declaration import Scenario

WHAT = (
    "kube-router #1652 as reported. A job pod (app=backup, namespace batch) runs "
    "`mariadb-dump --host=mysql.db --ssl --user=nph app` at once after its network is ready: glibc "
    "resolves `mysql.db` through kubelet's ClusterFirst resolv.conf (search batch.svc.cluster.local "
    "svc.cluster.local cluster.local, ndots:5) at a real dnsmasq in kube-system on node-a, then speaks TLS "
    "to a real MariaDB (per-run CA, REQUIRE SSL) in db on node-a behind an ingress policy; node-a learns of "
    "new pods 0.3 s late. `egress`: the job namespace's default-deny egress + allow DNS + allow MySQL (or "
    "MySQL only). `abort`: a server-side abort of an established TLS session (the `mariadb` CLI in "
    "`SELECT SLEEP(5)`). A DNS packet watcher in the job pod records when each query left and what came back. "
    "Metric: client_success_latency = network ready -> the first client run that succeeded (the job's own "
    "first attempt, else a rerun every 0.2 s): the `sleep` the job would have needed.")


def summarize(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """client_success_latency, first-attempt failures with their codes and verbatim messages, the
    resolver's delay, the DNS evidence, and every run's symptom rows."""
    lat = [o.get("client_success_ms") for o in observations]
    failed = [o for o in observations if not o["first"]["ok"]]
    out = SCENARIO.head(lat, len(failed), len(observations))
    out["first_errors"] = dict(Counter(" ".join(str(x) for x in (o["first"]["code"], o["first"]["errno"])
                                                if x is not None) for o in failed))
    out["first_messages"] = dict(Counter(o["first"]["message"] for o in failed))
    out["first_outcomes"] = dict(Counter(o["first"]["outcome"] for o in observations))
    out["first_duration"] = stats_of([o["first"]["duration_ms"] for o in observations]).as_dict()
    out["dns_resolve"] = stats_of([o.get("dns_resolve_ms") for o in observations]).as_dict()
    out["dns_evidence"] = dict(Counter(o.get("dns_evidence", "?") for o in observations))
    out["dns_retries"] = max((q["retries"] for o in observations for q in o.get("dns_queries", [])), default=0)
    out["never_succeeded"] = sum(1 for o in observations if o.get("success_ns") is None)
    out["programmed"] = {node: stats_of([(o.get("programmed_ms") or {}).get(node) for o in observations]).as_dict()
                         for node in sorted({n for o in observations for n in (o.get("programmed_ms") or {})})}
    out[SYMPTOM_ROWS] = [r for o in observations for r in o.get(SYMPTOM_ROWS, [])]
    return out


def _config_rows(entries: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for e in entries:
        s, p = e["summary"], e["params"]
        errs = "; ".join(f"{k} x{v}" for k, v in s["first_errors"].items()) or "-"
        mit = p.get("mitigation", "none")
        rows.append([e["config"], p.get("egress"), mit if mit != "none" else "-", p.get("abort") or "-",
                     p.get("job_node"), f"{s['failures']}/{s['runs']}", errs,
                     num(s["first_duration"].get("p50")), num(s["dns_resolve"].get("p50")),
                     num(s["dns_resolve"].get("max")), s["dns_retries"],
                     ", ".join(f"{k} {v}" for k, v in sorted(s["dns_evidence"].items())),
                     num(s["stats"].get("p50")), num(s["stats"].get("max")), s["never_succeeded"]])
    return rows


TIMELINE_ROWS = 16  # a resolver that retries fast (ICMP-rejected queries) sends ~100: first and last ones shown


def _timeline(entry: dict[str, Any]) -> list[str]:
    """The DNS queries of the configuration's first run: when each left, what came back when."""
    obs = entry["observations"][0] if entry["observations"] else None
    if not obs or not obs.get("dns_queries"):
        return []
    queries = obs["dns_queries"]
    shown = queries if len(queries) <= TIMELINE_ROWS else queries[:TIMELINE_ROWS - 4] + queries[-4:]
    rows = [[q["qname"], q["qtype"], q["transport"], ", ".join(num(t, 1) for t in q["sent_ms"]),
             num(q["answered_ms"], 1) if q["answered_ms"] is not None else "-", q["result"],
             " ".join(q["answers"]) or "-"] for q in shown]
    if len(shown) < len(queries):
        rows.insert(TIMELINE_ROWS - 4, [f"... {len(queries) - len(shown)} more queries", "", "", "", "", "", ""])
    first = obs["first"]
    prog = ", ".join(f"{n} {num(v, 1)}" for n, v in sorted((obs.get("programmed_ms") or {}).items()))
    return [f"**{entry['config']}**, run 0 (ms from network ready; client started {num(obs['client_start_ms'], 1)}, "
            f"ended {num(obs['first_ms'], 1)}: {'ok' if first['ok'] else '`' + first['message'] + '`'}; "
            f"rules in force: {prog}; {len(queries)} queries):", "",
            tabulate(rows, headers=["query", "type", "transport", "left at", "answer at", "result", "addresses"],
                     tablefmt="github"), ""]


def statement(entries: list[dict[str, Any]]) -> list[str]:
    """The plain answers: which measured configurations show "connection reset by peer" (and with
    which verbatim message), and which needed a wait of 5 s / 10 s before the client succeeded."""
    resets = [(e["config"], m) for e in entries for m in e["summary"]["first_messages"]
              if "reset by peer" in m.lower() or " 104" in m or "(104)" in m]
    slow = [(e["config"], e["summary"]["stats"].get("max")) for e in entries
            if (e["summary"]["stats"].get("max") or 0) >= 5000]
    never = [e["config"] for e in entries if e["summary"]["never_succeeded"]
             and (e["params"].get("until_success_s") or 0) > 0]
    others = [e["config"] for e in entries if e["config"] not in {c for c, _ in resets}]
    out = ["**Connection reset by peer**: "]
    if resets:
        out[0] += ("reproduced in " + "; ".join(f"`{c}` (`{m}`)" for c, m in resets) + ".")
    else:
        out[0] += "not reproduced by any measured configuration."
    if others:
        out[0] += (" No first attempt saw a reset in " + ", ".join(f"`{c}`" for c in others) + ".")
    out.append("")
    if slow:
        out.append("**A `sleep` of 5-10 s**: the client succeeded only "
                   + "; ".join(f"`{c}` (max {num(v)} ms)" for c, v in slow)
                   + " after network ready; see the DNS timeline below for whether a query went unanswered "
                   "(glibc resends it after its `timeout:5`, at most `attempts:2` times). Every other configuration "
                   "succeeded within 5 s or was not rerun.")
    else:
        out.append("**A `sleep` of 5-10 s**: no measured configuration needed one (every rerun client succeeded "
                   "within 5 s of network ready, or never).")
    if never:
        out.append("")
        out.append("Rerun for the configuration's wait and never succeeded: " + ", ".join(f"`{c}`" for c in never)
                   + " (no sleep helps: the failure is not a window).")
    return out + [""]


def section(entries: list[dict[str, Any]]) -> list[str]:
    """The configuration table, the DNS timeline of one run per configuration, the statement."""
    out = [tabulate(_config_rows(entries), headers=[
        "configuration", "egress", "mitigation", "abort", "job node", "first failed", "first error (code, errno)",
        "first attempt p50", "resolve p50", "resolve max", "DNS retries", "DNS evidence", "client ok p50",
        "client ok max", "never ok"], tablefmt="github"), ""]
    msgs: dict[str, list[str]] = {}
    for e in entries:
        for m, c in e["summary"]["first_messages"].items():
            msgs.setdefault(m, []).append(f"{e['config']} x{c}")
    if msgs:
        out += ["Verbatim first-attempt errors:", ""] + [f"- `{m}` — {', '.join(v)}" for m, v in msgs.items()] + [""]
    out += statement(entries)
    out += ["DNS queries as the job pod's interface saw them (glibc sends A and AAAA in parallel for each "
            "search-list name; a second `left at` time is a retry of the same query):", ""]
    for e in entries:
        out += _timeline(e)
    out += ["Times in ms from the job pod's network ready. `resolve`: client start -> the last answer (or ICMP "
            "error) its queries got. `DNS evidence`: answered / ICMP-rejected / unanswered. `client ok`: the "
            "first client run that succeeded. The symptom rows of these runs are in the report's symptom map.", ""]
    return out


SCENARIO = Scenario(name="client-path", order=60, what=WHAT, metric="client_success_latency",
                    failure_label="first attempt failed", summarize=summarize, section=section, cdf=False)

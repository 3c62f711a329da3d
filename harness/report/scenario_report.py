"""The run report: ``results.json`` (every observation and summary) -> ``report.md`` (tables a
person reads) and PNG plots, rendered from the JSON alone so ``netpol-harness report RUN``
re-renders any past run. Pure apart from writing the files.

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

from harness.report.machine import machine_lines

log = logging.getLogger(__name__)

SCENARIO_ORDER = ("job-to-mysql", "fail-open", "ipset-update-window", "established-survives-sync",
                  "policy-creation-latency")

WHAT = {
    "job-to-mysql": (
        "kube-router #1652 / k0s #2261. A job pod (app=backup, namespace batch) is created and at "
        "once runs a real MySQL client (PyMySQL: connect + SELECT 1) against a real MariaDB in db on "
        "node-a, protected by an ingress policy that allows exactly these pods. Metric: "
        "pod_creation_reachability_latency = first SYN probe (200/s from the job pod, kernel "
        "timestamps) the server answered - the pod's network ready time. Failure: the job's first "
        "client attempt failed. Pod `docker`: the job pod is a real Docker container (sandbox, CNI-like "
        "wiring, then its command, as kubelet orders them) whose command is the `mariadb` CLI; its exit code "
        "and error line are the first attempt, the SYN prober runs in its network namespace the same way. Cluster `scale-100 + 100 policies`: the lab is "
        "the scale-100 topology (100 nodes, 2 real, 5,000 pods) plus 100 seeded synthetic policies, the "
        "scenario's own pods on its real nodes, so each of node-a's syncs costs what it costs at that size."),
    "fail-open": (
        "kube-router #873. A new pod selected by the policy is created on node-a; a pod the policy "
        "denies (frontend/web-1) probes it from the start (1,000 SYN/s). Metric: fail_open_window = "
        "last denied-but-connected probe - network ready. A long-lived connection opened inside the "
        "window is checked after enforcement (conntrack ESTABLISHED, data still flowing)."),
    "ipset-update-window": (
        "An allowed client probes continuously (2,000 SYN/s) while the policy's source set is "
        "updated repeatedly (a new backup pod per update, each a full sync on node-a). kube-router "
        "v1.2 flushes and refills the set in place; v1.3+ restores into a TMP set and swaps. "
        "Failure: an allowed probe refused; metric: the refused window's duration (bounded by the "
        "neighbouring connected probes)."),
    "established-survives-sync": (
        "Long-lived allowed connections (an echo every 20 ms) across forced full syncs of node-a "
        "(every sync renames every chain). Failure: a connection reset or closed. Metric: the "
        "sync's total time."),
    "policy-creation-latency": (
        "A deny-all ingress policy is in force in db; an allow policy is created at t0 while the "
        "allowed client probes at 1,000 SYN/s. Metric: policy_enforcement_latency = first probe "
        "from which every probe is connected - t0 (controller delivery delay 0). Per apply strategy and "
        "cluster: the `-scale-100` configurations run on scale-100 + 100 synthetic policies."),
}


def _f(v: Any, digits: int = 1) -> str:
    return "" if v is None else f"{v:.{digits}f}"


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
    rank = {name: i for i, name in enumerate(SCENARIO_ORDER)}
    return sorted(entries, key=lambda e: rank.get(e["scenario"], 99))


def summary_table(results: dict[str, Any], fmt: str = "github") -> str:
    return tabulate(summary_rows(results), headers=["scenario", "configuration", "verdict", "metric (ms)", "samples",
                                                   "p50", "p90", "p99", "max", "node-a sync p50",
                                                   "engine profile/strategy/backend", "failures"], tablefmt=fmt)


def _by(results: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    return [e for e in results.get("scenarios", []) if e["scenario"] == scenario]


def _job_section(entries: list[dict[str, Any]]) -> list[str]:
    rows = []
    for e in entries:
        s, p = e["summary"], e["params"]
        errs = "; ".join(f"{k} x{v}" for k, v in s["first_errors"].items()) or "-"
        rows.append([e["config"], cluster_label(p), p.get("pod_backend") or "netns", p.get("mitigation"),
                     p.get("profile") + ("" if p.get("strategy", "restore") == "restore" else f" {p['strategy']}"),
                     p.get("reject_with") or "REJECT (icmp)", p.get("job_node"),
                     _f(s.get("app_start", {}).get("p50"), 2), f"{s['failures']}/{s['runs']}", errs,
                     _f(s["client_success"].get("p50")), _f(s["client_success"].get("max")),
                     _f(s.get("server_delivery", {}).get("p50")), _f(s.get("server_sync", {}).get("p50")),
                     _f(s["server_lag"].get("p50")),
                     ", ".join(f"{k} {v}" for k, v in sorted(s["probe_outcomes"].items()))])
    out = [tabulate(rows, headers=["configuration", "cluster", "pod", "mitigation", "profile", "reject", "job node",
                                   "client start p50", "first failed",
                                   "first error (MySQL code, errno)", "client ok p50", "client ok max",
                                   "node-a delivery p50", "node-a sync p50", "node-a programmed p50",
                                   "SYN probe outcomes"], tablefmt="github"), ""]
    out += _decomposition(entries)
    for e in entries:
        c = e["summary"].get("container")
        if c:
            a = e["summary"]["app_start"]
            out.append(f"- **{e['config']}** (docker pod): sandbox running -> network ready (CNI ADD) p50 "
                       f"{_f(c['sandbox_to_ready'].get('p50'))} ms; network ready -> `mariadb` started p50 "
                       f"{_f(a.get('p50'), 2)} ms, max {_f(a.get('max'), 2)} ms; exit codes "
                       + ", ".join(f"{k} x{v}" for k, v in sorted(c["exit_codes"].items())))
    if any(e["summary"].get("container") for e in entries):
        out.append("")
    msgs = {}
    for e in entries:
        for m, c in e["summary"]["first_messages"].items():
            msgs.setdefault(m, []).append(f"{e['config']} x{c}")
    if msgs:
        out += ["Exact first-attempt errors (verbatim: PyMySQL's message for netns pods, the `mariadb` CLI's "
                "error line for docker pods):", ""]
        out += [f"- `{m}` — {', '.join(v)}" for m, v in msgs.items()]
        out.append("")
    cli: dict[str, list[str]] = {}
    for e in entries:
        if e.get("cli"):
            cli.setdefault(e["cli"], []).append(e["config"])
    for line, configs in cli.items():
        out.append(f"- the `mariadb` CLI in a pod the policy denies: `{line}` — {', '.join(configs)}")
    out += ["", "Why the client says *refused* and not *reset*: kube-router's REJECT answers the job's SYN. "
            "An ICMP port-unreachable reaching a socket in SYN-SENT aborts the connect with ECONNREFUSED, and so "
            "does a TCP RST answering a SYN (`--reject-with tcp-reset`): in both configurations the real client "
            "reports *Connection refused* (PyMySQL error 2003, errno 111; the `mariadb` CLI prints ERROR 2002 with "
            "errno 115, EINPROGRESS, the state of its non-blocking connect). Only the SYN probes tell the two "
            "apart (rejected_icmp vs refused_rst). *Connection reset by peer* (ECONNRESET, MySQL 2013 Lost "
            "connection) needs an RST *after* the handshake: the first packets must pass and a later one be "
            "rejected, which kube-router's pod chain (ESTABLISHED accepted first) does not do to a connection "
            "it let through (see established-survives-sync). The resets the seed's users reported are not "
            "reproduced by this rule layout.", ""]
    out += ["", "All times in ms from the job pod's network ready (CNI ADD done). `client start`: when the "
            "job's client began (netns pod: the harness's PyMySQL call, after the mitigations; docker pod: the "
            "container's command exec'd, seen within 0.1 ms). `client ok`: the first client connection that "
            "completed (the job's own attempts, else a 20 ms PyMySQL poller in the pod's namespace). "
            "`node-a delivery`: the pod-added event reached node-a's controller. `node-a sync`: that node's sync "
            "including the job pod, start -> rules in force. `node-a programmed`: that sync was in force.", ""]
    return out


def cluster_label(params: dict[str, Any]) -> str:
    """``default`` or ``scale-100 + 100 policies``: the cluster a configuration ran on."""
    topo = params.get("topology") or "default"
    n = params.get("synthetic_policies") or 0
    return f"{topo} + {n} policies" if n else topo


def _decomposition(entries: list[dict[str, Any]]) -> list[str]:
    """Per configuration without mitigation: p50 latency next to its parts on node-a, so the
    growth with cluster scale reads as sync time (latency ~= delivery + wait + sync)."""
    out = []
    for e in entries:
        s, p = e["summary"], e["params"]
        parts = [s.get(k, {}).get("p50") for k in ("server_delivery", "server_sync_wait", "server_sync")]
        lat = s["stats"].get("p50")
        if p.get("mitigation", "none") != "none" or lat is None or any(v is None for v in parts):
            continue
        d, w, y = parts
        out.append(f"- **{e['config']}** ({cluster_label(p)}, strategy {p.get('strategy', 'restore')}): reachable "
                   f"p50 {_f(lat)} ms ≈ node-a delivery {_f(d)} + wait for a running sync {_f(w)} + node-a sync "
                   f"{_f(y)} = {_f(d + w + y)} ms (p50s; sync max {_f(s['server_sync'].get('max'))} ms)")
    if any((e["params"].get("topology") or "default") != "default" for e in entries):
        out.append("- At scale the job's client starts tens of ms after network ready (`client start`): node-b "
                   "learns of the job at once (delivery 0) and its own sync renders the large cluster in the "
                   "harness's Python process, holding the interpreter the client runs in (measured: ~37 ms with "
                   "node-b's delivery 0, ~2 ms when node-b learns 2 s late). Far inside the window, it changes no "
                   "outcome.")
    if out:
        out = ["Where the window goes (configurations without mitigation): the job is reachable once node-a "
               "learnt of it and its sync is in force, so the window grows with node-a's sync time, i.e. "
               "with the cluster's size.", "", *out, ""]
    return out


def _fail_open_section(entries: list[dict[str, Any]]) -> list[str]:
    rows = []
    for e in entries:
        s = e["summary"]
        rows.append([e["config"], f"{s['failures']}/{s['runs']}", _f(s["stats"].get("p50")), _f(s["stats"].get("max")),
                     s["established_in_window"], s["survived_enforcement"], s["conntrack_established"],
                     ", ".join(f"{k} x{v}" for k, v in s["new_connection_after"].items())])
    return [tabulate(rows, headers=["configuration", "runs let through", "window p50", "window max",
                                    "conn. opened in window", "survived enforcement", "conntrack ESTABLISHED",
                                    "new connection after"], tablefmt="github"), ""]


def _set_section(entries: list[dict[str, Any]]) -> list[str]:
    rows = []
    for e in entries:
        s = e["summary"]
        rows.append([e["config"], s["set_mode"], s["updates"], s["runs"], s["failures"], s["windows"],
                     _f(s["stats"].get("max"), 3), _f(s["ipset_restore"].get("p50"), 2)])
    return [tabulate(rows, headers=["configuration", "set update", "updates", "probes", "refused", "windows",
                                    "longest window ms (bound)", "ipset restore p50 ms"], tablefmt="github"), "",
            "A window's bound is the gap between the connected probes around it, so it is at most one probe "
            "interval (0.5 ms) coarser than the truth.", ""]


def _established_section(entries: list[dict[str, Any]]) -> list[str]:
    rows = []
    for e in entries:
        s = e["summary"]
        rows.append([e["config"], s["syncs"], s["versions"], s["flows"], s["exchanges"], s["resets"], s["closed"],
                     s["stalls"], _f(s["stats"].get("p50"))])
    return [tabulate(rows, headers=["configuration", "full syncs", "sync versions", "connections", "echoes",
                                    "resets", "closed", "stalls", "sync p50 ms"], tablefmt="github"), ""]


def _policy_section(entries: list[dict[str, Any]]) -> list[str]:
    rows = []
    for e in entries:
        s = e["summary"]
        rows.append([e["config"], cluster_label(e["params"]), e["params"].get("strategy"), s["runs"],
                     _f(s["stats"].get("p50")), _f(s["stats"].get("p99")), _f(s["controller_lag"].get("p50")),
                     _f((s.get("server_sync") or {}).get("p50")), _f(s["sync_total"].get("p50"))])
    return [tabulate(rows, headers=["configuration", "cluster", "strategy", "runs", "enforcement p50 ms", "p99 ms",
                                    "controller in force p50 ms", "sync to in force p50 ms", "sync total p50 ms"],
                     tablefmt="github"), ""]


SECTIONS = {"job-to-mysql": _job_section, "fail-open": _fail_open_section, "ipset-update-window": _set_section,
            "established-survives-sync": _established_section, "policy-creation-latency": _policy_section}


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
    for name in SCENARIO_ORDER:
        entries = _by(results, name)
        if not entries:
            continue
        out += [f"## {name}", "", WHAT.get(name, ""), ""]
        out += [f"- **{e['config']}**: expected {e['expectation']} — **{e['verdict'].upper()}** "
                f"({e['runtime_s']:.1f} s)" for e in entries]
        out.append("")
        out += SECTIONS[name](entries)
        for plot in results.get("plots", {}).get(name, []):
            out += [f"![{plot}]({plot})", ""]
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

"""Pure report rendering: results.json -> report.md and plots, and `report RUN` re-rendering."""

from __future__ import annotations

import argparse
import json

import pytest

from harness.errors import ConfigError
from harness.report.recorder import ScenarioRecorder
from harness.report.scenario_report import overall, render_markdown, summary_rows, write_run


def _job_obs(i, failed):
    first = {"ok": not failed, "code": 2003 if failed else None, "errno": "ECONNREFUSED" if failed else None,
             "message": "Can't connect ([Errno 111] Connection refused)" if failed else "",
             "start_ns": 1_050_000_000, "end_ns": 1_060_000_000, "outcome": "refused" if failed else "connected"}
    return {"run": i, "first_failed": failed, "first": first, "attempts": [first], "ready_ns": 1_000_000_000,
            "reachability_latency_ms": 350.0 + i, "client_success_ms": 360.0 + i, "success_ns": 1_360_000_000,
            "client_ok_ns": None, "programmed_ns": 1_340_000_000,
            "event": {"emitted_ns": 1_000_100_000, "delivered_ns": {"node-a": 1_300_000_000, "node-b": 1_000_200_000}},
            "server_sync": {"node": "node-a", "start_ns": 1_300_000_000, "in_force_ns": 1_340_000_000, "reasons": [],
                            "phases": [["render", 1_300_000_000, 1_301_000_000],
                                       ["iptables_restore_time", 1_310_000_000, 1_340_000_000]]},
            "probe": {"rate": 200, "counts": {"rejected_icmp": 2, "connected": 2},
                      "series": [[1_050_000_000, "rejected_icmp"], [1_200_000_000, "rejected_icmp"],
                                 [1_350_000_000, "connected"], [1_400_000_000, "connected"]]}}


def _results():
    rec = ScenarioRecorder("smoke")
    rec.record("job-to-mysql", "none", {"mitigation": "none", "profile": "v2.10", "job_node": "node-b"},
               [_job_obs(i, True) for i in range(3)], expectation="every first attempt fails",
               check=lambda s: s["failures"] == s["runs"], runtime_s=1.0, cli="ERROR 2002 (HY000): x (115)")
    rec.record("job-to-mysql", "cni-wait-all", {"mitigation": "cni-wait:all", "profile": "v2.10"},
               [_job_obs(i, i == 0) for i in range(3)], expectation="no first attempt fails",
               check=lambda s: s["failures"] == 0, runtime_s=1.0)
    results = {"run_id": "r1", "started": "2026-01-01T00:00:00+00:00", "wall_s": 2.0, "mode": "smoke",
               "machine": {"kernel": "6.18", "tools": {}, "libraries": {}}, "scenarios": rec.entries}
    results["summary"] = overall(results)
    return results


def test_rows_verdicts_and_overall():
    results = _results()
    rows = summary_rows(results)
    assert [r[:3] for r in rows] == [["job-to-mysql", "none", "PASS"], ["job-to-mysql", "cni-wait-all", "FAIL"]]
    assert rows[0][-1] == "3/3 first attempt failed" and rows[0][5] == "351.0"
    assert results["summary"] == {"scenario_configs": 2, "scenario_configs_passed": 1, "verdict": "FAIL"}


def test_markdown_names_errors_machine_and_expectations():
    md = render_markdown(_results())
    assert "| job-to-mysql | none" in md.replace("  ", " ") or "job-to-mysql" in md
    assert "2003 ECONNREFUSED x3" in md
    assert "ERROR 2002 (HY000)" in md
    assert "expected no first attempt fails — **FAIL**" in md
    assert "kernel 6.18" in md


def test_write_run_makes_plots_and_rerender_reproduces_report(tmp_path):
    from harness.report.commands import cmd_report

    folder = tmp_path / "r1"
    report = write_run(_results(), folder)
    assert set(p.name for p in folder.iterdir()) >= {"results.json", "report.md", "cdf-job-to-mysql.png",
                                                     "timeline-job-to-mysql.png"}
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    first = report.read_text()
    assert "![timeline-job-to-mysql.png](timeline-job-to-mysql.png)" in first
    report.unlink()
    assert cmd_report(argparse.Namespace(run=folder, plots=False)) == 0
    assert report.read_text() == first
    assert json.loads((folder / "results.json").read_text())["run_id"] == "r1"


def test_report_of_a_broken_file_is_one_line(tmp_path):
    from harness.report.commands import cmd_report

    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        cmd_report(argparse.Namespace(run=tmp_path, plots=True))
    bad.write_text(json.dumps({"scenarios": [{"scenario": "job-to-mysql"}]}))
    with pytest.raises(ConfigError, match="missing field"):
        cmd_report(argparse.Namespace(run=tmp_path, plots=False))


def test_docker_pod_configuration_sits_next_to_the_netns_one():
    """A docker job pod's entry: its pod kind, client start after network ready and container
    timestamps show in the job-to-mysql table, next to the netns result."""
    results = _results()
    line = "ERROR 2002 (HY000): Can't connect to server on '10.244.0.6' (115)"
    obs = []
    for i in range(2):
        o = _job_obs(i, True)
        o["first"] = dict(o["first"], code=2002, errno="EINPROGRESS", message=line, outcome="error")
        o["attempts"] = [o["first"]]
        o["app_start_ms"] = 1.5 + i
        o["container"] = {"sandbox_ns": 995_000_000, "network_ready_ns": 1_000_000_000, "go_ns": 1_001_000_000,
                          "app_started_ns": 1_001_500_000, "finished_ns": 1_006_000_000, "exit_code": 1,
                          "output": line + "\n", "argv": ["mariadb"]}
        obs.append(o)
    rec = ScenarioRecorder("smoke")
    rec.record("job-to-mysql", "docker", {"mitigation": "none", "profile": "v2.10", "job_node": "node-b",
                                          "pod_backend": "docker"}, obs, expectation="every first attempt fails",
               check=lambda s: s["failures"] == s["runs"], runtime_s=1.0)
    results["scenarios"] += rec.entries
    md = render_markdown(results)
    table = [ln for ln in md.splitlines() if ln.startswith("| none ") or ln.startswith("| docker ")]
    assert [ln.split("|")[2].strip() for ln in table] == ["default", "default"]
    assert [ln.split("|")[3].strip() for ln in table] == ["netns", "docker"]
    assert [ln.split("|")[8].strip() for ln in table] == ["", "2"]  # tabulate reads "2.00" as a number
    assert "2002 EINPROGRESS x2" in md and f"`{line}` — docker x2" in md
    assert ("- **docker** (docker pod): sandbox running -> network ready (CNI ADD) p50 5.0 ms; network ready -> "
            "`mariadb` started p50 2.00 ms, max 2.50 ms; exit codes 1 x2") in md


def test_scale_configuration_shows_node_a_sync_next_to_the_latency(tmp_path):
    """A scale-100 entry: the summary row carries node-a's sync p50 next to the latency, the job
    table names the cluster, and the decomposition line adds delivery + wait + sync."""
    from harness.scenarios.timed.job_to_mysql import summarize as job_to_mysql

    obs = []
    for i in range(3):
        o = _job_obs(i, True)
        o.update(server_delivery_ms=300.0, server_sync_wait_ms=1.0, server_sync_ms=600.0 + i,
                 reachability_latency_ms=905.0 + i)
        obs.append(o)
    s = job_to_mysql(obs)
    assert s["server_sync"]["p50"] == 601.0 and s["server_delivery"]["p50"] == 300.0
    results = _results()
    rec = ScenarioRecorder("smoke")
    rec.record("job-to-mysql", "scale-100", {"mitigation": "none", "profile": "v2.10", "job_node": "node-b",
                                             "strategy": "restore", "topology": "scale-100",
                                             "synthetic_policies": 100}, obs,
               expectation="every first attempt fails", check=lambda s: s["failures"] == s["runs"], runtime_s=1.0)
    results["scenarios"] += rec.entries
    rows = summary_rows(results)
    assert rows[-1][:2] == ["job-to-mysql", "scale-100"] and rows[-1][5] == "906.0" and rows[-1][9] == "601.0"
    assert rows[0][9] == ""  # the default entries' observations carry no sync parts
    md = render_markdown(results)
    assert "scale-100 + 100 policies" in md
    assert ("- **scale-100** (scale-100 + 100 policies, strategy restore): reachable p50 906.0 ms ≈ node-a delivery "
            "300.0 + wait for a running sync 1.0 + node-a sync 601.0 = 902.0 ms") in md
    write_run(results, tmp_path / "r")
    assert (tmp_path / "r" / "timeline-job-to-mysql-scale.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Timeline of one job-to-mysql run at scale" in md and "(timeline-job-to-mysql.png)" in md


def test_api_client_configuration_is_compared_with_the_in_process_one():
    """A binary-engine entry (no sync record: server_sync None) beside an in-process one at the
    same delivery: the report prints both windows, their difference and the watch delivery."""
    delivery = {"node-a": 0.0, "node-b": 0.0}
    inproc, api = [], []
    for i in range(3):
        o = _job_obs(i, True)
        o.update(server_delivery_ms=1.0, server_sync_wait_ms=0.0, server_sync_ms=80.0, reachability_latency_ms=75.0)
        inproc.append(o)
        b = _job_obs(i, True)
        b.update(server_sync=None, programmed_ns=None, server_delivery_ms=6.0 + i, reachability_latency_ms=60.0)
        api.append(b)
    rec = ScenarioRecorder("full")
    rec.record("job-to-mysql", "no-delay", {"mitigation": "none", "profile": "v2.10", "delivery": delivery,
                                            "engine": "kube-router"}, inproc, expectation="e", runtime_s=1.0)
    rec.record("job-to-mysql", "api-client", {"mitigation": "none", "profile": "v2.10", "delivery": delivery,
                                              "engine": "binary",
                                              "binary_cmd": ["python3", "examples/api_controller.py", "--master",
                                                             "{master}"]}, api, expectation="e", runtime_s=1.0)
    results = {"run_id": "r2", "started": "2026-01-01T00:00:00+00:00", "wall_s": 2.0, "mode": "full",
               "machine": {"kernel": "6.18", "tools": {}, "libraries": {}}, "scenarios": rec.entries}
    results["summary"] = overall(results)
    rows = summary_rows(results)
    assert [r[1] for r in rows] == ["no-delay", "api-client"] and rows[1][9] == ""  # no sync to show
    md = render_markdown(results)
    assert ("- **api-client** (python3 examples/api_controller.py): reachable p50 60.0 ms (max 60.0); node-a's watch "
            "delivered the job's IP p50 7.0 ms (max 8.0) after network ready; in-process **no-delay** at the same "
            "delivery: p50 75.0 ms (node-a sync p50 80.0 ms), difference -15.0 ms") in md

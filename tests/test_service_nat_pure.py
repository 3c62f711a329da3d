"""service-nat's declaration (pure): symptom rows, summary and report section from observations;
the Service path bench's cluster."""

from __future__ import annotations

from harness.bench.service_path import ServiceBenchResult, service_bench_cluster
from harness.model.service import all_endpoint_slices
from harness.scenarios.declaration import get
from harness.scenarios.timed.service_nat import rows_of

CFG = {"mechanism": "ct-delete", "endpoints": 2, "nf_conntrack_tcp_loose": 1, "kube_router_profile": "v1.3.2",
       "kube_proxy_invalid_drop": True, "backend": "nft", "trials": 3}
RESET = {"ok_before": True, "ok_after": False, "code": 2013, "errno": "ECONNRESET",
         "message": "Lost connection to MySQL server during query ([Errno 104] Connection reset by peer)",
         "exception": "ConnectionResetError", "endpoint": "10.244.0.3", "endpoint_after": "10.244.1.2",
         "after_ms": 60.0, "client_saw": "reset_after_established", "new_connection": "", "rule_counts": {}}
OK = {**RESET, "ok_after": True, "code": None, "errno": None, "message": "", "exception": "",
      "endpoint_after": "10.244.0.3", "client_saw": "connected"}


def observation(*trials):
    return {"config": CFG, "trials": list(trials), "counts": {}, "cluster_ip": "10.96.0.2", "endpoints": []}


def test_rows_have_the_symptom_map_shape():
    rows = rows_of(observation(RESET, OK))
    assert [set(r) for r in rows] == [{"client_saw", "errno_or_code", "mechanism", "configuration"}] * 2
    assert rows[0]["client_saw"] == "reset_after_established" and rows[0]["errno_or_code"] == "2013 ECONNRESET"
    assert "another endpoint" in rows[0]["mechanism"] and "same endpoint" in rows[1]["mechanism"]
    assert rows[0]["configuration"] == ("ct-delete, 2 endpoint(s), tcp_loose=1, kube-router v1.3.2, "
                                        "kube-proxy INVALID drop on")


def test_summary_and_section():
    sc = get("service-nat")
    s = sc.summarize([observation(RESET, OK, RESET)])
    assert s["counts"] == {"reset_after_established": 2, "connected": 1} and s["failures"] == 2 and s["runs"] == 3
    assert s["resets_with_endpoint_change"] == 2 and s["survived_same_endpoint"] == 1
    assert list(s["messages"]) == ["2013 ECONNRESET: " + RESET["message"]]
    timeout = {**RESET, "client_saw": "timeout", "errno": "ETIMEDOUT", "rule_counts": {"KUBE-FORWARD": 5}}
    t = sc.summarize([observation(timeout)])
    assert "INVALID drops on node-a: KUBE-FORWARD 5" in t["symptom_rows"][0]["mechanism"]
    text = "\n".join(sc.section([{"config": "ct-delete-2ep", "summary": s}]))
    assert "| ct-delete-2ep " in text and "2013 ECONNRESET" in text and "Connection reset by peer" in text


def test_service_bench_cluster_puts_every_pod_behind_one_service():
    c = service_bench_cluster(100, 7)
    slices = all_endpoint_slices(c)
    assert len(c.services) == 7 and sum(len(s.endpoints) for v in slices.values() for s in v) == 100
    r = ServiceBenchResult("k", "nft", 2, 1000, 10, 1000, derive_ms=10, render_ms=5, full_sync_ms=480,
                           partial_sync_ms=100, restore_lines=1)
    assert r.per_pod_ms == (10 + 2 * 5 + 480) / 1000


def test_the_report_engine_column_names_the_profile_the_configuration_ran():
    from harness.report.scenario_report import enforcement_label
    from harness.scenarios.service_nat import NatConfig

    cfg = NatConfig("x", "ct-delete", profile="v1.3.1", backend="legacy")
    assert enforcement_label(cfg.describe()) == "kube-router v1.3.1/restore/legacy"

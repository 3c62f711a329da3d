"""Pure parts of the client path: the tools' error lines, DNS query pairing, the symptom map,
the client-path summary and report section (no root, no kernel)."""

from __future__ import annotations

import pytest

from harness.analysis.dns_queries import DnsPacket, pair_queries
from harness.analysis.symptoms import SYMPTOM_ROWS, check_row, client_saw, row, rows_of, symptom_table
from harness.outcome import Outcome
from harness.report.symptom_map import symptom_map_lines
from harness.scenarios.client_path import dns_evidence
from harness.scenarios.declaration import get
from harness.scenarios.tls_client import ClientRun, client_argv, error_line, parse_client_error


@pytest.mark.parametrize(("line", "want"), [
    ('mariadb-dump: Got error: 2005: "Unknown server host \'mysql.db\' (-3)" when trying to connect',
     (2005, "EAI_AGAIN")),
    ('mariadb-dump: Got error: 2005: "Unknown server host \'nope.db\' (-2)" when trying to connect',
     (2005, "EAI_NONAME")),
    ('mariadb-dump: Got error: 2002: "Can\'t connect to server on \'mysql.db\' (115)" when trying to connect',
     (2002, "EINPROGRESS")),
    ("ERROR 2026 (HY000) at line 1: TLS/SSL error: Connection reset by peer (104)", (2026, "ECONNRESET")),
    ("ERROR 2026 (HY000) at line 1: TLS/SSL error: unexpected eof while reading", (2026, None)),
    ("ERROR 2013 (HY000): Lost connection to server at 'handshake: reading initial communication packet', "
     "system error: 104", (2013, "ECONNRESET")),
    ("ERROR 1045 (28000): Access denied for user 'nph'@'10.244.1.6' (using password: YES)", (1045, None)),
])
def test_client_error_lines_give_their_numbers(line, want):
    assert parse_client_error(line) == want


def test_error_line_and_outcome_come_from_the_numbers():
    assert error_line("Warning: x\nmariadb-dump: Got error: 2005: \"y (-3)\" when trying to connect\n") \
        .startswith("mariadb-dump: Got error: 2005")
    assert ClientRun("mariadb", False, 0, 1, 1, 2026, "ECONNRESET", "TLS/SSL error: timed out").outcome \
        is Outcome.RESET
    assert ClientRun("mariadb-dump", False, 0, 1, 2, 2005, "EAI_AGAIN").outcome is Outcome.NAME_UNRESOLVED
    assert ClientRun("mariadb-dump", True, 0, 1, 0).outcome is Outcome.CONNECTED


def test_client_argv_is_the_reporters_shape_without_a_password():
    argv = client_argv("mariadb-dump", "mysql.db", "nph", "app")
    assert argv == ["mariadb-dump", "--no-defaults", "--host=mysql.db", "--ssl", "--user=nph", "--skip-dump-date",
                    "app"]
    assert "--ssl-verify-server-cert" in client_argv("mariadb", "mysql.db", "nph", "app", ca="/x/ca.pem")
    with pytest.raises(ValueError):
        client_argv("mysql", "h", "u", "d")


def _q(ts, qid, name, qtype="A", sport=40000):
    return DnsPacket(ts, "out", "udp", "10.244.1.5", "10.244.0.254", sport=sport, dport=53, dns_id=qid,
                     qname=name, qtype=qtype)


def _a(ts, qid, name, rcode="NOERROR", answers=(), qtype="A", sport=40000):
    return DnsPacket(ts, "in", "udp", "10.244.0.254", "10.244.1.5", sport=53, dport=sport, dns_id=qid,
                     qname=name, qtype=qtype, response=True, rcode=rcode, answers=tuple(answers))


def test_queries_pair_with_answers_retries_and_icmp_errors():
    pk = [_q(100, 1, "a.svc"), _q(5_000_100, 1, "a.svc"), _a(5_000_300, 1, "a.svc", answers=["10.0.0.1"]),
          _q(200, 2, "b.svc", sport=40001),
          DnsPacket(250, "in", "icmp", "10.244.1.1", "10.244.1.5", sport=40001, dport=53, icmp="type 3 code 3"),
          _q(300, 3, "c.svc", sport=40002)]
    rows = {r.qname: r for r in pair_queries(pk)}
    assert rows["a.svc"].sent_ns == [100, 5_000_100] and rows["a.svc"].answered_ns == 5_000_300
    assert rows["a.svc"].as_dict(100)["retries"] == 1 and rows["a.svc"].answers == ("10.0.0.1",)
    assert rows["b.svc"].result == "ICMP type 3 code 3" and rows["b.svc"].answered_ns == 250
    assert rows["c.svc"].result == "no answer" and rows["c.svc"].answered_ns is None
    assert dns_evidence([r.as_dict() for r in rows.values()]) == "ICMP-rejected"
    assert dns_evidence([rows["a.svc"].as_dict()]) == "answered after a retry"
    assert dns_evidence([rows["c.svc"].as_dict()]) == "unanswered"
    assert dns_evidence([]) == "no query"


def test_symptom_table_groups_rows_from_any_scenario():
    assert client_saw("Can't connect to server on '10.244.0.6' (115) from job-12") == \
        "Can't connect to server on '<ip>' (115) from job-<i>"
    r1 = row("ERROR 2026 (HY000): Connection reset by peer (104)", 2026, "ECONNRESET", "socket abort", "cp/x")
    assert r1["errno_or_code"] == "2026 ECONNRESET"
    assert row("", None, None, "none", "cp/y")["errno_or_code"] == "ok"
    svc_row = {"client_saw": "Lost connection (104)", "errno_or_code": "2013 ECONNRESET",
               "mechanism": "conntrack entry removed mid-flow", "configuration": "service-path/ct-flush"}
    entries = [{"scenario": "client-path", "summary": {SYMPTOM_ROWS: [r1, r1]}},
               {"scenario": "service-path", "summary": {SYMPTOM_ROWS: [svc_row]}},
               {"scenario": "fail-open", "summary": {}}]
    table = symptom_table(rows_of(entries))
    assert [(t["errno_or_code"], t["configurations"], t["count"]) for t in table] == [
        ("2026 ECONNRESET", {"cp/x": 2}, 2), ("2013 ECONNRESET", {"service-path/ct-flush": 1}, 1)]
    lines = symptom_map_lines(entries)
    assert lines[0] == "## Symptom map" and "service-path/ct-flush (1)" in "\n".join(lines)
    assert symptom_map_lines([{"summary": {}}]) == []
    with pytest.raises(ValueError, match="missing or empty mechanism"):
        check_row({"client_saw": "x", "errno_or_code": "1", "configuration": "c"})


def _obs(i, ok, msg="", code=None, errno=None, resolve=10.0, success=400.0, retries=0):
    first = {"ok": ok, "start_ns": 0, "end_ns": 1, "code": code, "errno": errno, "message": msg,
             "outcome": "connected" if ok else "error", "duration_ms": 12.0}
    q = {"qname": "mysql.db.svc.cluster.local", "qtype": "A", "transport": "udp", "sent_ms": [5.0] * (retries + 1),
         "answered_ms": 6.0, "result": "NOERROR", "answers": ["10.244.0.6"], "retries": retries}
    return {"run": i, "first": first, "first_ms": 20.0, "client_start_ms": 5.0, "success_ns": 1 if success else None,
            "client_success_ms": success, "dns_queries": [q], "dns_evidence": "answered", "dns_resolve_ms": resolve,
            "programmed_ms": {"node-a": 340.0}, SYMPTOM_ROWS: [row(msg, code, errno, "m", "client-path/c")]}


def test_client_path_summary_and_section_state_what_was_measured():
    sc = get("client-path")
    refused = sc.summarize([_obs(0, False, "Got error: 2002: \"Can't connect (115)\"", 2002, "EINPROGRESS"),
                            _obs(1, False, "Got error: 2002: \"Can't connect (115)\"", 2002, "EINPROGRESS")])
    assert refused["failures"] == 2 and refused["first_errors"] == {"2002 EINPROGRESS": 2}
    assert len(refused[SYMPTOM_ROWS]) == 2 and refused["stats"]["p50"] == 400.0
    slow = sc.summarize([_obs(0, True, success=5100.0, resolve=5020.0, retries=1)])
    reset = sc.summarize([_obs(0, False, "TLS/SSL error: Connection reset by peer (104)", 2026, "ECONNRESET",
                               success=None)])
    entries = [{"config": "dump", "summary": refused, "params": {"egress": "none", "job_node": "node-b"},
                "observations": [_obs(0, False)]},
               {"config": "dd", "summary": slow, "params": {"egress": "dns+mysql"}, "observations": []},
               {"config": "abort", "summary": reset, "params": {"until_success_s": 0.0}, "observations": []}]
    text = "\n".join(sc.section(entries))
    assert "**Connection reset by peer**: reproduced in `abort`" in text
    assert "No first attempt saw a reset in `dump`, `dd`" in text
    assert "`dd` (max 5100.0 ms)" in text
    assert "Rerun for the configuration's wait and never succeeded" not in text  # abort was not rerun
    assert "mysql.db.svc.cluster.local" in text  # the DNS timeline of the first run

"""The conformance runner itself: observed tables from probe outcomes (pure), and in the kernel
that a wrong expectation is caught cell by cell and the CLI exits non-zero."""

from __future__ import annotations

import os
import textwrap

import pytest

from harness.conformance.case import load_case
from harness.conformance.commands import expand_case_paths, summary_table
from harness.conformance.runner import RunOptions, observed_table, run_case
from harness.errors import EnvironmentProblem

PODS = ["x/a", "x/b", "y/a"]


def test_observed_table_from_outcomes():
    outcomes = {("x/a", "x/b"): "connected", ("x/b", "x/a"): "refused", ("x/a", "y/a"): "timeout",
                ("y/a", "x/a"): "error:EINVAL", ("x/b", "y/a"): "reset", ("y/a", "x/b"): "connected"}
    t = observed_table(outcomes, PODS, ignore_self=True)
    assert t.get("x/a", "x/b") is True
    assert [t.get(*c) for c in [("x/b", "x/a"), ("x/a", "y/a"), ("y/a", "x/a"), ("x/b", "y/a")]] == [False] * 4
    assert t.cell("x/a", "y/a").detail == "timeout"
    assert t.cell("y/a", "x/a").detail == "error:EINVAL"  # unknown words are denials with the word kept
    assert t.cell("x/a", "x/a").skipped and t.is_complete


def test_expand_case_paths_takes_directories(tmp_path):
    for name in ("b.yaml", "a.yaml", "notes.txt"):
        (tmp_path / name).write_text("")
    assert expand_case_paths([str(tmp_path), "c.yaml"]) == [
        str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), "c.yaml"]


WRONG_CASE = """\
    name: a wrong hand table must fail
    topology: k8s-e2e
    steps:
      - description: x/a admits only namespace y, but the table claims z gets in too
        apply:
          - apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: only-y, namespace: x}
            spec:
              podSelector: {matchLabels: {pod: a}}
              ingress:
                - from:
                    - namespaceSelector: {matchLabels: {ns: y}}
        probe: {port: 80, protocol: TCP}
        expect:
          default: allow
          exceptions:
            - {from: "x/*", to: x/a, verdict: deny}
      - description: the oracle's table on port 81 (no sync)
        probe: {port: 81, protocol: TCP}
    """


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_wrong_expectation_is_caught(tmp_path, backend):
    path = tmp_path / "wrong.yaml"
    path.write_text(textwrap.dedent(WRONG_CASE))
    case = load_case(str(path))
    try:
        result = run_case(case, RunOptions(backend=backend))
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    first, second = result.steps
    assert sorted((m.src, m.dst) for m in first.mismatches) == [("z/a", "x/a"), ("z/b", "x/a"), ("z/c", "x/a")]
    assert all(m.observed.detail == "refused" for m in first.mismatches)  # kube-router REJECTs
    assert first.oracle_vs_hand is not None and first.oracle_vs_hand.count == 3
    assert first.sync_version and len(first.syncs) == 2  # both real nodes synced
    assert second.sync_version is None and second.ok  # a probe-only step does not sync
    assert second.outcomes == {"connected": 67, "refused": 5}  # x/b, x/c, z/* -> x/a
    assert not result.ok and result.mismatch_count == 3
    assert "FAIL" in summary_table([result])
    assert "z/a -> x/a: expected allow, observed deny (refused)" in result.failure_summary()


@pytest.mark.kernel
def test_cli_exit_codes(tmp_path, capsys):
    from harness.cli import main
    from harness.engines.kube_router.apply import require_tools

    try:
        require_tools("nft")
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(textwrap.dedent(WRONG_CASE))
    good = os.path.join(os.path.dirname(__file__), os.pardir, "cases", "conformance",
                        "07-allow-from-namespace.yaml")
    assert main(["conformance", "-q", good]) == 0
    assert main(["conformance", "-q", good, str(wrong)]) == 1
    out = capsys.readouterr().out
    assert "1/2 cases passed" in out and "MISMATCH" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: n\ntopology: k8s-e2e\nsteps: [{description: d, probe: {port: 0}}]\n")
    assert main(["conformance", str(bad)]) == 2
    assert f"{bad}: steps[0].probe.port: 0 is not a port number" in capsys.readouterr().err


def test_sctp_crc32c_and_init_packet():
    from harness.conformance import sctp

    assert sctp.crc32c(b"123456789") == 0xE3069283  # the standard CRC32c check value
    pkt = sctp.init_packet(40000, 81, 0x01020304)
    assert len(pkt) == 32 and pkt[12] == 1  # common header + INIT chunk
    zeroed = pkt[:8] + bytes(4) + pkt[12:]
    assert int.from_bytes(pkt[8:12], "little") == sctp.crc32c(zeroed)


def _icmp_unreach(code: int, dst: str, sport: int, dport: int) -> bytes:
    import socket
    import struct

    inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 52, 0, 0, 63, 132, 0, socket.inet_aton("10.244.0.2"),
                        socket.inet_aton(dst)) + struct.pack("!HH", sport, dport) + bytes(4)
    outer = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, 1, 0, socket.inet_aton(dst), socket.inet_aton("10.244.0.2"))
    return outer + struct.pack("!BBHI", 3, code, 0, 0) + inner


def test_sctp_answers_are_classified_and_matched_to_the_probe():
    from harness.conformance.sctp import classify_icmp

    assert classify_icmp(_icmp_unreach(2, "10.244.1.3", 40000, 81), "10.244.1.3", 40000, 81) == "connected"
    assert classify_icmp(_icmp_unreach(3, "10.244.1.3", 40000, 81), "10.244.1.3", 40000, 81) == "refused"
    assert classify_icmp(_icmp_unreach(13, "10.244.1.3", 40000, 81), "10.244.1.3", 40000, 81) == "unreachable"
    assert classify_icmp(_icmp_unreach(2, "10.244.1.3", 40001, 81), "10.244.1.3", 40000, 81) is None
    assert classify_icmp(_icmp_unreach(2, "10.244.1.4", 40000, 81), "10.244.1.3", 40000, 81) is None


class _StubLab:
    """Answers ``connect`` from a script: only the retry bookkeeping is under test here."""

    def __init__(self, answers: dict[tuple[str, str], str]):
        self.answers = answers
        self.calls: list[tuple[str, str, int, str, float]] = []

    def connect(self, src, dst, port, protocol, timeout):
        self.calls.append((src, dst, port, protocol, timeout))
        return self.answers[(src, dst)]


def test_timeouts_are_retried_once_with_a_longer_timeout():
    from harness.conformance.case import Probe
    from harness.conformance.runner import retry_timeouts

    outcomes = {("x/a", "x/b"): "timeout", ("x/b", "x/a"): "refused", ("y/a", "x/a"): "timeout"}
    lab = _StubLab({("x/a", "x/b"): "connected", ("y/a", "x/a"): "timeout"})
    assert retry_timeouts(lab, outcomes, Probe(80, "TCP"), 0.4) == (2, 1)
    assert outcomes == {("x/a", "x/b"): "connected", ("x/b", "x/a"): "refused", ("y/a", "x/a"): "timeout"}
    assert sorted(c[:2] for c in lab.calls) == [("x/a", "x/b"), ("y/a", "x/a")]
    assert all(c[4] >= 1.0 for c in lab.calls)
    assert retry_timeouts(lab, {("x/b", "x/a"): "refused"}, Probe(80, "TCP"), 0.4) == (0, 0)


@pytest.mark.kernel
def test_a_real_drop_survives_the_retry():
    """A silently dropped probe (not kube-router's REJECT) stays a timeout after the retry."""
    from harness.conformance.case import Probe
    from harness.conformance.runner import full_sync, probe_all, retry_timeouts
    from harness.engines.kube_router.apply import require_tools
    from harness.kernel import netns
    from harness.lab import Lab
    from harness.model.topology import load_topology

    try:
        require_tools("nft")
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    cluster = load_topology("k8s-e2e")
    src, dst = cluster.pods["x/a"], cluster.pods["x/b"]
    with Lab(cluster, topology="k8s-e2e") as lab:
        full_sync(cluster, lab, RunOptions())
        for node in cluster.real_nodes():
            netns.run(lab.node_netns(node.name), ["iptables-nft", "-I", "FORWARD", "1", "-s", str(src.ip),
                                                   "-d", str(dst.ip), "-p", "tcp", "-j", "DROP"])
        outcomes = probe_all(lab, ["x/a", "x/b", "x/c"], Probe(80, "TCP"), True, 0.3)
        # The rule also drops x/a's SYN-ACKs to x/b, so both directions time out.
        assert outcomes[("x/a", "x/b")] == outcomes[("x/b", "x/a")] == "timeout"
        assert retry_timeouts(lab, outcomes, Probe(80, "TCP"), 0.3) == (2, 0)
        assert outcomes[("x/a", "x/b")] == outcomes[("x/b", "x/a")] == "timeout"
        assert outcomes[("x/a", "x/c")] == outcomes[("x/c", "x/b")] == "connected"


def test_unprobeable_cells_are_ignored_not_failed():
    from harness.analysis.truthtable import build_expectation
    from harness.conformance.runner import judge

    outcomes = {("x/a", "x/b"): "n/a-same-light-host", ("x/b", "x/a"): "connected",
                ("x/a", "y/a"): "refused", ("y/a", "x/a"): "connected", ("x/b", "y/a"): "connected",
                ("y/a", "x/b"): "connected"}
    expected = build_expectation(PODS, "allow", [("x/a", "y/a", "deny")])
    observed = observed_table(outcomes, PODS, ignore_self=True)
    assert observed.get("x/a", "x/b") is None
    d = judge(expected, observed, outcomes)
    assert d.ok and d.correct == 5 and d.ignored == 3 + 1
    outcomes[("x/b", "x/a")] = "refused"
    assert judge(expected, observed_table(outcomes, PODS, ignore_self=True), outcomes).count == 1

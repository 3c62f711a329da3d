"""Kernel tests of the probe engine on a real lab: two nodes, full and light pods, echo servers.

Every outcome class is produced by real kernel behaviour (a listener, no listener, an iptables
REJECT or DROP in the node namespace) and must be classified as such, from full and light pods.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from harness.errors import KernelError
from harness.kernel import netns
from harness.model.cluster import Cluster, ContainerPort, Node, Pod, PodKind
from harness.probe import calibrate
from harness.probe.classify import Outcome
from harness.probe.packet import FlowSpec, PacketProber, probe_once
from harness.probe.sockets import LongLivedFlow, LongLivedFlows, tcp_connect, udp_request
from harness.probe.watch import ConntrackWatcher, NflogWatcher

pytestmark = pytest.mark.kernel

PORTS = [ContainerPort(80, "TCP"), ContainerPort(80, "UDP"), ContainerPort(81, "TCP"), ContainerPort(81, "UDP")]
PODS = [("full-a", "node-a", PodKind.FULL), ("full-a2", "node-a", PodKind.FULL),
        ("light-a", "node-a", PodKind.LIGHT), ("light-a2", "node-a", PodKind.LIGHT),
        ("full-b", "node-b", PodKind.FULL), ("light-b", "node-b", PodKind.LIGHT)]


@dataclass
class Net:
    """What the tests need from the lab: pod namespace + IP, node namespaces, rule helpers."""

    lab: object

    def ep(self, name: str) -> tuple[str, str]:
        key = f"probe/{name}"
        return self.lab.pod_netns(key), str(self.lab.cluster.pods[key].ip)  # type: ignore[attr-defined]

    def node(self, name: str = "node-a") -> str:
        return self.lab.node_netns(name)  # type: ignore[attr-defined]

    def iptables(self, *args: str, node: str = "node-a") -> None:
        netns.run(self.node(node), ["iptables", "-w", *args])


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, raw sockets)")
    if not shutil.which("iptables"):
        pytest.skip("needs the iptables binary")
    from harness.lab import Lab

    cluster = Cluster(name="probe-test")
    cluster.nodes["node-a"] = Node("node-a", ipaddress.IPv4Address("172.18.0.2"),
                                   ipaddress.IPv4Network("10.244.0.0/24"))
    cluster.nodes["node-b"] = Node("node-b", ipaddress.IPv4Address("172.18.0.3"),
                                   ipaddress.IPv4Network("10.244.1.0/24"))
    for name, node, kind in PODS:
        cluster.add_pod(Pod("probe", name, node, labels={"app": name}, ports=list(PORTS), kind=kind))
    with Lab(cluster) as lab:
        yield Net(lab)


@pytest.fixture
def clean(net: Net) -> Iterator[Net]:
    """Each test starts and ends with empty FORWARD chains in both nodes."""
    yield net
    for node in ("node-a", "node-b"):
        net.iptables("-F", "FORWARD", node=node)


# -- packet prober --------------------------------------------------------------------------------
@pytest.mark.parametrize("src", ["full-a", "light-a"])
def test_every_outcome_class_from_concurrent_flows(clean: Net, src: str) -> None:
    net = clean
    sns, sip = net.ep(src)
    _, a2 = net.ep("full-a2")
    _, b = net.ep("full-b")
    net.iptables("-I", "FORWARD", "-d", a2, "-p", "tcp", "--dport", "81", "-j", "REJECT")
    net.iptables("-I", "FORWARD", "-d", a2, "-p", "udp", "--dport", "81", "-j", "DROP")
    gateway = "10.244.0.1"  # kube-bridge on node-a: the REJECT is sent by the node
    cases = {  # (dst, port, proto) -> (outcome, detail must contain)
        (a2, 80, "TCP"): (Outcome.CONNECTED, "syn-ack"),
        (b, 80, "TCP"): (Outcome.CONNECTED, "syn-ack"),  # across nodes
        (a2, 82, "TCP"): (Outcome.REFUSED_RST, "rst"),
        (a2, 81, "TCP"): (Outcome.REJECTED_ICMP, f"type=3 code=3 port-unreachable from {gateway}"),
        (a2, 80, "UDP"): (Outcome.CONNECTED, "udp-echo"),
        (a2, 82, "UDP"): (Outcome.REJECTED_ICMP, f"port-unreachable from {a2}"),  # no listener
        (a2, 81, "UDP"): (Outcome.DROPPED, ""),
        (a2, 0, "ICMP"): (Outcome.CONNECTED, "echo-reply"),
        (b, 0, "ICMP"): (Outcome.CONNECTED, "echo-reply"),
    }
    prober = PacketProber(timeout_s=0.3)
    flows = {c: prober.add_flow(FlowSpec(sns, sip, c[0], c[1], c[2], rate=500, count=20)) for c in cases}
    prober.start()
    try:
        assert prober.wait(timeout=10)
    finally:
        prober.stop()
    for cell, flow in flows.items():
        outcome, detail = cases[cell]
        series = flow.series()
        assert [r.probe_id for r in series] == list(range(20)), cell
        assert {r.outcome for r in series} == {outcome}, (cell, flow.counts())
        assert all(detail in r.detail for r in series), (cell, series[0].detail)
        for r in series:
            if outcome is Outcome.DROPPED:
                assert r.recv_ns is None
            else:  # kernel receive time after the send time, within the timeout
                assert r.recv_ns is not None and 0 < r.recv_ns - r.send_ns < 300_000_000, (cell, r)


def test_syn_acks_leave_no_half_open_connections(clean: Net) -> None:
    """The prober's kernel answers each SYN-ACK with a RST: the server keeps no SYN-RECV state."""
    sns, sip = clean.ep("full-a")
    dns, dip = clean.ep("full-a2")
    records = probe_once(sns, sip, dip, 80, "TCP", count=400, rate=2000, timeout_s=0.3)
    assert {r.outcome for r in records} == {Outcome.CONNECTED}
    time.sleep(0.05)
    ss = netns.run(dns, ["ss", "-Htn", "state", "syn-recv"]).stdout.strip()
    assert ss == ""


# -- real-socket clients --------------------------------------------------------------------------
@pytest.mark.parametrize("src", ["full-a", "light-a"])
def test_real_socket_errnos(clean: Net, src: str) -> None:
    net = clean
    sns, sip = net.ep(src)
    src_ip = sip if "light" in src else None
    _, a2 = net.ep("full-a2")
    ok = tcp_connect(sns, a2, 80, src_ip=src_ip, exchange=b"hello")
    assert ok.ok and ok.errno is None and ok.end_ns >= ok.start_ns
    assert ok.src.startswith(sip + ":")
    assert tcp_connect(sns, a2, 82, src_ip=src_ip).errno == "ECONNREFUSED"  # RST, no listener
    net.iptables("-I", "FORWARD", "-d", a2, "-p", "tcp", "--dport", "81", "-j", "REJECT")
    assert tcp_connect(sns, a2, 81, src_ip=src_ip).errno == "ECONNREFUSED"  # ICMP port-unreachable
    net.iptables("-R", "FORWARD", "1", "-d", a2, "-p", "tcp", "--dport", "81", "-j", "REJECT",
                 "--reject-with", "icmp-host-unreachable")
    assert tcp_connect(sns, a2, 81, src_ip=src_ip).errno == "EHOSTUNREACH"
    net.iptables("-R", "FORWARD", "1", "-d", a2, "-p", "tcp", "--dport", "81", "-j", "DROP")
    res = tcp_connect(sns, a2, 81, src_ip=src_ip, timeout_s=0.2)
    assert res.errno == "ETIMEDOUT" and res.outcome == "timeout" and res.elapsed_ns >= 190_000_000
    assert udp_request(sns, a2, 80, src_ip=src_ip).ok
    assert udp_request(sns, a2, 82, src_ip=src_ip).errno == "ECONNREFUSED"


def test_long_lived_flows_report_reset_and_stall(clean: Net) -> None:
    net = clean
    sns, _ = net.ep("full-a")
    _, a2 = net.ep("full-a2")
    _, b = net.ep("full-b")
    with LongLivedFlows() as flows:
        reset = flows.add(LongLivedFlow("reset", sns, a2, 80, period_s=0.02, stall_s=0.2))
        stall = flows.add(LongLivedFlow("stall", sns, b, 80, period_s=0.02, stall_s=0.2))
        time.sleep(0.2)
        assert reset.exchanges > 0 and stall.exchanges > 0
        # A RST for the established connection (as after a conntrack flush under a deny policy).
        net.iptables("-I", "FORWARD", "-d", a2, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")
        net.iptables("-I", "FORWARD", "-d", b, "-p", "tcp", "-j", "DROP")
        time.sleep(0.5)
        net.iptables("-F", "FORWARD")
        time.sleep(1.0)  # TCP retransmits the stalled message (RTO ~200 ms+) and recovers
    assert reset.event_kinds() == ["established", "reset_after_established"]
    assert reset.events[1].detail == "ECONNRESET"
    assert stall.event_kinds()[:3] == ["established", "stall", "recovered"]


# -- watchers ---------------------------------------------------------------------------------
def test_nflog_watcher_sees_a_rejected_packet(clean: Net) -> None:
    net = clean
    sns, sip = net.ep("full-a")
    _, a2 = net.ep("full-a2")
    rule = ["-d", a2, "-p", "tcp", "--dport", "81"]
    net.iptables("-A", "FORWARD", *rule, "-j", "NFLOG", "--nflog-group", "100", "--nflog-prefix", "nph-test")
    net.iptables("-A", "FORWARD", *rule, "-j", "REJECT")
    with NflogWatcher(net.node(), group=100) as w:
        (rec,) = probe_once(sns, sip, a2, 81, "TCP", count=1)
        ev = w.wait_for(lambda e: e.dst == a2 and e.dport == 81, timeout_s=2)
    assert rec.outcome is Outcome.REJECTED_ICMP
    assert ev is not None, "no NFLOG event"
    assert (ev.group, ev.prefix, ev.proto, ev.src) == (100, "nph-test", 6, sip)
    assert 10000 <= ev.sport <= 32767  # the probe's source port, parsed from the logged packet
    if ev.time_source == "kernel":  # logged between the probe's send and its answer (µs stamps)
        assert rec.recv_ns is not None and rec.send_ns - 1000 <= ev.t_ns <= rec.recv_ns + 1000
    with NflogWatcher(net.node(), group=100), pytest.raises(KernelError) as err:
        NflogWatcher(net.node(), group=100).start()  # one listener per group and namespace
    # observed on 6.18: the group is held by another socket -> EPERM (not EBUSY)
    assert str(err.value) == f"nflog bind group 100 in {net.node()}: Operation not permitted [EPERM]"


def test_conntrack_watcher_sees_a_new_flow(clean: Net) -> None:
    net = clean
    sns, _ = net.ep("full-a")
    _, a2 = net.ep("full-a2")
    # Conntrack only tracks in a namespace whose rules use it (kube-router's do).
    net.iptables("-A", "FORWARD", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
    with ConntrackWatcher(net.node()) as w:
        res = tcp_connect(sns, a2, 80)
        sport = int(res.src.rsplit(":", 1)[1])
        new = w.wait_for(lambda e: e.kind == "NEW" and e.dport == 80 and e.sport == sport, timeout_s=2)
        est = w.wait_for(lambda e: e.sport == sport and e.tcp_state == "ESTABLISHED", timeout_s=2)
    assert res.ok
    assert new is not None and (new.proto, new.dst, new.tcp_state) == ("tcp", a2, "SYN_SENT")
    assert res.start_ns <= new.t_ns
    assert est is not None and est.kind == "UPDATE"


# -- calibration ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("src", ["full-a", "light-a"])
def test_calibration_observed_transitions_follow_the_rule(clean: Net, src: str) -> None:
    """50 allow->deny and 50 deny->allow flips of a REJECT rule at 1,000 probes/s.

    Correctness, asserted for every transition: it is seen, it is sharp (no old outcome after
    the first new one, no probe in neither class), and the prober's bracket [last old probe,
    first new probe] overlaps the span in which the kernel switched [iptables call start,
    commit] (1 ms slack for a thread preempted between taking the send time and sending).

    Timing: the spec bound is one probe interval + 1 ms (2 ms here). This machine has 2 cores
    shared with other jobs; a descheduled prober thread (late sends) or commit-watcher thread
    (late commit stamp) moves single transitions by milliseconds. ``run_calibration`` runs them
    at SCHED_FIFO priority; measured within the bound: 94-100 of 100 at load 6.5-9 (other jobs
    plus two extra busy loops), against 66-89 at normal priority. So the test asks for >= 80 of
    100 within the bound and, in each direction, a median |error| of at most one interval (a
    uniform phase gives about half of one: measured 0.25-0.5 ms), and tolerates up to 5
    transitions with no probe at all between two changes (prober starved for a whole 20-40 ms
    dwell). Probes whose sendto was preempted (send time uncertain by > 0.5 ms) are left out by
    ``analyze``. A prober that misclassifies, misses or smears transitions, or is off by an
    interval on typical ones, fails.
    The full distribution is printed by ``netpol-harness calibrate``."""
    net = clean
    sns, sip = net.ep(src)
    _, dip = net.ep("full-a2")
    res = calibrate.run_calibration(net.node(), sns, sip, dip, 80, transitions=50, rate=1000,
                                    label=f"{src}->full-a2")
    assert len(res.transitions) == 100
    assert res.flaps() == 0 and sum(t.others for t in res.transitions) == 0
    assert res.missing() == res.unprobed() <= 5, [t for t in res.transitions if t.observed_ns is None]
    slack = 1_000_000
    for t in res.transitions:
        if t.observed_ns is None:
            continue
        call_start = t.change_ns - t.call_ns
        assert t.observed_ns >= call_start - slack, t  # not before the rule began to change
        assert t.last_old_ns is None or t.last_old_ns <= t.change_ns + slack, t  # old only before commit
    for d in (calibrate.ALLOW_TO_DENY, calibrate.DENY_TO_ALLOW):
        errs = sorted(abs(e) for e in res.errors_us(d))
        assert errs[len(errs) // 2] <= res.interval_ns / 1000, (d, errs)
    assert res.within_bound() >= 80, res.summary_rows()


# -- matrix -------------------------------------------------------------------------------------
def test_probe_matrix_agrees_with_real_clients(clean: Net) -> None:
    """Same cells, same words as Lab.matrix (real sockets), with a REJECT and a DROP in force."""
    from harness.probe.matrix import lab_targets, probe_cells, probe_matrix

    net = clean
    lab = net.lab
    _, a2 = net.ep("full-a2")
    _, lb = net.ep("light-b")
    net.iptables("-I", "FORWARD", "-d", a2, "-p", "tcp", "--dport", "81", "-j", "REJECT")
    net.iptables("-I", "FORWARD", "-d", lb, "-p", "tcp", "--dport", "81", "-j", "DROP", node="node-b")
    for port in (80, 81):
        real = lab.matrix(port=port, timeout=0.3)  # type: ignore[attr-defined]
        probed = probe_matrix(lab, port=port, timeout=0.3)
        assert probed == real
    assert probed[("probe/full-a", "probe/full-a2")] == "refused"
    assert probed[("probe/light-b", "probe/full-b")] == "connected"
    assert probed[("probe/full-a", "probe/light-b")] == "timeout"  # across nodes, dropped on node-b
    assert probed[("probe/full-b", "probe/light-b")] == "timeout"  # bridged on node-b
    assert probed[("probe/light-a", "probe/light-a2")] == "n/a-same-light-host"
    cells = probe_cells(lab_targets(lab), ports=(80, 81), protocols=("TCP", "UDP", "ICMP"), timeout=0.3)
    assert len(cells) == 36 * 5  # 6 x 6 pairs x (2 TCP + 2 UDP + 1 ICMP)
    cell = cells[("probe/full-a", "probe/full-a2", 81, "TCP")]
    assert (cell.outcome, cell.detail) == ("rejected_icmp", "type=3 code=3 port-unreachable from 10.244.0.1")
    assert cell.recv_ns is not None and cell.send_ns is not None and cell.recv_ns > cell.send_ns

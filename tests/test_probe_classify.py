"""Pure tests of the probe engine: reply classification, packet templates, calibration analysis,
matrix vocabulary, netlink parsers. No root needed."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror

from harness.probe import calibrate
from harness.probe.classify import UDP_MAGIC, UDP_PAYLOAD, Key, Outcome, parse_reply, transitions
from harness.probe.packet import Flow, FlowSpec, ProbeRecord
from harness.probe.watch import (
    NFNL_SUBSYS_CTNETLINK,
    NFNL_SUBSYS_NFTABLES,
    NFNL_SUBSYS_ULOG,
    NFT_MSG_NEWGEN,
    parse_conntrack,
    parse_nflog,
    parse_nft_gen,
)

ME, PEER, GW = "10.244.0.2", "10.244.1.5", "10.244.0.1"
A = ipaddress.IPv4Address


def k(lport: int, rport: int, proto: int) -> Key:
    return Key(A(ME).packed, lport, A(PEER).packed, rport, proto)


# -- reply classification -------------------------------------------------------------------------
def test_syn_ack_is_connected_and_matches_the_syn_seq() -> None:
    pkt = IP(src=PEER, dst=ME) / TCP(sport=80, dport=12345, flags="SA", seq=999, ack=5001)
    r = parse_reply(bytes(pkt))
    assert r is not None
    assert (r.key, r.match, r.outcome) == (k(12345, 80, 6), 5000, Outcome.CONNECTED)


def test_rst_is_refused_and_seq_wraps() -> None:
    pkt = IP(src=PEER, dst=ME) / TCP(sport=80, dport=10000, flags="RA", seq=0, ack=0)
    r = parse_reply(bytes(pkt))
    assert r is not None
    assert (r.key, r.match, r.outcome) == (k(10000, 80, 6), 0xFFFFFFFF, Outcome.REFUSED_RST)


def test_plain_ack_and_bare_syn_are_not_replies() -> None:
    assert parse_reply(bytes(IP(src=PEER, dst=ME) / TCP(sport=80, dport=1, flags="A"))) is None
    assert parse_reply(bytes(IP(src=PEER, dst=ME) / TCP(sport=80, dport=1, flags="S"))) is None
    assert parse_reply(b"\x60" + b"\0" * 39) is None  # IPv6
    assert parse_reply(b"\x45\0") is None  # truncated


def test_icmp_port_unreachable_quoting_a_syn_is_rejected_icmp() -> None:
    syn = IPerror(src=ME, dst=PEER) / TCPerror(sport=20001, dport=81, seq=77, flags="S")
    pkt = IP(src=GW, dst=ME) / ICMP(type=3, code=3) / syn
    r = parse_reply(bytes(pkt))
    assert r is not None
    assert (r.key, r.match, r.outcome) == (k(20001, 81, 6), 77, Outcome.REJECTED_ICMP)
    assert r.detail == f"type=3 code=3 port-unreachable from {GW}"


def test_icmp_host_prohibited_for_udp_is_unreachable_and_carries_the_probe_id() -> None:
    probe = IPerror(src=ME, dst=PEER) / UDPerror(sport=4000, dport=53) / UDP_PAYLOAD.pack(UDP_MAGIC, 42)
    r = parse_reply(bytes(IP(src=GW, dst=ME) / ICMP(type=3, code=10) / probe))
    assert r is not None
    # not port-unreachable: a client would see EHOSTUNREACH, so the prober says unreachable
    assert (r.key, r.match, r.outcome) == (k(4000, 53, 17), 42, Outcome.UNREACHABLE)
    assert "code=10 host-prohibited" in r.detail


def test_icmp_error_quoting_only_8_bytes_of_udp_matches_any_probe_on_the_port() -> None:
    probe = bytes(IPerror(src=ME, dst=PEER) / UDPerror(sport=4000, dport=53))[:28]
    r = parse_reply(bytes(IP(src=GW, dst=ME) / ICMP(type=3, code=3)) + probe)
    assert r is not None and r.match == -1


def test_udp_echo_and_icmp_echo_reply_are_connected() -> None:
    r = parse_reply(bytes(IP(src=PEER, dst=ME) / UDP(sport=80, dport=3333) / UDP_PAYLOAD.pack(UDP_MAGIC, 9)))
    assert r is not None and (r.key, r.match, r.outcome) == (k(3333, 80, 17), 9, Outcome.CONNECTED)
    foreign = parse_reply(bytes(IP(src=PEER, dst=ME) / UDP(sport=80, dport=3333) / (b"x" * 12)))
    assert foreign is None
    r = parse_reply(bytes(IP(src=PEER, dst=ME) / ICMP(type=0, id=700, seq=3)))
    assert r is not None and (r.key, r.match, r.outcome) == (k(700, 0, 1), 3, Outcome.CONNECTED)


def test_icmp_unreachable_for_an_echo_probe() -> None:
    inner = IPerror(src=ME, dst=PEER) / ICMP(type=8, id=55, seq=6)
    r = parse_reply(bytes(IP(src=GW, dst=ME) / ICMP(type=3, code=1) / inner))
    assert r is not None and (r.key, r.match, r.outcome) == (k(55, 0, 1), 6, Outcome.UNREACHABLE)


def test_transitions_of_a_series() -> None:
    series = [(1, "connected"), (2, "connected"), (3, "rejected_icmp"), (4, "rejected_icmp"), (5, "connected")]
    assert transitions(series) == [(3, "connected", "rejected_icmp"), (5, "rejected_icmp", "connected")]
    assert transitions([]) == []


# -- packet templates -----------------------------------------------------------------------------
@pytest.mark.parametrize("proto", ["TCP", "ICMP", "UDP"])
def test_patched_probes_have_the_checksum_scapy_computes(proto: str) -> None:
    flow = Flow(FlowSpec("nph-x", ME, PEER, 0 if proto == "ICMP" else 80, proto, rate=1000), 1.0)
    seen = set()
    for _ in range(50):
        key, match = flow.next_probe()
        flow.sent += 1
        pkt = IP(bytes(flow.buf))
        layer = pkt[{"TCP": TCP, "ICMP": ICMP, "UDP": UDP}[proto]]
        got = layer.chksum
        if proto == "UDP":
            assert got == 0  # no checksum (IPv4 allows it); the probe id is in the payload
            assert UDP_PAYLOAD.unpack(bytes(layer.payload)) == (UDP_MAGIC, match)
        else:
            del layer.chksum
            assert IP(bytes(pkt))[type(layer)].chksum == got
        if proto == "TCP":
            assert (pkt[TCP].sport, pkt[TCP].dport, pkt[TCP].seq, str(pkt[TCP].flags)) == (key.local_port, 80,
                                                                                            match, "S")
        seen.add((key, match))
    assert len(seen) == 50  # each probe its own identity


def test_flow_rejects_more_in_flight_probes_than_source_ports() -> None:
    with pytest.raises(ValueError, match="source ports"):
        Flow(FlowSpec("nph-x", ME, PEER, 80, "TCP", rate=5000, port_range=(20000, 20999)), 1.0)
    with pytest.raises(ValueError, match="protocol"):
        Flow(FlowSpec("nph-x", ME, PEER, 80, "SCTP"), 1.0)


# -- calibration analysis -------------------------------------------------------------------------
def _series(outcomes: str, interval: int = 1000) -> list[ProbeRecord]:
    cls = {"c": Outcome.CONNECTED, "r": Outcome.REJECTED_ICMP, "d": Outcome.DROPPED}
    return [ProbeRecord("f", i, i * interval, None, cls[o]) for i, o in enumerate(outcomes)]


def test_analyze_finds_each_transition_and_its_error() -> None:
    recs = _series("ccccc" "rrrrr" "ccccc")  # probes at 0, 1000, ... ns
    changes = [calibrate.RuleChange(4200, 4500, calibrate.ALLOW_TO_DENY),
               calibrate.RuleChange(9000, 9800, calibrate.DENY_TO_ALLOW)]
    ts = calibrate.analyze(recs, changes, Outcome.CONNECTED, Outcome.REJECTED_ICMP)
    assert [(t.observed_ns, t.error_ns, t.flaps, t.others) for t in ts] == [(5000, 500, 0, 0), (10000, 200, 0, 0)]


def test_analyze_reports_flaps_strays_and_missing_transitions() -> None:
    recs = _series("ccrcrrdrr" "rrrr")
    changes = [calibrate.RuleChange(1500, 1600, calibrate.ALLOW_TO_DENY),
               calibrate.RuleChange(12500, 12600, calibrate.DENY_TO_ALLOW)]
    ts = calibrate.analyze(recs, changes, Outcome.CONNECTED, Outcome.REJECTED_ICMP)
    assert (ts[0].observed_ns, ts[0].flaps, ts[0].others) == (4000, 1, 1)  # the first "r" after the last "c"
    assert ts[1].observed_ns is None and ts[1].error_ns is None


def test_calibration_result_bound_and_rows() -> None:
    res = calibrate.CalibrationResult("p", 1000, "REJECT", 1_000_000, [
        calibrate.Transition(calibrate.ALLOW_TO_DENY, 0, 10, 1_900_000, 0, 0, 0),
        calibrate.Transition(calibrate.ALLOW_TO_DENY, 0, 10, 2_100_000, 0, 0, 0),
        calibrate.Transition(calibrate.DENY_TO_ALLOW, 0, 10, None, None, 0, 0)])
    assert (res.bound_ns, res.within_bound(), res.missing()) == (2_000_000, 1, 1)
    rows = res.summary_rows()
    assert rows[0][:4] == ["p", calibrate.ALLOW_TO_DENY, 2, "1/2"]
    assert calibrate.percentiles([5, 1, 3, 2, 4]) == {"min": 1, "p50": 3, "p90": 5, "p99": 5, "max": 5}


# -- matrix vocabulary ----------------------------------------------------------------------------
def test_client_view_matches_what_a_real_client_sees() -> None:
    assert Outcome.CONNECTED.client_view is Outcome.CONNECTED
    assert Outcome.REFUSED_RST.client_view is Outcome.REFUSED
    assert Outcome.REJECTED_ICMP.client_view is Outcome.REFUSED  # ICMP port-unreachable: ECONNREFUSED
    assert Outcome.UNREACHABLE.client_view is Outcome.UNREACHABLE
    assert Outcome.DROPPED.client_view is Outcome.TIMEOUT


# -- netlink parsers ------------------------------------------------------------------------------
def _nla(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def _nlmsg(mtype: int, body: bytes, flags: int = 0, res_id: int = 0) -> bytes:
    payload = struct.pack("=BB", socket.AF_INET, 0) + struct.pack("!H", res_id) + body
    return struct.pack("=IHHII", 16 + len(payload), mtype, flags, 0, 0) + payload


def test_parse_nflog_packet() -> None:
    pkt = bytes(IP(src=ME, dst=PEER) / TCP(sport=40000, dport=81, flags="S"))
    body = (_nla(10, b"KUBE-POD-FW\0") + _nla(2, struct.pack("!I", 0x20000))
            + _nla(3, struct.pack("!QQ", 1_700_000_000, 123_456)) + _nla(6, struct.pack("!I", 7))
            + _nla(9, pkt))
    ev = parse_nflog(_nlmsg(NFNL_SUBSYS_ULOG << 8, body, res_id=100), read_ns=5)
    assert ev is not None
    assert (ev.t_ns, ev.time_source, ev.group, ev.prefix, ev.mark) == (
        1_700_000_000_123_456_000, "kernel", 100, "KUBE-POD-FW", 0x20000)
    assert (ev.proto, ev.src, ev.dst, ev.sport, ev.dport, ev.physindev) == (6, ME, PEER, 40000, 81, 7)
    no_ts = parse_nflog(_nlmsg(NFNL_SUBSYS_ULOG << 8, _nla(9, pkt), res_id=100), read_ns=5)
    assert no_ts is not None and (no_ts.t_ns, no_ts.time_source) == (5, "read")


def test_parse_conntrack_new_and_destroy() -> None:
    nested = 0x8000
    tup = _nla(1 | nested, _nla(1, A(ME).packed) + _nla(2, A(PEER).packed)) + _nla(
        2 | nested, _nla(1, b"\x06") + _nla(2, struct.pack("!H", 40000)) + _nla(3, struct.pack("!H", 80)))
    proto = _nla(1 | nested, _nla(1, b"\x01"))
    body = _nla(1 | nested, tup) + _nla(3, struct.pack("!I", 8)) + _nla(4 | nested, proto)
    ev = parse_conntrack(_nlmsg(NFNL_SUBSYS_CTNETLINK << 8, body, flags=0x600), read_ns=9)
    assert ev is not None
    assert (ev.kind, ev.proto, ev.src, ev.dst, ev.sport, ev.dport, ev.tcp_state, ev.t_ns) == (
        "NEW", "tcp", ME, PEER, 40000, 80, "SYN_SENT", 9)
    ts = _nla(20 | nested, _nla(1, struct.pack("!Q", 111)) + _nla(2, struct.pack("!Q", 222)))
    ev = parse_conntrack(_nlmsg((NFNL_SUBSYS_CTNETLINK << 8) | 2, _nla(1 | nested, tup) + ts), read_ns=9)
    assert ev is not None and (ev.kind, ev.start_ns, ev.stop_ns) == ("DESTROY", 111, 222)
    upd = parse_conntrack(_nlmsg(NFNL_SUBSYS_CTNETLINK << 8, body, flags=0), read_ns=9)
    assert upd is not None and upd.kind == "UPDATE"


def test_parse_nft_generation_event() -> None:
    body = _nla(1, struct.pack("!I", 42)) + _nla(2, struct.pack("!I", 1234)) + _nla(3, b"iptables\0")
    ev = parse_nft_gen(_nlmsg((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN, body), read_ns=77)
    assert ev is not None and (ev.t_ns, ev.gen_id, ev.pid, ev.proc_name) == (77, 42, 1234, "iptables")
    assert parse_nft_gen(_nlmsg((NFNL_SUBSYS_NFTABLES << 8) | 6, body), read_ns=77) is None


def test_analyze_leaves_out_probes_whose_send_was_preempted() -> None:
    recs = _series("cccrcrrr")
    # Probe 3 ("r" before a "c") spent 2 ms inside sendto: when it met the rules is unknown.
    recs[3].send_end_ns = recs[3].send_ns + 2_000_000
    for r in recs:
        r.send_end_ns = r.send_end_ns or r.send_ns + 20_000
    changes = [calibrate.RuleChange(4000, 4300, calibrate.ALLOW_TO_DENY)]
    (t,) = calibrate.analyze(recs, changes, Outcome.CONNECTED, Outcome.REJECTED_ICMP)
    assert (t.observed_ns, t.flaps) == (5000, 0)
    (t,) = calibrate.analyze(recs, changes, Outcome.CONNECTED, Outcome.REJECTED_ICMP, uncertain_send_ns=10**9)
    assert t.flaps == 1

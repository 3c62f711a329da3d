"""Pure classification of probe replies: raw IPv4 bytes in, (probe identity, outcome) out.

No kernel here, so every case is unit-tested with packets built by scapy. Parsing uses
``struct`` on the raw bytes because it runs for every received packet (scapy's dissector costs
~100 µs per packet; these functions a few µs).

A probe is identified by the 4-tuple it was sent with, seen from the prober's side
``(local_ip, local_port, remote_ip, remote_port, proto)`` (addresses as 4 raw bytes; for ICMP
echo the "port" is the echo identifier and the remote port 0), plus a ``match`` value the reply
must echo back: the TCP sequence number (a SYN-ACK or RST acknowledges seq+1), the UDP probe
id carried in the payload, the ICMP echo sequence number.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

# The prober's classes are members of the one outcome type: CONNECTED (SYN-ACK, UDP echo, ICMP
# echo reply), REFUSED_RST (TCP RST answering the SYN), REJECTED_ICMP (ICMP port-unreachable:
# kube-router's REJECT), UNREACHABLE (any other ICMP error), DROPPED (nothing within the timeout).
from harness.outcome import Outcome

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_NUMBERS = {"ICMP": PROTO_ICMP, "TCP": PROTO_TCP, "UDP": PROTO_UDP}

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
ICMP_ECHO_REPLY, ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_TIME_EXCEEDED = 0, 3, 8, 11
ICMP_PORT_UNREACH = 3

UDP_MAGIC = b"NPH1"  # UDP probe payload: magic + probe id (u64), echoed back by the server
UDP_PAYLOAD = struct.Struct("!4sQ")

UNREACH_CODES = {
    0: "net-unreachable", 1: "host-unreachable", 2: "protocol-unreachable", 3: "port-unreachable",
    4: "fragmentation-needed", 9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited",
}

_PORTS_SEQ_ACK = struct.Struct("!HHII")
_PORTS = struct.Struct("!HH")
_ICMP_ID_SEQ = struct.Struct("!HH")
_U64 = struct.Struct("!Q")


class Key(NamedTuple):
    local_ip: bytes
    local_port: int
    remote_ip: bytes
    remote_port: int
    proto: int


@dataclass(slots=True)
class Reply:
    """A received packet that answers (or reports the fate of) a probe."""

    key: Key
    match: int  # must equal the probe's match value
    outcome: Outcome
    detail: str = ""


def icmp_detail(icmp_type: int, code: int, sender: bytes) -> str:
    """Human-readable ICMP error: ``type=3 code=3 port-unreachable from 10.244.0.1``."""
    name = UNREACH_CODES.get(code, "") if icmp_type == ICMP_DEST_UNREACH else "time-exceeded"
    ip = ".".join(str(b) for b in sender)
    return f"type={icmp_type} code={code} {name} from {ip}".replace("  ", " ")


def icmp_outcome(icmp_type: int, code: int) -> Outcome:
    """An ICMP error's outcome, by its numbers: port-unreachable (kube-router's plain REJECT) is
    ``rejected_icmp``; every other code and time-exceeded is ``unreachable``. The split is the
    kernel's own (``icmp_err_convert``): only port-unreachable makes a client's ECONNREFUSED, the
    others EHOSTUNREACH/ENETUNREACH, so the prober and a real client agree on every cell."""
    if icmp_type == ICMP_DEST_UNREACH and code == ICMP_PORT_UNREACH:
        return Outcome.REJECTED_ICMP
    return Outcome.UNREACHABLE


def parse_reply(data: bytes | bytearray | memoryview) -> Reply | None:
    """Classify one received IPv4 packet; None if it is no answer to any probe shape.

    TCP SYN-ACK -> connected; TCP RST -> refused_rst (match = ack - 1, the SYN's seq);
    UDP datagram carrying our payload -> connected (match = probe id); ICMP echo reply ->
    connected (id is the local port, match = seq); ICMP destination unreachable / time
    exceeded quoting a TCP, UDP or echo probe -> ``icmp_outcome(type, code)`` with type/code."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    proto = data[9]
    src = bytes(data[12:16])
    dst = bytes(data[16:20])
    if proto == PROTO_TCP:
        if len(data) < ihl + 14:
            return None
        sport, dport, _seq, ack = _PORTS_SEQ_ACK.unpack_from(data, ihl)
        flags = data[ihl + 13]
        key = Key(dst, dport, src, sport, PROTO_TCP)
        if flags & TCP_RST:
            return Reply(key, (ack - 1) & 0xFFFFFFFF, Outcome.REFUSED_RST, "rst")
        if flags & TCP_SYN and flags & TCP_ACK:
            return Reply(key, (ack - 1) & 0xFFFFFFFF, Outcome.CONNECTED, "syn-ack")
        return None
    if proto == PROTO_UDP:
        if len(data) < ihl + 8 + UDP_PAYLOAD.size:
            return None
        sport, dport = _PORTS.unpack_from(data, ihl)
        magic, probe_id = UDP_PAYLOAD.unpack_from(data, ihl + 8)
        if magic != UDP_MAGIC:
            return None
        return Reply(Key(dst, dport, src, sport, PROTO_UDP), probe_id, Outcome.CONNECTED, "udp-echo")
    if proto == PROTO_ICMP:
        if len(data) < ihl + 8:
            return None
        icmp_type, code = data[ihl], data[ihl + 1]
        if icmp_type == ICMP_ECHO_REPLY:
            ident, seq = _ICMP_ID_SEQ.unpack_from(data, ihl + 4)
            return Reply(Key(dst, ident, src, 0, PROTO_ICMP), seq, Outcome.CONNECTED, "echo-reply")
        if icmp_type in (ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED):
            return _parse_icmp_error(data, ihl + 8, icmp_type, code, src)
    return None


def _parse_icmp_error(data: bytes | bytearray | memoryview, off: int, icmp_type: int, code: int,
                      sender: bytes) -> Reply | None:
    """The quoted original packet (IP header + at least 8 bytes) names the probe it rejects."""
    if len(data) < off + 28:
        return None
    inner_ihl = (data[off] & 0x0F) * 4
    inner_proto = data[off + 9]
    isrc = bytes(data[off + 12:off + 16])
    idst = bytes(data[off + 16:off + 20])
    l4 = off + inner_ihl
    if len(data) < l4 + 8:
        return None
    detail = icmp_detail(icmp_type, code, sender)
    outcome = icmp_outcome(icmp_type, code)
    if inner_proto == PROTO_TCP:
        sport, dport, seq, _ack = _PORTS_SEQ_ACK.unpack_from(data, l4)
        return Reply(Key(isrc, sport, idst, dport, PROTO_TCP), seq, outcome, detail)
    if inner_proto == PROTO_UDP:
        sport, dport = _PORTS.unpack_from(data, l4)
        # Linux quotes up to 576 bytes, so our payload is normally there; if a router quoted only
        # 8 bytes, the source port alone identifies the probe (-1: any probe on that port).
        if len(data) >= l4 + 8 + UDP_PAYLOAD.size and data[l4 + 8:l4 + 12] == UDP_MAGIC:
            probe_id = _U64.unpack_from(data, l4 + 12)[0]
        else:
            probe_id = -1
        return Reply(Key(isrc, sport, idst, dport, PROTO_UDP), probe_id, outcome, detail)
    if inner_proto == PROTO_ICMP and data[l4] == ICMP_ECHO:
        ident, seq = _ICMP_ID_SEQ.unpack_from(data, l4 + 4)
        return Reply(Key(isrc, ident, idst, 0, PROTO_ICMP), seq, outcome, detail)
    return None


def transitions(outcomes: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    """Changes of outcome in a time series ``[(send_ns, outcome), ...]`` (sorted by time):
    ``[(send_ns of the first probe with the new outcome, old, new), ...]``."""
    out: list[tuple[int, str, str]] = []
    prev: str | None = None
    for t, o in outcomes:
        if prev is not None and o != prev:
            out.append((t, prev, o))
        prev = o
    return out

"""The queued packet's headers, parsed the way kube-network-policies parses them. Pure.

kube-network-policies v1.1.1 pkg/network/packet.go: ParsePacket. Protocols other than TCP,
UDP and SCTP (ICMP) leave ``proto`` empty and the ports 0 (then a rule with ports never matches,
a rule without ports does: pkg/networkpolicy/networkpolicy.go evaluatePorts). IPv6 extension
headers are walked as the source walks them; a non-first fragment has no ports.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

_PROTOS = {6: "TCP", 17: "UDP", 132: "SCTP"}
_V6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options (syscall.IPPROTO_*)
_V6_FRAGMENT = 44


class BadPacket(ValueError):
    """The payload is too short or corrupted (packet.go ErrorTooShort / ErrorCorrupted)."""


@dataclass(frozen=True)
class Packet:
    """Family (4 | 6), addresses, ``proto`` ("TCP" | "UDP" | "SCTP" | "" for others), ports."""

    family: int
    src_ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst_ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    proto: str
    src_port: int = 0
    dst_port: int = 0


def parse_packet(b: bytes) -> Packet:
    """The packet of IP datagram ``b`` (at least its headers); BadPacket when it cannot be parsed."""
    if len(b) < 20:
        raise BadPacket("packet too short")
    version = b[0] >> 4
    if version == 4:
        hdrlen = (b[0] & 0x0F) * 4
        if hdrlen < 20:
            raise BadPacket("packet corrupted")
        l4 = hdrlen
        if l4 >= len(b):
            raise BadPacket("packet too short")
        src, dst = ipaddress.IPv4Address(b[12:16]), ipaddress.IPv4Address(b[16:20])
        protocol = b[9]
    elif version == 6:
        if len(b) < 48:
            raise BadPacket("packet too short")
        src, dst = ipaddress.IPv6Address(b[8:24]), ipaddress.IPv6Address(b[24:40])
        nxt, l4 = b[6], 40
        while nxt in _V6_EXT:
            nxt = b[l4]
            l4 += 8 + b[l4 + 1] * 8
            if l4 + 8 >= len(b):
                raise BadPacket("packet too short")
        if nxt == _V6_FRAGMENT:
            frag = struct.unpack_from("!H", b, l4 + 2)[0]
            if frag & 0xFFF8:
                return Packet(6, src, dst, "")  # packet.go: a later fragment is returned without ports
            nxt, l4 = b[l4], l4 + 8
        protocol = nxt
    else:
        raise BadPacket(f"unknown version {version}")
    proto = _PROTOS.get(protocol, "")
    if not proto:
        return Packet(version, src, dst, "")
    if proto == "TCP":
        if l4 + 13 > len(b) or (b[l4 + 12] >> 4) * 4 < 20:
            raise BadPacket("packet corrupted")
        payload_off = l4 + (b[l4 + 12] >> 4) * 4
    else:
        payload_off = l4 + 8
    if payload_off > len(b):
        raise BadPacket("packet too short")
    sport, dport = struct.unpack_from("!HH", b, l4)
    return Packet(version, src, dst, proto, sport, dport)

"""A DNS packet watcher in a pod's namespace: every DNS query the pod sends, every answer and
every ICMP error it gets back, with the kernel's receive timestamp (SO_TIMESTAMPNS,
CLOCK_REALTIME ns), so the report can say when a resolver's query left and when the answer came
(or that none came and the resolver gave up).

An ``AF_PACKET`` socket opened inside the pod's namespace and bound to its ``eth0`` sees the
pod's outgoing packets (``PACKET_OUTGOING``) and incoming ones before any of the pod's own
processing; parsing is scapy's (``DNS``, ``ICMP``). Pairing queries with answers is pure
(``harness.analysis.dns_queries``).

    with DnsWatch(lab.pod_netns("batch/job-0")) as w:
        ...                                  # the client resolves
    w.packets                                # [DnsPacket, ...]
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time

from harness.analysis.dns_queries import DnsPacket
from harness.kernel import netns

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4


def parse_frame(frame: bytes, ts_ns: int, outgoing: bool) -> DnsPacket | None:
    """One Ethernet frame as a DnsPacket (UDP/TCP port 53 or an ICMP error quoting port 53), or None."""
    from scapy.layers.dns import DNS
    from scapy.layers.inet import ICMP, IP, TCP, UDP, UDPerror
    from scapy.layers.l2 import Ether

    pkt = Ether(frame)
    ip = pkt.getlayer(IP)
    if ip is None:
        return None
    direction = "out" if outgoing else "in"
    icmp = pkt.getlayer(ICMP)
    if icmp is not None:
        quoted = pkt.getlayer(UDPerror)
        if quoted is None or 53 not in (quoted.dport, quoted.sport):
            return None
        return DnsPacket(ts_ns, direction, "icmp", ip.src, ip.dst, sport=quoted.sport, dport=quoted.dport,
                         icmp=f"type {icmp.type} code {icmp.code}")
    l4 = pkt.getlayer(UDP) or pkt.getlayer(TCP)
    if l4 is None or 53 not in (l4.sport, l4.dport):
        return None
    proto = "udp" if isinstance(l4, UDP) else "tcp"
    d = pkt.getlayer(DNS)
    if d is None:  # a TCP handshake segment, a truncated datagram
        return DnsPacket(ts_ns, direction, proto, ip.src, ip.dst, sport=l4.sport, dport=l4.dport)
    q = d.qd[0] if d.qdcount else None
    qname = q.qname.decode(errors="replace").rstrip(".") if q is not None else ""
    qtype = {1: "A", 28: "AAAA"}.get(q.qtype, str(q.qtype)) if q is not None else ""
    answers = tuple(str(d.an[i].rdata) for i in range(d.ancount or 0) if d.an[i].type in (1, 28)) if d.qr else ()
    rcode = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(d.rcode, str(d.rcode)) if d.qr else ""
    return DnsPacket(ts_ns, direction, proto, ip.src, ip.dst, sport=l4.sport, dport=l4.dport, dns_id=d.id,
                     qname=qname, qtype=qtype, response=bool(d.qr), rcode=rcode, answers=answers)


class DnsWatch:
    """Records the DNS packets on ``ifname`` of namespace ``ns`` from ``start()`` to ``stop()``."""

    def __init__(self, ns: str, ifname: str = "eth0"):
        self.ns = ns
        self.ifname = ifname
        self.packets: list[DnsPacket] = []
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> DnsWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> DnsWatch:
        """Open the socket in the namespace and start the reader thread."""
        def opened() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((self.ifname, 0))
            return s

        self._sock = netns.call_in(self.ns, opened)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._thread = threading.Thread(target=self._read, name=f"dnswatch:{self.ns}", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        s = self._sock
        assert s is not None
        while not self._stop.is_set():
            r, _, _ = select.select([s], [], [], 0.05)
            if not r:
                continue
            data, anc, _flags, addr = s.recvmsg(65535, socket.CMSG_SPACE(16))
            ts = time.time_ns()
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    ts = sec * 1_000_000_000 + nsec
            try:
                p = parse_frame(data, ts, addr[2] == PACKET_OUTGOING)
            except Exception:  # noqa: BLE001 - a frame scapy cannot dissect is not a DNS packet
                p = None
            if p is not None:
                self.packets.append(p)

    def stop(self) -> None:
        """Stop reading (the packets stay in ``packets``) and close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        if self._sock is not None:
            # drain what already arrived
            self._sock.close()
            self._sock = None

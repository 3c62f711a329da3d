"""One real connection attempt from inside a namespace, classified into an ``Outcome``.

Outcomes (``harness.outcome``, in a client's terms): ``connected`` (TCP handshake and one echo
round trip; UDP or ICMP echo answered), ``refused`` (TCP RST or ICMP port-unreachable:
ECONNREFUSED; for ICMP echo, an ICMP port-unreachable answer, what kube-router's REJECT sends),
``reset`` (connection reset after it was established), ``timeout`` (no answer in time),
``unreachable`` (ICMP net/host unreachable or administratively prohibited; no route), ``error``
(any other errno, logged). The probe engine with kernel timestamps is ``harness.probe``; this is
the simple, real-socket check the lab and conformance use.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
import time

from harness.kernel import netns
from harness.outcome import Outcome, errno_name, exception_errno, from_errno

log = logging.getLogger(__name__)

CONNECTED = Outcome.CONNECTED
REFUSED = Outcome.REFUSED
RESET = Outcome.RESET
TIMEOUT = Outcome.TIMEOUT
UNREACHABLE = Outcome.UNREACHABLE
SAME_LIGHT_HOST = Outcome.SAME_LIGHT_HOST

PAYLOAD = b"netpol-harness-echo"
ICMP_PORT_UNREACH = 3
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)


def _classify(e: OSError) -> Outcome:
    code = exception_errno(e)
    outcome = from_errno(code)
    if outcome is Outcome.ERROR:  # the word alone would lose which errno it was
        log.warning("probe failed with %s: counted as not connected", errno_name(code) or e)
    return outcome


def make_socket(ns: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket created inside namespace ``ns``; must be called from a harness-owned thread."""
    with netns.entered(ns):
        return socket.socket(family, type_, proto)


def probe(ns: str, src_ip: str | None, dst_ip: str, port: int, protocol: str = "TCP",
          timeout: float = 0.5) -> Outcome:
    """Try ``protocol`` from namespace ``ns`` (bound to ``src_ip`` if given) to ``dst_ip:port``.

    Call it from a thread the harness owns (it switches that thread's namespace briefly)."""
    protocol = protocol.upper()
    if protocol == "TCP":
        return _tcp(ns, src_ip, dst_ip, port, timeout)
    if protocol == "UDP":
        return _udp(ns, src_ip, dst_ip, port, timeout)
    if protocol == "ICMP":
        if ":" in dst_ip:
            raise ValueError("ICMP probes are IPv4 only (use TCP or UDP over IPv6)")
        return _icmp(ns, src_ip, dst_ip, timeout)
    raise ValueError(f"protocol {protocol!r}: expected TCP, UDP or ICMP")


def _family(ip: str) -> int:
    """AF_INET6 for an IPv6 address (dual-stack labs), else AF_INET."""
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _tcp(ns: str, src_ip: str | None, dst_ip: str, port: int, timeout: float) -> Outcome:
    s = make_socket(ns, _family(dst_ip), socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # no TIME_WAIT pile-up
        if src_ip:
            s.bind((src_ip, 0))
        deadline = time.monotonic() + timeout
        s.settimeout(timeout)
        if s.family == socket.AF_INET6:
            failed = _connect6(s, dst_ip, port, deadline)
            if failed is not None:
                return failed
        else:
            try:
                s.connect((dst_ip, port))
            except OSError as e:
                return _classify(e)
        try:
            s.sendall(PAYLOAD)
            got = b""
            while len(got) < len(PAYLOAD):
                s.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = s.recv(len(PAYLOAD) - len(got))
                if not chunk:
                    return RESET  # closed without echoing: not a working connection
                got += chunk
        except OSError as e:
            return _classify(e)
        return CONNECTED if got == PAYLOAD else RESET
    finally:
        s.close()


_SOCK_EXTENDED_ERR = struct.Struct("=IBBBxII")  # ee_errno, ee_origin, ee_type, ee_code, ee_info, ee_data


def _connect6(s: socket.socket, dst_ip: str, port: int, deadline: float) -> Outcome | None:
    """Connect ``s`` (IPv6) by ``deadline``: None when connected, else the outcome.

    In the lab the whole path runs in the sending CPU's softirq, so a REJECT's ICMPv6 port
    unreachable reaches the socket while connect() still holds it: the kernel keeps it only as a
    soft error (tcp_v6_err; TcpExt LockDroppedIcmps) and connect() would wait for the next SYN,
    a second later. With IPV6_RECVERR the same ICMPv6 is also queued on the socket's error queue,
    which poll reports at once: its errno (ECONNREFUSED for port unreachable) classifies the
    attempt, as ECONNREFUSED from connect() does for IPv4."""
    s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    s.setblocking(False)
    try:
        try:
            s.connect((dst_ip, port))
            return None
        except BlockingIOError:
            pass
        except OSError as e:
            return _classify(e)
        poller = select.poll()
        poller.register(s, select.POLLOUT | select.POLLERR)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(max(left, 0.0) * 1000):
                return TIMEOUT
            code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                return _classify(OSError(code, os.strerror(code)))
            try:
                s.getpeername()
                return None  # connected
            except OSError:
                pass
            queued = _queued_errno(s)
            if queued:
                return _classify(OSError(queued, os.strerror(queued)))
    finally:
        s.settimeout(max(deadline - time.monotonic(), 0.001))  # back to timeout mode for the echo


def _queued_errno(s: socket.socket) -> int | None:
    """The errno of the first ICMPv6 error on the socket's error queue (IPV6_RECVERR), or None."""
    try:
        _, ancdata, _, _ = s.recvmsg(1, 512, socket.MSG_ERRQUEUE)
    except (BlockingIOError, InterruptedError):
        return None
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IPV6 and kind == IPV6_RECVERR and len(data) >= _SOCK_EXTENDED_ERR.size:
            return _SOCK_EXTENDED_ERR.unpack_from(data)[0]
    return None


def _udp(ns: str, src_ip: str | None, dst_ip: str, port: int, timeout: float) -> Outcome:
    s = make_socket(ns, _family(dst_ip), socket.SOCK_DGRAM)
    try:
        # Without IP_RECVERR, UDP drops "soft" ICMP errors (net/host unreachable) silently and
        # the probe would end as a timeout instead of unreachable.
        if s.family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        if src_ip:
            s.bind((src_ip, 0))
        s.settimeout(timeout)
        try:
            s.connect((dst_ip, port))  # a connected UDP socket reports ICMP errors as errno
            s.send(PAYLOAD)
            data = s.recv(65535)
        except OSError as e:
            return _classify(e)
        if data != PAYLOAD:
            log.warning("UDP probe to %s:%d: bad echo %r: counted as an error", dst_ip, port, data[:20])
            return Outcome.ERROR
        return CONNECTED
    finally:
        s.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _icmp(ns: str, src_ip: str | None, dst_ip: str, timeout: float) -> Outcome:
    s = make_socket(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        if src_ip:
            s.bind((src_ip, 0))  # raw sockets then only see packets addressed to src_ip
        ident = (os.getpid() ^ int.from_bytes(os.urandom(2), "big")) & 0xFFFF
        seq = int.from_bytes(os.urandom(2), "big")
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = struct.pack("!BBHHH", 8, 0, _checksum(hdr + PAYLOAD), ident, seq) + PAYLOAD
        try:
            s.sendto(pkt, (dst_ip, 0))
        except OSError as e:
            return _classify(e)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([s], [], [], left)[0]:
                return TIMEOUT
            data, (peer, _) = s.recvfrom(65535)
            ihl = (data[0] & 0x0F) * 4
            typ, code = data[ihl], data[ihl + 1]
            if typ == 0 and peer == dst_ip and struct.unpack_from("!HH", data, ihl + 4) == (ident, seq):
                return CONNECTED
            if typ == 3 and len(data) >= ihl + 8 + 28:
                inner = data[ihl + 8:]
                iihl = (inner[0] & 0x0F) * 4
                if socket.inet_ntoa(inner[16:20]) == dst_ip and inner[iihl] == 8 and \
                        struct.unpack_from("!HH", inner, iihl + 4) == (ident, seq):
                    # the kernel's own split (icmp_err_convert): only port-unreachable refuses
                    return REFUSED if code == ICMP_PORT_UNREACH else UNREACHABLE
    finally:
        s.close()

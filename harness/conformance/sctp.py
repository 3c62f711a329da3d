"""An SCTP probe for kernels without SCTP sockets: one INIT chunk over a raw IP socket.

The lab's pods cannot listen on SCTP (no SCTP module here), but netfilter tracks and matches
SCTP anyway, which is enough to tell an allowed packet from a denied one:

- allowed: the INIT reaches the destination pod, whose kernel has no SCTP handler and answers
  ICMP protocol-unreachable (type 3 code 2) -> ``Outcome.CONNECTED`` (the packet was delivered);
- denied: kube-router's plain ``REJECT`` answers ICMP port-unreachable (type 3 code 3) from the
  node -> ``Outcome.REFUSED``; other unreachable codes -> ``UNREACHABLE``; silence -> ``TIMEOUT``.

The words are a real client's (``harness.lab.reach``), so SCTP cells read like TCP/UDP cells.

The checksum is a real CRC32c: conntrack verifies SCTP checksums on PRE_ROUTING and a bad one
would make the packet INVALID (dropped by KUBE-NWPLCY-COMMON) instead of judged by policy.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from harness.kernel import netns
from harness.outcome import Outcome, exception_errno, from_errno

log = logging.getLogger(__name__)

IPPROTO_SCTP = 132
ICMP_DEST_UNREACH = 3
ICMP_PROT_UNREACH = 2
ICMP_PORT_UNREACH = 3


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32c (Castagnoli), as SCTP uses it (RFC 4960 appendix B)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def init_packet(src_port: int, dst_port: int, init_tag: int) -> bytes:
    """An SCTP common header (verification tag 0) plus one INIT chunk, with its CRC32c."""
    chunk = struct.pack("!BBHIIHHI", 1, 0, 20, init_tag, 65535, 1, 1, init_tag)
    header = struct.pack("!HHII", src_port, dst_port, 0, 0)
    csum = crc32c(header + chunk)
    # The CRC goes on the wire in little-endian byte order (Linux: cpu_to_le32(~crc32c(...))).
    return header[:8] + struct.pack("<I", csum) + chunk


def ip_header(src_ip: str | None, dst_ip: str) -> bytes:
    """An IPv4 header for an SCTP packet; the kernel fills in total length, id and checksum (and
    the source address when ``src_ip`` is None)."""
    src = socket.inet_aton(src_ip) if src_ip else bytes(4)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, IPPROTO_SCTP, 0, src, socket.inet_aton(dst_ip))


def classify_icmp(data: bytes, dst_ip: str, src_port: int, dst_port: int) -> Outcome | None:
    """The outcome an ICMP packet (with IP header, as a raw socket reads it) means for our INIT
    to ``dst_ip:dst_port`` from ``src_port``, or None when it is about another packet."""
    if len(data) < 20:
        return None
    ihl = (data[0] & 0x0F) * 4
    icmp = data[ihl:]
    if len(icmp) < 8 + 20 + 4 or icmp[0] != ICMP_DEST_UNREACH:
        return None
    inner = icmp[8:]
    inner_ihl = (inner[0] & 0x0F) * 4
    if inner[9] != IPPROTO_SCTP or socket.inet_ntoa(inner[16:20]) != dst_ip or len(inner) < inner_ihl + 4:
        return None
    sport, dport = struct.unpack("!HH", inner[inner_ihl:inner_ihl + 4])
    if (sport, dport) != (src_port, dst_port):
        return None
    code = icmp[1]
    if code == ICMP_PROT_UNREACH:
        return Outcome.CONNECTED
    if code == ICMP_PORT_UNREACH:
        return Outcome.REFUSED
    return Outcome.UNREACHABLE


def probe(ns: str, src_ip: str | None, dst_ip: str, port: int, timeout: float = 0.5) -> Outcome:
    """Send one INIT from namespace ``ns`` to ``dst_ip:port`` and classify the answer. Must run
    in a harness-owned thread (it enters the namespace to create its sockets)."""
    # Sent through an IPPROTO_RAW socket (send-only, we write the IP header): a raw socket of
    # protocol 132 would also *receive* SCTP, and a pod probing while being probed would then
    # swallow the INITs sent to it instead of answering protocol-unreachable.
    with netns.entered(ns):
        icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        src_port = 32768 + int.from_bytes(os.urandom(2), "big") % 28000
        init_tag = int.from_bytes(os.urandom(4), "big") or 1
        sender.sendto(ip_header(src_ip, dst_ip) + init_packet(src_port, port, init_tag), (dst_ip, 0))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([icmp], [], [], left)[0]:
                return Outcome.TIMEOUT
            outcome = classify_icmp(icmp.recv(65535), dst_ip, src_port, port)
            if outcome:
                return outcome
    except OSError as e:  # sending failed: classified by its errno (EPERM: dropped on OUTPUT ...)
        outcome = from_errno(exception_errno(e))
        if outcome is Outcome.ERROR:
            log.warning("SCTP probe %s -> %s:%d failed: %s", src_ip, dst_ip, port, e)
        return outcome
    finally:
        icmp.close()
        sender.close()


def matrix(lab, pods: Iterable[str], port: int, timeout: float, workers: int = 32) -> dict[tuple[str, str], Outcome]:
    """Every ordered pair of ``pods`` (self pairs excluded) probed with an SCTP INIT."""
    keys = list(pods)
    cells = [(s, d) for s in keys for d in keys if s != d]

    def one(cell: tuple[str, str]) -> Outcome:
        s, d = cell
        src = lab.cluster.pods[s]
        dst_ip = str(ipaddress.IPv4Address(lab.cluster.pods[d].ip))
        return probe(lab.pod_netns(s), str(src.ip), dst_ip, port, timeout)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(cells)))) as ex:
        return dict(zip(cells, ex.map(one, cells), strict=True))

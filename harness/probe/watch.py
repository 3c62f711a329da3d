"""Watchers in node namespaces: NFLOG (what a rule logged) and conntrack events (what state the
kernel created), timestamped, so a probe outcome can be tied to the rule or state behind it.

Both speak nfnetlink directly over a ``NETLINK_NETFILTER`` socket created inside the node's
namespace (``netns.netlink_socket``): the NFLOG configuration requests go through the kernel
package's one netlink layer (``harness.kernel.netlink``: attributes, request, ack reading), and
the events are parsed here with ``struct``, not with pyroute2 and not by a subprocess
(``conntrack -E`` would add pipe buffering between the kernel event and its timestamp):

- pyroute2 0.9.7 has no NFLOG message class at all (``pyroute2.netlink.nfnetlink`` holds
  ipset, nfctsocket and nftsocket only);
- its conntrack decoder (``nfctsocket.nfct_msg``) is 12x slower than ``parse_conntrack``:
  136 us vs 11 us per NEW event with both tuples, status, timeout, mark, id and TCP protoinfo
  (Python 3.11, pyroute2 0.9.7, timeit best of 5 x 2,000, process time, 2 vCPU Xeon measured
  under load average 3-5; script in the commit message that added this paragraph). A probe
  makes up to three events (NEW, UPDATE, DESTROY); at the prober's 2,000 probes/s that is
  ~6,000 events/s: ~0.8 of a core with pyroute2 on a 2-core runner (the reader falls behind
  and the kernel drops events: ENOBUFS), ~0.07 with ``parse_conntrack``.

Timestamps (CLOCK_REALTIME ns): an NFLOG event carries the packet's kernel timestamp when the
kernel has one (``NFULA_TIMESTAMP``, µs resolution; packets get one while any socket asks for
receive timestamps, e.g. the packet prober's), else the time it was read; ``time_source`` says
which. Conntrack events are stamped when read (the kernel puts no time in NEW/UPDATE events;
the reader thread wakes within tens of µs on an idle machine); DESTROY events also carry the
entry's kernel start and stop times (``start_ns``/``stop_ns``) when ``nf_conntrack_timestamp`` is
on in the namespace (the watcher turns it on).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from harness.errors import KernelError
from harness.kernel import netlink, netns
from harness.kernel.netlink import HDR as _NLHDR
from harness.kernel.netlink import NLM_F_CREATE, NLM_F_EXCL

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12

NFNL_SUBSYS_CTNETLINK = 1
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_QTHRESH = 5
NFULA_CFG_TIMEOUT = 4
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_PF_BIND = 3
NFULNL_COPY_PACKET = 2
NFULA_PACKET_HDR = 1
NFULA_MARK = 2
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_IFINDEX_PHYSINDEV = 6
NFULA_IFINDEX_PHYSOUTDEV = 7
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10

IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_DELETE = 2
CT_GROUPS = 0x1 | 0x2 | 0x4  # NF_NETLINK_CONNTRACK_NEW | _UPDATE | _DESTROY
CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_PROTOINFO = 4
CTA_MARK = 8
CTA_TIMESTAMP = 20
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
CTA_PROTO_ICMP_ID = 4
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE = 1
CTA_TIMESTAMP_START = 1
CTA_TIMESTAMP_STOP = 2
TCP_STATES = ["NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
              "TIME_WAIT", "CLOSE", "SYN_SENT2"]
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}

def parse_attrs(data: bytes | memoryview, off: int = 0, end: int | None = None) -> dict[int, memoryview]:
    """Netlink attributes from ``off`` to ``end``: {type (flags masked): payload}."""
    return dict(netlink.attrs(data, off, end))


def _ip4(b: memoryview | bytes) -> str:
    return str(ipaddress.IPv4Address(bytes(b)))


@dataclass
class NflogEvent:
    """A packet logged by an ``NFLOG`` rule: which packet, with which prefix and mark, when."""

    t_ns: int
    time_source: str  # "kernel" (packet timestamp) or "read"
    group: int
    prefix: str
    mark: int
    proto: int
    src: str
    dst: str
    sport: int
    dport: int
    indev: int = 0
    outdev: int = 0
    physindev: int = 0
    physoutdev: int = 0


@dataclass
class ConntrackEvent:
    """A conntrack NEW / UPDATE / DESTROY event with the original-direction tuple."""

    t_ns: int  # when the event was read
    kind: str  # NEW | UPDATE | DESTROY
    proto: str
    src: str
    dst: str
    sport: int
    dport: int
    tcp_state: str | None = None
    status: int = 0
    mark: int = 0
    start_ns: int | None = None  # DESTROY with nf_conntrack_timestamp: kernel creation time
    stop_ns: int | None = None  # ... and kernel destruction time


def parse_nflog(msg: bytes | memoryview, read_ns: int) -> NflogEvent | None:
    """Parse one NFULNL_MSG_PACKET netlink message (header included)."""
    mv = memoryview(msg)
    n, mtype, _flags, _seq, _pid = _NLHDR.unpack_from(mv, 0)
    if mtype != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
        return None
    group = struct.unpack_from("!H", mv, 18)[0]
    a = parse_attrs(mv, 20, n)
    t_ns, source = read_ns, "read"
    if NFULA_TIMESTAMP in a:
        sec, usec = struct.unpack_from("!QQ", a[NFULA_TIMESTAMP])
        t_ns, source = sec * 1_000_000_000 + usec * 1000, "kernel"
    prefix = bytes(a.get(NFULA_PREFIX, b"")).rstrip(b"\0").decode(errors="replace")
    mark = struct.unpack("!I", a[NFULA_MARK])[0] if NFULA_MARK in a else 0

    def ifx(k: int) -> int:
        return struct.unpack("!I", a[k])[0] if k in a else 0

    proto, src, dst, sport, dport = 0, "", "", 0, 0
    pl = a.get(NFULA_PAYLOAD)
    if pl is not None and len(pl) >= 20 and pl[0] >> 4 == 4:
        ihl = (pl[0] & 0x0F) * 4
        proto, src, dst = pl[9], _ip4(pl[12:16]), _ip4(pl[16:20])
        if proto in (6, 17) and len(pl) >= ihl + 4:
            sport, dport = struct.unpack_from("!HH", pl, ihl)
        elif proto == 1 and len(pl) >= ihl + 8:
            sport = struct.unpack_from("!H", pl, ihl + 4)[0]  # echo id
    return NflogEvent(t_ns, source, group, prefix, mark, proto, src, dst, sport, dport,
                      ifx(NFULA_IFINDEX_INDEV), ifx(NFULA_IFINDEX_OUTDEV), ifx(NFULA_IFINDEX_PHYSINDEV),
                      ifx(NFULA_IFINDEX_PHYSOUTDEV))


def parse_conntrack(msg: bytes | memoryview, read_ns: int) -> ConntrackEvent | None:
    """Parse one ctnetlink event message (header included)."""
    mv = memoryview(msg)
    n, mtype, flags, _seq, _pid = _NLHDR.unpack_from(mv, 0)
    if mtype >> 8 != NFNL_SUBSYS_CTNETLINK:
        return None
    m = mtype & 0xFF
    if m == IPCTNL_MSG_CT_NEW:
        kind = "NEW" if flags & (NLM_F_CREATE | NLM_F_EXCL) else "UPDATE"
    elif m == IPCTNL_MSG_CT_DELETE:
        kind = "DESTROY"
    else:
        return None
    a = parse_attrs(mv, 20, n)
    if CTA_TUPLE_ORIG not in a:
        return None
    tup = parse_attrs(a[CTA_TUPLE_ORIG])
    ip = parse_attrs(tup.get(CTA_TUPLE_IP, b""))
    pr = parse_attrs(tup.get(CTA_TUPLE_PROTO, b""))
    if CTA_IP_V4_SRC not in ip:
        return None  # IPv6: not part of the lab
    pnum = pr[CTA_PROTO_NUM][0] if CTA_PROTO_NUM in pr else 0
    sport = struct.unpack("!H", pr[CTA_PROTO_SRC_PORT])[0] if CTA_PROTO_SRC_PORT in pr else 0
    dport = struct.unpack("!H", pr[CTA_PROTO_DST_PORT])[0] if CTA_PROTO_DST_PORT in pr else 0
    if CTA_PROTO_ICMP_ID in pr:
        sport = struct.unpack("!H", pr[CTA_PROTO_ICMP_ID])[0]
    tcp_state = None
    if CTA_PROTOINFO in a:
        tcp = parse_attrs(a[CTA_PROTOINFO]).get(CTA_PROTOINFO_TCP)
        if tcp is not None:
            st = parse_attrs(tcp).get(CTA_PROTOINFO_TCP_STATE)
            if st is not None:
                tcp_state = TCP_STATES[st[0]] if st[0] < len(TCP_STATES) else str(st[0])
    start_ns = stop_ns = None
    if CTA_TIMESTAMP in a:
        ts = parse_attrs(a[CTA_TIMESTAMP])
        if CTA_TIMESTAMP_START in ts:
            start_ns = struct.unpack("!Q", ts[CTA_TIMESTAMP_START])[0]
        if CTA_TIMESTAMP_STOP in ts:
            stop_ns = struct.unpack("!Q", ts[CTA_TIMESTAMP_STOP])[0]
    status = struct.unpack("!I", a[CTA_STATUS])[0] if CTA_STATUS in a else 0
    mark = struct.unpack("!I", a[CTA_MARK])[0] if CTA_MARK in a else 0
    return ConntrackEvent(read_ns, kind, PROTO_NAMES.get(pnum, str(pnum)), _ip4(ip[CTA_IP_V4_SRC]),
                          _ip4(ip[CTA_IP_V4_DST]), sport, dport, tcp_state, status, mark, start_ns, stop_ns)


E = TypeVar("E")


@dataclass
class _Watcher(Generic[E]):
    """A netlink socket in a namespace, read by a thread into a timestamped event list."""

    netns: str
    events: list[E] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.realtime = False  # SCHED_FIFO reader thread (see harness.probe.packet.set_realtime)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = os.pipe()
        self._cond = threading.Condition()
        self.overruns = 0

    def _open(self) -> socket.socket:  # pragma: no cover - overridden
        raise NotImplementedError

    def _parse(self, msg: memoryview, read_ns: int) -> E | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self) -> None:
        """Open the socket in the namespace and start reading."""
        self._sock = self._open()
        self._thread = threading.Thread(target=self._loop, name=f"{type(self).__name__}:{self.netns}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)

    def __enter__(self) -> _Watcher[E]:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[E], bool], timeout_s: float = 2.0) -> E | None:
        """The first event (already seen or arriving within ``timeout_s``) matching ``predicate``."""
        deadline = time.monotonic() + timeout_s
        checked = 0
        with self._cond:
            while True:
                for e in self.events[checked:]:
                    if predicate(e):
                        return e
                checked = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def _loop(self) -> None:
        assert self._sock is not None
        if self.realtime:
            from harness.probe.packet import set_realtime

            set_realtime()
        buf = bytearray(1 << 17)
        while True:
            r, _, _ = select.select([self._sock, self._stop_r], [], [])
            if self._stop_r in r:
                return
            try:
                n = self._sock.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError as e:  # ENOBUFS: the kernel dropped events (socket buffer overrun)
                self.overruns += 1
                log.warning("%s in %s: %s", type(self).__name__, self.netns, e)
                continue
            read_ns = time.time_ns()
            mv = memoryview(buf)[:n]
            off, parsed = 0, []
            while off + 16 <= n:
                length = _NLHDR.unpack_from(mv, off)[0]
                if length < 16:
                    break
                ev = self._parse(mv[off:off + length], read_ns)
                if ev is not None:
                    parsed.append(ev)
                off += (length + 3) & ~3
            if parsed:
                with self._cond:
                    self.events.extend(parsed)
                    self._cond.notify_all()


def _nflog_config(res_id: int, family: int, attrs: bytes, what: str) -> netlink.Request:
    """An NFULNL_MSG_CONFIG request: nfgenmsg (family, version 0, ``res_id`` = the group, big
    endian) + attributes."""
    body = struct.pack("=BB", family, 0) + struct.pack("!H", res_id) + attrs
    return netlink.Request((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, 0, body, what)


class NflogWatcher(_Watcher[NflogEvent]):
    """Listens to NFLOG ``group`` (kube-router logs rejected packets to group 100) in a namespace.

    Only one listener per group and namespace is allowed by the kernel: a second one gets EPERM
    (seen on 6.18; tests/test_probe_kernel.py)."""

    def __init__(self, netns_name: str, group: int = 100, copy_range: int = 128):
        super().__init__(netns_name)
        self.group = group
        self.copy_range = copy_range

    def _open(self) -> socket.socket:
        s = netns.netlink_socket(self.netns, NETLINK_NETFILTER)
        try:
            nl = netlink.Socket(s, self.netns)  # binds; its reader skips the packets of a bound group
            s.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
            # PF_BIND is a no-op on current kernels but required by old ones; harmless.
            with contextlib.suppress(KernelError):
                nl.run([_nflog_config(0, socket.AF_INET, netlink.attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_PF_BIND])),
                                      "nflog pf-bind")])
            nl.run([_nflog_config(self.group, socket.AF_INET,
                                  netlink.attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])),
                                  f"nflog bind group {self.group}")])
            mode = struct.pack("!IBB", self.copy_range, NFULNL_COPY_PACKET, 0)
            nl.run([_nflog_config(self.group, socket.AF_UNSPEC,
                                  netlink.attr(NFULA_CFG_MODE, mode) + netlink.attr(NFULA_CFG_QTHRESH,
                                                                                    struct.pack("!I", 1))
                                  + netlink.attr(NFULA_CFG_TIMEOUT, struct.pack("!I", 1)),
                                  f"nflog mode group {self.group}")])
        except BaseException:
            s.close()
            raise
        return s

    def _parse(self, msg: memoryview, read_ns: int) -> NflogEvent | None:
        return parse_nflog(msg, read_ns)


class ConntrackWatcher(_Watcher[ConntrackEvent]):
    """Listens to conntrack NEW/UPDATE/DESTROY events in a namespace.

    Conntrack only tracks in a namespace whose rules use it (kube-router's ``--ctstate`` rules
    do). With ``kernel_timestamps`` the watcher turns on ``nf_conntrack_timestamp`` in that
    namespace so DESTROY events carry the entry's kernel start/stop times."""

    def __init__(self, netns_name: str, kernel_timestamps: bool = True):
        super().__init__(netns_name)
        self.kernel_timestamps = kernel_timestamps

    def _open(self) -> socket.socket:
        if self.kernel_timestamps:
            def enable() -> None:
                with open("/proc/sys/net/netfilter/nf_conntrack_timestamp", "w") as f:
                    f.write("1")
            try:
                netns.call_in(self.netns, enable)
            except OSError as e:
                log.info("nf_conntrack_timestamp not available in %s: %s", self.netns, e)
        s = netns.netlink_socket(self.netns, NETLINK_NETFILTER)
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
            s.bind((0, CT_GROUPS))
        except BaseException:
            s.close()
            raise
        return s

    def _parse(self, msg: memoryview, read_ns: int) -> ConntrackEvent | None:
        return parse_conntrack(msg, read_ns)


NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15  # enum nf_tables_msg_types: ... NEWSETELEM 12, GETSETELEM 13, DELSETELEM 14, NEWGEN 15
NFNLGRP_NFTABLES = 7
NFTA_GEN_ID = 1
NFTA_GEN_PROC_PID = 2
NFTA_GEN_PROC_NAME = 3


@dataclass
class NftCommit:
    """An nf_tables transaction committed in the namespace (``NFT_MSG_NEWGEN``), stamped when
    read: the moment a ruleset change (``iptables-nft``, ``nft``) took effect, µs after it."""

    t_ns: int
    gen_id: int
    pid: int
    proc_name: str


def parse_nft_gen(msg: bytes | memoryview, read_ns: int) -> NftCommit | None:
    """Parse an nf_tables NEWGEN notification (other nf_tables notifications give None)."""
    mv = memoryview(msg)
    n, mtype, _f, _s, _p = _NLHDR.unpack_from(mv, 0)
    if mtype != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
        return None
    a = parse_attrs(mv, 20, n)
    gen = struct.unpack("!I", a[NFTA_GEN_ID])[0] if NFTA_GEN_ID in a else 0
    pid = struct.unpack("!I", a[NFTA_GEN_PROC_PID])[0] if NFTA_GEN_PROC_PID in a else 0
    name = bytes(a.get(NFTA_GEN_PROC_NAME, b"")).rstrip(b"\0").decode(errors="replace")
    return NftCommit(read_ns, gen, pid, name)


class NftCommitWatcher(_Watcher[NftCommit]):
    """Listens to nf_tables generation changes in a namespace: one event per committed
    transaction (iptables-nft, iptables-nft-restore, nft). With the legacy iptables backend there
    are no such events (callers fall back to the time the tool returned)."""

    def _open(self) -> socket.socket:
        s = netns.netlink_socket(self.netns, NETLINK_NETFILTER)
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: rule dumps can be big
            s.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
        except BaseException:
            s.close()
            raise
        return s

    def _parse(self, msg: memoryview, read_ns: int) -> NftCommit | None:
        return parse_nft_gen(msg, read_ns)

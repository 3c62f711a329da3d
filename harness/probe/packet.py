"""The packet prober: timestamped TCP SYN / UDP / ICMP echo probes from pod namespaces.

Design, and why:

* **Sockets once per namespace, reused.** In each source namespace the prober opens (via
  ``netns.call_in``; a socket keeps the namespace it was created in) one ``IPPROTO_RAW`` socket
  with ``IP_HDRINCL`` to send, and one raw receive socket per protocol (TCP, UDP, ICMP) with
  ``SO_TIMESTAMPNS``. A light pod is just a source IP in its shared namespace: the IP header is
  ours, so any address of the namespace can be the source.
* **Packets built once with scapy, patched per probe.** scapy makes a template per flow; each
  probe patches the source port, sequence number / probe id and the checksum (incrementally,
  RFC 1624) into a reused ``bytearray``. The kernel fills the IP checksum and id.
* **One identity per probe.** TCP and UDP probes each take the next source port of the flow's
  port range (so every probe is a new conntrack entry, as a new connection of a real client
  would be) plus a per-probe TCP sequence number / UDP probe id; ICMP echo takes the next
  identifier and sequence number. Replies are parsed with ``struct`` (``classify.parse_reply``).
* **The SYN-ACK's RST comes from the kernel.** The prober's namespace has no socket on the
  probe's source port, so its TCP stack answers every SYN-ACK with a RST by itself (raw sockets
  get their copy before TCP processing). That RST is exactly the "answer with RST so no half-open
  state piles up", so the prober does not send one of its own (that would be a second, confusing
  RST). Likewise a UDP echo reply makes the kernel send an ICMP port-unreachable back to the
  server (rate limited by ``icmp_ratelimit``; the server ignores it).
* **One clock.** ``send_ns`` is ``time.time_ns()`` taken immediately before ``sendto`` (the
  whole forward path, reply included, may run inside that syscall's softirq); ``recv_ns`` is the
  kernel's receive timestamp of the reply (``SCM_TIMESTAMPNS``, CLOCK_REALTIME).
* **Every answer needs to be sent.** A REJECT's ICMP error is rate limited by the sending
  namespace (``icmp_ratelimit`` 1 per second per destination after a burst of 6, and
  ``icmp_msgs_per_sec``); probing faster than that, rejected probes look ``dropped``. The lab
  lifts these limits in its namespaces (harness.lab.lab COMMON_SYSCTLS); a lab without that
  would misclassify.
* **One thread, many flows.** A single loop paces all flows (a heap of due times; sub-ms waits
  with ``nanosleep``, longer ones in ``epoll``), drains the receive sockets and times out
  probes. One thread means no GIL hand-offs between sender and receiver.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import heapq
import ipaddress
import itertools
import logging
import os
import random
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from scapy.layers.inet import ICMP, IP, TCP, UDP

from harness.kernel import netns
from harness.probe.classify import (
    PROTO_ICMP,
    PROTO_NUMBERS,
    PROTO_TCP,
    PROTO_UDP,
    UDP_MAGIC,
    UDP_PAYLOAD,
    Key,
    Outcome,
    parse_reply,
    transitions,
)

log = logging.getLogger(__name__)

SO_TIMESTAMPNS = 35  # == SCM_TIMESTAMPNS; struct timespec (64-bit time_t on x86_64)
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
SOL_RAW = 255
ICMP_FILTER = 1
_TIMESPEC = struct.Struct("@qq")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

# Default source-port ranges. TCP stays below the kernel's ephemeral range (32768-60999) so probe
# ports never collide with real clients in the same namespace. UDP needs a wider range: a reused
# UDP 4-tuple whose conntrack entry (30 s after a reply) is still alive would be ESTABLISHED and
# bypass policy, so a UDP flow must not come back to a port within ~30 s (see ``max_rate``).
TCP_PORTS = (10000, 32767)
UDP_PORTS = (1024, 65535)
ICMP_IDS = (1, 65535)
CONNTRACK_UDP_TIMEOUT_S = 31.0

# Classic BPF for the raw TCP receive socket: keep only segments with RST, or SYN+ACK, set. A pod
# namespace that also serves (echo servers, light pods) sees every incoming SYN/ACK otherwise.
_TCP_FILTER = [
    (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)        X = IP header length
    (0x50, 0, 0, 13),  # ldb [x+13]             A = TCP flags
    (0x45, 3, 0, 0x04),  # jset #RST -> accept
    (0x54, 0, 0, 0x12),  # and #(SYN|ACK)
    (0x15, 1, 0, 0x12),  # jeq #(SYN|ACK) -> accept
    (0x06, 0, 0, 0),  # ret #0 (drop)
    (0x06, 0, 0, 0xFFFF),  # ret #65535 (accept)
]


def _attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)
    fprog = struct.pack("@HP", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


@dataclass(slots=True)
class ProbeRecord:
    """One probe's fate: sent at ``send_ns``, answered at ``recv_ns`` (kernel time; None if dropped)."""

    flow_id: str
    probe_id: int
    send_ns: int
    recv_ns: int | None
    outcome: Outcome
    detail: str = ""
    # When sendto returned. The packet met the rules between send_ns and this (normally a few
    # tens of µs; a thread preempted inside the call widens it: such a send time is uncertain).
    send_end_ns: int = 0

    @property
    def rtt_ns(self) -> int | None:
        return None if self.recv_ns is None else self.recv_ns - self.send_ns


@dataclass
class FlowSpec:
    """What to probe: from ``src_ip`` in namespace ``netns`` to ``dst_ip:dst_port`` over ``proto``
    (TCP SYN, UDP datagram or ICMP echo), ``rate`` probes/s, ``count`` probes (None: until
    stopped). ``port_range`` overrides the source-port (TCP/UDP) or echo-id (ICMP) range."""

    netns: str
    src_ip: str
    dst_ip: str
    dst_port: int = 0
    proto: str = "TCP"
    rate: float = 100.0
    count: int | None = None
    flow_id: str = ""
    port_range: tuple[int, int] | None = None


class Flow:
    """A running flow: its spec and its time series of ``ProbeRecord``s."""

    def __init__(self, spec: FlowSpec, timeout_s: float):
        proto = spec.proto.upper()
        if proto not in PROTO_NUMBERS:
            raise ValueError(f"unknown protocol {spec.proto!r} (TCP, UDP or ICMP)")
        if not 0 < spec.rate <= 100_000:
            raise ValueError(f"rate {spec.rate} out of range (0, 100000] probes/s")
        if proto != "ICMP" and not 0 < spec.dst_port < 65536:
            raise ValueError(f"dst_port {spec.dst_port} out of range for {proto}")
        self.spec = spec
        self.proto = PROTO_NUMBERS[proto]
        self.flow_id = spec.flow_id or f"{spec.src_ip}->{spec.dst_ip}:{spec.dst_port}/{proto}"
        lo, hi = spec.port_range or {"TCP": TCP_PORTS, "UDP": UDP_PORTS, "ICMP": ICMP_IDS}[proto]
        self.port_lo, self.port_n = lo, hi - lo + 1
        # A port comes back after port_n / rate seconds; it must not still be in flight.
        if spec.rate * timeout_s >= self.port_n:
            raise ValueError(f"flow {self.flow_id}: {spec.rate}/s x timeout {timeout_s}s needs more than "
                             f"{self.port_n} source ports")
        if proto == "UDP" and self.port_n / spec.rate < CONNTRACK_UDP_TIMEOUT_S:
            log.warning("flow %s: UDP source ports come back after %.1f s, before conntrack forgets "
                        "them (~30 s): reused ports may bypass policy as ESTABLISHED",
                        self.flow_id, self.port_n / spec.rate)
        # A random start in the range: a flow probing the same pair again soon after an earlier one
        # must not land on the earlier probes' 4-tuples (still-live conntrack entries).
        self.port_offset = random.randrange(self.port_n)
        self.interval_ns = int(1e9 / spec.rate)
        self.src = ipaddress.IPv4Address(spec.src_ip).packed
        self.dst = ipaddress.IPv4Address(spec.dst_ip).packed
        self.dst_addr = (spec.dst_ip, 0)
        self.records: list[ProbeRecord] = []
        self.sent = 0
        self.outstanding = 0
        self.late = 0  # replies that matched no outstanding probe (after its timeout)
        self.send_errors = 0
        self.max_send_lag_ns = 0  # worst lateness of a send against its schedule
        self.rescheduled = 0  # times the schedule was restarted because the loop fell behind
        self.stopped = False
        self.done = threading.Event()
        self._build_template()

    # -- packet template -------------------------------------------------------------------------
    def _build_template(self) -> None:
        """scapy builds the packet once; per probe only a few fields are patched."""
        s = self.spec
        ip = IP(src=s.src_ip, dst=s.dst_ip, ttl=64, id=0, flags="DF")
        if self.proto == PROTO_TCP:
            pkt = ip / TCP(sport=0, dport=s.dst_port, flags="S", seq=0, window=64240, options=[("MSS", 1460)])
        elif self.proto == PROTO_UDP:
            pkt = ip / UDP(sport=0, dport=s.dst_port, chksum=0) / UDP_PAYLOAD.pack(UDP_MAGIC, 0)
        else:
            pkt = ip / ICMP(type=8, code=0, id=0, seq=0, chksum=0) / (b"netpol-h" * 4)
        raw = bytearray(bytes(pkt))
        self.l4 = (raw[0] & 0x0F) * 4
        if self.proto == PROTO_TCP:
            struct.pack_into("!H", raw, self.l4 + 16, 0)
            seg = bytes(raw[self.l4:])
            pseudo = self.src + self.dst + struct.pack("!BBH", 0, PROTO_TCP, len(seg))
            self.csum_base = _sum16(pseudo + seg)
        elif self.proto == PROTO_ICMP:
            struct.pack_into("!H", raw, self.l4 + 2, 0)
            self.csum_base = _sum16(bytes(raw[self.l4:]))
        else:
            struct.pack_into("!H", raw, self.l4 + 6, 0)  # UDP checksum 0 = none (IPv4)
            self.csum_base = 0
        self.buf = raw

    def next_probe(self) -> tuple[Key, int]:
        """Patch the template for the next probe; return (identity key, match value)."""
        pid = self.sent
        port = self.port_lo + (self.port_offset + pid) % self.port_n
        buf, l4 = self.buf, self.l4
        if self.proto == PROTO_TCP:
            seq = (pid * 2654435761 + 0x5EED) & 0xFFFFFFFF
            _U16.pack_into(buf, l4, port)  # ("!HxxI" would zero the destination port)
            _U32.pack_into(buf, l4 + 4, seq)
            s = self.csum_base + port + (seq >> 16) + (seq & 0xFFFF)
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            struct.pack_into("!H", buf, l4 + 16, ~s & 0xFFFF)
            return Key(self.src, port, self.dst, self.spec.dst_port, PROTO_TCP), seq
        if self.proto == PROTO_UDP:
            struct.pack_into("!H", buf, l4, port)
            struct.pack_into("!Q", buf, l4 + 12, pid)
            return Key(self.src, port, self.dst, self.spec.dst_port, PROTO_UDP), pid
        seq = pid & 0xFFFF
        struct.pack_into("!HH", buf, l4 + 4, port, seq)
        s = self.csum_base + port + seq
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        struct.pack_into("!H", buf, l4 + 2, ~s & 0xFFFF)
        return Key(self.src, port, self.dst, 0, PROTO_ICMP), seq

    # -- results ---------------------------------------------------------------------------------
    def series(self) -> list[ProbeRecord]:
        """The flow's records in send order (records arrive in completion order)."""
        return sorted(self.records, key=lambda r: r.probe_id)

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(r.outcome.value for r in self.records))

    def transitions(self) -> list[tuple[int, str, str]]:
        """``[(send_ns, old_outcome, new_outcome), ...]`` along the flow's time series."""
        return transitions([(r.send_ns, r.outcome.value) for r in self.series()])

    def stop(self) -> None:
        """Send no more probes; outstanding ones still complete."""
        self.stopped = True


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


class _NsSockets:
    """The sockets of one source namespace: one raw sender, one raw receiver per protocol."""

    def __init__(self, ns: str):
        self.ns = ns
        self.send = netns.call_in(ns, self._make_sender)
        self.recv: dict[int, socket.socket] = {}

    @staticmethod
    def _make_sender() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        return s

    def receiver(self, proto: int) -> socket.socket | None:
        """The receive socket for ``proto``, created on first use (None if it already existed)."""
        if proto in self.recv:
            return None

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            if proto == PROTO_TCP:
                _attach_filter(s, _TCP_FILTER)
            elif proto == PROTO_ICMP:
                # ICMP_FILTER blocks the types whose bit is set: keep echo reply, unreachable, time exceeded.
                keep = (1 << 0) | (1 << 3) | (1 << 11)
                s.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", ~keep & 0xFFFFFFFF))
            s.setblocking(False)
            return s

        s = netns.call_in(self.ns, make)
        self.recv[proto] = s
        return s

    def close(self) -> None:
        self.send.close()
        for s in self.recv.values():
            s.close()


def set_realtime(priority: int = 10) -> bool:
    """Give the calling thread SCHED_FIFO ``priority``; False (logged) where not permitted.

    Why: on a shared machine a normal-priority prober thread gets descheduled for milliseconds,
    which delays sends (and the calibration's commit stamps) by as much. The kernel's RT
    throttling (``sched_rt_runtime_us``) still leaves 5% of each CPU to everyone else."""
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as e:
        log.info("SCHED_FIFO not available (%s): the prober runs at normal priority", e)
        return False
    return True


class PacketProber:
    """Many probe flows from one thread. ``add_flow`` (before or after ``start``), then ``stop``
    (or ``wait`` for flows with a ``count``); each ``Flow`` holds its time series.

    ``timeout_s``: a probe without a reply by then is ``dropped``. ``max_lag_s``: if the loop
    falls further behind a flow's schedule than this (machine busy), the flow's schedule restarts
    from now instead of bursting to catch up (counted in ``Flow.rescheduled``). ``realtime``:
    run the loop thread at SCHED_FIFO priority (see ``set_realtime``), for timing-critical runs
    on a busy machine (calibration); the loop sleeps between sends, so it takes only the CPU its
    probes need."""

    def __init__(self, timeout_s: float = 1.0, max_lag_s: float = 0.01, realtime: bool = False):
        self.realtime = realtime
        self.timeout_ns = int(timeout_s * 1e9)
        self.timeout_s = timeout_s
        self.max_lag_ns = int(max_lag_s * 1e9)
        self.flows: list[Flow] = []
        self._ns: dict[str, _NsSockets] = {}
        self._by_fd: dict[int, socket.socket] = {}
        self._ep = select.epoll()
        self._heap: list[tuple[int, int, Flow]] = []
        self._new: list[Flow] = []
        self._pending: dict[Key, tuple[Flow, int, int, int, int]] = {}  # flow, id, send, match, send end
        self._inflight: collections.deque[tuple[int, Key, int]] = collections.deque()
        self._tie = itertools.count()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_sending = False
        self._stop_now = False
        self._closed = False
        self.error: BaseException | None = None

    def __enter__(self) -> PacketProber:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- public API ------------------------------------------------------------------------------
    def add_flow(self, spec: FlowSpec, start_ns: int | None = None) -> Flow:
        """Register a flow; it starts sending at ``start_ns`` (default: now)."""
        flow = Flow(spec, self.timeout_s)
        with self._lock:
            for f in self.flows:
                # Two live flows may share a 4-tuple space only with disjoint source-port ranges.
                if not f.done.is_set() and (f.src, f.dst, f.spec.dst_port, f.proto) == (
                        flow.src, flow.dst, flow.spec.dst_port, flow.proto) and (
                        f.port_lo < flow.port_lo + flow.port_n and flow.port_lo < f.port_lo + f.port_n):
                    raise ValueError(f"flow {flow.flow_id} overlaps running flow {f.flow_id} "
                                     "(same addresses, port and protocol; give them disjoint port_range)")
            socks = self._ns.get(spec.netns)
            if socks is None:
                socks = self._ns[spec.netns] = _NsSockets(spec.netns)
            protos = {flow.proto, PROTO_ICMP}  # ICMP errors answer TCP and UDP probes too
            for p in protos:
                s = socks.receiver(p)
                if s is not None:
                    self._by_fd[s.fileno()] = s
                    self._ep.register(s.fileno(), select.EPOLLIN)
            flow.sock = socks.send  # type: ignore[attr-defined]
            flow.next_due = start_ns or time.time_ns()  # type: ignore[attr-defined]
            self.flows.append(flow)
            self._new.append(flow)
        return flow

    def start(self) -> None:
        """Start the probe loop thread."""
        self._thread = threading.Thread(target=self._run, name="packet-prober", daemon=True)
        self._thread.start()

    def wait(self, flows: list[Flow] | None = None, timeout: float | None = None) -> bool:
        """Wait until the given flows (default: all, which must have a ``count``) are complete."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for f in flows or self.flows:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not f.done.wait(left):
                return False
        return True

    def stop(self) -> None:
        """Stop sending, let outstanding probes complete (at most ``timeout_s``), close sockets."""
        if self._closed:
            return
        self._stop_sending = True
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)
            if self._thread.is_alive():
                self._stop_now = True
                self._thread.join(5)
        self._closed = True
        for socks in self._ns.values():
            socks.close()
        self._ep.close()
        if self.error is not None:
            raise self.error

    # -- the loop --------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self.realtime:
                set_realtime()
            self._loop()
        except BaseException as e:  # surfaced by stop()
            log.exception("packet prober loop failed")
            self.error = e
            for f in self.flows:
                f.done.set()

    def _loop(self) -> None:
        heap, pending, inflight = self._heap, self._pending, self._inflight
        time_ns = time.time_ns
        while not self._stop_now:
            if self._new:
                with self._lock:
                    for f in self._new:
                        heapq.heappush(heap, (f.next_due, next(self._tie), f))  # type: ignore[attr-defined]
                    self._new.clear()
            # 1. receive everything that is waiting (its kernel timestamps are already fixed)
            for fd, _ in self._ep.poll(0):
                self._drain(self._by_fd[fd])
            # 2. send what is due
            now = time_ns()
            if not self._stop_sending:
                while heap and heap[0][0] <= now:
                    due, _, flow = heapq.heappop(heap)
                    if flow.stopped or (flow.spec.count is not None and flow.sent >= flow.spec.count):
                        self._maybe_done(flow)
                        continue
                    self._send(flow, due)
                    nxt = due + flow.interval_ns
                    now = time_ns()
                    if now - nxt > self.max_lag_ns:
                        flow.rescheduled += 1
                        nxt = now
                    heapq.heappush(heap, (nxt, next(self._tie), flow))
            # 3. time out probes without a reply; first read every reply already queued, so a
            #    busy loop never calls a probe dropped whose answer is waiting in a socket buffer
            now = time_ns()
            if inflight and inflight[0][0] <= now:
                for fd, _ in self._ep.poll(0):
                    self._drain(self._by_fd[fd], limit=None)
            while inflight and inflight[0][0] <= now:
                _deadline, key, pid = inflight.popleft()
                entry = pending.get(key)
                if entry is not None and entry[1] == pid:
                    del pending[key]
                    flow = entry[0]
                    flow.records.append(ProbeRecord(flow.flow_id, pid, entry[2], None, Outcome.DROPPED,
                                                    "", entry[4]))
                    flow.outstanding -= 1
                    self._maybe_done(flow)
            if self._stop_sending and not pending:
                return
            # 4. wait for the next send (sub-ms: nanosleep; longer: epoll, woken by replies)
            nxt = heap[0][0] if heap and not self._stop_sending else now + 5_000_000
            if inflight:
                nxt = min(nxt, inflight[0][0])
            wait = nxt - time_ns()
            if wait > 2_000_000:
                for fd, _ in self._ep.poll((wait - 1_000_000) / 1e9):
                    self._drain(self._by_fd[fd])
            elif wait > 0:
                time.sleep(wait / 1e9)

    def _send(self, flow: Flow, due: int) -> None:
        key, match = flow.next_probe()
        pid = flow.sent
        flow.sent += 1
        prev = self._pending.pop(key, None)
        if prev is not None:  # cannot happen within the port budget checked in Flow(); be safe
            pflow = prev[0]
            pflow.records.append(ProbeRecord(pflow.flow_id, prev[1], prev[2], None, Outcome.DROPPED,
                                             "identity reused before its timeout", prev[4]))
            pflow.outstanding -= 1
        t = time.time_ns()
        try:
            flow.sock.sendto(flow.buf, flow.dst_addr)  # type: ignore[attr-defined]
        except OSError as e:
            flow.send_errors += 1
            name = errno.errorcode.get(e.errno or 0, str(e.errno))
            flow.records.append(ProbeRecord(flow.flow_id, pid, t, None, Outcome.DROPPED, f"send:{name}",
                                            time.time_ns()))
            self._maybe_done(flow)
            return
        t_end = time.time_ns()
        lag = t - due
        if lag > flow.max_send_lag_ns:
            flow.max_send_lag_ns = lag
        self._pending[key] = (flow, pid, t, match, t_end)
        flow.outstanding += 1
        self._inflight.append((t + self.timeout_ns, key, pid))

    def _drain(self, sock: socket.socket, limit: int | None = 512) -> None:
        """Read queued replies (at most ``limit``, so sends stay on schedule under a flood)."""
        pending = self._pending
        timeout_ns = self.timeout_ns
        for _ in itertools.repeat(None) if limit is None else range(limit):
            try:
                data, anc, _flags, _addr = sock.recvmsg(1024, 64)
            except (BlockingIOError, InterruptedError):
                return
            reply = parse_reply(data)
            if reply is None:
                continue
            entry = pending.get(reply.key)
            if entry is None or (entry[3] != reply.match and reply.match != -1):
                # An answer to a probe that already timed out (or a stranger on the same port).
                if entry is None:
                    continue
                entry[0].late += 1
                continue
            recv_ns = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(cdata)
                    recv_ns = sec * 1_000_000_000 + nsec
            if recv_ns is None:
                recv_ns = time.time_ns()
            del pending[reply.key]
            flow, pid, send_ns, _m, send_end = entry
            if recv_ns - send_ns > timeout_ns:  # read late, arrived late: nothing within the timeout
                flow.records.append(ProbeRecord(flow.flow_id, pid, send_ns, None, Outcome.DROPPED,
                                                f"late {reply.outcome.value} after {(recv_ns - send_ns) / 1e6:.1f} ms",
                                                send_end))
            else:
                flow.records.append(ProbeRecord(flow.flow_id, pid, send_ns, recv_ns, reply.outcome, reply.detail,
                                                send_end))
            flow.outstanding -= 1
            self._maybe_done(flow)

    @staticmethod
    def _maybe_done(flow: Flow) -> None:
        if flow.outstanding == 0 and (flow.stopped or (flow.spec.count is not None
                                                       and flow.sent >= flow.spec.count)):
            flow.done.set()


def probe_once(src_netns: str, src_ip: str, dst_ip: str, dst_port: int = 0, proto: str = "TCP",
               count: int = 1, rate: float = 100.0, timeout_s: float = 1.0) -> list[ProbeRecord]:
    """Send ``count`` probes of one flow and return their records in send order (convenience)."""
    prober = PacketProber(timeout_s=timeout_s)
    flow = prober.add_flow(FlowSpec(src_netns, src_ip, dst_ip, dst_port, proto, rate=rate, count=count))
    prober.start()
    try:
        prober.wait([flow], timeout=count / rate + timeout_s + 5)
    finally:
        prober.stop()
    return flow.series()


@dataclass
class FlowSummary:
    """Counts and RTT percentiles of one flow (for reports and the benchmark)."""

    flow_id: str
    sent: int
    counts: dict[str, int] = field(default_factory=dict)
    rtt_p50_us: float | None = None
    rtt_p99_us: float | None = None


def summarize(flow: Flow) -> FlowSummary:
    rtts = sorted(r.rtt_ns for r in flow.records if r.rtt_ns is not None)
    p = (lambda q: rtts[min(len(rtts) - 1, int(q * len(rtts)))] / 1000) if rtts else (lambda q: None)
    return FlowSummary(flow.flow_id, flow.sent, flow.counts(), p(0.5), p(0.99))

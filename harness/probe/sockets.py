"""Real-socket clients: the kernel's own TCP/UDP stack inside a pod, as an application sees it.

A socket is created inside the pod's namespace (``netns.call_in``) and then used from any
thread: it keeps its namespace. A light pod's client binds its pod IP as the source address.
Results carry the errno name an application would get (ECONNREFUSED, ECONNRESET, ETIMEDOUT,
EHOSTUNREACH, ...) and CLOCK_REALTIME ns times.

``LongLivedFlow``s are established TCP connections that exchange a small message every period
with an echo server and report ``reset_after_established`` (the connection was reset while in
use, e.g. conntrack state flushed and a policy REJECT/RST hit it), ``closed`` or ``stall`` (no
echo within the stall time: traffic silently dropped), and ``recovered`` when data flows again.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

from harness.kernel import netns
from harness.outcome import Outcome, errno_number, from_errno
from harness.outcome import errno_name as _errno_name

log = logging.getLogger(__name__)


def errno_name(code: int) -> str:
    """``ECONNREFUSED`` for 111 (the name an application's log shows)."""
    return _errno_name(code) or str(code)


@dataclass
class ConnectResult:
    """One connect() attempt: ``ok``, the errno name on failure, start/end times (ns)."""

    ok: bool
    errno: str | None
    start_ns: int
    end_ns: int
    src: str = ""
    dst: str = ""

    @property
    def outcome(self) -> Outcome:
        """The attempt's outcome, from its errno (``harness.outcome.from_errno``)."""
        if self.ok:
            return Outcome.CONNECTED
        return from_errno(errno_number(self.errno))

    @property
    def elapsed_ns(self) -> int:
        return self.end_ns - self.start_ns


def _socket_in(ns: str, kind: int, src_ip: str | None) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, kind)
        if src_ip:
            s.bind((src_ip, 0))
        return s
    return netns.call_in(ns, make)


def tcp_connect(ns: str, dst_ip: str, port: int, *, src_ip: str | None = None, timeout_s: float = 1.0,
                exchange: bytes | None = None) -> ConnectResult:
    """``connect()`` from namespace ``ns`` (source ``src_ip`` for a light pod) to ``dst_ip:port``.

    Timing: ``start_ns`` right before connect(), ``end_ns`` when the kernel reported the result.
    No answer within ``timeout_s`` -> ETIMEDOUT (as the application's own timeout; the kernel's
    SYN retries would take minutes). With ``exchange``, the bytes are sent after connecting and
    the echo awaited, so a reset right after the handshake shows as ECONNRESET."""
    s = _socket_in(ns, socket.SOCK_STREAM, src_ip)
    dst = f"{dst_ip}:{port}"
    try:
        s.setblocking(False)
        start = time.time_ns()
        rc = s.connect_ex((dst_ip, port))
        if rc not in (0, errno.EINPROGRESS):
            return ConnectResult(False, errno_name(rc), start, time.time_ns(), src_ip or "", dst)
        p = select.poll()
        p.register(s, select.POLLOUT | select.POLLERR | select.POLLHUP)
        if not p.poll(timeout_s * 1000):
            return ConnectResult(False, "ETIMEDOUT", start, time.time_ns(), src_ip or "", dst)
        end = time.time_ns()
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        src = f"{s.getsockname()[0]}:{s.getsockname()[1]}" if not err else (src_ip or "")
        if err:
            return ConnectResult(False, errno_name(err), start, end, src, dst)
        if exchange:
            s.setblocking(True)
            s.settimeout(timeout_s)
            try:
                s.sendall(exchange)
                got = b""
                while len(got) < len(exchange):
                    chunk = s.recv(65536)
                    if not chunk:
                        return ConnectResult(False, "ECONNRESET", start, time.time_ns(), src, dst)
                    got += chunk
            except TimeoutError:
                return ConnectResult(False, "ETIMEDOUT", start, time.time_ns(), src, dst)
            except OSError as e:
                return ConnectResult(False, errno_name(e.errno or 0), start, time.time_ns(), src, dst)
        return ConnectResult(True, None, start, end, src, dst)
    finally:
        s.close()


def udp_request(ns: str, dst_ip: str, port: int, *, src_ip: str | None = None, timeout_s: float = 1.0,
                payload: bytes = b"netpol-harness") -> ConnectResult:
    """One UDP request/echo from a connected UDP socket: ok on the echo, ECONNREFUSED if an ICMP
    port-unreachable came back (REJECT or no listener), ETIMEDOUT on silence."""
    s = _socket_in(ns, socket.SOCK_DGRAM, src_ip)
    dst = f"{dst_ip}:{port}"
    try:
        s.connect((dst_ip, port))
        s.settimeout(timeout_s)
        start = time.time_ns()
        try:
            s.send(payload)
            s.recv(65536)
        except TimeoutError:
            return ConnectResult(False, "ETIMEDOUT", start, time.time_ns(), src_ip or "", dst)
        except OSError as e:
            return ConnectResult(False, errno_name(e.errno or 0), start, time.time_ns(), src_ip or "", dst)
        return ConnectResult(True, None, start, time.time_ns(), src_ip or "", dst)
    finally:
        s.close()


def _broken(e: OSError) -> str:
    """The event kind for an established flow whose send/recv failed: a reset (ECONNRESET,
    EPIPE: the peer or a policy RST tore it down) is ``reset_after_established``, anything else
    ``closed``."""
    if from_errno(e.errno) is Outcome.RESET:
        return Outcome.RESET_AFTER_ESTABLISHED
    return "closed"


@dataclass
class FlowEvent:
    """Something that happened to a long-lived flow, at ``t_ns`` (CLOCK_REALTIME)."""

    flow_id: str
    kind: str  # established | connect_failed | reset_after_established | closed | stall | recovered
    t_ns: int
    detail: str = ""


@dataclass
class LongLivedFlow:
    """A TCP connection that sends ``message`` every ``period_s`` and expects it echoed back."""

    flow_id: str
    netns: str
    dst_ip: str
    port: int
    src_ip: str | None = None
    period_s: float = 0.1
    stall_s: float = 0.5
    events: list[FlowEvent] = field(default_factory=list)
    exchanges: int = 0
    state: str = "new"  # new | established | stalled | dead

    def event_kinds(self) -> list[str]:
        return [e.kind for e in self.events]


class LongLivedFlows:
    """Runs many ``LongLivedFlow``s from one selector thread. ``add`` connects (blocking up to
    ``connect_timeout_s``); ``stop`` closes everything. Each flow's ``events`` is its history."""

    def __init__(self) -> None:
        self.flows: list[LongLivedFlow] = []
        self._sel = selectors.DefaultSelector()
        self._stop_r, self._stop_w = os.pipe()
        self._sel.register(self._stop_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._socks: dict[str, socket.socket] = {}
        self._stopping = False

    def add(self, flow: LongLivedFlow, connect_timeout_s: float = 1.0) -> LongLivedFlow:
        """Connect the flow; on failure it gets a ``connect_failed`` event and stays ``dead``."""
        s = _socket_in(flow.netns, socket.SOCK_STREAM, flow.src_ip)
        s.settimeout(connect_timeout_s)
        try:
            s.connect((flow.dst_ip, flow.port))
        except OSError as e:
            name = "ETIMEDOUT" if isinstance(e, TimeoutError) else errno_name(e.errno or 0)
            flow.events.append(FlowEvent(flow.flow_id, "connect_failed", time.time_ns(), name))
            flow.state = "dead"
            s.close()
            self.flows.append(flow)
            return flow
        s.setblocking(False)
        flow.events.append(FlowEvent(flow.flow_id, "established", time.time_ns()))
        flow.state = "established"
        flow._sent_at = None  # type: ignore[attr-defined]  # time the outstanding message was sent
        flow._next = time.monotonic()  # type: ignore[attr-defined]
        flow._buf = b""  # type: ignore[attr-defined]
        with self._lock:
            self._socks[flow.flow_id] = s
            self.flows.append(flow)
            self._sel.register(s, selectors.EVENT_READ, flow)
        return flow

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="long-lived-flows", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        for s in self._socks.values():
            s.close()
        self._sel.close()
        os.close(self._stop_r)
        os.close(self._stop_w)

    def __enter__(self) -> LongLivedFlows:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _dead(self, flow: LongLivedFlow, kind: str, detail: str) -> None:
        flow.events.append(FlowEvent(flow.flow_id, kind, time.time_ns(), detail))
        flow.state = "dead"
        s = self._socks.pop(flow.flow_id, None)
        if s is not None:
            self._sel.unregister(s)
            s.close()

    def _loop(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            with self._lock:
                live = [f for f in self.flows if f.state in ("established", "stalled")]
            for f in live:
                s = self._socks[f.flow_id]
                if f._sent_at is None and now >= f._next:  # type: ignore[attr-defined]
                    msg = f"{f.flow_id}:{f.exchanges}\n".encode()
                    try:
                        s.send(msg)
                    except OSError as e:
                        self._dead(f, _broken(e), errno_name(e.errno or 0))
                        continue
                    f._sent_at, f._expect = now, len(msg)  # type: ignore[attr-defined]
                elif (f._sent_at is not None and f.state == "established"  # type: ignore[attr-defined]
                      and now - f._sent_at > f.stall_s):  # type: ignore[attr-defined]
                    f.state = "stalled"
                    f.events.append(FlowEvent(f.flow_id, "stall", time.time_ns(),
                                              f"no echo for {f.stall_s}s"))
            for key, _ in self._sel.select(timeout=0.005):
                f = key.data
                if f is None:
                    return
                s = key.fileobj
                try:
                    data = s.recv(65536)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    self._dead(f, _broken(e), errno_name(e.errno or 0))
                    continue
                if not data:
                    self._dead(f, "closed", "EOF from peer")
                    continue
                f._buf += data
                if len(f._buf) >= f._expect:  # type: ignore[attr-defined]
                    f._buf = b""
                    f.exchanges += 1
                    if f.state == "stalled":
                        f.state = "established"
                        f.events.append(FlowEvent(f.flow_id, "recovered", time.time_ns()))
                    f._next = f._sent_at + f.period_s  # type: ignore[attr-defined]
                    f._sent_at = None

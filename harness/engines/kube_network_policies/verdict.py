"""The userspace verdict loop of one node: NFQUEUE packets in, accept/drop out.

kube-network-policies v1.1.1 pkg/dataplane/controller.go Run: the queue is opened with
NfQaCfgFlagGSO (+ NfQaCfgFlagFailOpen with --fail-open), MaxPacketLen 128 (headers only),
MaxQueueLen 1024; per packet: parse (a parse error gets the default verdict: accept when
fail-open, else drop), evaluate (``policy.evaluate_packet``), then NF_ACCEPT with the conntrack
label CTLabelAccept set, or NF_DROP. Here the loop is a thread of the harness process whose
socket was made inside the node's namespace (``harness.kernel.nfqueue.Queue``).

In ``Datapath.COMPAT`` the label travels as ``ruleset.ACCEPT_MARK`` on the packet (the label
chain turns it into the label; see ``ruleset``), in NATIVE as NFQA_CT like the source's.

Per-packet cost is measured in the loop itself (``stats``): from parsing the packet to the
verdict's send, in ns (the source's packetProcessingHist, in µs there), and the thread's CPU
time (``cpu_ns``, receive included: what one core spends per verdict).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from harness.engines.kube_network_policies import ruleset as rs
from harness.engines.kube_network_policies.packet import BadPacket, parse_packet
from harness.engines.kube_network_policies.policy import PolicyCache, evaluate_packet
from harness.kernel import nfqueue

log = logging.getLogger(__name__)


@dataclass
class VerdictStats:
    """Counts and per-packet processing times (ns) of one loop."""

    accepted: int = 0
    dropped: int = 0
    parse_errors: int = 0
    cpu_ns: int = 0  # the loop thread's CPU time (receive and verdict syscalls included)
    processing_ns: list[int] = field(default_factory=list)
    decisions: list[tuple[int, str, str, int, bool]] = field(default_factory=list)  # (t_ns, src, dst, dport, ok)
    MAX_KEPT = 100_000

    def record(self, t_ns: int, src: str, dst: str, dport: int, ok: bool, cost_ns: int) -> None:
        if ok:
            self.accepted += 1
        else:
            self.dropped += 1
        if len(self.processing_ns) < self.MAX_KEPT:
            self.processing_ns.append(cost_ns)
            self.decisions.append((t_ns, src, dst, dport, ok))


class VerdictLoop:
    """One node's loop over queue ``opts.queue_id`` in ``netns_name``, deciding from ``cache``."""

    def __init__(self, node: str, netns_name: str, cache: PolicyCache, opts: rs.NftOptions):
        self.node, self.netns, self.cache, self.opts = node, netns_name, cache, opts
        self.stats = VerdictStats()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._queue: nfqueue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._labels = rs.generate_label_mask(opts.ct_label_accept)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind the queue (KernelError when it cannot) and start the thread."""
        self._stop.clear()
        self._queue = nfqueue.Queue(self.netns, self.opts.queue_id, fail_open=self.opts.fail_open)
        self._thread = threading.Thread(target=self._run, name=f"knp-verdict-{self.node}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and unbind the queue (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._queue is not None:
            self._queue.close()
            self._queue = None

    def _run(self) -> None:
        q = self._queue
        assert q is not None
        compat = self.opts.datapath is rs.Datapath.COMPAT
        while not self._stop.is_set():
            c0 = time.thread_time_ns()
            try:
                packets = q.receive(timeout=0.2)
            except OSError as e:
                if not self._stop.is_set():
                    self.errors.append(f"nfqueue {self.opts.queue_id} on {self.node}: {e}")
                return
            for pkt in packets:
                t0 = time.perf_counter_ns()
                try:
                    p = parse_packet(pkt.payload)
                except BadPacket:
                    # controller.go: "Can not process packet, applying default policy"
                    self.stats.parse_errors += 1
                    q.verdict(pkt.packet_id, nfqueue.ACCEPT if self.opts.fail_open else nfqueue.DROP)
                    continue
                ok = evaluate_packet(self.cache, p)
                if ok and compat:
                    mark = (pkt.mark & ~rs.QUEUE_MARK) | rs.ACCEPT_MARK
                    q.verdict(pkt.packet_id, nfqueue.ACCEPT, mark=mark)
                elif ok:
                    q.verdict(pkt.packet_id, nfqueue.ACCEPT, labels=self._labels)
                else:
                    q.verdict(pkt.packet_id, nfqueue.DROP)
                cost = time.perf_counter_ns() - t0
                self.stats.record(time.time_ns(), str(p.src_ip), str(p.dst_ip), p.dst_port, ok, cost)
            self.stats.cpu_ns += time.thread_time_ns() - c0

"""kube-proxy on one real node: syncs (render + apply, timed per phase) and the event path
(an EndpointSlice/Service change reaches the node after its own delivery delay, then waits for
kube-proxy's BoundedFrequencyRunner).

Sources (kubernetes v1.28.0): ``pkg/proxy/iptables/proxier.go`` NewProxier (``burstSyncs := 2``;
``NewBoundedFrequencyRunner("sync-runner", syncProxyRules, minSyncPeriod, time.Hour,
burstSyncs)``), syncProxyRules (partial syncs: ``tryPartialSync := !proxier.needFullSync``; a
failed restore sets needFullSync), ``pkg/util/async/bounded_frequency_runner.go`` (a token bucket
of ``burstRuns`` tokens refilled one per ``minInterval``; Run() requests collapse while one is
pending) and the KubeProxyConfiguration defaults (minSyncPeriod 1 s, syncPeriod 30 s).

Deliberate difference: a partial sync leaves out the chains of every service port whose
rendered lines did not change; kube-proxy leaves out those whose Service and EndpointSlice
objects had no pending change. The same lines reach the kernel either way, except for an
object change that renders the same (then kube-proxy rewrites identical chains).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.cluster.kube_proxy.apply import ExecLog, NodeIptables, stale_service_chains, timed
from harness.cluster.kube_proxy.render import (
    DEFAULT_CONFIG,
    KubeProxyConfig,
    ProxyView,
    render,
    stale_udp_conntrack,
)

log = logging.getLogger(__name__)

BURST_SYNCS = 2  # P NewProxier: burstSyncs := 2


@dataclass
class ProxySync:
    """One kube-proxy sync on one node: CLOCK_REALTIME ns, phases in ns, what was written."""

    node: str
    start_ns: int
    end_ns: int
    full: bool
    phases: dict[str, int]
    execs: int
    services_written: int
    services_skipped: int
    stale_chains: int
    endpoints: int
    requested_ns: list[int] = field(default_factory=list)  # emission times of the events it covers
    conntrack_deleted: int = 0  # UDP entries flushed after the restore (CleanStaleEntries)

    @property
    def total_ns(self) -> int:
        return self.end_ns - self.start_ns

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "start_ns": self.start_ns, "end_ns": self.end_ns, "full": self.full,
                "phases": dict(self.phases), "execs": self.execs, "services_written": self.services_written,
                "services_skipped": self.services_skipped, "stale_chains": self.stale_chains,
                "endpoints": self.endpoints, "requested_ns": list(self.requested_ns),
                "conntrack_deleted": self.conntrack_deleted}


class TokenBucket:
    """bounded_frequency_runner.go's limiter: ``burst`` tokens, one more every ``interval_s``;
    ``wait_s(now)`` says how long until a run may start. Pure (time is passed in)."""

    def __init__(self, interval_s: float, burst: int = BURST_SYNCS, now: float = 0.0):
        self.interval = interval_s
        self.burst = burst
        self.tokens = float(burst)
        self.last = now

    def _refill(self, now: float) -> None:
        if self.interval <= 0:
            self.tokens = float(self.burst)
        else:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) / self.interval)
        self.last = now

    def wait_s(self, now: float) -> float:
        """Seconds until one token is available (0 if one is)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * self.interval

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1


class KubeProxyNode:
    """kube-proxy in one node's namespace. ``sync(view)`` runs one sync now; ``start(view)`` runs
    the initial full sync and starts the event path, ``deliver(view, emitted_ns)`` hands it a
    changed view that arrives after ``delay_ns(...)``; ``stop()`` ends it (the rules stay until
    the namespace goes, as a stopped kube-proxy leaves them)."""

    def __init__(self, node: str, netns_name: str, *, backend: str = "nft",
                 config: KubeProxyConfig = DEFAULT_CONFIG,
                 delay_ns: Callable[[], int] | None = None,
                 on_sync: Callable[[ProxySync], None] | None = None,
                 service_route: tuple[str, ...] | None = None):
        self.node = node
        self.netns = netns_name
        self.config = config
        self.tools = NodeIptables(netns_name, backend)
        self.delay_ns = delay_ns or (lambda: 0)
        self.on_sync = on_sync
        self.service_route = service_route  # (service CIDR, gateway[, MAC]): NodeIptables.route_service_cidr
        self.records: list[ProxySync] = []
        self.errors: list[str] = []
        self._need_full = True  # P NewProxier: needFullSync: true
        self._written: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._last_cleanup = 0.0
        self._synced_view: ProxyView | None = None  # the view of the last successful sync
        self._cv = threading.Condition()
        self._inbox: list[tuple[int, int, int, ProxyView]] = []  # (deliver_at_ns, seq, emitted_ns, view) heap
        self._seq = 0
        self._view: ProxyView | None = None
        self._pending: list[int] = []
        self._stop = False
        self._thread: threading.Thread | None = None
        self._last_deliver = 0

    # -- one sync -----------------------------------------------------------------------------
    def sync(self, view: ProxyView, requested_ns: list[int] | None = None) -> ProxySync:
        """One syncProxyRules for ``view``: full (jump rules ensured, every chain written) the
        first time and after a failure, partial otherwise. Raises KernelError on a failed restore."""
        start = time.time_ns()
        full = self._need_full
        ex = ExecLog()
        rs = timed(ex, "render", render, view, self.config)
        if full:
            timed(ex, "ensure_jumps", self.tools.ensure_jumps, ex)
        current = {name: (tuple(g.chains), tuple(g.rules)) for name, g in rs.services.items()}
        skip = set() if full else {n for n, lines in current.items() if self._written.get(n) == lines}
        stale: list[str] = []
        now = time.monotonic()
        # P: stale chains are looked for on every sync, in large-cluster mode once per syncPeriod
        if not rs.large_cluster_mode or now - self._last_cleanup > self.config.sync_period_s:
            existing = timed(ex, "iptables_save", self.tools.nat_chains, ex)
            stale = stale_service_chains(existing, rs.active_nat_chains)
            self._last_cleanup = now
        text = rs.restore_text(skip=skip, stale_nat_chains=stale)
        try:
            timed(ex, "iptables_restore", self.tools.restore, text, ex)
        except Exception:
            self._need_full = True  # P: "we've lost the state needed to be able to do a partial sync"
            raise
        self._need_full = False
        self._written = current
        # P: "Finish housekeeping, clear stale conntrack entries for UDP Services"
        deleted = 0
        for args in stale_udp_conntrack(self._synced_view, view):
            deleted += timed(ex, "conntrack_cleanup", self.tools.conntrack_delete, args, ex)
        self._synced_view = view
        end = time.time_ns()
        rec = ProxySync(self.node, start, end, full, ex.phases, ex.execs, len(current) - len(skip), len(skip),
                        len(stale), rs.total_endpoints, list(requested_ns or []), deleted)
        self.records.append(rec)
        if self.on_sync is not None:
            self.on_sync(rec)
        return rec

    # -- the event path -----------------------------------------------------------------------
    def start(self, view: ProxyView) -> ProxySync:
        """The node's service-CIDR route (if configured), the initial (full) sync, then the event thread."""
        if self.service_route is not None:
            self.tools.route_service_cidr(*self.service_route)
        rec = self.sync(view)
        self._view = view
        self._thread = threading.Thread(target=self._loop, name=f"kube-proxy-{self.node}", daemon=True)
        self._thread.start()
        return rec

    def deliver(self, view: ProxyView, emitted_ns: int | None = None) -> int:
        """Queue a changed view emitted at ``emitted_ns``; returns its delivery time (ns). Deliveries
        keep emission order (an informer's watch is ordered)."""
        emitted = emitted_ns if emitted_ns is not None else time.time_ns()
        with self._cv:
            at = max(emitted + self.delay_ns(), self._last_deliver)
            self._last_deliver = at
            self._seq += 1
            heapq.heappush(self._inbox, (at, self._seq, emitted, view))
            self._cv.notify()
        return at

    def wait_synced(self, emitted_ns: int, timeout: float = 10.0) -> ProxySync:
        """The first sync that covers an event emitted at ``emitted_ns`` (raises TimeoutError)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for rec in self.records:
                    if emitted_ns in rec.requested_ns:
                        return rec
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"kube-proxy on {self.node}: no sync covered the event after {timeout} s")
                self._cv.wait(min(left, 0.05))

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        bucket = TokenBucket(self.config.min_sync_period_s, BURST_SYNCS, time.monotonic())
        bucket.take(time.monotonic())  # the initial sync used a token
        retry_at: float | None = None  # P: a failed sync -> syncRunner.RetryAfter(syncPeriod)
        while True:
            with self._cv:
                while not self._stop:
                    now_ns = time.time_ns()
                    while self._inbox and self._inbox[0][0] <= now_ns:
                        _, _, emitted, view = heapq.heappop(self._inbox)
                        self._view = view
                        self._pending.append(emitted)
                    wait = None
                    if self._pending:
                        now = time.monotonic()
                        wait = max(bucket.wait_s(now), (retry_at - now) if retry_at is not None else 0.0)
                        if wait <= 0:
                            break
                    if self._inbox:
                        next_s = (self._inbox[0][0] - now_ns) / 1e9
                        wait = next_s if wait is None else min(wait, next_s)
                    self._cv.wait(wait if wait is None else max(wait, 0.0005))
                if self._stop:
                    return
                view, requested = self._view, self._pending
                self._pending = []
            bucket.take(time.monotonic())
            retry_at = None
            try:
                assert view is not None
                self.sync(view, requested)
            except Exception as e:  # kube-proxy logs it and retries after syncPeriod (the next full sync)
                log.warning("kube-proxy on %s: sync failed: %s", self.node, e)
                self.errors.append(str(e))
                retry_at = time.monotonic() + self.config.sync_period_s
                with self._cv:
                    self._pending = requested + self._pending  # still owed a sync
            with self._cv:
                self._cv.notify_all()

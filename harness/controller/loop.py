"""The per-node controller loop around a policy engine, running against the lab.

    from harness.controller import Controller, ControllerConfig
    with Controller(lab, ControllerConfig(profile="v2.10", strategy="restore", backend="nft",
                                          delivery="uniform:0.01,0.1")) as ctl:
        added = ctl.add_pod(Pod("batch", "job-1", "node-b", labels={"app": "backup"}))
        ctl.await_programmed(added.pod.key, timeout=5, nodes="all")
        ctl.timeline.lag_ns(added.event.seq, "node-a")

The engine (``harness.engines.base``) is handed in (``Controller(lab, config, engine=...)``) or
named by ``config.engine`` and looked up in ``harness.engines.registry``; this module names none.
Per node there are two threads (the work happens in subprocesses and the kernel):

- **delivery**: events emitted by the ``Controller`` reach the node after a delay drawn from
  the node's delivery model (standing in for kubelet -> API server -> informer), in order. Each
  is applied to the node's *own view* of the cluster, so one node can lag behind another. If
  the engine would act on it (``NodeEngine.wants_sync``: e.g. pods without an IP are ignored), a
  full sync is requested through the 1-slot channel; an asynchronous engine gets every event.
- **sync** (synchronous engines): an initial full sync at start, then one per taken request,
  plus a periodic resync every ``resync_period_s`` (the controller's ticker, default 5 min).
  Each sync: version from the engine (the start time in ns: syncVersion), snapshot of the view,
  and the engine programs the node for it (render + apply through its strategy and backend).
  Requests arriving during a sync collapse into one follow-up sync.

Everything lands in a ``Timeline`` (CLOCK_REALTIME ns): event emitted and delivered per node,
every request (queued or collapsed), every sync with its phases.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.controller import events as ev
from harness.controller.channel import SyncChannel, SyncRequest
from harness.controller.delivery import Delivery
from harness.controller.timeline import Phase, SyncRecord, Timeline
from harness.engines import registry
from harness.engines.base import NotProgrammed
from harness.engines.config import EnforcementConfig
from harness.errors import ConfigError, HarnessError
from harness.model.cluster import Cluster, Pod
from harness.model.policy import NetworkPolicy

log = logging.getLogger(__name__)

DEFAULT_RESYNC_PERIOD_S = 300.0  # the reproduced controller's --iptables-sync-period default (5m)
# order in which an apply runs its timed phases (the sync-metric names the engines report)
PHASE_ORDER = ("top_level_time", "iptables_save_time", "ipset_save_time", "ipset_restore_time",
               "relist_time", "local_pods_ipset_time", "list_chains_time", "iptables_restore_time",
               # the nftables datapath's (harness.engines.kube_router.apply.nftables)
               "static_chains_time", "policy_chains_sync_time", "pod_chains_time", "top_level_sync_time",
               "stale_cleanup_time")

__all__ = ["DEFAULT_RESYNC_PERIOD_S", "AddedPod", "Controller", "ControllerConfig", "NodeController", "NotProgrammed",
           "phases_of"]


@dataclass
class ControllerConfig(EnforcementConfig):
    """How every node's controller behaves: the enforcement fields (``EnforcementConfig``:
    engine, profile, strategy, backend, default_deny, reject_with, external_cmd) and the loop's
    own: ``resync_period_s`` (periodic full sync), ``delivery`` (a ``Delivery`` or a spec
    ``harness.controller.delivery`` parses: ``0.05``, ``uniform:0.01,0.1``, ``{"default": ...,
    "node-a": ...}``), ``seed`` for the delivery draws, ``external`` (node -> argv of an external
    program that is that node's engine instead, see ``harness.engines.external``),
    ``initial_sync`` (a full sync at start), ``lister_skew`` (kube-router's second pod listing
    inside a sync, taken when the policy sets are restored; on by default, as kube-router always
    lists twice; False programs every sync from one snapshot).
    ``before_apply(node, rendered, sync_record)`` is a hook called in the sync thread between
    render and apply (tests use it to hold a sync open)."""

    resync_period_s: float = DEFAULT_RESYNC_PERIOD_S
    delivery: Any = None
    seed: int = 0
    external: dict[str, list[str]] = field(default_factory=dict)
    initial_sync: bool = True
    # kube-router lists pods twice per sync (v2.10.0:pkg/controllers/netpol/network_policy_controller.go
    # fullPolicySync: buildNetworkPoliciesInfo, then pod.go syncPodFirewallChains' own listing):
    # with lister_skew the second listing is the node's view when the sets are restored. Always so in
    # kube-router, hence the default; False is the harness's idealised one-snapshot sync.
    lister_skew: bool = True
    before_apply: Callable[[str, Any, SyncRecord], None] | None = None

    def validated(self, source: str | None = None, engine: Any = None) -> ControllerConfig:
        """A copy with ``delivery`` parsed; ConfigError (file: field: problem) on a bad value
        (the enforcement fields are checked by the engine: ``engine`` or the one named)."""
        registry.resolve(self, engine, source)
        for node, argv in self.external.items():
            if not argv or not all(isinstance(a, str) and a for a in argv):
                raise ConfigError(source, f"external.{node}", "must be a non-empty command (list of strings)")
        if not self.resync_period_s > 0:
            raise ConfigError(source, "resync_period_s", f"must be > 0, got {self.resync_period_s!r}")
        return dataclasses.replace(self, delivery=Delivery.parse(self.delivery, self.seed, source))


def phases_of(start_ns: int, render_ns: int, timings: dict[str, Any]) -> list[Phase]:
    """The sync's phases on the real-time axis: render from the sync start, then the apply's
    timed phases back to back from the apply's ``start_ns`` (durations as measured)."""
    out = [Phase("render", start_ns, start_ns + render_ns)]
    t = int(timings.get("start_ns") or start_ns + render_ns)
    for name in PHASE_ORDER:
        d = int(timings.get(name) or 0)
        if d:
            out.append(Phase(name, t, t + d))
            t += d
    return out


class NodeController:
    """One node's controller: its delivery queue, view, 1-slot channel and sync loop, driving
    the node's engine (``harness.engines.base.NodeEngine``). A synchronous engine is programmed
    by this loop's syncs; an asynchronous one gets every delivered event and reports its own
    syncs (then there is no sync thread here)."""

    def __init__(self, node: str, netns_name: str, view: Cluster, config: ControllerConfig, timeline: Timeline,
                 engine: Any, *, kind: str | None = None):
        self.node = node
        self.netns = netns_name
        self.view = view
        self.config = config
        self.timeline = timeline
        self.engine = engine
        self.kind = kind or getattr(engine, "strategy", "engine")
        self.schedule = config.delivery.schedule(node)
        self.channel = SyncChannel()
        self._errors: list[str] = []
        self.last_delivered_seq = 0
        self._view_lock = threading.Lock()
        self._queue: list[tuple[int, int, ev.ClusterEvent]] = []
        self._queue_cond = threading.Condition()
        self._in_flight = 0  # events popped from the queue and not yet fully delivered
        self._stop = threading.Event()
        self._syncing = False
        self._threads: list[threading.Thread] = []

    @property
    def errors(self) -> list[str]:
        """What went wrong and was survived: failed syncs, dead threads, the engine's own."""
        return [*self._errors, *self.engine.errors]

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.engine.reports_syncs:
            with self._view_lock:
                self.engine.start(self.view)
            self._spawn(self._delivery_loop, "deliver")
            return
        self.engine.start(self.view)
        self._spawn(self._delivery_loop, "deliver")
        self._spawn(self._sync_loop, "sync")
        self._spawn(self._ticker_loop, "ticker")  # NewTicker at Run's start, before the first sync

    def _spawn(self, fn: Callable[[], None], what: str) -> None:
        t = threading.Thread(target=self._guard, args=(fn,), name=f"ctl-{self.node}-{what}", daemon=True)
        self._threads.append(t)
        t.start()

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as e:  # a dead loop must not go unnoticed
            log.exception("controller thread of %s died", self.node)
            self._errors.append(f"{type(e).__name__}: {e}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loops (a sync in progress finishes first), then the engine."""
        self._stop.set()
        self.channel.close()
        with self._queue_cond:
            self._queue_cond.notify_all()
        if self.engine.reports_syncs:
            self.engine.stop(timeout)
        for t in self._threads:
            t.join(timeout)
        if not self.engine.reports_syncs:
            self.engine.stop(timeout)

    def idle(self) -> bool:
        """No event waiting for delivery, no request pending, no sync running (an asynchronous
        engine's own work is not visible here: only delivery counts)."""
        with self._queue_cond:
            queued = bool(self._queue) or self._in_flight > 0
        if self.engine.reports_syncs:
            return not queued
        return not queued and not self.channel.pending and not self._syncing

    # -- delivery -------------------------------------------------------------------------------
    def enqueue(self, event: ev.ClusterEvent) -> int:
        """Schedule ``event`` for delivery; returns the planned delivery time (ns)."""
        with self._queue_cond:
            at = self.schedule.deliver_at(event.emitted_ns)
            heapq.heappush(self._queue, (at, event.seq, event))
            self._queue_cond.notify_all()
            return at

    def _delivery_loop(self) -> None:
        while True:
            with self._queue_cond:
                while not self._stop.is_set():
                    if self._queue:
                        wait_ns = self._queue[0][0] - time.time_ns()
                        if wait_ns <= 0:
                            break
                        self._queue_cond.wait(wait_ns / 1e9)
                    else:
                        self._queue_cond.wait()
                if self._stop.is_set():
                    return
                _, _, event = heapq.heappop(self._queue)
                self._in_flight += 1
            try:
                self._deliver(event)
            finally:
                with self._queue_cond:
                    self._in_flight -= 1

    def _deliver(self, event: ev.ClusterEvent) -> None:
        with self._view_lock:
            requested = self.engine.wants_sync(event, self.view)
            ev.apply_event(self.view, event)
            self.last_delivered_seq = event.seq
            t = time.time_ns()
        self.timeline.delivered(event.seq, self.node, t, requested)
        self._on_delivered(event, requested)

    def _on_delivered(self, event: ev.ClusterEvent, requested: bool) -> None:
        if self.engine.reports_syncs:
            self.engine.deliver(event)  # it decides itself what to do with every event
        elif requested:
            self.request_sync("event", event.seq)

    def request_sync(self, reason: str = "manual", seq: int = 0) -> bool:
        """RequestFullSync of the reproduced controller; True if the request took the empty slot
        (an asynchronous engine is asked directly, and it always "takes" it)."""
        if self.engine.reports_syncs:
            self.engine.request_sync(reason)
            return True
        req = SyncRequest(self.node, reason, time.time_ns(), seq)
        queued = self.channel.request(req)
        self.timeline.request(req)
        return queued

    # -- sync -------------------------------------------------------------------------------------
    def _sync_loop(self) -> None:
        """The full-sync goroutine: take the 1-slot channel, sync, repeat. Periodic requests come
        from ``_ticker_loop`` through the same channel (v2.10.0:network_policy_controller.go Run)."""
        if self.config.initial_sync:
            self.sync_once(["initial"])
        while not self._stop.is_set():
            reqs = self.channel.take()
            if reqs is None or self._stop.is_set():
                return
            # a manual or periodic request forces a full apply (the incremental strategy otherwise diffs)
            try:
                self.sync_once([f"{r.reason}#{r.seq}" if r.seq else r.reason for r in reqs],
                               full=any(r.reason in ("manual", "periodic") for r in reqs))
            finally:
                self.channel.done()

    def _ticker_loop(self) -> None:
        """kube-router's Run loop: ``t := time.NewTicker(syncPeriod)``; ``for { RequestFullSync();
        <-t.C }`` (v1.2.1..v2.10.0:network_policy_controller.go Run). A request every period at a
        fixed cadence from start, whether a sync is running or not: into an empty slot it queues
        a sync (right after the running one), into a full one it collapses. The Run loop only
        blocks on the ticker, so no tick is missed (a late one keeps the cadence: Go's ticker
        drops ticks only for a slow receiver). The first request (at start) is the initial sync."""
        period = self.config.resync_period_s
        next_tick = time.monotonic() + period
        while not self._stop.wait(max(next_tick - time.monotonic(), 0.0)):
            self.request_sync("periodic")
            next_tick += period
            while next_tick <= time.monotonic():  # time.Ticker drops ticks a slow receiver missed
                next_tick += period

    def sync_once(self, reasons: Iterable[str], *, full: bool = False) -> SyncRecord:
        """One full sync now, in the calling thread (the sync loop's normally): snapshot of the
        view, then the engine programs the node for it."""
        cfg = self.config
        self._syncing = True
        try:
            start_ns = time.time_ns()
            version = self.engine.sync_version(start_ns)
            with self._view_lock:
                snap = ev.snapshot(self.view)
                through = self.last_delivered_seq
            rec = self.timeline.sync_started(self.node, version, start_ns, through, list(reasons), self.engine.strategy)
            hook = None
            if cfg.before_apply is not None:
                def hook(rendered: Any) -> None:
                    cfg.before_apply(self.node, rendered, rec)  # type: ignore[misc]
            r0 = time.perf_counter_ns()
            try:
                kwargs: dict[str, Any] = {}
                if cfg.lister_skew and getattr(self.engine, "supports_relist", False):
                    kwargs["relist_view"] = self._relist_view
                done = self.engine.program(snap, sync_version=version, full=full, before_apply=hook, **kwargs)
            except Exception as e:  # the controller logs a failed sync and keeps running
                msg = str(e) if isinstance(e, HarnessError) else f"{type(e).__name__}: {e}"
                log.warning("sync %d of %s failed: %s", rec.index, self.node, msg,
                            exc_info=not isinstance(e, HarnessError))
                self._errors.append(msg)
                self.timeline.sync_finished(rec, end_ns=time.time_ns(), render_ns=time.perf_counter_ns() - r0,
                                            error=msg)
                return rec
            timings = done.timings
            self.timeline.sync_finished(
                rec, end_ns=time.time_ns(), sets_ns=int(timings.get("sets_ns") or 0),
                rules_ns=int(timings.get("rules_ns") or 0), render_ns=done.render_ns, timings=timings,
                phases=phases_of(start_ns, done.render_ns, timings))
            log.debug("%s sync %d (%s) in %.1f ms", self.node, rec.index, ",".join(rec.reasons), rec.total_ns / 1e6)
            return rec
        finally:
            self._syncing = False

    def _relist_view(self) -> Cluster:
        """The node's view now (a second lister read inside a sync)."""
        with self._view_lock:
            return ev.snapshot(self.view)

    def wait_initial(self, timeout: float) -> SyncRecord:
        """Wait for the node's first finished sync; NotProgrammed on timeout or failure."""
        if self.engine.reports_syncs:
            return self.engine.wait_initial(timeout)
        rec = self.timeline.wait_for(lambda: next(iter(self.timeline.node_syncs(self.node, done_only=True)), None),
                                     timeout)
        if rec is None:
            raise NotProgrammed(f"node {self.node}: no initial sync within {timeout:g} s"
                                + (f" ({self.errors[-1]})" if self.errors else ""))
        if rec.error:
            raise NotProgrammed(f"node {self.node}: initial sync failed: {rec.error}")
        return rec


@dataclass
class AddedPod:
    """A pod wired by the lab (CNI ADD) and announced: ``ready_ns`` = network ready (the lab's
    time after the last netlink ack), ``event`` = its pod-added event (seq, emitted_ns)."""

    pod: Pod
    ready_ns: int
    event: ev.ClusterEvent


class Controller:
    """One controller per real node of ``lab`` (or of ``nodes``), fed by the events this object
    emits. ``api`` is the API server's cluster (the lab's model): it changes at emission, every
    node's view changes at delivery. Use as a context manager (``start``/``stop``)."""

    def __init__(self, lab: Any, config: ControllerConfig | None = None, *, nodes: Iterable[str] | None = None,
                 source: str | None = None, engine: Any = None):
        self.lab = lab
        self.api: Cluster = lab.cluster
        # the engine is handed in (or named by the config), never imported here
        self.engine = registry.resolve(config or ControllerConfig(), engine, source)
        self.config = (config or ControllerConfig()).validated(source, self.engine)
        bind = getattr(self.engine, "bind_lab", None)
        if bind is not None:  # an engine that needs the lab itself (the binary one serves its API)
            bind(lab)
        self.timeline = Timeline()
        self._emit_lock = threading.Lock()
        self._started = False
        names = list(nodes) if nodes is not None else [n.name for n in self.api.real_nodes()]
        self.nodes: dict[str, NodeController] = {}
        for name in names:
            netns_name = lab.node_netns(name)
            argv = self.config.external.get(name)
            if argv:  # this node runs an external program instead of the configured engine
                ext = registry.get_engine("external", source)
                node_engine, kind = ext.node(name, netns_name, self.config, self.timeline, argv=argv), ext.name
            else:
                node_engine, kind = self.engine.node(name, netns_name, self.config, self.timeline), self.engine.name
            self.nodes[name] = NodeController(name, netns_name, ev.view_of(self.api), self.config, self.timeline,
                                              node_engine, kind=kind)

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Controller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, wait: bool = True, timeout: float = 60.0) -> Controller:
        """Start every node's loops; with ``wait``, return once every initial sync finished."""
        self._started = True
        try:
            for nc in self.nodes.values():
                nc.start()
            if wait and self.config.initial_sync:
                for nc in self.nodes.values():
                    nc.wait_initial(timeout)
        except BaseException:
            self.stop()  # no thread or external process outlives a failed start
            raise
        return self

    def stop(self) -> None:
        """Stop every node's loops and engines (and external processes). Kernel state stays for the lab."""
        for nc in self.nodes.values():
            nc.stop()
        self._started = False

    @property
    def errors(self) -> dict[str, list[str]]:
        return {n: list(nc.errors) for n, nc in self.nodes.items() if nc.errors}

    # -- events ----------------------------------------------------------------------------------
    def emit(self, event: ev.ClusterEvent, *, apply_to_api: bool = True) -> ev.ClusterEvent:
        """Stamp ``event`` (seq, emitted_ns), apply it to the API cluster and send it to every
        node's delivery queue. Returns the stamped event."""
        with self._emit_lock:  # seq order = emission order = queue order on every node
            rec = self.timeline.new_event(event.kind.value, event.key)
            event.seq, event.emitted_ns = rec.seq, rec.emitted_ns
            if apply_to_api:
                ev.apply_event(self.api, event)
            for nc in self.nodes.values():
                nc.enqueue(event)
        log.debug("emitted %s", event.describe())
        return event

    def add_pod(self, pod: Pod, *, announce_pending: bool = False) -> AddedPod:
        """CNI ADD in the lab (the pod gets its IP and network), then its pod-added event (with
        the IP) is emitted, as kubelet reports the pod's IP to the API server. With
        ``announce_pending``, a pod-added event without IP goes first (the API server's view of
        a scheduled pod; the controller ignores it) and the IP arrives as a pod-updated event."""
        if announce_pending:
            pending = ev.pod_added(pod)
            pending.pod.ip = None  # type: ignore[union-attr]
            self.emit(pending, apply_to_api=False)  # the lab's add_pod puts it in the API cluster
        ready = self.lab.add_pod(pod)
        make = ev.pod_updated if announce_pending else ev.pod_added
        event = self.emit(make(self.api.pods[pod.key]), apply_to_api=False)
        return AddedPod(self.api.pods[pod.key], ready, event)

    def announce_pod(self, pod: Pod) -> ev.ClusterEvent:
        """Emit pod-added for a pod without touching the lab (model-only pods, or a pod without
        IP yet, which the controller ignores)."""
        return self.emit(ev.pod_added(pod))

    def remove_pod(self, key: str) -> ev.ClusterEvent:
        """CNI DEL in the lab (if the lab has the pod), then pod-deleted."""
        if key in self.api.pods:
            self.lab.remove_pod(key)  # also drops it from the API cluster (the lab's model)
        return self.emit(ev.pod_removed(key))

    def update_pod_status(self, key: str, *, phase: str | None = None, ip: Any = ...) -> ev.ClusterEvent:
        """A kubelet status update: the pod's ``phase`` (``Running``, ``Succeeded`` ...) and/or IP
        change (``ev.pod_status``). A finished pod stays in the lab (its namespace keeps its
        address) but kube-router v1.2.3+ drops it from its sets at the next sync."""
        return self.emit(ev.pod_status(self.api.pods[key], phase=phase, ip=ip))

    def relabel_pod(self, key: str, labels: dict[str, str]) -> ev.ClusterEvent:
        return self.emit(ev.pod_relabeled(self.api.pods[key], labels))

    def relabel_namespace(self, name: str, labels: dict[str, str]) -> ev.ClusterEvent:
        return self.emit(ev.namespace_relabeled(name, labels))

    def create_policy(self, policy: NetworkPolicy) -> ev.ClusterEvent:
        return self.emit(ev.policy_created(policy))

    def update_policy(self, policy: NetworkPolicy) -> ev.ClusterEvent:
        return self.emit(ev.policy_updated(policy))

    def delete_policy(self, key: str) -> ev.ClusterEvent:
        return self.emit(ev.policy_deleted(key))

    # -- waiting ---------------------------------------------------------------------------------
    def _targets(self, nodes: str | Iterable[str] | None, default: list[str]) -> list[str]:
        if nodes is None:
            targets = default
        elif nodes == "all":
            targets = list(self.nodes)
        elif isinstance(nodes, str):
            targets = [nodes]
        else:
            targets = list(nodes)
        missing = [n for n in targets if n not in self.nodes]
        if missing:
            raise HarnessError(f"no controller on node(s) {', '.join(missing)}")
        return targets

    def await_event(self, seq: int, timeout: float = 10.0, nodes: str | Iterable[str] | None = "all") -> int:
        """Block until every target node finished a sync that included event ``seq``; returns
        the latest time (ns) those syncs' rules were in force. NotProgrammed on timeout."""
        targets = self._targets(nodes, list(self.nodes))

        def query() -> int | None:
            times = [self.timeline.programmed_ns(n, seq) for n in targets]
            return None if any(t is None for t in times) else max(times)  # type: ignore[type-var]

        got = self.timeline.wait_for(query, timeout)
        if got is None:
            late = [n for n in targets if self.timeline.programmed_ns(n, seq) is None]
            raise NotProgrammed(f"event #{seq} not programmed on {', '.join(late)} within {timeout:g} s")
        return got

    def await_programmed(self, pod_key: str, timeout: float = 10.0, nodes: str | Iterable[str] | None = None) -> int:
        """cni-wait: block until the pod's latest add/update event is in force on its own node
        (``nodes=None``, what Calico's CNI waits for) or on ``nodes`` (``"all"``: every node with a
        controller, i.e. also the nodes that must admit its traffic). Returns CLOCK_REALTIME ns."""
        rec = self.timeline.last_event_for(pod_key, (ev.EventKind.POD_ADDED.value, ev.EventKind.POD_UPDATED.value))
        if rec is None:
            raise HarnessError(f"no pod-added event for {pod_key}")
        pod = self.api.pods.get(pod_key)
        own = [pod.node] if pod is not None else []
        return self.await_event(rec.seq, timeout, self._targets(nodes, own))

    def wait_idle(self, timeout: float = 30.0, poll_s: float = 0.005) -> bool:
        """Wait until every node has delivered everything and no sync is pending or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(nc.idle() for nc in self.nodes.values()):
                for nc in self.nodes.values():  # an engine whose own work the loop cannot see
                    quiet = getattr(nc.engine, "wait_quiet", None)
                    if quiet is not None:
                        quiet(timeout=max(deadline - time.monotonic(), 0.1))
                return True
            time.sleep(poll_s)
        return False

    def request_sync(self, node: str | None = None) -> None:
        """Ask one node (or all) for a full sync, as a manual trigger."""
        for name in self._targets(node, list(self.nodes)):
            self.nodes[name].request_sync("manual")

    def force_sync(self, nodes: str | Iterable[str] | None = "all", timeout: float = 60.0) -> list[SyncRecord]:
        """Request a full sync on ``nodes`` and wait until, on each, a sync that started after the
        request finished; returns those syncs (what "100 full syncs" scenarios loop over)."""
        targets = self._targets(nodes, list(self.nodes))
        t0 = time.time_ns()
        for name in targets:
            self.nodes[name].request_sync("manual")

        def query() -> list[SyncRecord] | None:
            got = []
            for name in targets:
                rec = next((s for s in self.timeline.syncs_after(name, t0) if s.done), None)
                if rec is None:
                    return None
                got.append(rec)
            return got

        out = self.timeline.wait_for(query, timeout)
        if out is None:
            raise NotProgrammed(f"no full sync finished on {', '.join(targets)} within {timeout:g} s")
        return out

    # -- results ---------------------------------------------------------------------------------
    def metrics(self):  # -> ControllerMetrics
        """Histograms of every finished sync per node under the engine's metric names
        (``engine.metric_set``; the generic ones when it names none)."""
        from harness.controller.metrics import GENERIC, ControllerMetrics

        return ControllerMetrics.from_syncs(self.timeline.syncs, getattr(self.engine, "metric_set", GENERIC))

    def view(self, node: str) -> Cluster:
        """A snapshot of what ``node``'s controller currently believes the cluster is."""
        nc = self.nodes[node]
        with nc._view_lock:
            return ev.snapshot(nc.view)

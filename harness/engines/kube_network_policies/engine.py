"""kube-network-policies as an engine (``harness.engines.base``): nftables + NFQUEUE first-packet
verdicts, reproduced from kubernetes-sigs/kube-network-policies v1.1.1 (its newest tag in the
mirror; the ``standard`` binary, cmd/kube-network-policies/standard/main.go).

Per real node (asynchronous: it records its own syncs):

- a cache fed by every delivered event (``policy.PolicyCache``; the informers of Pods,
  Namespaces, NetworkPolicies). The delivery delay is this engine's window: a packet of a pod
  the cache does not know yet is judged as coming from "no pod";
- the nftables table (``ruleset``), re-synced by a BoundedFrequencyRunner (pkg/runner:
  minInterval 1 s, maxInterval 1 h; controller.go newController) when an informer handler asks
  (networkpolicy.go NewStandardNetworkPolicy: a pod event of a local pod some policy selects, a
  policy event of a policy selecting a local pod; namespaces trigger nothing);
- the verdict loop (``verdict.VerdictLoop``).

Sync records: one per nftables sync (strategy ``nftables``; through_seq = the last event in
the cache when the sync read it), and for an event that asks for no nftables sync one
``cache`` record at its delivery (the cache is the whole effect), claiming only events up to
the first one still waiting for an nftables sync.

Not reproduced (said in docs/kube-network-policies.md): --strict-mode's conntrack re-evaluation of established flows
(firewallEnforcer), NRI (the harness has no container runtime: as with --disable-nri),
metrics, AdminNetworkPolicy/BaselineAdminNetworkPolicy (the separate npa-v1alpha1/v1alpha2
binaries of that tag; the ``standard`` binary has no ANP evaluator). The source's Shutdown
keeps the table when fail-open; the harness always removes it on ``stop`` (teardown leaves
nothing), and ``crash`` stops only the verdict loop (the controller died, its rules stay).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from harness.controller import events as ev
from harness.controller.timeline import SyncRecord, Timeline
from harness.engines.base import BeforeApply, NotProgrammed, Programmed
from harness.engines.config import EnforcementConfig, check_common
from harness.engines.kube_network_policies import dataplane
from harness.engines.kube_network_policies import ruleset as rs
from harness.engines.kube_network_policies.policy import PodInfo, PolicyCache
from harness.engines.kube_network_policies.verdict import VerdictLoop
from harness.errors import ConfigError, HarnessError
from harness.model.cluster import Cluster

log = logging.getLogger(__name__)

PROFILES = ("v1.1.1",)
MIN_INTERVAL_S = 1.0  # controller.go newController: NewBoundedFrequencyRunner(..., 1*time.Second, ...)
MAX_INTERVAL_S = 3600.0  # ... 1*time.Hour


class KubeNetworkPoliciesNode:
    """One node's kube-network-policies (see the module docstring)."""

    reports_syncs = True
    strategy = "nftables"

    def __init__(self, node: str, netns_name: str, config: EnforcementConfig, timeline: Timeline | None):
        self.node, self.netns, self.config = node, netns_name, config
        self.timeline = timeline if timeline is not None else Timeline()
        self.errors: list[str] = []
        self.cache = PolicyCache()
        self.opts = rs.NftOptions(fail_open=config.fail_open)
        self.loop: VerdictLoop | None = None
        self._sync_lock = threading.Lock()
        self._last_seq = 0
        self._pending_seq = 0  # the first delivered event waiting for an nftables sync (0: none)
        self._request = threading.Event()
        self._stop = threading.Event()
        self._runner: threading.Thread | None = None
        self._first: SyncRecord | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, view: Cluster) -> None:
        """controller.go Run: initial nftables sync, then the queue is opened; the runner starts."""
        datapath = dataplane.detect_datapath(self.netns)
        if datapath is rs.Datapath.COMPAT:
            # the departure of ruleset.Datapath.COMPAT (no nft_queue in this kernel)
            self.opts = rs.NftOptions(fail_open=self.config.fail_open, datapath=datapath)
        dataplane.require_tools(datapath)
        self.cache.replace(ev.view_of(view))
        self._first = self._sync(["initial"])
        if self._first.error:
            raise NotProgrammed(f"kube-network-policies on {self.node}: {self._first.error}")
        if datapath is rs.Datapath.COMPAT:
            dataplane.install_compat_queue(self.netns, self.opts)
        self.loop = VerdictLoop(self.node, self.netns, self.cache, self.opts)
        self.loop.start()
        self._runner = threading.Thread(target=self._run, name=f"knp-sync-{self.node}", daemon=True)
        self._runner.start()

    def crash(self) -> None:
        """The controller dies: its verdict loop stops (the queue is unbound), its nftables rules
        stay. With fail-open (bypass) new connections pass; without, they are dropped."""
        if self.loop is not None:
            self.loop.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the runner and the verdict loop; remove the table and COMPAT's iptables rules."""
        self._stop.set()
        self._request.set()
        if self._runner is not None:
            self._runner.join(timeout)
        if self.loop is not None:
            self.loop.stop(timeout)
            self.errors.extend(self.loop.errors)
        self.errors.extend(dataplane.remove(self.netns, self.opts))

    # -- events -----------------------------------------------------------------------------------
    def wants_sync(self, event: Any, before: Cluster) -> bool:
        return False  # it gets every event and decides itself

    def deliver(self, event: ev.ClusterEvent) -> None:
        """The informer store update, then the handlers' filter (networkpolicy.go)."""
        with self.cache.lock:
            old = self.cache.cluster.policies.get(event.key) if event.resource == "policy" else None
            old_pod = self.cache.cluster.pods.get(event.key) if event.resource == "pod" else None
            self.cache.apply(event)
            self._last_seq = max(self._last_seq, event.seq)
            t = time.time_ns()
            wants = self._handler_wants_sync(event, old, old_pod)
            if wants and not self._pending_seq:
                self._pending_seq = event.seq
            claim = self._last_seq if not self._pending_seq else self._pending_seq - 1
        if wants:
            self._request.set()
        else:
            rec = self.timeline.sync_started(self.node, t, t, claim, [f"cache {event.kind}"], "cache")
            self.timeline.sync_finished(rec, end_ns=t, rules_ns=t)

    def _handler_wants_sync(self, event: ev.ClusterEvent, old_policy: Any, old_pod: Any) -> bool:
        res = event.resource
        if res == "pod":
            pod = event.pod if event.pod is not None else old_pod  # DeleteFunc: the final state
            if pod is None or pod.node != self.node:
                return False
            ns = self.cache.cluster.namespaces.get(pod.namespace)
            info = PodInfo(pod.name, pod.namespace, pod.labels, ns.labels if ns else {}, pod.node)
            return bool(self.cache.policies_for(info))
        if res == "policy":
            pol = event.policy if event.policy is not None else old_policy
            return bool(self.cache.local_pods_for(pol, self.node))
        return False  # no namespace handler in the source

    def request_sync(self, reason: str) -> None:
        self._request.set()

    def sync_version(self, start_ns: int) -> int:
        return start_ns

    def _run(self) -> None:
        """runner.BoundedFrequencyRunner.Loop: run on request (or after maxInterval), then wait
        minInterval before the next run."""
        while not self._stop.is_set():
            self._request.wait(MAX_INTERVAL_S)
            if self._stop.is_set():
                return
            self._request.clear()
            self._sync(["runner"])
            if self._stop.wait(MIN_INTERVAL_S):
                return

    # -- nftables sync ----------------------------------------------------------------------------
    def _sync(self, reasons: list[str]) -> SyncRecord:
        """controller.go syncNFTablesRules: the whole table in one batch."""
        with self._sync_lock:
            start = time.time_ns()
            with self.cache.lock:
                through = self._last_seq
                self._pending_seq = 0
                ips = self.cache.managed_ips(self.node)
            r0 = time.perf_counter_ns()
            batch = rs.render(ips, self.opts)
            render_ns = time.perf_counter_ns() - r0
            rec = self.timeline.sync_started(self.node, start, start, through, reasons, self.strategy)
            error = None
            in_force = 0
            a0 = time.perf_counter_ns()
            try:
                in_force = dataplane.apply(self.netns, batch)
            except HarnessError as e:
                error = str(e)
                self.errors.append(f"kube-network-policies nftables sync on {self.node}: {e}")
            apply_ns = time.perf_counter_ns() - a0
            end = time.time_ns()
            timings = {"nftables_sync_time": apply_ns, "total": apply_ns, "podips": len(ips),
                       "datapath": str(self.opts.datapath), "start_ns": start + render_ns}
            self.timeline.sync_finished(rec, end_ns=end, sets_ns=in_force, rules_ns=in_force, render_ns=render_ns,
                                        timings=timings, error=error)
            return rec

    def program(self, view: Cluster, *, sync_version: int, full: bool = False,
                before_apply: BeforeApply | None = None) -> Programmed:
        """A relist (the cache becomes ``view``) and an nftables sync now (for callers that
        deliver no events: the conformance runner)."""
        with self.cache.lock:
            self.cache.replace(ev.view_of(view))
        if before_apply is not None:
            before_apply(self.cache.managed_ips(self.node))
        rec = self._sync(["program"])
        if rec.error:
            raise NotProgrammed(f"kube-network-policies on {self.node}: {rec.error}")
        timings = {**rec.timings, "sets_ns": rec.sets_ns, "rules_ns": rec.rules_ns, "end_ns": rec.end_ns}
        return Programmed(sync_version, self.strategy, rec.render_ns, timings)

    def wait_initial(self, timeout: float) -> SyncRecord:
        """The initial sync ``start`` made (synchronously)."""
        if self._first is None:
            raise NotProgrammed(f"kube-network-policies on {self.node}: not started")
        return self._first


class KubeNetworkPoliciesEngine:
    """The kube-network-policies engine (``name = "kube-network-policies"``)."""

    name = "kube-network-policies"

    def validate(self, config: EnforcementConfig, source: str | None = None) -> None:
        """The profile (a reproduced tag, or the shared default), nftables only (no backend or
        strategy choice), no kube-router-only options."""
        check_common(config, source)
        if config.profile not in (*PROFILES, "v2.10"):  # v2.10: the session default (kube-router's)
            raise ConfigError(source, "profile", f"kube-network-policies profile {config.profile!r} is not "
                              f"reproduced (one of {', '.join(PROFILES)})")
        if config.default_deny:
            raise ConfigError(source, "default_deny", "kube-network-policies has no --netpol-default-deny "
                              "(its fail-closed switch is --no-fail-open)")
        if config.reject_with is not None:
            raise ConfigError(source, "reject_with", "kube-network-policies drops denied packets (NF_DROP); "
                              "it has no REJECT flavour")

    def require_tools(self, config: EnforcementConfig) -> None:
        dataplane.require_tools()

    def node(self, node: str, netns_name: str, config: EnforcementConfig,
             timeline: Timeline | None = None) -> KubeNetworkPoliciesNode:
        return KubeNetworkPoliciesNode(node, netns_name, config, timeline)

"""kube-router as an engine (``harness.engines.base``): profile (release tag) x apply strategy x
iptables backend, with ``--netpol-default-deny`` and the REJECT flavour.

Each sync renders the node's ruleset from its view of the cluster (``render.kube_router``) and
applies it: a full apply per sync (``restore`` = kube-router's own full sync, ``per-rule``,
``netlink``), or ``incremental`` (only what changed; ``incremental.IncrementalApplier``).
kube-router v2.10.0 pkg/controllers/netpol/network_policy_controller.go: fullPolicySync is what
``program`` stands for (syncVersion = the sync's start time in ns).
"""

from __future__ import annotations

import time
from typing import Any

from harness.engines.base import BeforeApply, Programmed, SynchronousNode
from harness.engines.config import DEFAULT_STRATEGY, EnforcementConfig, check_common
from harness.engines.kube_router.apply import STRATEGIES, SyncTimings, apply, get_backend, require_tools
from harness.engines.kube_router.apply.commands import estimated_execs
from harness.engines.kube_router.apply.exec_sequence import IPSetHandler
from harness.engines.kube_router.deviations import Deviation, spec_deviations
from harness.engines.kube_router.events import requests_sync
from harness.engines.kube_router.incremental import IncrementalApplier
from harness.engines.kube_router.metrics import METRIC_SET
from harness.engines.kube_router.render.kube_router import ClusterIndex, netpol_actionable, render_node
from harness.engines.kube_router.render.profiles import get_profile
from harness.engines.kube_router.render.ruleset import Ruleset
from harness.errors import ConfigError
from harness.model.cluster import Cluster

ENGINE_STRATEGIES = (*STRATEGIES, "incremental")


class FullApplier:
    """kube-router's way: every sync renders with a new version and applies everything."""

    def __init__(self, netns_name: str, backend: str, strategy: str):
        self.netns, self.backend, self.strategy = netns_name, backend, strategy
        # kube-router's ipset handler lives as long as the controller (v2.0.0..v2.1.1 restore it whole)
        self.ipset_handler = IPSetHandler()

    def sync_version(self, start_ns: int) -> int:
        return start_ns

    def apply(self, ruleset: Ruleset, *, full: bool = False, relist: Any = None) -> SyncTimings:
        return apply(ruleset, self.netns, backend=self.backend, strategy=self.strategy, relist=relist,
                     ipset_handler=self.ipset_handler)


class KubeRouterNode(SynchronousNode):
    """One node's kube-router: ``program`` renders and applies through the node's applier (an
    object with ``sync_version(start_ns)`` and ``apply(ruleset, full=) -> SyncTimings``; tests
    hand in an in-memory one)."""

    def __init__(self, node: str, netns: str, config: EnforcementConfig, applier: Any = None):
        super().__init__(node)
        self.netns = netns
        self.config = config
        if applier is not None:
            self.applier: Any = applier
        elif config.strategy == "incremental":
            self.applier = IncrementalApplier(netns, config.backend)
        else:
            self.applier = FullApplier(netns, config.backend, config.strategy)
        self.strategy = getattr(self.applier, "strategy", config.strategy)

    def sync_version(self, start_ns: int) -> int:
        return self.applier.sync_version(start_ns)

    def wants_sync(self, event: Any, before: Cluster) -> bool:
        """kube-router's handlers' filter (``events.requests_sync``)."""
        return requests_sync(event, before, self.config.profile)

    def prepare(self, view: Cluster) -> ClusterIndex:
        """An index of ``view`` that renders of the unchanged view (any node) can share."""
        return ClusterIndex(view, self.config.profile)

    def render(self, view: Cluster, *, sync_version: int, prepared: ClusterIndex | None = None) -> Ruleset:
        """The node's ruleset for ``view`` (``prepared``: from ``prepare`` of the same view)."""
        cfg = self.config
        return render_node(view, self.node, profile=cfg.profile, sync_version=sync_version,
                           default_deny=cfg.default_deny, reject_with=cfg.reject_with, index=prepared)

    # the Controller may hand ``program`` a ``relist_view`` (ControllerConfig.lister_skew)
    supports_relist = True

    def apply(self, rendered: Ruleset, *, full: bool = False, relist: Any = None) -> dict[str, Any]:
        """Apply a rendered ruleset through the node's strategy and backend; its timings.
        ``relist`` (``restore`` only): the second pod listing inside the sync."""
        if relist is not None and isinstance(self.applier, FullApplier) and self.applier.strategy == "restore":
            return self.applier.apply(rendered, full=full, relist=relist).as_dict()
        return self.applier.apply(rendered, full=full).as_dict()

    def estimated_execs(self, rendered: Ruleset) -> int:
        return estimated_execs(rendered)

    def program(self, view: Cluster, *, sync_version: int, full: bool = False,
                before_apply: BeforeApply | None = None, relist_view: Any = None) -> Programmed:
        """Render the node's ruleset for ``view`` and apply it; the timings are the apply's.
        ``relist_view`` (a callable returning the node's current view): kube-router's second pod
        listing, taken where syncPodFirewallChains runs (after the policy sets are restored);
        local pods' chains, jumps and kube-router-local-pods come from it (lister skew)."""
        r0 = time.perf_counter_ns()
        ruleset = self.render(view, sync_version=sync_version)
        render_ns = time.perf_counter_ns() - r0
        if before_apply is not None:
            before_apply(ruleset)
        relist = None
        if relist_view is not None:
            cfg = self.config

            first = _local_pods(view, self.node, cfg.profile)

            def relist() -> Ruleset:
                second = relist_view()
                if _local_pods(second, self.node, cfg.profile) == first:
                    # the second listing only decides the local pods: the same ones render the same
                    # ruleset, so the harness does not render it again (kube-router's second listing
                    # is a lister cache read; a re-render here would count harness CPU as sync time)
                    return ruleset
                return render_node(view, self.node, profile=cfg.profile, sync_version=sync_version,
                                   default_deny=cfg.default_deny, reject_with=cfg.reject_with,
                                   pods_view=second)
        timings = self.apply(ruleset, full=full, relist=relist)
        return Programmed(sync_version, str(timings.get("strategy") or self.strategy), render_ns, timings)


def _local_pods(view: Cluster, node: str, profile: str) -> list[tuple[str, str, str]]:
    """What ``render_node``'s ``pods_view`` decides: the node's actionable pods (namespace, name, IP)."""
    prof = get_profile(profile)
    return sorted((p.namespace, p.name, str(p.ip)) for p in view.pods.values()
                  if p.node == node and netpol_actionable(p, prof))


class KubeRouterEngine:
    """The kube-router engine (``name = "kube-router"``)."""

    name = "kube-router"
    strategies = ENGINE_STRATEGIES
    metric_set = METRIC_SET  # the Controller's sync metrics under kube-router's names

    def validate(self, config: EnforcementConfig, source: str | None = None) -> None:
        """Profile, strategy, backend, default_deny (v2.10 only), reject_with and datapath
        (nftables: profile v2.11.x only), as ConfigError."""
        check_common(config, source)
        if config.datapath == "nftables":
            _validate_nftables(config, source)
            return
        prof = get_profile(config.profile, source)
        if config.strategy not in ENGINE_STRATEGIES:
            raise ConfigError(source, "strategy", f"unknown strategy {config.strategy!r} "
                              f"(one of {', '.join(ENGINE_STRATEGIES)})")
        get_backend(config.backend, source)
        if config.default_deny and not prof.tail_chain:
            raise ConfigError(source, "default_deny", f"--netpol-default-deny needs profile v2.10, not {prof.name}")
        if prof.per_call_sync and config.strategy != "per-rule":
            # v1.1.1 had no save/restore sync: only its own call-by-call sync reproduces it
            raise ConfigError(source, "strategy", f"profile {prof.name} syncs call by call: use strategy per-rule, "
                              f"not {config.strategy}")

    def require_tools(self, config: EnforcementConfig) -> None:
        if config.datapath == "nftables":
            from harness.engines.kube_router.apply import nftables

            nftables.require_tools()
            return
        require_tools(config.backend)

    def spec_deviations(self, config: EnforcementConfig, cluster: Cluster, pods: list[str], port: int,
                        protocol: str = "TCP", ignore_self: bool = True) -> list[Deviation]:
        """The cells where kube-router at ``config.profile`` departs from the spec
        (``deviations.spec_deviations``: v1.2.x direction-less jumps and missing endPort)."""
        return spec_deviations(cluster, config.profile, pods, port, protocol, ignore_self)

    def set_update_mode(self, config: EnforcementConfig) -> str:
        """``flush+refill`` (v1.2: sets emptied and refilled in place) or ``tmp+swap`` (v1.2.2+);
        nftables: ``flush+refill in one transaction`` (npc_nftables.go nftAddOrReplaceIPSet)."""
        if config.datapath == "nftables":
            return "flush+refill in one transaction"
        return "tmp+swap" if get_profile(config.profile).swap_sets else "flush+refill"

    def node(self, node: str, netns: str, config: EnforcementConfig, timeline: Any = None, *,
             applier: Any = None) -> KubeRouterNode:
        if config.datapath == "nftables":
            from harness.engines.kube_router.nftables_node import KubeRouterNftNode

            return KubeRouterNftNode(node, netns, config, applier)
        return KubeRouterNode(node, netns, config, applier)


def _validate_nftables(config: EnforcementConfig, source: str | None) -> None:
    """The nftables datapath exists from v2.11.0 (v2.11.0:pkg/options/options.go
    --use-nftables-for-netpol); it has one apply path (no strategy choice) and a plain reject."""
    from harness.engines.kube_router.render.nftables import NFT_PROFILES

    if config.profile not in NFT_PROFILES:
        raise ConfigError(source, "datapath", f"the nftables datapath needs profile v2.11.1 "
                          f"(--use-nftables-for-netpol arrives in v2.11.0), not {config.profile}")
    if config.strategy != DEFAULT_STRATEGY:
        raise ConfigError(source, "strategy", f"the nftables datapath has one apply path (knftables transactions); "
                          f"strategy {config.strategy!r} is an iptables one")
    if config.reject_with is not None:
        raise ConfigError(source, "reject_with", "the nftables datapath rejects with a plain `reject` "
                          "(npc_nftables.go syncPodFirewallChains); reject_with is not available")

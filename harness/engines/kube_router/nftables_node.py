"""kube-router's nftables datapath as a node engine: the ``KubeRouterNode`` whose render is
``render.nftables.render_sync`` and whose apply is ``apply.nftables.NftablesApplier``.

kube-router v2.11.1 chooses the controller once, at start (``--use-nftables-for-netpol``,
v2.11.1:pkg/controllers/netpol/network_policy_controller.go NewNetworkPolicyController); the
informer handlers and the 1-slot sync channel are the shared NetworkPolicyControllerBase, so the
event filter and the controller loop are the iptables datapath's (``events.requests_sync``).
"""

from __future__ import annotations

import time
from typing import Any

from harness.engines.base import BeforeApply, Programmed
from harness.engines.config import EnforcementConfig
from harness.engines.kube_router.apply.nftables import NftablesApplier
from harness.engines.kube_router.engine import KubeRouterNode
from harness.engines.kube_router.events import requests_sync
from harness.engines.kube_router.render import nftables as nr
from harness.engines.kube_router.render.kube_router import ClusterIndex
from harness.model.cluster import Cluster


class KubeRouterNftNode(KubeRouterNode):
    """One node's kube-router with the nftables datapath (``config.datapath == "nftables"``)."""

    # the Controller may hand ``program`` a ``relist_view`` (ControllerConfig.lister_skew): v2.11.1's
    # syncPodFirewallChains lists the local pods again too (npc_nftables.go: getLocalPods)
    supports_relist = True

    def __init__(self, node: str, netns: str, config: EnforcementConfig, applier: Any = None):
        super().__init__(node, netns, config, applier if applier is not None else NftablesApplier(netns))
        self.strategy = "nftables"
        self._semantics = nr.semantics_profile(config.profile)

    def wants_sync(self, event: Any, before: Cluster) -> bool:
        return requests_sync(event, before, self._semantics.name)

    def prepare(self, view: Cluster) -> ClusterIndex:
        return ClusterIndex(view, self._semantics)

    def render(self, view: Cluster, *, sync_version: int, prepared: ClusterIndex | None = None) -> nr.NftSync:
        """The node's nftables transactions for ``view``."""
        return nr.render_sync(view, self.node, profile=self.config.profile, sync_version=sync_version,
                              default_deny=self.config.default_deny, index=prepared)

    def apply(self, rendered: nr.NftSync, *, full: bool = False, relist: Any = None) -> dict[str, Any]:
        """Apply through the node's applier; ``relist``: a callable giving the node's view again
        (the second pod listing)."""
        timings = self.applier.apply(rendered, full=full, relist=relist).as_dict()
        self.errors.extend(timings.get("errors") or ())
        return timings

    def estimated_execs(self, rendered: nr.NftSync) -> int:
        # one nft -f per transaction plus the three GC listings (stale deletes not counted)
        return len(rendered.transactions) + 3

    def program(self, view: Cluster, *, sync_version: int, full: bool = False,
                before_apply: BeforeApply | None = None, relist_view: Any = None) -> Programmed:
        """Render and apply; the timings are the apply's. ``relist_view`` (a callable returning the
        node's current view): the local pods, their chains and jumps come from it (lister skew)."""
        r0 = time.perf_counter_ns()
        sync = self.render(view, sync_version=sync_version)
        render_ns = time.perf_counter_ns() - r0
        if before_apply is not None:
            before_apply(sync)
        return Programmed(sync_version, "nftables", render_ns, self.apply(sync, full=full, relist=relist_view))

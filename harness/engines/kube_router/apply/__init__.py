"""Ruleset -> kernel: apply strategies (restore, per-rule, netlink) over iptables backends (nft,
legacy), timed per phase with kube-router's metric names.

    from harness.engines.kube_router.apply import apply, inspect
    timings = apply(ruleset, "nph-abc-node1", backend="nft", strategy="restore")
    state = inspect("nph-abc-node1", backend="nft")
"""

from harness.engines.kube_router.apply.restore_text import filter_restore_text, ipset_restore_text, stale_sets
from harness.engines.kube_router.apply.strategies import METRIC_NAMES, STRATEGIES, SyncTimings, apply, inspect
from harness.kernel.backends import BACKENDS, Backend, check_not_mixed, get_backend, require_tools, versions

__all__ = [
    "BACKENDS", "Backend", "METRIC_NAMES", "STRATEGIES", "SyncTimings", "apply", "check_not_mixed",
    "filter_restore_text", "get_backend", "inspect", "ipset_restore_text", "require_tools",
    "stale_sets", "versions",
]

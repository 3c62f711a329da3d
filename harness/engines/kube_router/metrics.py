"""kube-router's sync metrics: the names, help texts and buckets it registers, and what each
observes of a sync here (a ``MetricSet`` for ``harness.controller.metrics``). Pure.

kube-router (pkg/metrics/metrics_controller.go) registers these as histograms in namespace
``kube_router`` with ``defaultBucket = prometheus.ExponentialBuckets(0.005, 2.327, 10)``, in
seconds. What each metric observes:

- ``controller_iptables_sync_time``: the whole sync (render + apply), per sync;
- ``controller_iptables_v4_save_time``: ``iptables-save -t filter``;
- ``controller_iptables_v4_restore_time``: programming the chains (one ``iptables-restore``;
  per-rule: all the ``iptables`` calls);
- ``controller_policy_ipset_v4_restore_time``: programming the sets;
- ``controller_policy_chains_sync_time``: kube-router's syncNetworkPolicyChains, which saves
  the sets, builds the policy chains and restores the policy sets (v2.10.0:policy.go): here
  render time + ``ipset save`` + set programming; on the nftables datapath the policy
  transactions (``apply.nftables``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.controller.metrics import DEFAULT_BUCKETS, MetricSet, timing_s, total_s

NAMESPACE = "kube_router"


def _chains_sync_s(rec: Any) -> float | None:
    nft = rec.timings.get("policy_chains_sync_time")  # the nftables datapath times it itself
    if nft is not None:
        return nft / 1e9
    ipset = rec.timings.get("ipset_restore_time")
    if ipset is None and not rec.render_ns:
        return None
    return (rec.render_ns + (rec.timings.get("ipset_save_time") or 0) + (ipset or 0)) / 1e9


def _family_s(family: str, name: str) -> Callable[[Any], float | None]:
    """``name`` of one family's half of a dual-stack sync (timings["families"]); IPv4-only syncs
    have no halves: the IPv4 metric reads the sync's own phase, the IPv6 one observes nothing."""
    whole = timing_s(name)

    def get(rec: Any) -> float | None:
        halves = rec.timings.get("families") or {}
        if not halves:
            return whole(rec) if family == "IPv4" else None
        v = halves.get(family, {}).get(name)
        return v / 1e9 if v else None
    return get


# metric -> (help text as kube-router has it, observation from a SyncRecord in seconds). The v6
# histograms (v2.10.0:pkg/metrics/metrics_controller.go controller_iptables_v6_save_time, ...) are
# not exported, so IPv4-only runs keep their exposition; a dual-stack sync's IPv6 half is in
# timings["families"]["IPv6"] and SyncTimings.metrics().
METRICS: dict[str, tuple[str, Callable[[Any], float | None]]] = {
    "controller_iptables_sync_time": ("Time it took for controller to sync iptables", total_s),
    "controller_iptables_v4_save_time": ("Time it took controller to save IPv4 rules",
                                         _family_s("IPv4", "iptables_save_time")),
    "controller_iptables_v4_restore_time": ("Time it took controller to restore IPv4 rules",
                                            _family_s("IPv4", "iptables_restore_time")),
    "controller_policy_ipset_v4_restore_time": ("Time it took controller to restore IPv4 ipsets",
                                                _family_s("IPv4", "ipset_restore_time")),
    "controller_policy_chains_sync_time": ("Time it took for controller to sync policy chains", _chains_sync_s),
}


METRIC_SET = MetricSet(NAMESPACE, METRICS, DEFAULT_BUCKETS)

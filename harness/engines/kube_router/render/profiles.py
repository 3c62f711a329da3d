"""kube-router release profiles: what differs, in the rules a full sync writes, between the
release tags the harness reproduces.

Every profile is named by the kube-router release tag it reproduces; each field cites the
``tag:path`` (function) of cloudnativelabs/kube-router where the behaviour starts. A profile
covers its tag and the following releases up to the next profile, as far as the *rules* go
(controller semantics such as event filters differ inside a range: v1.2.3 adds
``isNetPolActionable``, which the renderer does not model).

| profile | covers       | what changes there |
|---------|--------------|--------------------|
| v1.1.1  | v1.1.x       | no save/restore: one go-iptables/ipset call per chain, rule and set operation (strategy
|         |              | ``per-rule``); v1.2 layout, policy rules carry a second comment, pod chains deduplicated
|         |              | by ``-C`` checks, pod set entries without ``timeout 0`` |
| v1.2.1  | v1.2.0-1     | v1.2 layout (chains only for pods a policy selects), sets flushed and refilled in place |
| v1.2.2  | v1.2.2-3     | TMP set + ``swap`` (pkg/utils/ipset.go: buildIPSetRestore) |
| v1.3.0  | v1.3.0       | as v1.3.1, but pod jumps inserted at position 1 of the top-level chains, above the
|         |              | KUBE-ROUTER-INPUT cluster IP / node port RETURNs (#1136, fixed by #1144) |
| v1.3.1  | v1.3.1       | every local pod a chain, KUBE-NWPLCY-DEFAULT, 0x20000 + explicit ACCEPT, endPort |
| v1.3.2  | v1.3.2-v1.4  | ctstate INVALID drop in every pod chain (#709) |
| v1.5.0  | v1.5.0-v1.6  | explicit ACCEPT comment "explicitly ACCEPT traffic that complies with network policies" |
| v2.6.3  | v2.6.0-v2.7  | dual-stack names, KUBE-NWPLCY-COMMON, single-spaced default comments |
| v2.8.0  | v2.8.0-v2.9  | KUBE-ROUTER-INPUT also lets SCTP node ports through |
| v2.10.0 | v2.10.0      | KUBE-NWPLCY-TAIL instead of the explicit ACCEPT, SCTP node ports, --netpol-default-deny |

Aliases (the names used before profiles were tagged; every caller keeps working): ``v1.2`` ->
``v1.2.1`` (the flush+refill window belongs to v1.2.0-v1.2.1), ``v1.3`` -> ``v1.3.1``,
``v2.6`` -> ``v2.6.3``, ``v2.10`` -> ``v2.10.0``.

Not reproduced (yet): v2.0.0-v2.5.0 (dual-stack naming and single spacing as v2.6.3, the stateful rules still
inline in each pod chain; KUBE-NWPLCY-COMMON arrives in v2.6.0), and v2.11.x (short comments,
comments.go). Ranges were found by diffing the rule-writing strings of pkg/controllers/netpol
between consecutive tags; v1.4.0 and v2.8.0's other changes were read as refactors.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import ConfigError


@dataclass(frozen=True)
class Profile:
    """One kube-router release tag, as far as the rendered rules and the set update differ."""

    name: str
    # TMP set + ``swap`` in one ``ipset restore`` (v1.2.2+) vs flush and refill in place.
    # v1.2.2:pkg/utils/ipset.go (buildIPSetRestore); v1.2.1:pkg/utils/ipset.go (Restore: flush+add).
    swap_sets: bool
    # Dual-stack (v2.0+): the family ("IPv4") is hashed into policy chain and set names.
    family: str
    # RELATED,ESTABLISHED accept inline in each pod chain (v1.x) vs a jump to KUBE-NWPLCY-COMMON.
    common_chain: bool
    # KUBE-NWPLCY-TAIL jump at the end of each top-level chain; --netpol-default-deny possible.
    tail_chain: bool
    # endPort honoured (``--dport a:b``); older releases matched only ``port``.
    end_port: bool
    # Comment of the KUBE-ROUTER-INPUT rule that lets service cluster IPs through.
    cluster_ip_comment: str
    # KUBE-ROUTER-INPUT also lets SCTP node ports through.
    sctp_node_ports: bool
    # v1.2 layout: only pods a policy selects get a pod chain (get{In,E}gressNetworkPolicyEnabledPods),
    # no KUBE-NWPLCY-DEFAULT, no 0x20000 mark, no explicit ACCEPT (v1.2.1:pkg/controllers/netpol/pod.go).
    policy_pods_only: bool = False
    # The pod chain ends by setting 0x20000, which the top level accepts (v1.3.1:pod.go syncPodFirewallChains).
    mark_accept: bool = True
    # ensureExplicitAccept: AppendUnique of the 0x20000 ACCEPT to each top-level chain
    # (v1.3.1..v2.9.0:network_policy_controller.go); v2.10.0 moved it into KUBE-NWPLCY-TAIL.
    explicit_accept: bool = True
    # Inline "rule to drop invalid state for pod" in every pod chain (v1.3.2:pod.go setupPodNetpolRules, #709).
    invalid_drop: bool = False
    # Separator in "run through default ingress network policy<sep>chain": two spaces in v1.x
    # (v1.3.1:pod.go setupPodNetpolRules), one from v2.0.0 (v2.6.3:pod.go setupPodNetpolRules).
    default_chain_sep: str = "  "
    # Comment of the explicit ACCEPT: v1.5.0..v1.6.1:network_policy_controller.go ensureExplicitAccept
    # shortened it; v2.0.0 restored the older text.
    explicit_accept_comment: str = "rule to explicitly ACCEPT traffic that comply to network policies"
    # v1.3.0:pod.go interceptPodInbound/OutboundTraffic write every top-level jump with ``-I <chain> 1``
    # (the saved whitelist and explicit ACCEPT end up below them); v1.3.1 appends them (#1144).
    pod_jumps_inserted: bool = False
    # --- the execs of a full sync (harness.engines.kube_router.apply.exec_sequence) ---
    # go-iptables ``iptables.New()`` calls per sync, each running ``iptables --version``
    # (go-iptables v0.5.0/v0.6.0 iptables.go New -> getIptablesVersionString): v1.2.x in
    # ensureTopLevelChains and cleanupStaleRules; v1.3.x-v1.6.x also in ensureDefaultNetworkPolicyChain
    # (v1.3.1:network_policy_controller.go); v2.0.0+ builds its handlers once (NewIPTablesHandlers).
    version_execs_per_sync: int = 0
    # Top-level and DEFAULT chains ensured with ``ChainExists`` (``-S <chain> 1``, v1.3.2+) instead
    # of a blind ``NewChain`` (``-N``, exit 1 when it exists; v1.2.1..v1.3.1:network_policy_controller.go).
    chain_exists_check: bool = True
    # v1.3.0:network_policy_controller.go ensureTopLevelChains: the explicit ACCEPT is AppendUnique'd
    # with the iptables command (``-C`` per top-level chain); v1.3.1+ AppendUnique into the restore buffer.
    explicit_accept_by_command: bool = False
    # ``iptables-restore --wait -T filter`` when ``iptables-restore --help`` mentions wait
    # (v1.3.0+:pkg/utils/iptables.go init/Restore); v1.2.x: ``iptables-restore -T filter``.
    restore_wait: bool = True
    # syncNetworkPolicyChains restores every set ``ipset save`` listed on the host (v1.x..v2.5:
    # pkg/utils/ipset.go Restore -> buildIPSetRestore over ipset.Sets) vs only the policy sets
    # (v2.6.0+: RestoreSets(knownIPSets)).
    restore_host_sets: bool = False
    # Saved create options keep ``initval`` (one TMP set per existing set) until v1.5.1's
    # scrubInitValFromOptions (v1.5.1:pkg/utils/ipset.go parseIPSetSave).
    scrub_initval: bool = True
    # --- controller semantics (harness.engines.kube_router.events) ---
    # isNetPolActionable (v1.2.3+:pkg/controllers/netpol/utils.go): finished and hostNetwork pods are
    # neither programmed nor synced for on add; v1.2.1/v1.2.2 only require a PodIP.
    netpol_actionable: bool = True
    # v1.1.x: the sync is kube-router's go-iptables/ipset calls, one exec per chain, rule and set
    # operation (v1.1.1:pkg/controllers/netpol/network_policy_controller.go; no iptables-save/restore,
    # which arrived in v1.2.0). The renderer records the calls (``Ruleset.calls``); only the
    # ``per-rule`` strategy executes them (harness.engines.kube_router.apply.per_rule).
    per_call_sync: bool = False
    notes: str = ""


PROFILES: dict[str, Profile] = {
    # v1.1.1:pkg/controllers/netpol/network_policy_controller.go: go-iptables v0.4.1 (v1.1.1:go.mod)
    # calls iptables.New() (``iptables --version``) in ensureTopLevelChains, syncNetworkPolicyChains,
    # processIngressRules, processEgressRules, syncPodFirewallChains and cleanupStaleRules; chains are
    # ensured with a blind NewChain (exit 1 tolerated); ensureTopLevelChains is the same as v1.2.1's.
    "v1.1.1": Profile(
        version_execs_per_sync=1, chain_exists_check=False, restore_wait=False, restore_host_sets=True,
        scrub_initval=False, netpol_actionable=False, per_call_sync=True,
        name="v1.1.1", swap_sets=True, family="", common_chain=False, tail_chain=False, end_port=False,
        cluster_ip_comment="allow traffic to cluster IP", sctp_node_ports=False,
        policy_pods_only=True, mark_accept=False, explicit_accept=False,
        notes="before save/restore: one exec per call (strategy per-rule); sets refreshed by a "
              "temporary set + swap per set",
    ),
    "v1.2.1": Profile(
        version_execs_per_sync=2, chain_exists_check=False, restore_wait=False, restore_host_sets=True,
        scrub_initval=False, netpol_actionable=False,
        name="v1.2.1", swap_sets=False, family="", common_chain=False, tail_chain=False, end_port=False,
        cluster_ip_comment="allow traffic to cluster IP", sctp_node_ports=False,
        policy_pods_only=True, mark_accept=False, explicit_accept=False,
        notes="v1.2 layout; sets flushed and refilled in place (empty-set moments)",
    ),
    "v1.2.2": Profile(
        version_execs_per_sync=2, chain_exists_check=False, restore_wait=False, restore_host_sets=True,
        scrub_initval=False, netpol_actionable=False,
        name="v1.2.2", swap_sets=True, family="", common_chain=False, tail_chain=False, end_port=False,
        cluster_ip_comment="allow traffic to cluster IP", sctp_node_ports=False,
        policy_pods_only=True, mark_accept=False, explicit_accept=False,
        notes="v1.2 layout with TMP set + swap; rules equal through v1.2.3",
    ),
    "v1.3.0": Profile(
        version_execs_per_sync=3, chain_exists_check=False, restore_host_sets=True, scrub_initval=False,
        explicit_accept_by_command=True,
        name="v1.3.0", swap_sets=True, family="", common_chain=False, tail_chain=False, end_port=True,
        cluster_ip_comment="allow traffic to cluster IP", sctp_node_ports=False, pod_jumps_inserted=True,
        notes="explicit ACCEPT appended by ensureTopLevelChains (iptables command) before the save",
    ),
    "v1.3.1": Profile(
        version_execs_per_sync=3, chain_exists_check=False, restore_host_sets=True, scrub_initval=False,
        name="v1.3.1", swap_sets=True, family="", common_chain=False, tail_chain=False, end_port=True,
        cluster_ip_comment="allow traffic to cluster IP", sctp_node_ports=False,
    ),
    "v1.3.2": Profile(
        version_execs_per_sync=3, restore_host_sets=True, scrub_initval=False,
        name="v1.3.2", swap_sets=True, family="", common_chain=False, tail_chain=False, end_port=True,
        cluster_ip_comment="allow traffic to cluster IP", sctp_node_ports=False, invalid_drop=True,
    ),
    "v1.5.0": Profile(
        version_execs_per_sync=3, restore_host_sets=True, scrub_initval=False,
        name="v1.5.0", swap_sets=True, family="", common_chain=False, tail_chain=False, end_port=True,
        cluster_ip_comment="allow traffic to cluster IP", sctp_node_ports=False, invalid_drop=True,
        explicit_accept_comment="explicitly ACCEPT traffic that complies with network policies",
    ),
    "v2.6.3": Profile(
        name="v2.6.3", swap_sets=True, family="IPv4", common_chain=True, tail_chain=False, end_port=True,
        cluster_ip_comment="allow traffic to primary/secondary cluster IP range", sctp_node_ports=False,
        default_chain_sep=" ",
    ),
    # v2.8.0:network_policy_controller.go ensureTopLevelChains: whitelistSCTPNodeports
    "v2.8.0": Profile(
        name="v2.8.0", swap_sets=True, family="IPv4", common_chain=True, tail_chain=False, end_port=True,
        cluster_ip_comment="allow traffic to primary/secondary cluster IP range", sctp_node_ports=True,
        default_chain_sep=" ",
    ),
    "v2.10.0": Profile(
        name="v2.10.0", swap_sets=True, family="IPv4", common_chain=True, tail_chain=True, end_port=True,
        cluster_ip_comment="allow traffic to primary/secondary cluster IP range", sctp_node_ports=True,
        explicit_accept=False, default_chain_sep=" ",
    ),
}

# The names profiles had before they were tagged -> the nearest tag (see the module docstring).
ALIASES: dict[str, str] = {"v1.2": "v1.2.1", "v1.3": "v1.3.1", "v2.6": "v2.6.3", "v2.10": "v2.10.0"}

# Every name ``get_profile`` accepts, tags first (for CLI choices and error messages).
PROFILE_NAMES: tuple[str, ...] = (*PROFILES, *ALIASES)


def get_profile(name: str, source: str | None = None) -> Profile:
    """The profile tagged ``name`` or aliased by it; a ConfigError naming the valid ones otherwise."""
    try:
        return PROFILES[ALIASES.get(name, name)]
    except KeyError:
        raise ConfigError(source, "profile", f"unknown kube-router profile {name!r} "
                          f"(one of {', '.join(PROFILE_NAMES)})") from None

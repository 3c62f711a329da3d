"""Where kube-router at a release tag departs from the NetworkPolicy spec, cell by cell: the
verdicts its rules really give (pure; the oracle stays the spec).

A conformance run of an old tag would otherwise report the tag's own, source-faithful behaviour
as mismatches. ``spec_deviations`` lists the cells of a truth table where the tag's verdict
differs from the oracle's, each with its kind and the source line that causes it; the
conformance runner expects the tag's verdict there and reports them as expected deviations.

Kinds (cloudnativelabs/kube-router, pkg/controllers/netpol):

- ``direction-less-jumps`` (v1.2.0..v1.2.3, the profiles with ``policy_pods_only``):
  v1.2.1:pod.go syncPodFirewallChains gives a pod a chain only when a policy selects it
  (getIngressNetworkPolicyEnabledPods / getEgressNetworkPolicyEnabledPods) and jumps from it,
  without ``-d``/``-s``, to *every* policy that selects the pod, whatever its policyTypes. So a
  connection's inbound pass through the destination's chain is accepted by an egress policy that
  selects both the source and the destination and allows the source to reach it (and the
  outbound pass through the source's chain by an ingress policy that selects both and lets the
  source in). The result is traffic the spec denies being let through; never the reverse.
- ``no-endport`` (v1.2.x, ``end_port`` False): v1.2.1:policy.go processNetworkPolicyPorts reads
  only ``port``, so ``port..endPort`` allows ``port`` alone (endPort arrives in v1.3.1).

Not a deviation here: a pod no policy selects gets no chain in v1.2.x, so its traffic leaves
KUBE-ROUTER-FORWARD unjudged (fail-open) and meets the built-in chain's policy. That equals the
spec's "not isolated" wherever FORWARD's policy is ACCEPT, as in the lab; on a node whose
FORWARD policy is DROP (e.g. Docker's) v1.2 drops what v1.3.1+ explicitly ACCEPTs (0x20000). The
lab cannot show it, so it is stated, not computed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from harness.engines.kube_router.render.profiles import Profile, get_profile
from harness.model.cluster import Cluster, Pod
from harness.model.policy import NetworkPolicy, PolicyRule
from harness.oracle import Oracle

DIRECTIONLESS_JUMPS = "direction-less-jumps"
NO_ENDPORT = "no-endport"


@dataclass(frozen=True)
class Deviation:
    """One cell where the tag's verdict (``allowed``) is not the spec's; ``why`` cites the source."""

    src: str
    dst: str
    allowed: bool
    kind: str
    why: str

    def __str__(self) -> str:
        return (f"{self.src} -> {self.dst}: {'allow' if self.allowed else 'deny'} "
                f"(spec: {'deny' if self.allowed else 'allow'}; {self.kind}: {self.why})")


_WHY = {
    DIRECTIONLESS_JUMPS: "v1.2.1:pod.go syncPodFirewallChains jumps to every policy selecting the pod, "
                         "without -d/-s",
    NO_ENDPORT: "v1.2.1:policy.go processNetworkPolicyPorts matches port only, not port..endPort",
}


def has_deviations(profile: str | Profile) -> bool:
    """Whether the tag departs from the spec in a way ``spec_deviations`` computes."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    return prof.policy_pods_only or not prof.end_port


def spec_deviations(cluster: Cluster, profile: str | Profile, pods: Iterable[str], port: int,
                    protocol: str = "TCP", ignore_self: bool = True) -> list[Deviation]:
    """The cells of the ``pods`` x ``pods`` table on ``protocol/port`` where kube-router at
    ``profile`` gives another verdict than the spec (the oracle); empty for tags without known
    deviations (v1.3.0+)."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    if not has_deviations(prof):
        return []
    keys = list(pods)
    spec = Oracle(cluster)
    seen = cluster if prof.end_port else _without_end_port(cluster)
    seen_oracle = Oracle(seen)
    per_policy = {p.key: Oracle(dataclasses.replace(seen, policies={p.key: p})) for p in seen.policies.values()}
    out: list[Deviation] = []
    for s in keys:
        for d in keys:
            if ignore_self and s == d:
                continue
            want = spec.verdict(s, d, port, protocol).allowed
            ports_only = seen_oracle.verdict(s, d, port, protocol).allowed
            got = (_v12_allowed(seen, per_policy, s, d, port, protocol) if prof.policy_pods_only else ports_only)
            if got == want:
                continue
            kinds = [k for k, differs in ((NO_ENDPORT, ports_only != want), (DIRECTIONLESS_JUMPS, got != ports_only))
                     if differs]
            out.append(Deviation(s, d, got, "+".join(kinds), "; ".join(_WHY[k] for k in kinds)))
    return out


def _without_end_port(cluster: Cluster) -> Cluster:
    """The cluster as v1.2.x reads its policies: every ``endPort`` dropped."""
    def rules(rs: tuple[PolicyRule, ...]) -> tuple[PolicyRule, ...]:
        return tuple(dataclasses.replace(r, ports=tuple(dataclasses.replace(p, end_port=None) for p in r.ports))
                     for r in rs)
    policies = {k: dataclasses.replace(p, ingress=rules(p.ingress), egress=rules(p.egress))
                for k, p in cluster.policies.items()}
    return dataclasses.replace(cluster, policies=policies)


def _selects(policy: NetworkPolicy, pod: Pod) -> bool:
    return policy.namespace == pod.namespace and policy.pod_selector.matches(pod.labels)


def _v12_allowed(cluster: Cluster, per_policy: dict[str, Oracle], src: str, dst: str, port: int,
                 protocol: str) -> bool:
    """v1.2.1:pod.go: the destination's chain (inbound jumps only for pods an ingress/both policy
    selects) and the source's chain (outbound jumps only for egress/both) must each let the
    packet through; a chain lets it through when any policy selecting its pod marks it: the
    policy's ingress rules when it selects the destination, its egress rules when it selects
    the source (the policy chain holds both rule kinds, matched on the target sets)."""
    s, d = cluster.pods[src], cluster.pods[dst]

    def chain_passes(pod: Pod, direction: str) -> bool:
        mine = [p for p in cluster.policies.values() if _selects(p, pod)]
        if not any(p.affects_ingress if direction == "ingress" else p.affects_egress for p in mine):
            return True  # no chain or no jump in this direction: the filter table lets it pass
        for p in mine:
            v = per_policy[p.key].verdict(src, dst, port, protocol)
            if p.affects_ingress and _selects(p, d) and v.ingress.allowed:
                return True
            if p.affects_egress and _selects(p, s) and v.egress.allowed:
                return True
        return False

    return chain_passes(d, "ingress") and chain_passes(s, "egress")

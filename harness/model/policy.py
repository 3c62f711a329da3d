"""NetworkPolicy (networking.k8s.io/v1) as pure data, with label-selector matching.

Parsing and validation of NetworkPolicy manifests into these classes lives in
``harness.model.netpol`` (called by ``harness.model.manifests``); the oracle is ``harness.oracle``.
Semantics follow the Kubernetes API reference:
- an empty ``from``/``to``/``ports`` list and an absent one both mean "all";
- ``ingress: []`` (or absent) with Ingress in policyTypes isolates and allows nothing;
- ``policyTypes`` defaults to Ingress, plus Egress when the policy has egress rules.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class SelectorRequirement:
    key: str
    operator: str  # one of OPERATORS
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        raise ValueError(f"unknown operator {self.operator}")


@dataclass(frozen=True)
class LabelSelector:
    """A metav1.LabelSelector; the empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[SelectorRequirement, ...] = ()

    @classmethod
    def of(cls, match_labels: dict[str, str] | None = None,
           match_expressions: list[SelectorRequirement] | None = None) -> LabelSelector:
        return cls(tuple(sorted((match_labels or {}).items())), tuple(match_expressions or ()))

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels]
        for r in self.match_expressions:
            if r.operator in ("In", "NotIn"):
                parts.append(f"{r.key} {r.operator.lower()} ({','.join(r.values)})")
            elif r.operator == "Exists":
                parts.append(r.key)
            else:
                parts.append(f"!{r.key}")
        return ",".join(parts) or "<all>"


@dataclass(frozen=True)
class IPBlock:
    cidr: ipaddress.IPv4Network
    except_: tuple[ipaddress.IPv4Network, ...] = ()

    def contains(self, ip: ipaddress.IPv4Address) -> bool:
        return ip in self.cidr and not any(ip in e for e in self.except_)


@dataclass(frozen=True)
class PolicyPeer:
    """One entry of ``from``/``to``: exactly one of the three shapes below is set.

    - pod_selector only: pods in the policy's namespace;
    - namespace_selector (+ optional pod_selector): pods in matching namespaces;
    - ip_block: addresses (Kubernetes leaves pod IPs in ipBlocks implementation-defined)."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyPort:
    """``protocol`` TCP/UDP/SCTP; ``port`` a number, a name (named port) or None (all ports);
    ``end_port`` makes a numeric range ``port..end_port``."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class PolicyRule:
    """An ingress or egress rule; empty ``peers`` means all peers, empty ``ports`` all ports."""

    peers: tuple[PolicyPeer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    policy_types: tuple[str, ...] = ("Ingress",)
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()
    source: str | None = None  # file it came from

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def affects_ingress(self) -> bool:
        return "Ingress" in self.policy_types

    @property
    def affects_egress(self) -> bool:
        return "Egress" in self.policy_types

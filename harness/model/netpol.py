"""Parsing and validation of ``networking.k8s.io/v1`` NetworkPolicy manifests.

``parse_network_policy(doc, source, path)`` turns one YAML document (already loaded) into a
``harness.model.policy.NetworkPolicy`` or raises ``ConfigError`` with one line naming the file
and the field path, e.g.::

    cases/x.yaml: documents[0].spec.ingress[0].from[1].ipBlock.except[0]: 10.0.0.0/8 is not inside cidr 10.1.0.0/16

The checks follow the Kubernetes API server's validation (pkg/apis/networking/validation) so
that a manifest the harness accepts is one a cluster accepts, with three deliberate differences:

- unknown fields are rejected (like ``kubectl apply --validate=strict``), so typos such as
  ``namespaceSelecter`` cannot silently widen a policy;
- IPv6 CIDRs parse (as the API accepts them), but a policy with one is refused where it enters an
  IPv4-only cluster (``check_ip_families``): there it could never match, which is most likely a typo;
- an ipBlock CIDR with host bits set (``10.0.0.1/8``) is accepted like the API server does and
  normalized to its network (``10.0.0.0/8``), which is also what ipset stores.

Semantics kept from the API: ``from``/``to``/``ports`` absent, null or ``[]`` all mean "all";
``ingress: []`` and an absent ``ingress`` both mean "no ingress rule"; ``policyTypes`` absent or
``[]`` defaults to Ingress, plus Egress when the policy has at least one egress rule.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from harness.errors import ConfigError
from harness.model.fields import Fields, items
from harness.model.labels import label_key_problem, label_value_problem, validate_labels, validate_name
from harness.model.policy import (
    OPERATORS,
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    SelectorRequirement,
)

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")

# Server-populated metadata that appears in `kubectl get -o yaml` output: accepted, not used.
_IGNORED_METADATA = (
    "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
    "deletionGracePeriodSeconds", "managedFields", "selfLink", "finalizers", "ownerReferences",
)

# IANA_SVC_NAME (RFC 6335): 1-15 chars of [a-z0-9-], at least one letter, no leading/trailing
# or double hyphen. This is what the API server requires of a named port.
_SVC_NAME_CHARS = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_HAS_LETTER = re.compile(r"[a-z]")


def port_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid named port (IANA_SVC_NAME), or None."""
    if len(name) > 15:
        return f"named port {name!r} is longer than 15 characters"
    if not _SVC_NAME_CHARS.match(name):
        return (f"named port {name!r} is invalid (lowercase letters, digits and '-', "
                "starting and ending with a letter or digit)")
    if "--" in name:
        return f"named port {name!r} must not contain consecutive hyphens"
    if not _HAS_LETTER.search(name):
        return f"named port {name!r} must contain at least one letter (write a port number unquoted)"
    return None


def parse_network_policy(doc: Any, source: str | None, path: str) -> NetworkPolicy:
    """Parse one ``kind: NetworkPolicy`` document into a ``NetworkPolicy``.

    ``path`` is the document's field-path prefix (e.g. ``documents[3]``; ``""`` for a lone
    document). Raises ``ConfigError`` (one line: file, field path, problem) for anything the
    Kubernetes API would reject and for unknown fields (IPv6 CIDRs: ``check_ip_families``)."""
    f = Fields(doc, source, path, what="a NetworkPolicy manifest (a mapping)")
    api_version = f.req("apiVersion", str)
    if api_version != API_VERSION:
        raise f.error("apiVersion", f"{api_version!r} is not supported for NetworkPolicy (use {API_VERSION})")
    kind = f.req("kind", str)
    if kind != KIND:
        raise f.error("kind", f"expected {KIND}, got {kind!r}")
    f.ignore("status")

    meta = Fields(f.req("metadata", dict), source, f.field("metadata"))
    name = validate_name(meta.req("name", str), source, meta.field("name"))
    namespace = validate_name(meta.opt("namespace", str, "default"), source, meta.field("namespace"),
                              dns_label=True)
    validate_labels(meta.opt("labels", dict), source, meta.field("labels"))
    meta.opt("annotations", dict)
    meta.ignore(*_IGNORED_METADATA)
    meta.done()

    spec = Fields(f.req("spec", dict), source, f.field("spec"))
    pod_selector = parse_selector(spec.req("podSelector", dict), source, spec.field("podSelector"))
    ingress = tuple(
        _parse_rule(raw, source, p, "from")
        for p, raw in items(spec.opt("ingress", list), source, spec.field("ingress"))
    )
    egress = tuple(
        _parse_rule(raw, source, p, "to")
        for p, raw in items(spec.opt("egress", list), source, spec.field("egress"))
    )
    policy_types = _parse_policy_types(spec.opt("policyTypes", list), source, spec.field("policyTypes"))
    if not policy_types:
        # API defaulting: Ingress always; Egress only when there is at least one egress rule.
        policy_types = ("Ingress", "Egress") if egress else ("Ingress",)
    spec.done()
    f.done()
    return NetworkPolicy(namespace=namespace, name=name, pod_selector=pod_selector,
                         policy_types=policy_types, ingress=ingress, egress=egress, source=source)


def _parse_policy_types(raw: list | None, source: str | None, path: str) -> tuple[str, ...]:
    types: list[str] = []
    for p, value in items(raw, source, path):
        if value not in POLICY_TYPES:
            raise ConfigError(source, p, f"{value!r} is not a policy type (Ingress or Egress)")
        if value in types:
            raise ConfigError(source, p, f"duplicate policy type {value!r}")
        types.append(value)
    # Canonical order so that equal policies compare equal whatever the manifest's order.
    return tuple(t for t in POLICY_TYPES if t in types)


def parse_selector(raw: Any, source: str | None, path: str) -> LabelSelector:
    """A metav1.LabelSelector (matchLabels and matchExpressions), validated like the API server."""
    f = Fields(raw, source, path, what="a label selector (a mapping)")
    match_labels = validate_labels(f.opt("matchLabels", dict), source, f.field("matchLabels"))
    requirements = [
        _parse_requirement(r, source, p)
        for p, r in items(f.opt("matchExpressions", list), source, f.field("matchExpressions"))
    ]
    f.done()
    return LabelSelector.of(match_labels, requirements)


def _parse_requirement(raw: Any, source: str | None, path: str) -> SelectorRequirement:
    f = Fields(raw, source, path)
    key = f.req("key", str)
    problem = label_key_problem(key)
    if problem:
        raise f.error("key", problem)
    operator = f.req("operator", str, choices=OPERATORS)
    values = []
    for p, v in items(f.opt("values", list), source, f.field("values")):
        problem = label_value_problem(v)
        if problem:
            raise ConfigError(source, p, problem)
        values.append(v)
    if operator in ("In", "NotIn") and not values:
        raise f.error("values", f"must be non-empty when operator is {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise f.error("values", f"must be empty when operator is {operator}")
    f.done()
    return SelectorRequirement(key, operator, tuple(values))


def _parse_rule(raw: Any, source: str | None, path: str, peers_key: str) -> PolicyRule:
    f = Fields(raw, source, path, what="a rule (a mapping)")
    peers = tuple(_parse_peer(p_raw, source, p)
                  for p, p_raw in items(f.opt(peers_key, list), source, f.field(peers_key)))
    ports = tuple(_parse_port(p_raw, source, p)
                  for p, p_raw in items(f.opt("ports", list), source, f.field("ports")))
    f.done()
    return PolicyRule(peers=peers, ports=ports)


def _parse_peer(raw: Any, source: str | None, path: str) -> PolicyPeer:
    f = Fields(raw, source, path, what="a peer (a mapping)")
    pod_raw = f.opt("podSelector", dict)
    ns_raw = f.opt("namespaceSelector", dict)
    ip_raw = f.opt("ipBlock", dict)
    f.done()
    if pod_raw is None and ns_raw is None and ip_raw is None:
        raise ConfigError(source, path, "must specify one of podSelector, namespaceSelector or ipBlock")
    if ip_raw is not None and (pod_raw is not None or ns_raw is not None):
        raise f.error("ipBlock", "may not be combined with podSelector or namespaceSelector in one peer "
                      "(use separate peers)")
    if ip_raw is not None:
        return PolicyPeer(ip_block=_parse_ip_block(ip_raw, source, f.field("ipBlock")))
    return PolicyPeer(
        pod_selector=parse_selector(pod_raw, source, f.field("podSelector")) if pod_raw is not None else None,
        namespace_selector=(parse_selector(ns_raw, source, f.field("namespaceSelector"))
                            if ns_raw is not None else None),
    )


def _parse_cidr(value: Any, source: str | None, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise ConfigError(source, path, f"must be a CIDR string such as 10.0.0.0/16, got {value!r}")
    if "/" not in value:
        raise ConfigError(source, path, f"{value!r} is not a CIDR (write it as address/prefix, e.g. {value}/32)")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(source, path, f"{value!r} is not a valid CIDR") from None
    return net


def _parse_ip_block(raw: Any, source: str | None, path: str) -> IPBlock:
    f = Fields(raw, source, path)
    cidr = _parse_cidr(f.req("cidr", str), source, f.field("cidr"))
    excepts = []
    for p, value in items(f.opt("except", list), source, f.field("except")):
        net = _parse_cidr(value, source, p)
        if net.version != cidr.version or not net.subnet_of(cidr):  # type: ignore[arg-type]
            raise ConfigError(source, p, f"{net} is not inside cidr {cidr}")
        if net == cidr:
            raise ConfigError(source, p, f"{net} must be strictly inside cidr {cidr} (it excepts the whole block)")
        excepts.append(net)
    f.done()
    return IPBlock(cidr=cidr, except_=tuple(excepts))


def _parse_port(raw: Any, source: str | None, path: str) -> PolicyPort:
    f = Fields(raw, source, path, what="a port (a mapping)")
    protocol = f.opt("protocol", str, "TCP")
    if protocol not in PROTOCOLS:
        raise f.error("protocol", f"{protocol!r} is not a supported protocol (TCP, UDP or SCTP)")
    port = f.opt("port", (int, str))
    end_port = f.opt("endPort", int)
    f.done()
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise f.error("port", f"{port} is not a valid port number (1-65535)")
    if isinstance(port, str):
        problem = port_name_problem(port)
        if problem:
            raise f.error("port", problem)
    if end_port is not None:
        if port is None:
            raise f.error("port", "required when endPort is set")
        if isinstance(port, str):
            raise f.error("endPort", f"may not be set when port is a named port ({port!r})")
        if not 1 <= end_port <= 65535:
            raise f.error("endPort", f"{end_port} is not a valid port number (1-65535)")
        if end_port < port:
            raise f.error("endPort", f"{end_port} must be greater than or equal to port {port}")
    return PolicyPort(protocol=protocol, port=port, end_port=end_port)


__all__ = ["API_VERSION", "KIND", "PROTOCOLS", "POLICY_TYPES", "parse_network_policy", "parse_selector",
           "port_name_problem"]


# The inverse of parse_network_policy: the model back as a manifest (the external engine's
# snapshot and events, the served Kubernetes API).
def _selector(sel: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sel.match_labels:
        out["matchLabels"] = dict(sel.match_labels)
    if sel.match_expressions:
        out["matchExpressions"] = [
            {"key": r.key, "operator": r.operator, **({"values": list(r.values)} if r.values else {})}
            for r in sel.match_expressions]
    return out


def _peer(peer: PolicyPeer) -> dict[str, Any]:
    if peer.ip_block is not None:
        block: dict[str, Any] = {"cidr": str(peer.ip_block.cidr)}
        if peer.ip_block.except_:
            block["except"] = [str(e) for e in peer.ip_block.except_]
        return {"ipBlock": block}
    out: dict[str, Any] = {}
    if peer.pod_selector is not None:
        out["podSelector"] = _selector(peer.pod_selector)
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = _selector(peer.namespace_selector)
    return out


def _port(port: PolicyPort) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": port.protocol}
    if port.port is not None:
        out["port"] = port.port
    if port.end_port is not None:
        out["endPort"] = port.end_port
    return out


def _rule(rule: PolicyRule, peers_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.peers:
        out[peers_key] = [_peer(p) for p in rule.peers]
    if rule.ports:
        out["ports"] = [_port(p) for p in rule.ports]
    return out


def policy_to_manifest(policy: NetworkPolicy) -> dict[str, Any]:
    """The policy as a ``networking.k8s.io/v1`` NetworkPolicy manifest (parses back equal)."""
    spec: dict[str, Any] = {"podSelector": _selector(policy.pod_selector),
                            "policyTypes": list(policy.policy_types)}
    if policy.ingress:
        spec["ingress"] = [_rule(r, "from") for r in policy.ingress]
    if policy.egress:
        spec["egress"] = [_rule(r, "to") for r in policy.egress]
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": policy.name, "namespace": policy.namespace}, "spec": spec}


def check_ip_families(policy: NetworkPolicy, cluster: Any, source: str | None, path: str) -> None:
    """Refuse (ConfigError naming the field under ``path``) an IPv6 ipBlock in a policy entering an
    IPv4-only ``cluster``; dual-stack clusters (``cluster.dual_stack``) take both families."""
    if getattr(cluster, "dual_stack", False):
        return
    for direction, key, rules in (("ingress", "from", policy.ingress), ("egress", "to", policy.egress)):
        for i, rule in enumerate(rules):
            for j, peer in enumerate(rule.peers):
                if peer.ip_block is not None and peer.ip_block.cidr.version == 6:
                    field = f"{path + '.' if path else ''}spec.{direction}[{i}].{key}[{j}].ipBlock.cidr"
                    raise ConfigError(source, field, f"IPv6 CIDR {peer.ip_block.cidr} needs a dual-stack "
                                      "topology (ip_families: [IPv4, IPv6])")

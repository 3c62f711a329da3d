"""Cluster events as a policy controller's informers deliver them: pure data, no kernel.

An event is what the API server tells a watcher: a pod was added (with or without an IP yet),
updated (relabeled, IP assigned), deleted; a namespace was added or relabeled; a network policy
was created, updated or deleted. ``apply_event`` changes a ``Cluster`` the way the event says,
so every node controller keeps its own view of the cluster (the model *as delivered to it*);
whether an event asks for a sync is the engine's call (``NodeEngine.wants_sync``).

Events serialize to one JSON object (``to_json``/``from_json``) for external controllers; a
policy travels as its Kubernetes manifest (``policy_to_manifest``), so an external program can
parse it with any Kubernetes library.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from harness.errors import ConfigError
from harness.model.cluster import Cluster, ContainerPort, Namespace, Pod, PodKind
from harness.model.netpol import parse_network_policy, policy_to_manifest
from harness.model.policy import NetworkPolicy


class EventKind(StrEnum):
    POD_ADDED = "pod-added"
    POD_UPDATED = "pod-updated"  # relabeled and/or IP assigned
    POD_DELETED = "pod-deleted"
    NAMESPACE_ADDED = "namespace-added"
    NAMESPACE_UPDATED = "namespace-updated"  # relabeled
    POLICY_ADDED = "policy-added"
    POLICY_UPDATED = "policy-updated"
    POLICY_DELETED = "policy-deleted"


@dataclass
class ClusterEvent:
    """One API-server event. ``key`` is ``ns/name`` (pods, policies) or the namespace name.
    ``pod``/``policy``/``labels`` carry the new object (None for deletions). ``seq`` and
    ``emitted_ns`` (CLOCK_REALTIME) are stamped by the controller when the event is emitted."""

    kind: EventKind
    key: str
    pod: Pod | None = None
    policy: NetworkPolicy | None = None
    labels: dict[str, str] | None = None
    seq: int = 0
    emitted_ns: int = 0
    note: str = ""

    @property
    def resource(self) -> str:
        """``pod``, ``namespace`` or ``policy``."""
        return self.kind.value.split("-", 1)[0]

    def describe(self) -> str:
        return f"#{self.seq} {self.kind.value} {self.key}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"type": "event", "seq", "kind", "key", "emitted_ns", "pod"?,
        "policy"? (a NetworkPolicy manifest), "labels"?}``."""
        out: dict[str, Any] = {"type": "event", "seq": self.seq, "kind": self.kind.value, "key": self.key,
                               "emitted_ns": self.emitted_ns}
        if self.pod is not None:
            out["pod"] = pod_to_dict(self.pod)
        if self.policy is not None:
            out["policy"] = policy_to_manifest(self.policy)
        if self.labels is not None:
            out["labels"] = dict(self.labels)
        if self.note:
            out["note"] = self.note
        return out

    def to_json(self) -> str:
        """One line of JSON (no newline inside)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | None = None) -> ClusterEvent:
        """The inverse of ``to_dict``; a malformed dict raises ConfigError naming the field."""
        try:
            kind = EventKind(d["kind"])
            key = str(d["key"])
        except (KeyError, ValueError) as e:
            raise ConfigError(source, "kind" if "kind" not in d or isinstance(e, ValueError) else "key",
                              f"not a cluster event: {e}") from None
        pod = pod_from_dict(d["pod"], source) if d.get("pod") is not None else None
        policy = parse_network_policy(d["policy"], source, "policy") if d.get("policy") is not None else None
        labels = dict(d["labels"]) if d.get("labels") is not None else None
        return cls(kind, key, pod=pod, policy=policy, labels=labels, seq=int(d.get("seq", 0)),
                   emitted_ns=int(d.get("emitted_ns", 0)), note=str(d.get("note", "")))

    @classmethod
    def from_json(cls, line: str, source: str | None = None) -> ClusterEvent:
        return cls.from_dict(json.loads(line), source)


# -- constructors (the words scenarios use) --------------------------------------------------------
def pod_added(pod: Pod) -> ClusterEvent:
    """A pod appeared (a policy controller acts on it only once it has an IP)."""
    return ClusterEvent(EventKind.POD_ADDED, pod.key, pod=copy.deepcopy(pod))


def pod_updated(pod: Pod) -> ClusterEvent:
    """A pod changed (labels, IP); carries the whole new pod, as an informer update does."""
    return ClusterEvent(EventKind.POD_UPDATED, pod.key, pod=copy.deepcopy(pod))


def pod_relabeled(pod: Pod, labels: dict[str, str]) -> ClusterEvent:
    """``pod`` with its labels replaced by ``labels``."""
    new = copy.deepcopy(pod)
    new.labels = dict(labels)
    return ClusterEvent(EventKind.POD_UPDATED, pod.key, pod=new, note="relabeled")


def pod_status(pod: Pod, *, phase: str | None = None, ip: Any = ..., note: str = "") -> ClusterEvent:
    """A kubelet status update of ``pod``: its ``phase`` and/or IP (``ip=None``: none yet) change;
    the informer delivers it as an update carrying the whole new pod."""
    new = copy.deepcopy(pod)
    if phase is not None:
        new.phase = phase
    if ip is not ...:
        new.ip = ipaddress.IPv4Address(ip) if ip is not None else None
    what = note or ", ".join(x for x in (f"phase {phase}" if phase else "", "ip" if ip is not ... else "") if x)
    return ClusterEvent(EventKind.POD_UPDATED, pod.key, pod=new, note=what or "status")


def pod_removed(key: str) -> ClusterEvent:
    return ClusterEvent(EventKind.POD_DELETED, key)


def namespace_added(name: str, labels: dict[str, str] | None = None) -> ClusterEvent:
    return ClusterEvent(EventKind.NAMESPACE_ADDED, name, labels=dict(labels or {}))


def namespace_relabeled(name: str, labels: dict[str, str]) -> ClusterEvent:
    """The namespace's labels become ``labels`` (kubernetes.io/metadata.name is always kept)."""
    return ClusterEvent(EventKind.NAMESPACE_UPDATED, name, labels=dict(labels))


def policy_created(policy: NetworkPolicy) -> ClusterEvent:
    return ClusterEvent(EventKind.POLICY_ADDED, policy.key, policy=copy.deepcopy(policy))


def policy_updated(policy: NetworkPolicy) -> ClusterEvent:
    return ClusterEvent(EventKind.POLICY_UPDATED, policy.key, policy=copy.deepcopy(policy))


def policy_deleted(key: str) -> ClusterEvent:
    return ClusterEvent(EventKind.POLICY_DELETED, key)


# -- semantics -------------------------------------------------------------------------------------
def namespace_labels(name: str, labels: dict[str, str] | None) -> dict[str, str]:
    return Namespace(name, dict(labels or {})).labels


def apply_event(cluster: Cluster, event: ClusterEvent) -> None:
    """Change ``cluster`` as ``event`` says. Objects are replaced, never mutated in place, so a
    shallow copy of the cluster's dicts (``snapshot``) stays a consistent view."""
    kind = event.kind
    if kind in (EventKind.POD_ADDED, EventKind.POD_UPDATED):
        assert event.pod is not None
        pod = copy.deepcopy(event.pod)
        if pod.namespace not in cluster.namespaces:
            cluster.namespaces[pod.namespace] = Namespace(pod.namespace)
        cluster.pods[event.key] = pod
    elif kind is EventKind.POD_DELETED:
        cluster.pods.pop(event.key, None)
    elif kind in (EventKind.NAMESPACE_ADDED, EventKind.NAMESPACE_UPDATED):
        cluster.namespaces[event.key] = Namespace(event.key, dict(event.labels or {}))
    elif kind in (EventKind.POLICY_ADDED, EventKind.POLICY_UPDATED):
        assert event.policy is not None
        cluster.policies[event.key] = copy.deepcopy(event.policy)
    elif kind is EventKind.POLICY_DELETED:
        cluster.policies.pop(event.key, None)


def snapshot(cluster: Cluster) -> Cluster:
    """A consistent copy to render from while events keep arriving: new dicts, shared objects
    (``apply_event`` replaces objects instead of mutating them). Nodes are shared as-is."""
    return Cluster(name=cluster.name, underlay_cidr=cluster.underlay_cidr, cluster_cidr=cluster.cluster_cidr,
                   nodes=dict(cluster.nodes), namespaces=dict(cluster.namespaces), pods=dict(cluster.pods),
                   policies=dict(cluster.policies), source=cluster.source)


def view_of(cluster: Cluster) -> Cluster:
    """A controller's private starting view: a deep copy of the API server's cluster."""
    return copy.deepcopy(cluster)


# -- serialization -----------------------------------------------------------------------------------
def pod_to_dict(pod: Pod) -> dict[str, Any]:
    return {"namespace": pod.namespace, "name": pod.name, "node": pod.node, "labels": dict(pod.labels),
            "ip": str(pod.ip) if pod.ip is not None else None, "kind": str(pod.kind),
            **({"phase": pod.phase} if pod.phase != "Running" else {}),
            **({"host_network": True} if pod.host_network else {}),
            "ports": [{"port": p.port, "protocol": p.protocol, **({"name": p.name} if p.name else {})}
                      for p in pod.ports]}


def pod_from_dict(d: dict[str, Any], source: str | None = None) -> Pod:
    try:
        return Pod(namespace=d["namespace"], name=d["name"], node=d["node"], labels=dict(d.get("labels") or {}),
                   ip=ipaddress.IPv4Address(d["ip"]) if d.get("ip") else None,
                   ports=[ContainerPort(int(p["port"]), p.get("protocol", "TCP"), p.get("name"))
                          for p in d.get("ports") or []],
                   kind=PodKind(d.get("kind", "full")), phase=str(d.get("phase", "Running")),
                   host_network=bool(d.get("host_network", False)))
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError(source, "pod", f"malformed pod: {e}") from None


def cluster_to_dict(cluster: Cluster) -> dict[str, Any]:
    """The whole cluster as JSON-ready data (the ``snapshot`` line an external controller gets
    first): nodes, namespaces with labels, pods, policies as manifests."""
    return {
        "name": cluster.name,
        "nodes": [{"name": n.name, "node_ip": str(n.node_ip), "pod_cidr": str(n.pod_cidr), "kind": str(n.kind)}
                  for n in cluster.nodes.values()],
        "namespaces": [{"name": ns.name, "labels": dict(ns.labels)} for ns in cluster.namespaces.values()],
        "pods": [pod_to_dict(p) for p in cluster.pods.values()],
        "policies": [policy_to_manifest(p) for p in cluster.policies.values()],
    }


def cluster_from_dict(d: dict[str, Any], source: str | None = None) -> Cluster:
    """The inverse of ``cluster_to_dict``."""
    from harness.model.cluster import Node, NodeKind

    c = Cluster(name=d.get("name", "cluster"), source=source)
    for n in d.get("nodes", []):
        c.nodes[n["name"]] = Node(n["name"], ipaddress.IPv4Address(n["node_ip"]),
                                  ipaddress.IPv4Network(n["pod_cidr"]), NodeKind(n.get("kind", "real")))
    for ns in d.get("namespaces", []):
        c.namespaces[ns["name"]] = Namespace(ns["name"], dict(ns.get("labels") or {}))
    for p in d.get("pods", []):
        pod = pod_from_dict(p, source)
        c.pods[pod.key] = pod
    for i, m in enumerate(d.get("policies", [])):
        pol = parse_network_policy(m, source, f"policies[{i}]")
        c.policies[pol.key] = pol
    return c


"""Pure cluster model: data classes plus loading and validation of topology YAML and manifests."""

from harness.model.cluster import (
    NAMESPACE_NAME_LABEL,
    Cluster,
    ContainerPort,
    Namespace,
    Node,
    NodeKind,
    Pod,
    PodKind,
)
from harness.model.manifests import apply_manifest_documents, load_manifests
from harness.model.policy import (
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    SelectorRequirement,
)
from harness.model.topology import SHIPPED_DIR, load_topology, resolve_topology, shipped_topologies

__all__ = [
    "NAMESPACE_NAME_LABEL", "Cluster", "ContainerPort", "Namespace", "Node", "NodeKind", "Pod",
    "PodKind", "IPBlock", "LabelSelector", "NetworkPolicy", "PolicyPeer", "PolicyPort", "PolicyRule",
    "SelectorRequirement", "SHIPPED_DIR", "load_topology", "resolve_topology", "shipped_topologies",
    "load_manifests", "apply_manifest_documents",
]

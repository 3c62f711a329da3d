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
from harness.model.policy import (
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    SelectorRequirement,
)

__all__ = [
    "NAMESPACE_NAME_LABEL", "Cluster", "ContainerPort", "Namespace", "Node", "NodeKind", "Pod",
    "PodKind", "IPBlock", "LabelSelector", "NetworkPolicy", "PolicyPeer", "PolicyPort", "PolicyRule",
    "SelectorRequirement",
]

"""Plain Kubernetes manifests applied to a ``Cluster``: Namespace, Pod, NetworkPolicy and Service
objects (Services: ``harness.model.service``) from multi-document YAML (a ``kind: List`` with
``items`` too).

Kubernetes objects carry many fields the harness has no use for (``metadata.annotations``,
``spec.containers[].image``, ``status.phase`` ...): those are accepted and ignored, so a manifest
taken from a real cluster (``kubectl get -o yaml``) loads as is. What the harness does read is
read strictly, and every problem is one line naming the file and the field path, e.g.
``policies.yaml: documents[2].spec.nodeName: required field is missing``.

Deliberate differences from a real API server:
- a Pod must name its node (``spec.nodeName``): there is no scheduler, and where a pod runs
  decides whose rules police it;
- the annotation ``netpol-harness.io/pod-kind: full|light`` picks how the lab realizes the pod;
- ``status.podIP`` may pin the pod IP; otherwise the node's IPAM picks the lowest free address;
- the namespace of a Pod or NetworkPolicy must exist (declared in the topology or as a Namespace
  object); only ``default`` exists implicitly, as in every Kubernetes cluster;
- declaring an object that already exists is an error (there is no update here).

This module also holds the pod admission rules shared with ``harness.model.topology``: port
validation (``container_port``), pod IP assignment (``PodIPAM``) and ``add_pods``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError
from harness.model.cluster import (
    NAMESPACE_NAME_LABEL,
    PROTOCOLS,
    Cluster,
    ContainerPort,
    Namespace,
    Pod,
    PodKind,
)
from harness.model.fields import Fields, items, join, load_yaml_documents
from harness.model.labels import validate_labels, validate_name

log = logging.getLogger(__name__)

POD_KIND_ANNOTATION = "netpol-harness.io/pod-kind"
DEFAULT_NAMESPACE = "default"

# kind -> the apiVersion Kubernetes serves it under.
API_VERSIONS = {"List": "v1", "Namespace": "v1", "Pod": "v1", "NetworkPolicy": "networking.k8s.io/v1",
                "Service": "v1"}

# Every field of metav1.ObjectMeta: accepted so real manifests load; only some are read.
OBJECT_META_FIELDS = (
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
    "ownerReferences", "finalizers", "managedFields",
)

# IANA_SVC_NAME, what Kubernetes requires of a container port name.
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?!-))*(?<!-)$")


# -- shared pod admission --------------------------------------------------------------------------

def container_port(port: Any, protocol: Any, name: Any, source: str | None, path: str,
                   port_key: str = "port") -> ContainerPort:
    """A validated ``ContainerPort`` (1..65535, TCP/UDP/SCTP, IANA service name), or ConfigError
    naming ``path.<field>``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(source, join(path, port_key), f"{port!r} is not a valid port (1..65535)")
    if protocol not in PROTOCOLS:
        raise ConfigError(source, join(path, "protocol"), f"{protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if name is not None and (not isinstance(name, str) or len(name) > 15 or not _PORT_NAME.match(name)):
        raise ConfigError(source, join(path, "name"), f"{name!r} is not a valid port name (IANA service name: "
                          "up to 15 of [a-z0-9-], at least one letter, no leading, trailing or double '-')")
    return ContainerPort(port, protocol, name)


def check_unique_ports(ports: Sequence[tuple[str, ContainerPort]], source: str | None) -> None:
    """Reject two ``(field_path, port)`` entries of one pod with the same port/protocol or the same
    name (Kubernetes rejects both)."""
    seen: dict[object, str] = {}
    for path, p in ports:
        keys = [((p.port, p.protocol), f"{p.port}/{p.protocol}")]
        if p.name is not None:
            keys.append((p.name, f"name {p.name}"))
        for key, what in keys:
            if key in seen:
                raise ConfigError(source, path, f"duplicate port {what} (first at {seen[key]})")
            seen[key] = path


@dataclass
class PodDecl:
    """A pod on its way into a cluster, with where it was declared (for error messages).

    The ``*_field`` attributes name where the pod's IP, namespace and node came from
    (``pods[3].ip``, ``documents[1].status.podIP``); they default to ``path.ip`` etc."""

    pod: Pod
    source: str | None
    path: str
    ip_field: str | None = None
    namespace_field: str | None = None
    node_field: str | None = None

    @property
    def origin(self) -> str:
        return f"{self.path} ({self.pod.key})"


class _NodePool:
    """The addresses of one node's pod CIDR: used ones (with their owner) and a scan cursor.

    The cursor only moves forward, so allocating n pods costs O(n + reserved) in total; with
    every reservation made before the first allocation this is exactly "lowest free address"."""

    def __init__(self, cidr: ipaddress.IPv4Network):
        self.cidr = cidr
        self.gateway = cidr.network_address + 1
        self.used: dict[ipaddress.IPv4Address, str] = {}
        self._next = int(cidr.network_address) + 2
        self._last = int(cidr.broadcast_address) - 1

    @property
    def capacity(self) -> int:
        return max(self._last - int(self.cidr.network_address) - 1, 0)

    def take_next(self) -> ipaddress.IPv4Address | None:
        while self._next <= self._last:
            ip = ipaddress.IPv4Address(self._next)
            self._next += 1
            if ip not in self.used:
                return ip
        return None


class PodIPAM:
    """Deterministic pod IP assignment, like a host-local IPAM per node: the lowest free address
    of the node's pod CIDR after the gateway (``.1``, held by kube-bridge). Built once from a
    cluster (existing pod IPs count as used), then O(1) per pod."""

    def __init__(self, cluster: Cluster):
        self._pools = {name: _NodePool(node.pod_cidr) for name, node in cluster.nodes.items()}
        for pod in cluster.pods.values():
            if pod.ip is not None and pod.node in self._pools:
                self._pools[pod.node].used[pod.ip] = f"pod {pod.key}"

    def reserve(self, decl: PodDecl) -> None:
        """Mark ``decl.pod.ip`` used, or raise naming ``decl.ip_field``: outside the node's pod CIDR,
        the gateway, the network/broadcast address, or taken by another pod."""
        pod, pool = decl.pod, self._pools[decl.pod.node]
        ip = pod.ip
        assert ip is not None
        problem = None
        if ip not in pool.cidr:
            problem = f"{ip} is outside the pod CIDR {pool.cidr} of node {pod.node!r}"
        elif ip == pool.gateway:
            problem = f"{ip} is the gateway of node {pod.node!r} (kube-bridge), not a pod address"
        elif ip in (pool.cidr.network_address, pool.cidr.broadcast_address):
            problem = f"{ip} is the network or broadcast address of {pool.cidr}"
        elif ip in pool.used:
            problem = f"{ip} is already used by {pool.used[ip]}"
        if problem:
            raise ConfigError(decl.source, decl.ip_field or join(decl.path, "ip"), problem)
        pool.used[ip] = decl.origin

    def allocate(self, decl: PodDecl) -> ipaddress.IPv4Address:
        """The next free address on the pod's node, recorded as used by ``decl``."""
        pool = self._pools[decl.pod.node]
        ip = pool.take_next()
        if ip is None:
            raise ConfigError(decl.source, decl.path, f"pod {decl.pod.key}: no free address left in the pod CIDR "
                              f"{pool.cidr} of node {decl.pod.node!r} ({pool.capacity} pods at most)")
        pool.used[ip] = decl.origin
        return ip


def namespace_exists(cluster: Cluster, name: str) -> bool:
    """True if pods and policies may live in ``name`` (declared, or the implicit ``default``)."""
    return name in cluster.namespaces or name == DEFAULT_NAMESPACE


def add_pods(cluster: Cluster, decls: Sequence[PodDecl], ipam: PodIPAM | None = None) -> None:
    """Admit pods into ``cluster``: known node and namespace, unique ``namespace/name``, explicit
    IPs checked first, then the others allocated in declaration order. Nothing is added if any
    check before allocation fails."""
    ipam = ipam or PodIPAM(cluster)
    origins: dict[str, str] = {}
    for decl in decls:
        _check_placement(cluster, decl, origins)
    for decl in decls:
        if decl.pod.ip is not None:
            ipam.reserve(decl)
    for decl in decls:
        if decl.pod.ip is None:
            decl.pod.ip = ipam.allocate(decl)
        cluster.add_pod(decl.pod)  # O(1): the IP is set; also marks pods on virtual nodes VIRTUAL


def _check_placement(cluster: Cluster, decl: PodDecl, origins: dict[str, str]) -> None:
    pod = decl.pod
    if pod.node not in cluster.nodes:
        raise ConfigError(decl.source, decl.node_field or join(decl.path, "node"),
                          f"unknown node {pod.node!r} for pod {pod.key}")
    if not namespace_exists(cluster, pod.namespace):
        raise ConfigError(decl.source, decl.namespace_field or join(decl.path, "namespace"),
                          f"unknown namespace {pod.namespace!r} for pod "
                          f"{pod.key} (declare it under namespaces: or as a Namespace manifest)")
    if pod.key in origins:
        raise ConfigError(decl.source, decl.path, f"duplicate pod {pod.key} (first at {origins[pod.key]})")
    if pod.key in cluster.pods:
        raise ConfigError(decl.source, decl.path, f"pod {pod.key} already exists")
    origins[pod.key] = decl.path


# -- manifest objects ---------------------------------------------------------------------------

@dataclass
class ManifestObject:
    """One Kubernetes object of a manifest file; ``path`` is its field path there
    (``documents[2]``, or ``documents[0].items[3]`` inside a List)."""

    kind: str
    doc: dict[str, Any]
    source: str | None
    path: str


def manifest_objects(docs: Iterable[Any], source: str | None) -> list[ManifestObject]:
    """The objects of a manifest's documents, Lists flattened, kind and apiVersion checked."""
    objects: list[ManifestObject] = []
    for i, doc in enumerate(docs):
        _collect(doc, source, join("documents", i), objects)
    return objects


def _collect(doc: Any, source: str | None, path: str, out: list[ManifestObject]) -> None:
    f = Fields(doc, source, path, what="a Kubernetes object (a mapping)")
    kind = f.req("kind", str)
    if kind not in API_VERSIONS:
        raise f.error("kind", f"unsupported kind {kind!r} (supported: {', '.join(sorted(API_VERSIONS))})")
    api_version = f.req("apiVersion", str)
    if api_version != API_VERSIONS[kind]:
        raise f.error("apiVersion", f"{api_version!r} is not an apiVersion of {kind} "
                      f"(expected {API_VERSIONS[kind]!r})")
    if kind != "List":
        out.append(ManifestObject(kind, doc, source, path))
        return
    f.ignore("metadata")
    for item_path, item in items(f.req("items", list), source, f.field("items")):
        _collect(item, source, item_path, out)
    f.done()


def read_manifest_files(paths: Iterable[str]) -> list[ManifestObject]:
    """The objects of every manifest file, in file then document order."""
    objects: list[ManifestObject] = []
    for path in paths:
        objects.extend(manifest_objects(load_yaml_documents(str(path)), str(path)))
    return objects


def apply_manifest_objects(objects: Sequence[ManifestObject], cluster: Cluster,
                           ipam: PodIPAM | None = None) -> None:
    """Add the objects to ``cluster``: Namespaces first (like Helm's install order, so a Pod may
    come before its Namespace in a file), then Pods, then NetworkPolicies, then Services."""
    namespaces = [o for o in objects if o.kind == "Namespace"]
    for obj in namespaces:
        add_namespace(cluster, read_namespace(obj), obj.source, join(obj.path, "metadata.name"))
    add_pods(cluster, [read_pod(o) for o in objects if o.kind == "Pod"], ipam)
    for obj in objects:
        if obj.kind == "NetworkPolicy":
            _add_policy(cluster, obj)
    services = [o for o in objects if o.kind == "Service"]
    if services:
        from harness.model.service import add_services, parse_service  # its own module

        add_services(cluster, [parse_service(o.doc, o.source, o.path) for o in services])


def apply_manifest_documents(docs: Iterable[Any], cluster: Cluster, source: str | None) -> None:
    """Apply parsed YAML documents (as from ``yaml.safe_load_all``) of one manifest to ``cluster``."""
    apply_manifest_objects(manifest_objects(docs, source), cluster)


def load_manifests(paths: Iterable[str], cluster: Cluster) -> None:
    """Load manifest files and apply all their objects to ``cluster`` as one batch."""
    apply_manifest_objects(read_manifest_files(paths), cluster)


# -- Namespace --------------------------------------------------------------------------------

def read_namespace(obj: ManifestObject) -> Namespace:
    """A ``Namespace`` from a ``kind: Namespace`` object."""
    f = Fields(obj.doc, obj.source, obj.path)
    f.ignore("kind", "apiVersion", "spec", "status")
    meta = _metadata(f)
    name = validate_name(meta.req("name", str), obj.source, meta.field("name"), dns_label=True)
    labels = namespace_labels(meta.opt("labels", dict), name, obj.source, meta.field("labels"))
    meta.done()
    f.done()
    return Namespace(name, labels)


def namespace_labels(labels: Any, name: str, source: str | None, field: str) -> dict[str, str]:
    """Validated namespace labels; ``kubernetes.io/metadata.name``, if given, must be the name."""
    labels = validate_labels(labels, source, field)
    given = labels.get(NAMESPACE_NAME_LABEL)
    if given is not None and given != name:
        raise ConfigError(source, f"{field}.{NAMESPACE_NAME_LABEL}",
                          f"{given!r} differs from the namespace name {name!r} (Kubernetes sets this label)")
    return labels


def add_namespace(cluster: Cluster, namespace: Namespace, source: str | None, name_field: str) -> None:
    """Add a namespace, rejecting a second declaration of the same name (error at ``name_field``)."""
    if namespace.name in cluster.namespaces:
        raise ConfigError(source, name_field, f"namespace {namespace.name!r} already exists")
    cluster.namespaces[namespace.name] = namespace


# -- Pod ----------------------------------------------------------------------------------------

def read_pod(obj: ManifestObject) -> PodDecl:
    """A ``PodDecl`` from a ``kind: Pod`` object (node from ``spec.nodeName``, ports from every
    container, kind from the pod-kind annotation, IP from ``status.podIP`` if set)."""
    f = Fields(obj.doc, obj.source, obj.path)
    f.ignore("kind", "apiVersion")
    meta = _metadata(f)
    name = validate_name(meta.req("name", str), obj.source, meta.field("name"))
    namespace = validate_name(meta.opt("namespace", str, DEFAULT_NAMESPACE), obj.source, meta.field("namespace"),
                              dns_label=True)
    labels = validate_labels(meta.opt("labels", dict), obj.source, meta.field("labels"))
    kind = _pod_kind(meta)
    meta.done()
    spec = Fields(f.req("spec", dict), obj.source, f.field("spec"))
    node, ports = _pod_spec(spec)
    ip, ip_field = _pod_ip(f)
    f.done()
    pod = Pod(namespace, name, node, labels=labels, ip=ip, ports=ports, kind=kind)
    return PodDecl(pod, obj.source, obj.path, ip_field=ip_field, namespace_field=meta.field("namespace"),
                   node_field=spec.field("nodeName"))


def _metadata(f: Fields) -> Fields:
    meta = Fields(f.req("metadata", dict), f.source, f.field("metadata"))
    meta.ignore(*OBJECT_META_FIELDS)  # read ones are read (and type-checked) by the caller
    return meta


def _pod_kind(meta: Fields) -> PodKind:
    annotations = meta.opt("annotations", dict, {})
    value = annotations.get(POD_KIND_ANNOTATION, PodKind.FULL.value)
    if value not in (PodKind.FULL.value, PodKind.LIGHT.value):
        raise ConfigError(meta.source, f"{meta.field('annotations')}.{POD_KIND_ANNOTATION}",
                          f"{value!r} is not one of full, light")
    return PodKind(value)


def _pod_spec(spec: Fields) -> tuple[str, list[ContainerPort]]:
    # Everything else in a PodSpec (volumes, affinity, ...) does not change pod networking here.
    spec.ignore(*(k for k in spec.data if k not in ("nodeName", "containers", "hostNetwork")))
    node = validate_name(spec.req("nodeName", str), spec.source, spec.field("nodeName"))
    if spec.opt("hostNetwork", bool, False):
        raise spec.error("hostNetwork", "hostNetwork pods are not modeled (they share the node's address)")
    ports: list[tuple[str, ContainerPort]] = []
    for path, container in items(spec.req("containers", list), spec.source, spec.field("containers")):
        ports.extend(_container_ports(container, spec.source, path))
    check_unique_ports(ports, spec.source)
    spec.done()
    return node, [p for _, p in ports]


def _container_ports(container: Any, source: str | None, path: str) -> list[tuple[str, ContainerPort]]:
    c = Fields(container, source, path)
    c.ignore(*(k for k in c.data if k != "ports"))
    ports = []
    for port_path, entry in items(c.opt("ports", list), source, c.field("ports")):
        p = Fields(entry, source, port_path)
        p.ignore("hostPort", "hostIP")
        number = p.req("containerPort", int)
        protocol = p.opt("protocol", str, "TCP")
        name = p.opt("name", str)
        p.done()
        ports.append((port_path, container_port(number, protocol, name, source, port_path, port_key="containerPort")))
    c.done()
    return ports


def _pod_ip(f: Fields) -> tuple[ipaddress.IPv4Address | None, str | None]:
    status = Fields(f.opt("status", dict, {}), f.source, f.field("status"))
    status.ignore(*(k for k in status.data if k != "podIP"))
    value = status.opt("podIP", str)
    status.done()
    if value is None:
        return None, None
    field = status.field("podIP")
    return parse_ip(value, f.source, field), field


def parse_ip(value: Any, source: str | None, field: str) -> ipaddress.IPv4Address:
    """An IPv4 address from a YAML string, or ConfigError naming ``field``."""
    if not isinstance(value, str):
        raise ConfigError(source, field, f"must be an IPv4 address string, got {value!r}")
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(source, field, f"{value!r} is not an IPv4 address") from None


# -- NetworkPolicy ----------------------------------------------------------------------------

def _add_policy(cluster: Cluster, obj: ManifestObject) -> None:
    # Imported here: the policy parser is its own module, and loading topologies without any
    # policy must not depend on it.
    from harness.model.netpol import check_ip_families, parse_network_policy

    policy = parse_network_policy(obj.doc, obj.source, obj.path)
    check_ip_families(policy, cluster, obj.source, obj.path)
    if not namespace_exists(cluster, policy.namespace):
        raise ConfigError(obj.source, join(obj.path, "metadata.namespace"),
                          f"unknown namespace {policy.namespace!r} for NetworkPolicy {policy.key}")
    if policy.key in cluster.policies:
        raise ConfigError(obj.source, join(obj.path, "metadata.name"), f"NetworkPolicy {policy.key} already exists")
    if policy.namespace == DEFAULT_NAMESPACE and DEFAULT_NAMESPACE not in cluster.namespaces:
        cluster.namespaces[DEFAULT_NAMESPACE] = Namespace(DEFAULT_NAMESPACE)
    cluster.policies[policy.key] = policy
    log.debug("policy %s from %s %s", policy.key, obj.source, obj.path)

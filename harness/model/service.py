"""Services and their EndpointSlices: pure data, parsing of ``kind: Service`` manifests, ClusterIP
allocation, EndpointSlice derivation from ready pods and the DNS records cluster DNS serves.

Source read: kubernetes v1.28.0 (the upstream tree as imported in github:kevinhehc/k8s-1.28 at
ffd718af; the stored kubernetes/kubernetes snapshot is a 2016 commit and too large to fetch):
- validation: ``v1.28.0:pkg/apis/core/validation/validation.go`` ValidateService / validateServicePort;
- EndpointSlices: ``v1.28.0:staging/src/k8s.io/endpointslice/reconciler.go`` (reconcileByAddressType)
  and ``utils.go`` (podToEndpoint, getEndpointPorts, findPort), ``util/controller_utils.go``
  (ShouldPodBeInEndpoints).

What is modeled: ``type: ClusterIP`` (the default) with a ClusterIP or ``clusterIP: None``
(headless), ports (name, port, targetPort number or name, protocol), a plain label-map selector,
``publishNotReadyAddresses``. Not modeled, and rejected with a one-line error rather than silently
ignored: NodePort/LoadBalancer/ExternalName types, externalIPs, ClientIP session affinity,
``internalTrafficPolicy: Local``, IPv6/dual stack.

Deliberate difference from a real API server: kube-apiserver picks a *random* free ClusterIP
(``pkg/registry/core/service/ipallocator``); the harness takes the lowest free address of the
service CIDR after ``.1`` (which every cluster gives the ``kubernetes`` Service) so runs are
reproducible. Explicit ``clusterIP`` values are reserved before any allocation.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError
from harness.model.cluster import PROTOCOLS
from harness.model.fields import Fields, items, join
from harness.model.labels import validate_labels, validate_name

if TYPE_CHECKING:
    from harness.model.cluster import Cluster, Pod

DEFAULT_SERVICE_CIDR = "10.96.0.0/12"  # kubeadm's default --service-cluster-ip-range
CLUSTER_DOMAIN = "cluster.local"  # kubelet's --cluster-domain default in kubeadm clusters
CLUSTER_IP_NONE = "None"
# v1.28.0:pkg/controller/endpointslice/config/v1alpha1/defaults.go: MaxEndpointsPerSlice = 100
MAX_ENDPOINTS_PER_SLICE = 100
# discovery.k8s.io/v1 well-known labels (v1.28.0:staging/src/k8s.io/api/discovery/v1/well_known_labels.go)
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
LABEL_HEADLESS = "service.kubernetes.io/headless"

# Fields of a ServiceSpec that are read, accepted-and-ignored, or refused as not modeled.
_SPEC_READ = ("type", "clusterIP", "clusterIPs", "ports", "selector", "publishNotReadyAddresses",
              "sessionAffinity", "internalTrafficPolicy")
_SPEC_IGNORED = ("ipFamilies", "ipFamilyPolicy")
_SPEC_REFUSED = ("externalIPs", "externalName", "loadBalancerIP", "loadBalancerSourceRanges",
                 "loadBalancerClass", "allocateLoadBalancerNodePorts", "externalTrafficPolicy",
                 "healthCheckNodePort", "sessionAffinityConfig", "trafficDistribution")
_PORT_FIELDS = ("name", "port", "targetPort", "protocol", "appProtocol", "nodePort")
# LabelSelector fields someone may write into a Service's plain selector map by habit.
_LABEL_SELECTOR_FIELDS = ("matchLabels", "matchExpressions")


@dataclass(frozen=True)
class ServicePort:
    """One ``spec.ports[]`` entry; ``target_port`` is a number or a pod's named port."""

    port: int
    protocol: str = "TCP"
    name: str = ""  # "" when the Service has one unnamed port, as in Kubernetes
    target_port: int | str = 0  # 0: same as port (the API server's default)

    @property
    def target(self) -> int | str:
        return self.target_port or self.port


@dataclass
class Service:
    """A v1 Service of type ClusterIP; ``cluster_ip`` None means headless (``clusterIP: None``)."""

    namespace: str
    name: str
    ports: list[ServicePort] = field(default_factory=list)
    selector: dict[str, str] | None = None  # None: no selector, no controller-made EndpointSlices
    cluster_ip: ipaddress.IPv4Address | None = None
    headless: bool = False
    publish_not_ready_addresses: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def fqdn(self, domain: str = CLUSTER_DOMAIN) -> str:
        """``<svc>.<ns>.svc.<domain>``, the name cluster DNS answers for this Service."""
        return f"{self.name}.{self.namespace}.svc.{domain}"


@dataclass(frozen=True)
class EndpointPort:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class Endpoint:
    """One pod in an EndpointSlice (``discovery.k8s.io/v1`` Endpoint)."""

    address: ipaddress.IPv4Address
    ready: bool
    serving: bool
    terminating: bool
    node_name: str
    pod: str  # targetRef as ``namespace/name``


@dataclass
class EndpointSlice:
    """A ``discovery.k8s.io/v1`` EndpointSlice (addressType IPv4) owned by one Service."""

    namespace: str
    name: str
    service: str  # the owning Service's name
    ports: tuple[EndpointPort, ...]
    endpoints: list[Endpoint]
    headless: bool = False

    def to_manifest(self) -> dict[str, Any]:
        """The object as the API server would serve it (the fields the controller writes)."""
        labels = {LABEL_SERVICE_NAME: self.service, LABEL_MANAGED_BY: CONTROLLER_NAME}
        if self.headless:
            labels[LABEL_HEADLESS] = ""
        return {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": labels,
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": self.service,
                                              "controller": True, "blockOwnerDeletion": True}]},
            "addressType": "IPv4",
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in self.ports],
            "endpoints": [{"addresses": [str(e.address)],
                           "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
                           "nodeName": e.node_name,
                           "targetRef": {"kind": "Pod", "namespace": e.pod.split("/")[0],
                                         "name": e.pod.split("/")[1]}}
                          for e in self.endpoints],
        }


# -- parsing ------------------------------------------------------------------------------------

@dataclass
class ServiceDecl:
    """A parsed Service on its way into a cluster, with where it came from (for error messages)."""

    service: Service
    source: str | None
    path: str
    cluster_ip_field: str = ""


def parse_service(doc: dict[str, Any], source: str | None, path: str) -> ServiceDecl:
    """A ``ServiceDecl`` from a ``kind: Service`` object, validated as ValidateService does (for the
    modeled subset), or ConfigError naming ``source`` and the field path."""
    f = Fields(doc, source, path)
    f.ignore("kind", "apiVersion", "status")
    meta = Fields(f.req("metadata", dict), source, f.field("metadata"))
    from harness.model.manifests import OBJECT_META_FIELDS  # one list of ObjectMeta fields

    meta.ignore(*OBJECT_META_FIELDS)
    # validation.go: ValidateServiceName is a DNS-1035 label; a DNS label is close enough here.
    name = validate_name(meta.req("name", str), source, meta.field("name"), dns_label=True)
    namespace = validate_name(meta.opt("namespace", str, "default"), source, meta.field("namespace"), dns_label=True)
    labels = validate_labels(meta.opt("labels", dict), source, meta.field("labels"))
    meta.done()
    spec = Fields(f.req("spec", dict), source, f.field("spec"))
    service = Service(namespace, name, labels=labels)
    decl = ServiceDecl(service, source, path, cluster_ip_field=spec.field("clusterIP"))
    _read_spec(spec, decl)
    f.done()
    return decl


def _read_spec(spec: Fields, decl: ServiceDecl) -> None:
    svc = decl.service
    for key in _SPEC_REFUSED:
        if spec.has(key):
            raise spec.error(key, "not modeled by the harness (ClusterIP Services only)")
    spec.ignore(*_SPEC_IGNORED)
    kind = spec.opt("type", str, "ClusterIP")
    if kind != "ClusterIP":
        raise spec.error("type", f"{kind!r} is not modeled (only ClusterIP; NodePort, LoadBalancer and "
                         "ExternalName are not)")
    affinity = spec.opt("sessionAffinity", str, "None")
    if affinity != "None":
        raise spec.error("sessionAffinity", f"{affinity!r} is not modeled (only None)")
    itp = spec.opt("internalTrafficPolicy", str, "Cluster")
    if itp != "Cluster":
        raise spec.error("internalTrafficPolicy", f"{itp!r} is not modeled (only Cluster)")
    svc.publish_not_ready_addresses = spec.opt("publishNotReadyAddresses", bool, False)
    _read_cluster_ip(spec, decl)
    svc.selector = _read_selector(spec)
    svc.ports = _read_ports(spec)
    if not svc.ports and not svc.headless:
        raise spec.error("ports", "required field is missing (only a headless Service may have no ports)")
    spec.done()


def _read_cluster_ip(spec: Fields, decl: ServiceDecl) -> None:
    svc = decl.service
    value = spec.opt("clusterIP", str)
    ips = spec.opt("clusterIPs", list)
    if ips is not None:
        if len(ips) != 1 or (value is not None and ips[0] != value):
            raise spec.error("clusterIPs", f"{ips!r}: only one IPv4 family is modeled, equal to clusterIP")
        if value is None:
            value, decl.cluster_ip_field = ips[0], join(spec.field("clusterIPs"), 0)
    if value is None or value == "":
        return
    if value == CLUSTER_IP_NONE:
        svc.headless = True
        return
    try:
        svc.cluster_ip = ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(spec.source, decl.cluster_ip_field, f"{value!r} is not an IPv4 address or 'None'") from None


def _read_selector(spec: Fields) -> dict[str, str] | None:
    selector = spec.opt("selector", dict)
    if selector is None:
        return None
    for key in _LABEL_SELECTOR_FIELDS:
        if key in selector:
            raise ConfigError(spec.source, join(spec.field("selector"), key),
                              "unknown selector field: a Service selector is a plain map of label key to "
                              "value (matchLabels/matchExpressions belong to LabelSelector, not Service)")
    # An empty map does not survive the API server (omitempty): it is stored as no selector.
    return validate_labels(selector, spec.source, spec.field("selector")) or None


def _read_ports(spec: Fields) -> list[ServicePort]:
    entries = items(spec.opt("ports", list), spec.source, spec.field("ports"))
    ports: list[ServicePort] = []
    names: dict[str, str] = {}
    keys: dict[tuple[int, str], str] = {}
    for path, entry in entries:
        p = Fields(entry, spec.source, path)
        name = p.opt("name", str, "")
        # validation.go validateServicePort: a name is required when there is more than one port.
        if len(entries) > 1 and not name:
            raise p.error("name", "required field is missing (a Service with more than one port must name each)")
        if name:
            validate_name(name, spec.source, p.field("name"), dns_label=True)
            if name in names:
                raise p.error("name", f"duplicate port name {name!r} (first at {names[name]})")
            names[name] = path
        number = _port_number(p, "port", p.req("port", int))
        protocol = p.opt("protocol", str, "TCP")
        if protocol not in PROTOCOLS:
            raise p.error("protocol", f"{protocol!r} is not one of {', '.join(PROTOCOLS)}")
        target = _target_port(p)
        if p.opt("nodePort", int) is not None:
            raise p.error("nodePort", "may not be used when `type` is 'ClusterIP'")
        p.ignore("appProtocol")
        p.done()
        # validation.go ValidateService: {protocol, port} must be unique.
        key = (number, protocol)
        if key in keys:
            raise ConfigError(spec.source, path, f"duplicate port {number}/{protocol} (first at {keys[key]})")
        keys[key] = path
        ports.append(ServicePort(number, protocol, name, target))
    return ports


def _port_number(p: Fields, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise p.error(key, f"{value!r} is not a valid port (1..65535)")
    return value


def _target_port(p: Fields) -> int | str:
    value = p.opt("targetPort", (int, str))
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return _port_number(p, "targetPort", value)
    # ValidatePortNumOrName: an IANA_SVC_NAME (or a number written as a string is still a name there).
    from harness.model.manifests import container_port  # the one IANA name check

    container_port(1, "TCP", value, p.source, p.path)
    return value


# -- admission: ClusterIP allocation ------------------------------------------------------------

class ServiceIPAM:
    """ClusterIPs of one service CIDR: explicit ones reserved, then lowest free from ``.2``."""

    def __init__(self, cluster: Cluster):
        self.cidr = cluster.service_cidr
        self.used: dict[ipaddress.IPv4Address, str] = {self.cidr.network_address + 1: "the kubernetes Service"}
        for svc in cluster.services.values():
            if svc.cluster_ip is not None:
                self.used[svc.cluster_ip] = f"Service {svc.key}"
        self._next = int(self.cidr.network_address) + 2

    def reserve(self, decl: ServiceDecl) -> None:
        ip = decl.service.cluster_ip
        assert ip is not None
        if ip not in self.cidr:
            raise ConfigError(decl.source, decl.cluster_ip_field, f"{ip} is outside the service CIDR {self.cidr}")
        if ip in (self.cidr.network_address, self.cidr.broadcast_address):
            raise ConfigError(decl.source, decl.cluster_ip_field,
                              f"{ip} is the network or broadcast address of the service CIDR {self.cidr}")
        if ip in self.used:
            raise ConfigError(decl.source, decl.cluster_ip_field, f"{ip} is already allocated to {self.used[ip]}")
        self.used[ip] = f"Service {decl.service.key}"

    def allocate(self, decl: ServiceDecl) -> ipaddress.IPv4Address:
        last = int(self.cidr.broadcast_address) - 1
        while self._next <= last:
            ip = ipaddress.IPv4Address(self._next)
            self._next += 1
            if ip not in self.used:
                self.used[ip] = f"Service {decl.service.key}"
                return ip
        raise ConfigError(decl.source, decl.path, f"Service {decl.service.key}: the service CIDR {self.cidr} is full")


def add_services(cluster: Cluster, decls: Sequence[ServiceDecl]) -> None:
    """Admit Services into ``cluster``: known namespace, unique ``namespace/name``, explicit
    ClusterIPs inside the service CIDR and free, then the others allocated in declaration order."""
    from harness.model.manifests import namespace_exists

    if decls and cluster.service_cidr.overlaps(cluster.cluster_cidr):
        raise ConfigError(cluster.source, "service_cidr", f"{cluster.service_cidr} overlaps cluster_cidr "
                          f"({cluster.cluster_cidr}): set a service_cidr outside it for Services")
    seen: dict[str, str] = {}
    for d in decls:
        svc = d.service
        if not namespace_exists(cluster, svc.namespace):
            raise ConfigError(d.source, join(d.path, "metadata.namespace"),
                              f"unknown namespace {svc.namespace!r} for Service {svc.key}")
        if svc.key in cluster.services or svc.key in seen:
            raise ConfigError(d.source, join(d.path, "metadata.name"),
                              f"Service {svc.key} already exists" + (f" (at {seen[svc.key]})" if svc.key in seen else ""))
        seen[svc.key] = d.path
    ipam = ServiceIPAM(cluster)
    for d in decls:
        if d.service.cluster_ip is not None:
            ipam.reserve(d)
    for d in decls:
        if d.service.cluster_ip is None and not d.service.headless:
            d.service.cluster_ip = ipam.allocate(d)
        cluster.services[d.service.key] = d.service


# -- EndpointSlices -----------------------------------------------------------------------------

def selects(service: Service, pod: Pod) -> bool:
    """True if ``service``'s selector selects ``pod`` (same namespace, every label equal)."""
    if not service.selector or pod.namespace != service.namespace:
        return False
    return all(pod.labels.get(k) == v for k, v in service.selector.items())


def _find_port(pod: Pod, port: ServicePort) -> int | None:
    # utils.go findPort: a number is used as is; a name is looked up in the pod's ports with the
    # same protocol; no match -> this port is left out for this pod.
    target = port.target
    if isinstance(target, int):
        return target
    return pod.named_port(target, port.protocol)


TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})  # isPodTerminal, same file


def endpoint_slices(cluster: Cluster, service: Service, candidates: Iterable[Pod] | None = None) -> list[EndpointSlice]:
    """The EndpointSlices the endpointslice controller keeps for ``service``: its selected pods
    that have an IP (ShouldPodBeInEndpoints), grouped by their resolved port list, at most
    ``MAX_ENDPOINTS_PER_SLICE`` endpoints each. A pod's ``ready`` condition is
    ``publishNotReadyAddresses or (ready and not terminating)``; no selector -> no slices.
    ``candidates``: the pods to consider (a superset of the selected ones; default all)."""
    if not service.selector:
        return []
    groups: dict[tuple[EndpointPort, ...], list[Endpoint]] = {}
    for pod in cluster.pods.values() if candidates is None else candidates:
        # v1.28.0:staging/src/k8s.io/endpointslice/util/controller_utils.go ShouldPodBeInEndpoints:
        # a terminal pod (Succeeded/Failed: every finished Job pod) and a pod without an IP are left out
        if not selects(service, pod) or pod.ip is None or pod.phase in TERMINAL_PHASES:
            continue
        ports: list[EndpointPort] = []
        for p in service.ports:
            number = _find_port(pod, p)
            if number is not None:
                ports.append(EndpointPort(p.name, number, p.protocol))
        # utils.go podToEndpoint: serving = the pod's Ready condition; terminating = a deletion
        # timestamp, which the model has not (a deleted pod leaves the cluster at once).
        serving, terminating = pod.ready, False
        ready = service.publish_not_ready_addresses or (serving and not terminating)
        groups.setdefault(tuple(ports), []).append(
            Endpoint(pod.ip, ready, serving, terminating, pod.node, pod.key))
    slices: list[EndpointSlice] = []
    for ports, endpoints in groups.items():
        endpoints.sort(key=lambda e: int(e.address))
        for start in range(0, len(endpoints), MAX_ENDPOINTS_PER_SLICE):
            chunk = endpoints[start:start + MAX_ENDPOINTS_PER_SLICE]
            slices.append(EndpointSlice(service.namespace, _slice_name(service, ports, start), service.name,
                                        ports, chunk, headless=service.headless))
    return slices


def _slice_name(service: Service, ports: tuple[EndpointPort, ...], start: int) -> str:
    # The controller uses generateName "<svc>-" plus 5 random characters (utils.go
    # getEndpointSlicePrefix); a hash of the port group and chunk keeps names reproducible here.
    digest = hashlib.sha256(repr((ports, start)).encode()).hexdigest()[:5]
    return f"{service.name}-{digest}"


def all_endpoint_slices(cluster: Cluster) -> dict[str, list[EndpointSlice]]:
    """EndpointSlices of every Service, keyed by the Service's ``namespace/name``. Pods are
    indexed once by (namespace, label, value), so each Service only looks at the pods of its
    rarest selector label: O(pods + selected) rather than O(services x pods)."""
    index: dict[tuple[str, str, str], list[Pod]] = {}
    for pod in cluster.pods.values():
        for k, v in pod.labels.items():
            index.setdefault((pod.namespace, k, v), []).append(pod)
    out: dict[str, list[EndpointSlice]] = {}
    for key, svc in cluster.services.items():
        cands = None
        if svc.selector:
            cands = min((index.get((svc.namespace, k, v), []) for k, v in svc.selector.items()), key=len)
        out[key] = endpoint_slices(cluster, svc, cands)
    return out


def ready_endpoints(slices: Iterable[EndpointSlice], port: ServicePort) -> list[tuple[ipaddress.IPv4Address, int]]:
    """``(ip, port)`` of every ready endpoint serving ``port`` (matched by name and protocol),
    sorted as kube-proxy's endpointslicecache sorts (``byEndpoint``: the ``ip:port`` string)."""
    out = set()
    for s in slices:
        for ep_port in s.ports:
            if ep_port.name == port.name and ep_port.protocol == port.protocol:
                out.update((e.address, ep_port.port) for e in s.endpoints if e.ready)
    return sorted(out, key=lambda a: f"{a[0]}:{a[1]}")


# -- DNS ----------------------------------------------------------------------------------------

def service_dns_records(cluster: Cluster, domain: str = CLUSTER_DOMAIN) -> dict[str, list[ipaddress.IPv4Address]]:
    """A records cluster DNS serves for Services: ``<svc>.<ns>.svc.<domain>`` -> ``[clusterIP]`` for
    ClusterIP Services, -> the ready endpoint IPs (sorted, deduplicated) for headless ones (an
    empty list when none is ready: the name exists, with no address). Pure; no trailing dot."""
    records: dict[str, list[ipaddress.IPv4Address]] = {}
    for svc in cluster.services.values():
        if svc.headless:
            ips = {e.address for s in endpoint_slices(cluster, svc) for e in s.endpoints if e.ready}
            records[svc.fqdn(domain)] = sorted(ips)
        elif svc.cluster_ip is not None:
            records[svc.fqdn(domain)] = [svc.cluster_ip]
    return records

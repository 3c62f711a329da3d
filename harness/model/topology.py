"""Topology YAML -> ``Cluster``: nodes, address plan, namespaces, pods, pod generators, manifests.

A topology file is one YAML mapping::

    name: demo                       # default: the file name without .yaml
    # required: nodes, a node's or pod's name, a pod's node, a generator's count/per_node and name
    underlay_cidr: 172.18.0.0/16     # node IPs (default); .1 is reserved for the underlay gateway
    cluster_cidr: 10.244.0.0/16      # pod IPs (default); must not overlap the underlay
    service_cidr: 10.96.0.0/12       # ClusterIPs (default, as kubeadm); overlaps neither
    node_cidr_mask_size: 24          # size of each node's pod CIDR (kube-controller-manager's flag)
    ip_families: [IPv4, IPv6]        # dual-stack (default [IPv4]); *_v6 keys: harness.model.dualstack
    nodes:
      - {name: node-a, kind: real, ip: 172.18.0.2, pod_cidr: 10.244.0.0/24}   # ip, pod_cidr optional
      - generate: {count: 98, name: "vnode-{index:02d}", kind: virtual, start: 0}  # kind, start: defaults
    namespaces:
      - {name: frontend, labels: {team: web}}
    pods:
      - {name: web, namespace: frontend, node: node-a, labels: {app: web}, kind: full,
         ports: [{port: 80, protocol: TCP, name: http}], ip: 10.244.0.10}     # ip optional
    pod_generators:
      - nodes: all                   # all | real | virtual | [node names]
        per_node: 50
        namespace: [team-a, team-b]  # a template, or a list of templates cycled by n
        name: "pod-{n:04d}"
        labels: {app: [web, api], env: prod}
        ports: [{port: 8080}]
        kind: light                  # full | light; pods on virtual nodes are always virtual
    manifests: [policies.yaml]       # Kubernetes YAML, relative to this file
    x-ports: &web [{port: 80}]       # top-level keys starting with x- are ignored: room for anchors

Templates are ``str.format`` strings with plain substitutions only: ``{n}`` or a zero-padded
width ``{n:04d}`` (at most ``MAX_TEMPLATE_WIDTH``); no other format spec, no ``!r``, no
attribute or index lookups. Node generators know ``{index}`` (``start``, ``start+1``
...); pod generators know ``{node}`` (node name), ``{node_index}`` (position of the node in the
topology, from 0), ``{i}`` (pod index on its node, from 0), ``{n}`` (pod index in the generator,
from 0) and, except in ``namespace``, ``{namespace}``. A list of templates picks element
``n % len(list)``, so lists of coprime lengths mix, and lengths that divide each other stay
correlated (e.g. a ``tier`` that always goes with the same ``app``).

Addresses are deterministic. Nodes without ``ip`` get the lowest free underlay addresses from
``.2`` on in declaration order (like kind's docker network); nodes without ``pod_cidr`` get the
lowest free ``/node_cidr_mask_size`` blocks of ``cluster_cidr`` in order; pods without ``ip``
get the lowest free address of their node's pod CIDR after the gateway (``.1``), in
declaration order (explicit addresses are reserved first, so they never collide with allocated
ones). Topology pods come before manifest pods.

Namespaces are strict, as in Kubernetes: a pod's namespace must be declared under
``namespaces`` or by a Namespace object in a manifest; only ``default`` exists implicitly.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.model.cluster import Cluster, ContainerPort, Namespace, Node, NodeKind, Pod, PodKind
from harness.model.dualstack import assign_node_ipv6, assign_pod_ipv6, read_ip_families
from harness.model.fields import Fields, items, join, load_yaml_documents
from harness.model.labels import label_value_problem, validate_labels, validate_name
from harness.model.limits import MAX_NODES, MAX_PODS, MAX_TEMPLATE_WIDTH, shown
from harness.model.manifests import (
    DEFAULT_NAMESPACE,
    PodDecl,
    PodIPAM,
    add_pods,
    apply_manifest_objects,
    check_unique_ports,
    container_port,
    namespace_labels,
    parse_ip,
    read_manifest_files,
)
from harness.model.service import DEFAULT_SERVICE_CIDR

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "topologies"
DEFAULT_UNDERLAY_CIDR = "172.18.0.0/16"
DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"
DEFAULT_NODE_CIDR_MASK_SIZE = 24
MAX_NODE_CIDR_MASK_SIZE = 30  # a gateway plus at least one pod

NODE_TEMPLATE_VARIABLES = frozenset({"index"})
POD_NAMESPACE_VARIABLES = frozenset({"node", "node_index", "i", "n"})
POD_TEMPLATE_VARIABLES = POD_NAMESPACE_VARIABLES | {"namespace"}
NODE_SELECTIONS = ("all", "real", "virtual")

_FORMATTER = string.Formatter()
# The one format spec a template may carry: a (zero-padded) integer width, e.g. 03d.
_WIDTH_SPEC = re.compile(r"^0?([1-9][0-9]?)?d$")


# -- finding and loading ----------------------------------------------------------------------

def shipped_topologies() -> list[str]:
    """Names of the topologies shipped in ``topologies/`` (usable instead of a path)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def resolve_topology(name_or_path: str | Path) -> Path:
    """The file of a shipped topology name (``default``, ``k8s-e2e``, ``scale-100``) or of a path;
    ConfigError listing the shipped names if neither exists."""
    text = str(name_or_path)
    shipped = SHIPPED_DIR / f"{text}.yaml"
    if isinstance(name_or_path, str) and "/" not in text and shipped.is_file():
        return shipped
    path = Path(name_or_path)
    if path.is_file():
        return path
    raise ConfigError(text, None, f"no such topology file or shipped topology "
                      f"(shipped: {', '.join(shipped_topologies()) or 'none'})")


def load_topology(name_or_path: str | Path, extra_manifests: Sequence[str | Path] = ()) -> Cluster:
    """Load and validate a topology (a shipped name or a path) plus its manifests and
    ``extra_manifests`` (paths relative to the working directory) into a ``Cluster``."""
    path = resolve_topology(name_or_path)
    source = _display(path)
    docs = load_yaml_documents(str(path))
    if len(docs) != 1:
        found = "an empty file" if not docs else f"{len(docs)} documents"
        raise ConfigError(source, None, f"a topology is one YAML mapping, found {found}")
    return topology_from_dict(docs[0], source, path.parent, extra_manifests, default_name=path.stem)


def topology_from_dict(data: Any, source: str | None = None, base_dir: str | Path | None = None,
                       extra_manifests: Sequence[str | Path] = (), *, default_name: str = "cluster") -> Cluster:
    """A ``Cluster`` from an already parsed topology mapping; ``base_dir`` anchors its
    ``manifests`` paths (default: the working directory)."""
    f = Fields(data, source, "", what="a topology mapping")
    cluster = _read_address_plan(f, default_name)
    mask = _read_mask_size(f, cluster.cluster_cidr)
    mask6 = read_ip_families(f, cluster, mask)  # None: IPv4-only (harness.model.dualstack)
    node_specs = _read_nodes(f.req("nodes", list), source)
    namespaces = f.opt("namespaces", list)
    pods = f.opt("pods", list)
    generators = f.opt("pod_generators", list)
    manifests = _manifest_paths(f.opt("manifests", list), source, Path(base_dir or "."))
    f.ignore(*(k for k in f.data if isinstance(k, str) and k.startswith("x-")))
    f.ignore("churn")  # a churn workload for bench churn / simulate (harness.model.churn reads it)
    f.done()

    _place_nodes(cluster, node_specs, mask)
    if mask6 is not None:
        assign_node_ipv6(cluster, mask6)
    _add_namespaces(cluster, namespaces, source)
    objects = read_manifest_files([*manifests, *map(str, extra_manifests)])
    # Manifest Namespaces first, so topology pods may live in them; then pods in declaration order.
    apply_manifest_objects([o for o in objects if o.kind == "Namespace"], cluster)
    ipam = PodIPAM(cluster)
    _add_topology_pods(cluster, pods, generators, source, ipam)
    apply_manifest_objects([o for o in objects if o.kind != "Namespace"], cluster, ipam)
    if cluster.dual_stack:
        assign_pod_ipv6(cluster)
    if len(cluster.pods) > MAX_PODS:  # topology pods were bounded before; this counts manifest pods too
        raise ConfigError(source, None, f"{len(cluster.pods)} pods exceed the limit of {MAX_PODS}")
    log.info("topology %s: %d nodes, %d namespaces, %d pods, %d policies", cluster.name, len(cluster.nodes),
             len(cluster.namespaces), len(cluster.pods), len(cluster.policies))
    return cluster


def _display(path: Path) -> str:
    """``path`` relative to the working directory when inside it: short, clickable messages."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _manifest_paths(value: Any, source: str | None, base_dir: Path) -> list[str]:
    paths = []
    for field, entry in items(value, source, "manifests"):
        if not isinstance(entry, str) or not entry:
            raise ConfigError(source, field, f"must be a file path, got {entry!r}")
        path = base_dir / entry
        if not path.is_file():
            raise ConfigError(source, field, f"manifest file not found: {path}")
        paths.append(_display(path))
    return paths


# -- address plan -----------------------------------------------------------------------------

def _read_address_plan(f: Fields, default_name: str) -> Cluster:
    name = f.opt("name", str)
    # Only a written name is checked: a file called "My Lab.yaml" still loads.
    name = validate_name(name, f.source, "name") if name is not None else default_name
    underlay = _network(f, "underlay_cidr", DEFAULT_UNDERLAY_CIDR)
    cluster_cidr = _network(f, "cluster_cidr", DEFAULT_CLUSTER_CIDR)
    if underlay.overlaps(cluster_cidr):
        raise f.error("cluster_cidr", f"{cluster_cidr} overlaps underlay_cidr ({underlay})")
    service_cidr = _network(f, "service_cidr", DEFAULT_SERVICE_CIDR)
    # A default that overlaps a wide cluster_cidr only matters once a Service needs a ClusterIP
    # (harness.model.service.add_services says so); a written one is checked here.
    for other, key in ((underlay, "underlay_cidr"), (cluster_cidr, "cluster_cidr")):
        if f.has("service_cidr") and service_cidr.overlaps(other):
            raise f.error("service_cidr", f"{service_cidr} overlaps {key} ({other})")
    return Cluster(name=name, underlay_cidr=underlay, cluster_cidr=cluster_cidr, service_cidr=service_cidr,
                   source=f.source)


def _read_mask_size(f: Fields, cluster_cidr: ipaddress.IPv4Network) -> int:
    mask = f.opt("node_cidr_mask_size", int, DEFAULT_NODE_CIDR_MASK_SIZE)
    if not cluster_cidr.prefixlen <= mask <= MAX_NODE_CIDR_MASK_SIZE:
        raise f.error("node_cidr_mask_size", f"{mask} must be between the cluster_cidr prefix "
                      f"({cluster_cidr.prefixlen}) and {MAX_NODE_CIDR_MASK_SIZE}")
    return mask


def _network(f: Fields, key: str, default: str) -> ipaddress.IPv4Network:
    return parse_network(f.opt(key, str, default), f.source, f.field(key))


def parse_network(value: Any, source: str | None, field: str) -> ipaddress.IPv4Network:
    """An IPv4 network (no host bits set) from a YAML string, or ConfigError naming ``field``."""
    if not isinstance(value, str):
        raise ConfigError(source, field, f"must be an IPv4 CIDR string, got {value!r}")
    try:
        return ipaddress.IPv4Network(value)
    except ValueError as e:
        raise ConfigError(source, field, f"{value!r} is not an IPv4 CIDR ({e})") from None


# -- nodes ------------------------------------------------------------------------------------

@dataclass
class _NodeSpec:
    """A node as declared: ``ip``/``pod_cidr`` None until allocated. ``path`` is its entry
    (``nodes[1]``), ``name_field`` the field its name came from."""

    name: str
    kind: NodeKind
    path: str
    name_field: str
    ip: ipaddress.IPv4Address | None = None
    pod_cidr: ipaddress.IPv4Network | None = None


def _read_nodes(value: list, source: str | None) -> list[_NodeSpec]:
    specs: list[_NodeSpec] = []
    for path, entry in items(value, source, "nodes"):
        if isinstance(entry, dict) and "generate" in entry:
            specs.extend(_generate_nodes(entry, source, path, MAX_NODES - len(specs)))
        else:
            specs.append(_read_node(entry, source, path))
        if len(specs) > MAX_NODES:
            raise ConfigError(source, path, f"more than {MAX_NODES} nodes in the topology")
    if not specs:
        raise ConfigError(source, "nodes", "a topology needs at least one node")
    _check_unique(((s.name, s.name_field) for s in specs), source, "node")
    return specs


def _read_node(entry: Any, source: str | None, path: str) -> _NodeSpec:
    f = Fields(entry, source, path)
    name = validate_name(f.req("name", str), source, f.field("name"))
    kind = NodeKind(f.opt("kind", str, "real", choices=tuple(NodeKind)))
    ip = f.opt("ip", str)
    cidr = f.opt("pod_cidr", str)
    f.done()
    return _NodeSpec(name, kind, path, f.field("name"),
                     ip=parse_ip(ip, source, f.field("ip")) if ip is not None else None,
                     pod_cidr=parse_network(cidr, source, f.field("pod_cidr")) if cidr is not None else None)


def _generate_nodes(entry: dict, source: str | None, path: str, room: int) -> list[_NodeSpec]:
    """The nodes of one ``generate`` entry; ``room`` is how many more nodes the topology may have."""
    outer = Fields(entry, source, path)
    g = Fields(outer.req("generate", dict), source, outer.field("generate"))
    outer.done()
    count = _count(g, "count", MAX_NODES)
    if count > room:
        raise g.error("count", f"{count} more nodes exceed the topology's limit of {MAX_NODES} nodes")
    name = Template.parse(g.req("name", (str, list)), source, g.field("name"), NODE_TEMPLATE_VARIABLES)
    kind = NodeKind(g.opt("kind", str, "virtual", choices=tuple(NodeKind)))
    start = g.opt("start", int, 0)
    if not 0 <= start <= 10**9:  # rendered into names: a huge start is a typo
        raise g.error("start", f"{shown(start)} is not between 0 and 1000000000")
    g.done()
    specs = []
    for index in range(start, start + count):
        node_name = validate_name(name.render(index, {"index": index}), source, g.field("name"))
        specs.append(_NodeSpec(node_name, kind, path, g.field("name")))
    return specs


def _check_unique(names: Iterable[tuple[str, str]], source: str | None, what: str) -> None:
    """Reject a repeated name; ``names`` yields ``(name, field_path)`` in declaration order."""
    first: dict[str, str] = {}
    for name, field in names:
        if name in first:
            raise ConfigError(source, field, f"duplicate {what} {name!r} (first at {first[name]})")
        first[name] = field


def _place_nodes(cluster: Cluster, specs: list[_NodeSpec], mask: int) -> None:
    """Give every node an underlay IP and a pod CIDR, then add them to the cluster in order."""
    _assign_node_ips(specs, cluster.underlay_cidr, cluster.source)
    _assign_pod_cidrs(specs, cluster.cluster_cidr, mask, cluster.source)
    for s in specs:
        assert s.ip is not None and s.pod_cidr is not None
        cluster.nodes[s.name] = Node(s.name, s.ip, s.pod_cidr, s.kind)


def _assign_node_ips(specs: list[_NodeSpec], underlay: ipaddress.IPv4Network, source: str | None) -> None:
    taken: dict[ipaddress.IPv4Address, str] = {}
    for s in specs:
        if s.ip is not None:
            taken[s.ip] = _check_node_ip(s, underlay, taken, source)
    # .1 stays free for the underlay gateway; nodes count up from .2 like kind's docker network.
    free = (ip for ip in map(ipaddress.IPv4Address, range(int(underlay.network_address) + 2,
                                                          int(underlay.broadcast_address)))
            if ip not in taken)
    for s in specs:
        if s.ip is None:
            s.ip = next(free, None)
            if s.ip is None:
                raise ConfigError(source, s.path, f"no free address left in underlay_cidr {underlay} for node {s.name!r}")


def _check_node_ip(s: _NodeSpec, underlay: ipaddress.IPv4Network, taken: dict[ipaddress.IPv4Address, str],
                   source: str | None) -> str:
    field = join(s.path, "ip")
    assert s.ip is not None
    if s.ip not in underlay:
        raise ConfigError(source, field, f"{s.ip} is outside underlay_cidr {underlay}")
    if s.ip in (underlay.network_address, underlay.network_address + 1, underlay.broadcast_address):
        raise ConfigError(source, field, f"{s.ip} is reserved (network, gateway .1 or broadcast address)")
    if s.ip in taken:
        raise ConfigError(source, field, f"{s.ip} is already used by {taken[s.ip]}")
    return field


def _assign_pod_cidrs(specs: list[_NodeSpec], cluster_cidr: ipaddress.IPv4Network, mask: int,
                      source: str | None) -> None:
    explicit = [(s.pod_cidr, join(s.path, "pod_cidr"), order) for order, s in enumerate(specs)
                if s.pod_cidr is not None]
    for cidr, field, _ in explicit:
        if not cidr.subnet_of(cluster_cidr):
            raise ConfigError(source, field, f"{cidr} is outside cluster_cidr {cluster_cidr}")
        if cidr.prefixlen > MAX_NODE_CIDR_MASK_SIZE:
            raise ConfigError(source, field, f"{cidr} is too small (at most /{MAX_NODE_CIDR_MASK_SIZE})")
    _check_no_overlap(explicit, source)
    taken = [cidr for cidr, _, _ in explicit]
    free = (c for c in cluster_cidr.subnets(new_prefix=mask) if not any(c.overlaps(t) for t in taken))
    for s in specs:
        if s.pod_cidr is None:
            s.pod_cidr = next(free, None)
            if s.pod_cidr is None:
                raise ConfigError(source, s.path, f"no free /{mask} left in cluster_cidr {cluster_cidr} "
                                  f"for node {s.name!r}")


def _check_no_overlap(cidrs: list[tuple[ipaddress.IPv4Network, str, int]], source: str | None) -> None:
    """Reject overlapping ``(cidr, field, declaration_order)`` entries in O(n log n): sorted by
    start, a block overlaps an earlier one iff it starts before the furthest end seen so far."""
    widest: tuple[ipaddress.IPv4Network, str, int] | None = None
    for entry in sorted(cidrs, key=lambda e: (e[0].network_address, e[2])):
        if widest is not None and entry[0].network_address <= widest[0].broadcast_address:
            earlier, later = sorted((widest, entry), key=lambda e: e[2])
            raise ConfigError(source, later[1], f"{later[0]} overlaps {earlier[1]} ({earlier[0]})")
        if widest is None or entry[0].broadcast_address > widest[0].broadcast_address:
            widest = entry


# -- namespaces -------------------------------------------------------------------------------

def _add_namespaces(cluster: Cluster, value: Any, source: str | None) -> None:
    first: dict[str, str] = {}
    for path, entry in items(value, source, "namespaces"):
        f = Fields(entry, source, path)
        name = validate_name(f.req("name", str), source, f.field("name"), dns_label=True)
        labels = namespace_labels(f.opt("labels", dict), name, source, f.field("labels"))
        f.done()
        if name in first:
            raise ConfigError(source, f.field("name"), f"duplicate namespace {name!r} (first at {first[name]})")
        first[name] = f.field("name")
        cluster.namespaces[name] = Namespace(name, labels)


# -- pods ---------------------------------------------------------------------------------------

def _add_topology_pods(cluster: Cluster, pods: Any, generators: Any, source: str | None, ipam: PodIPAM) -> None:
    decls = [_read_pod(entry, source, path) for path, entry in items(pods, source, "pods")]
    for path, entry in items(generators, source, "pod_generators"):
        decls.extend(PodGenerator.parse(entry, source, path).generate(cluster))
        if len(decls) > MAX_PODS:
            raise ConfigError(source, path, f"more than {MAX_PODS} pods in the topology")
    add_pods(cluster, decls, ipam)  # explicit pods first, then generators, each in declaration order


def _read_pod(entry: Any, source: str | None, path: str) -> PodDecl:
    f = Fields(entry, source, path)
    name = validate_name(f.req("name", str), source, f.field("name"))
    namespace = validate_name(f.opt("namespace", str, DEFAULT_NAMESPACE), source, f.field("namespace"),
                              dns_label=True)
    node = f.req("node", str)
    labels = validate_labels(f.opt("labels", dict), source, f.field("labels"))
    ports = read_ports(f.opt("ports", list), source, f.field("ports"))
    kind = PodKind(f.opt("kind", str, PodKind.FULL.value, choices=(PodKind.FULL.value, PodKind.LIGHT.value)))
    ip = f.opt("ip", str)
    f.done()
    pod = Pod(namespace, name, node, labels=labels, ports=ports, kind=kind,
              ip=parse_ip(ip, source, f.field("ip")) if ip is not None else None)
    return PodDecl(pod, source, path)


def read_ports(value: Any, source: str | None, path: str) -> list[ContainerPort]:
    """``[{port, protocol (TCP), name}]`` entries of the topology format, validated and unique."""
    ports = []
    for field, entry in items(value, source, path):
        f = Fields(entry, source, field)
        number = f.req("port", int)
        protocol = f.opt("protocol", str, "TCP")
        name = f.opt("name", str)
        f.done()
        ports.append((field, container_port(number, protocol, name, source, field)))
    check_unique_ports(ports, source)
    return [p for _, p in ports]


def _count(f: Fields, key: str, limit: int) -> int:
    """A required count in ``[0, limit]``."""
    count = f.req(key, int)
    if count < 0:
        raise f.error(key, f"{shown(count)} must not be negative")
    if count > limit:
        raise f.error(key, f"{shown(count)} is more than the limit of {limit}")
    return count


# -- templates ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    """A ``str.format`` template, or a list of them of which ``render(index)`` uses
    ``index % len``; variables are checked when parsed, so typos fail before any pod exists."""

    texts: tuple[str, ...]
    source: str | None
    field: str

    @classmethod
    def parse(cls, value: Any, source: str | None, field: str, variables: frozenset[str]) -> Template:
        """A template from a string or a non-empty list of strings using only ``variables``."""
        texts = value if isinstance(value, list) else [value]
        if not texts:
            raise ConfigError(source, field, "must not be an empty list")
        for i, text in enumerate(texts):
            _check_template(text, source, join(field, i) if isinstance(value, list) else field, variables)
        return cls(tuple(texts), source, field)

    def render(self, index: int, values: dict[str, Any]) -> str:
        """The template for ``index`` filled with ``values``."""
        text = self.texts[index % len(self.texts)]
        try:
            return text.format_map(values)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise ConfigError(self.source, self.field, f"cannot render {shown(text)}: {e}") from None


def _check_template(text: Any, source: str | None, field: str, variables: frozenset[str]) -> None:
    known = ", ".join(sorted(variables))
    if not isinstance(text, str):
        raise ConfigError(source, field, f"must be a string template, got {shown(text)}")
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as e:
        raise ConfigError(source, field, f"invalid template {shown(text)}: {e}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ConfigError(source, field, f"template {shown(text)} must use plain variables like {{n}} "
                              f"(known: {known})")
        if name not in variables:
            raise ConfigError(source, field, f"unknown template variable {shown(name)} in {shown(text)} "
                              f"(known: {known})")
        # A format spec is code run at render time: "{n:>3000000000}" allocates gigabytes.
        width = _WIDTH_SPEC.match(spec or "d")
        if conversion is not None or width is None or int(width.group(1) or 0) > MAX_TEMPLATE_WIDTH:
            raise ConfigError(source, field, f"template {shown(text)}: {{{name}}} may only carry a width like "
                              f"{{{name}:03d}} (at most {MAX_TEMPLATE_WIDTH}), no other format spec or !conversion")


# -- pod generators ---------------------------------------------------------------------------

@dataclass
class PodGenerator:
    """``per_node`` pods on each selected node, names/namespaces/labels from templates."""

    path: str
    source: str | None
    nodes: str | list[tuple[str, str]]  # "all"/"real"/"virtual" or [(name, field)]
    per_node: int
    namespace: Template
    name: Template
    labels: dict[str, Template]
    ports: list[ContainerPort]
    kind: PodKind

    @classmethod
    def parse(cls, entry: Any, source: str | None, path: str) -> PodGenerator:
        """A generator from its YAML entry (templates and ports checked here)."""
        f = Fields(entry, source, path)
        gen = cls(
            path=path, source=source, nodes=_node_selection(f), per_node=_count(f, "per_node", MAX_PODS),
            namespace=Template.parse(f.opt("namespace", (str, list), DEFAULT_NAMESPACE), source,
                                     f.field("namespace"), POD_NAMESPACE_VARIABLES),
            name=Template.parse(f.req("name", (str, list)), source, f.field("name"), POD_TEMPLATE_VARIABLES),
            labels=_label_templates(f.opt("labels", dict, {}), source, f.field("labels")),
            ports=read_ports(f.opt("ports", list), source, f.field("ports")),
            kind=PodKind(f.opt("kind", str, PodKind.FULL.value, choices=(PodKind.FULL.value, PodKind.LIGHT.value))),
        )
        f.done()
        return gen

    def selected_nodes(self, cluster: Cluster) -> list[Node]:
        """The nodes this generator fills, in topology order (or the listed order)."""
        if isinstance(self.nodes, list):
            for name, field in self.nodes:
                if name not in cluster.nodes:
                    raise ConfigError(self.source, field, f"unknown node {name!r}")
            return [cluster.nodes[name] for name, _ in self.nodes]
        if self.nodes == "all":
            return list(cluster.nodes.values())
        return [n for n in cluster.nodes.values() if (n.kind is NodeKind.REAL) == (self.nodes == "real")]

    def generate(self, cluster: Cluster) -> list[PodDecl]:
        """One ``PodDecl`` per generated pod: node by node, ``i`` from 0 on each node."""
        node_index = {name: i for i, name in enumerate(cluster.nodes)}
        decls = []
        n = 0
        selected = self.selected_nodes(cluster)
        if self.per_node * len(selected) > MAX_PODS:  # before any pod is made
            raise ConfigError(self.source, join(self.path, "per_node"),
                              f"{self.per_node} pods on each of {len(selected)} nodes exceed the limit "
                              f"of {MAX_PODS} pods")
        for node in selected:
            for i in range(self.per_node):
                values = {"node": node.name, "node_index": node_index[node.name], "i": i, "n": n}
                decls.append(self._pod(node, values))
                n += 1
        return decls

    def _pod(self, node: Node, values: dict[str, Any]) -> PodDecl:
        n = values["n"]
        namespace = validate_name(self.namespace.render(n, values), self.source, self.namespace.field, dns_label=True)
        values["namespace"] = namespace
        name = validate_name(self.name.render(n, values), self.source, self.name.field)
        labels = {}
        for key, template in self.labels.items():
            value = template.render(n, values)
            problem = label_value_problem(value)
            if problem:
                raise ConfigError(self.source, template.field, f"{problem} (pod {namespace}/{name})")
            labels[key] = value
        pod = Pod(namespace, name, node.name, labels=labels, ports=list(self.ports), kind=self.kind)
        return PodDecl(pod, self.source, self.path)


def _node_selection(f: Fields) -> str | list[tuple[str, str]]:
    value = f.opt("nodes", (str, list), "all")
    if isinstance(value, str):
        if value not in NODE_SELECTIONS:
            raise f.error("nodes", f"{value!r} is not one of {', '.join(NODE_SELECTIONS)} or a list of node names")
        return value
    selection = []
    for field, name in items(value, f.source, f.field("nodes")):
        if not isinstance(name, str):
            raise ConfigError(f.source, field, f"must be a node name, got {name!r}")
        selection.append((name, field))
    return selection


def _label_templates(value: dict, source: str | None, field: str) -> dict[str, Template]:
    # Keys are fixed: validate them once with a dummy value; values are checked per pod.
    validate_labels({k: "x" for k in value}, source, field)
    return {k: Template.parse(v, source, f"{field}.{k}", POD_TEMPLATE_VARIABLES) for k, v in value.items()}

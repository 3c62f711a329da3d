"""Topology loading: shipped topologies, deterministic addresses, generators, namespaces, labels."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest

from harness.errors import ConfigError
from harness.model import NAMESPACE_NAME_LABEL, NodeKind, PodKind
from harness.model.topology import (
    SHIPPED_DIR,
    load_topology,
    resolve_topology,
    shipped_topologies,
    topology_from_dict,
)

IP = ipaddress.IPv4Address


def write(tmp_path, text: str, name: str = "topo.yaml") -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def ips(cluster) -> dict[str, str]:
    return {key: str(p.ip) for key, p in cluster.pods.items()}


# -- finding topologies -----------------------------------------------------------------------

def test_shipped_names_resolve_to_the_topologies_directory():
    assert {"default", "k8s-e2e", "scale-100"} <= set(shipped_topologies())
    assert resolve_topology("k8s-e2e") == SHIPPED_DIR / "k8s-e2e.yaml"
    assert (SHIPPED_DIR / "default.yaml").is_file()


def test_a_path_resolves_to_itself(tmp_path):
    path = write(tmp_path, "nodes: [{name: a}]\n", "default")  # a file named like a shipped topology
    assert resolve_topology(path) == tmp_path / "default"


def test_unknown_topology_lists_the_shipped_names():
    with pytest.raises(ConfigError) as excinfo:
        resolve_topology("no-such-topology")
    assert str(excinfo.value) == ("no-such-topology: no such topology file or shipped topology "
                                  f"(shipped: {', '.join(shipped_topologies())})")


# -- shipped topologies -------------------------------------------------------------------------

def test_default_topology():
    c = load_topology("default")
    assert c.name == "default"
    assert [(n.name, str(n.node_ip), str(n.pod_cidr), n.kind) for n in c.nodes.values()] == [
        ("node-a", "172.18.0.2", "10.244.0.0/24", NodeKind.REAL),
        ("node-b", "172.18.0.3", "10.244.1.0/24", NodeKind.REAL),
    ]
    assert sorted(c.namespaces) == ["backend", "db", "frontend"]
    kinds = Counter((p.node, p.kind) for p in c.pods.values())
    assert kinds == {("node-a", PodKind.FULL): 3, ("node-a", PodKind.LIGHT): 1,
                     ("node-b", PodKind.FULL): 3, ("node-b", PodKind.LIGHT): 1}
    served = {(port.port, port.protocol) for p in c.pods.values() for port in p.ports}
    assert {(80, "TCP"), (81, "TCP"), (3306, "TCP"), (53, "UDP"), (81, "UDP")} <= served
    assert c.pods["db/mysql-0"].labels == {"app": "mysql", "role": "primary"}
    assert c.pods["frontend/web-0"].ip == IP("10.244.0.2")
    assert c.pods["frontend/web-1"].ip == IP("10.244.1.2")


def test_k8s_e2e_topology_matches_the_upstream_model():
    c = load_topology("k8s-e2e")
    assert [n.name for n in c.real_nodes()] == ["node-a", "node-b"]
    assert {ns: c.namespaces[ns].labels for ns in "xyz"} == {
        ns: {"ns": ns, NAMESPACE_NAME_LABEL: ns} for ns in "xyz"}
    assert sorted(c.pods) == [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
    for pod in c.pods.values():
        assert pod.labels == {"pod": pod.name}
        assert pod.kind is PodKind.FULL
        assert {(p.name, p.port, p.protocol) for p in pod.ports} == {
            ("serve-80-tcp", 80, "TCP"), ("serve-81-tcp", 81, "TCP"),
            ("serve-80-udp", 80, "UDP"), ("serve-81-udp", 81, "UDP")}
    # Every namespace has pods on both nodes, so each policy is tested within and across nodes.
    for ns in "xyz":
        assert {p.node for p in c.pods.values() if p.namespace == ns} == {"node-a", "node-b"}


def test_scale_100_topology():
    c = load_topology("scale-100")
    assert len(c.nodes) == 100 and len(c.pods) == 5000
    assert Counter(n.kind for n in c.nodes.values()) == {NodeKind.REAL: 2, NodeKind.VIRTUAL: 98}
    assert Counter(p.node for p in c.pods.values()) == {name: 50 for name in c.nodes}
    assert Counter(p.kind for p in c.pods.values()) == {PodKind.LIGHT: 100, PodKind.VIRTUAL: 4900}
    assert len(c.namespaces) == 10
    assert set(Counter(p.namespace for p in c.pods.values()).values()) == {500}
    # Addresses: unique, inside the own node's CIDR; node IPs and pod CIDRs unique.
    assert len({p.ip for p in c.pods.values()}) == 5000
    assert all(p.ip in c.nodes[p.node].pod_cidr for p in c.pods.values())
    assert len({n.node_ip for n in c.nodes.values()}) == len({n.pod_cidr for n in c.nodes.values()}) == 100
    assert c.nodes["vnode-098"].pod_cidr == ipaddress.IPv4Network("10.244.99.0/24")
    # The label mix: team/env agree with the namespace, tier goes with app, every app everywhere.
    for p in c.pods.values():
        ns_labels = c.namespaces[p.namespace].labels
        assert (p.labels["team"], p.labels["env"]) == (ns_labels["team"], ns_labels["env"])
        assert p.name.startswith(p.labels["app"] + "-")
    assert len({(p.labels["app"], p.labels["tier"]) for p in c.pods.values()}) == 6
    assert len({(p.namespace, p.labels["app"]) for p in c.pods.values()}) == 60
    assert {p.labels["version"] for p in c.pods.values()} == {"v1", "v2"}


# -- deterministic addresses ------------------------------------------------------------------

def test_loading_twice_gives_the_same_addresses():
    assert ips(load_topology("scale-100")) == ips(load_topology("scale-100"))


def test_node_addresses_and_pod_cidrs_are_allocated_in_order_around_explicit_ones(tmp_path):
    c = load_topology(write(tmp_path, """
nodes:
  - {name: a}
  - {name: b, ip: 172.18.0.2, pod_cidr: 10.244.0.0/24}
  - {name: c}
"""))
    assert [(n.name, str(n.node_ip), str(n.pod_cidr)) for n in c.nodes.values()] == [
        ("a", "172.18.0.3", "10.244.1.0/24"), ("b", "172.18.0.2", "10.244.0.0/24"), ("c", "172.18.0.4", "10.244.2.0/24")]


def test_custom_address_plan(tmp_path):
    c = load_topology(write(tmp_path, """
underlay_cidr: 192.168.50.0/24
cluster_cidr: 10.100.0.0/20
node_cidr_mask_size: 26
nodes: [{name: a}, {name: b}]
"""))
    assert [(str(n.node_ip), str(n.pod_cidr)) for n in c.nodes.values()] == [
        ("192.168.50.2", "10.100.0.0/26"), ("192.168.50.3", "10.100.0.64/26")]


def test_pod_ips_skip_the_gateway_and_explicit_addresses(tmp_path):
    c = load_topology(write(tmp_path, """
nodes: [{name: a}, {name: b}]
pods:
  - {name: p1, node: a}
  - {name: p2, node: b}
  - {name: p3, node: a}
  - {name: pinned, node: a, ip: 10.244.0.3}
"""))
    assert ips(c) == {"default/p1": "10.244.0.2", "default/p2": "10.244.1.2", "default/p3": "10.244.0.4",
                      "default/pinned": "10.244.0.3"}
    assert c.nodes["a"].gateway_ip == IP("10.244.0.1")


def test_a_full_pod_cidr_is_usable_to_the_last_address(tmp_path):
    c = load_topology(write(tmp_path, "node_cidr_mask_size: 29\nnodes: [{name: a}]\n"
                                     "pod_generators: [{per_node: 5, name: 'p-{i}'}]\n"))
    assert sorted(ips(c).values()) == [f"10.244.0.{i}" for i in range(2, 7)]


# -- generators -----------------------------------------------------------------------------

def test_node_generator(tmp_path):
    c = load_topology(write(tmp_path, """
nodes:
  - {name: real-1}
  - generate: {count: 3, name: "v{index:02d}", start: 7}
  - generate: {count: 1, name: "extra-{index}", kind: real}
"""))
    assert [(n.name, n.kind) for n in c.nodes.values()] == [
        ("real-1", NodeKind.REAL), ("v07", NodeKind.VIRTUAL), ("v08", NodeKind.VIRTUAL), ("v09", NodeKind.VIRTUAL),
        ("extra-0", NodeKind.REAL)]


def test_pod_generator_variables_and_cycling(tmp_path):
    c = load_topology(write(tmp_path, """
nodes: [{name: a}, {name: v1, kind: virtual}, {name: b}]
namespaces: [{name: red}, {name: blue}]
pod_generators:
  - nodes: all
    per_node: 2
    namespace: [red, blue]
    name: "{node}-{i}-{n:03d}"
    labels: {where: "{namespace}.{node_index}", colour: [x, y, z]}
    ports: [{port: 8080, name: http}]
    kind: light
"""))
    got = [(p.key, p.node, p.kind, p.labels) for p in c.pods.values()]
    assert got == [
        ("red/a-0-000", "a", PodKind.LIGHT, {"where": "red.0", "colour": "x"}),
        ("blue/a-1-001", "a", PodKind.LIGHT, {"where": "blue.0", "colour": "y"}),
        ("red/v1-0-002", "v1", PodKind.VIRTUAL, {"where": "red.1", "colour": "z"}),
        ("blue/v1-1-003", "v1", PodKind.VIRTUAL, {"where": "blue.1", "colour": "x"}),
        ("red/b-0-004", "b", PodKind.LIGHT, {"where": "red.2", "colour": "y"}),
        ("blue/b-1-005", "b", PodKind.LIGHT, {"where": "blue.2", "colour": "z"}),
    ]
    assert all(p.ports[0].port == 8080 and p.ports[0].name == "http" for p in c.pods.values())


@pytest.mark.parametrize("selection, nodes", [
    ("real", ["a", "b"]), ("virtual", ["v1"]), ("[b, a]", ["b", "a"]), ("all", ["a", "v1", "b"])])
def test_pod_generator_node_selection(tmp_path, selection, nodes):
    c = load_topology(write(tmp_path, f"""
nodes: [{{name: a}}, {{name: v1, kind: virtual}}, {{name: b}}]
pod_generators: [{{nodes: {selection}, per_node: 1, name: "p-{{node}}"}}]
"""))
    assert [p.node for p in c.pods.values()] == nodes


def test_explicit_pods_come_before_generated_ones(tmp_path):
    c = load_topology(write(tmp_path, """
nodes: [{name: a}]
pod_generators: [{per_node: 2, name: "gen-{i}"}]
pods: [{name: explicit, node: a}]
"""))
    assert ips(c) == {"default/explicit": "10.244.0.2", "default/gen-0": "10.244.0.3", "default/gen-1": "10.244.0.4"}


# -- namespaces and labels ----------------------------------------------------------------

def test_namespaces_get_the_metadata_name_label(tmp_path):
    c = load_topology(write(tmp_path, "nodes: [{name: a}]\nnamespaces: [{name: shop, labels: {team: web}}]\n"))
    assert c.namespaces["shop"].labels == {"team": "web", NAMESPACE_NAME_LABEL: "shop"}


def test_default_namespace_exists_implicitly(tmp_path):
    c = load_topology(write(tmp_path, "nodes: [{name: a}]\npods: [{name: p, node: a}]\n"))
    assert c.pods["default/p"].namespace == "default"
    assert c.namespaces["default"].labels == {NAMESPACE_NAME_LABEL: "default"}


def test_valid_kubernetes_labels_are_accepted(tmp_path):
    value63 = "v" * 63
    c = load_topology(write(tmp_path, f"""
nodes: [{{name: a}}]
pods:
  - name: p
    node: a
    labels: {{app.kubernetes.io/name: web, example.com/tier: "", x_y.z: "{value63}"}}
"""))
    assert c.pods["default/p"].labels == {"app.kubernetes.io/name": "web", "example.com/tier": "", "x_y.z": value63}


@pytest.mark.parametrize("labels, field", [
    ('{app: "' + "v" * 64 + '"}', "pods[0].labels.app"),
    ("{Example.com/app: web}", "pods[0].labels.Example.com/app"),
    ("{a/b/c: web}", "pods[0].labels.a/b/c"),
    ("{app: -web}", "pods[0].labels.app"),
])
def test_invalid_labels_are_rejected(tmp_path, labels, field):
    path = write(tmp_path, f"nodes: [{{name: a}}]\npods: [{{name: p, node: a, labels: {labels}}}]\n")
    with pytest.raises(ConfigError) as excinfo:
        load_topology(path)
    assert excinfo.value.field == field


# -- file handling ----------------------------------------------------------------------------

def test_name_defaults_to_the_file_name_and_x_keys_are_ignored(tmp_path):
    c = load_topology(write(tmp_path, """
x-ports: &ports [{port: 80}, {port: 53, protocol: UDP}]
nodes: [{name: a}]
pods: [{name: p, node: a, ports: *ports}]
""", "my-lab.yaml"))
    assert c.name == "my-lab"
    assert [(p.port, p.protocol) for p in c.pods["default/p"].ports] == [(80, "TCP"), (53, "UDP")]


def test_error_source_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path, "nodes: [{name: a, colour: red}]\n", "sub/t.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as excinfo:
        load_topology(tmp_path / "sub" / "t.yaml")
    assert str(excinfo.value).startswith("sub/t.yaml: nodes[0].colour: unknown field")


def test_topology_from_dict_needs_no_file():
    c = topology_from_dict({"nodes": [{"name": "a"}], "pods": [{"name": "p", "node": "a", "labels": {"x": "1"}}]},
                           "inline")
    assert ips(c) == {"default/p": "10.244.0.2"}
    assert c.source == "inline"


def test_manifests_are_relative_to_the_topology_and_namespaces_come_first(tmp_path):
    write(tmp_path, """
apiVersion: v1
kind: Pod
metadata: {name: late, namespace: team}
spec: {nodeName: a, containers: [{name: c}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: team, labels: {owner: me}}
""", "lab/extra/objects.yaml")
    path = write(tmp_path, """
nodes: [{name: a}]
pods: [{name: early, namespace: team, node: a}]
manifests: [extra/objects.yaml]
""", "lab/topo.yaml")
    c = load_topology(path)
    assert c.namespaces["team"].labels == {"owner": "me", NAMESPACE_NAME_LABEL: "team"}
    # Topology pods are allocated before manifest pods.
    assert ips(c) == {"team/early": "10.244.0.2", "team/late": "10.244.0.3"}

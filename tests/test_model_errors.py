"""Malformed topologies and manifests: each must fail with exactly one expected line naming the
file and the field path (never a traceback, never a vaguer message)."""

from __future__ import annotations

import os

import pytest

from harness.errors import ConfigError
from harness.model.topology import load_topology

TWO_NODES = "nodes: [{name: a}, {name: b}]\nnamespaces: [{name: ns}]\n"


def pod(extra: str = "") -> str:
    """A topology with one pod in namespace ns on node a, plus ``extra`` fields on the pod."""
    return TWO_NODES + "pods: [{name: p, namespace: ns, node: a" + extra + "}]\n"


TOPOLOGY_ERRORS = {
    # structure, unknown keys, wrong types
    "unknown top-level key":
        ("nodes: [{name: a}]\npods_generators: []\n",
         "pods_generators: unknown field (did you mean 'pod_generators'?)"),
    "unknown pod key": (pod(", lables: {}"), "pods[0].lables: unknown field (did you mean 'labels'?)"),
    "nodes not a list": ("nodes: {name: a}\n", "nodes: must be a list, got a mapping"),
    "no nodes": ("nodes: []\n", "nodes: a topology needs at least one node"),
    "boolean as port": (pod(", ports: [{port: true}]"),
                        "pods[0].ports[0].port: must be an integer, got a boolean (True)"),
    "document is a list": ("- nodes\n", "must be a topology mapping, got a list"),
    "two documents": ("nodes: [{name: a}]\n---\nnodes: [{name: b}]\n",
                      "a topology is one YAML mapping, found 2 documents"),
    "malformed YAML": ("nodes: [{name: a}\n",
                       "line 2 column 1: malformed YAML: expected ',' or ']', but got '<stream end>'"),
    "unknown node kind": ("nodes: [{name: a, kind: fake}]\n", "nodes[0].kind: 'fake' is not one of real, virtual"),
    # duplicate names
    "duplicate node": ("nodes: [{name: a}, {name: a}]\n", "nodes[1].name: duplicate node 'a' (first at nodes[0].name)"),
    "generated node duplicates a declared one":
        ("nodes: [{name: vnode-1}, {generate: {count: 2, name: 'vnode-{index}'}}]\n",
         "nodes[1].generate.name: duplicate node 'vnode-1' (first at nodes[0].name)"),
    "duplicate namespace": ("nodes: [{name: a}]\nnamespaces: [{name: ns}, {name: ns}]\n",
                            "namespaces[1].name: duplicate namespace 'ns' (first at namespaces[0].name)"),
    "duplicate pod": (TWO_NODES + "pods: [{name: p, namespace: ns, node: a}, {name: p, namespace: ns, node: b}]\n",
                      "pods[1]: duplicate pod ns/p (first at pods[0])"),
    # node addresses
    "node IP outside underlay": ("nodes: [{name: a, ip: 10.0.0.2}]\n",
                                 "nodes[0].ip: 10.0.0.2 is outside underlay_cidr 172.18.0.0/16"),
    "duplicate node IP": ("nodes: [{name: a, ip: 172.18.0.5}, {name: b, ip: 172.18.0.5}]\n",
                          "nodes[1].ip: 172.18.0.5 is already used by nodes[0].ip"),
    "node IP is the underlay gateway": ("nodes: [{name: a, ip: 172.18.0.1}]\n",
                                        "nodes[0].ip: 172.18.0.1 is reserved (network, gateway .1 or broadcast address)"),
    # CIDRs
    "overlapping pod CIDRs": ("nodes: [{name: a, pod_cidr: 10.244.0.0/24}, {name: b, pod_cidr: 10.244.0.0/24}]\n",
                              "nodes[1].pod_cidr: 10.244.0.0/24 overlaps nodes[0].pod_cidr (10.244.0.0/24)"),
    "pod CIDR containing an earlier one":
        ("nodes: [{name: a, pod_cidr: 10.244.1.0/24}, {name: b, pod_cidr: 10.244.0.0/23}]\n",
         "nodes[1].pod_cidr: 10.244.0.0/23 overlaps nodes[0].pod_cidr (10.244.1.0/24)"),
    "pod CIDR outside cluster_cidr": ("nodes: [{name: a, pod_cidr: 10.245.0.0/24}]\n",
                                      "nodes[0].pod_cidr: 10.245.0.0/24 is outside cluster_cidr 10.244.0.0/16"),
    "pod CIDR with host bits": ("nodes: [{name: a, pod_cidr: 10.244.0.1/24}]\n",
                                "nodes[0].pod_cidr: '10.244.0.1/24' is not an IPv4 CIDR (10.244.0.1/24 has host bits set)"),
    "underlay overlaps cluster_cidr": ("underlay_cidr: 10.0.0.0/8\nnodes: [{name: a}]\n",
                                       "cluster_cidr: 10.244.0.0/16 overlaps underlay_cidr (10.0.0.0/8)"),
    "node CIDR mask too long": ("node_cidr_mask_size: 31\nnodes: [{name: a}]\n",
                                "node_cidr_mask_size: 31 must be between the cluster_cidr prefix (16) and 30"),
    # pod addresses
    "pod IP outside its node CIDR": (pod(", ip: 10.244.1.5"),
                                     "pods[0].ip: 10.244.1.5 is outside the pod CIDR 10.244.0.0/24 of node 'a'"),
    "duplicate pod IP":
        (TWO_NODES + "pods: [{name: p, namespace: ns, node: a, ip: 10.244.0.9},"
                     " {name: q, namespace: ns, node: a, ip: 10.244.0.9}]\n",
         "pods[1].ip: 10.244.0.9 is already used by pods[0] (ns/p)"),
    "pod IP is the gateway": (pod(", ip: 10.244.0.1"),
                              "pods[0].ip: 10.244.0.1 is the gateway of node 'a' (kube-bridge), not a pod address"),
    "pod IP not an address": (pod(", ip: 10.244.0.300"), "pods[0].ip: '10.244.0.300' is not an IPv4 address"),
    "too many pods for the node CIDR":
        ("node_cidr_mask_size: 29\nnodes: [{name: a}]\npod_generators: [{per_node: 6, name: 'p-{i}'}]\n",
         "pod_generators[0]: pod default/p-5: no free address left in the pod CIDR 10.244.0.0/29 of node 'a' "
         "(5 pods at most)"),
    # references
    "unknown node": (TWO_NODES + "pods: [{name: p, namespace: ns, node: c}]\n",
                     "pods[0].node: unknown node 'c' for pod ns/p"),
    "unknown namespace": (TWO_NODES + "pods: [{name: p, namespace: other, node: a}]\n",
                          "pods[0].namespace: unknown namespace 'other' for pod other/p "
                          "(declare it under namespaces: or as a Namespace manifest)"),
    "generator on an unknown node": (TWO_NODES + "pod_generators: [{per_node: 1, namespace: ns, name: 'p-{n}', "
                                                 "nodes: [a, c]}]\n",
                                     "pod_generators[0].nodes[1]: unknown node 'c'"),
    "manifest file missing": ("nodes: [{name: a}]\nmanifests: [nope.yaml]\n",
                              "manifests[0]: manifest file not found: nope.yaml"),
    # labels and names
    "invalid label key": (pod(", labels: {'-bad': x}"),
                          "pods[0].labels.-bad: label key '-bad' is invalid "
                          "(name part: up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends)"),
    "invalid label value": (pod(", labels: {app: 'a b'}"),
                            "pods[0].labels.app: label value 'a b' is invalid "
                            "(up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends)"),
    "unquoted number as label value": (pod(", labels: {version: 2}"),
                                       "pods[0].labels.version: label value 2 must be a string "
                                       "(quote numbers and booleans in YAML)"),
    "namespace name not a DNS label": ("nodes: [{name: a}]\nnamespaces: [{name: Frontend}]\n",
                                       "namespaces[0].name: 'Frontend' is not a valid DNS label "
                                       "(lowercase alphanumerics and '-')"),
    "namespace name label contradicts the name":
        ("nodes: [{name: a}]\nnamespaces: [{name: ns, labels: {kubernetes.io/metadata.name: other}}]\n",
         "namespaces[0].labels.kubernetes.io/metadata.name: 'other' differs from the namespace name 'ns' "
         "(Kubernetes sets this label)"),
    # ports
    "port out of range": (pod(", ports: [{port: 70000}]"), "pods[0].ports[0].port: 70000 is not a valid port (1..65535)"),
    "unknown protocol": (pod(", ports: [{port: 80, protocol: ICMP}]"),
                         "pods[0].ports[0].protocol: 'ICMP' is not one of TCP, UDP, SCTP"),
    "invalid port name": (pod(", ports: [{port: 80, name: Serve_80}]"),
                          "pods[0].ports[0].name: 'Serve_80' is not a valid port name (IANA service name: up to 15 "
                          "of [a-z0-9-], at least one letter, no leading, trailing or double '-')"),
    "duplicate port": (pod(", ports: [{port: 80}, {port: 80, protocol: TCP}]"),
                       "pods[0].ports[1]: duplicate port 80/TCP (first at pods[0].ports[0])"),
    # generators and templates
    "unknown template variable": (TWO_NODES + "pod_generators: [{per_node: 1, namespace: ns, name: 'p-{nod}'}]\n",
                                  "pod_generators[0].name: unknown template variable 'nod' in 'p-{nod}' "
                                  "(known: i, n, namespace, node, node_index)"),
    "namespace template using itself":
        (TWO_NODES + "pod_generators: [{per_node: 1, namespace: '{namespace}', name: 'p-{i}'}]\n",
         "pod_generators[0].namespace: unknown template variable 'namespace' in '{namespace}' "
         "(known: i, n, node, node_index)"),
    "unbalanced template": (TWO_NODES + "pod_generators: [{per_node: 1, namespace: ns, name: 'p-{i'}]\n",
                            "pod_generators[0].name: invalid template 'p-{i': expected '}' before end of string"),
    "template attribute access": (TWO_NODES + "pod_generators: [{per_node: 1, namespace: ns, name: 'p-{node.name}'}]\n",
                                  "pod_generators[0].name: template 'p-{node.name}' must use plain variables like {n} "
                                  "(known: i, n, namespace, node, node_index)"),
    "unknown node template variable": ("nodes: [{generate: {count: 2, name: 'v-{i}'}}]\n",
                                       "nodes[0].generate.name: unknown template variable 'i' in 'v-{i}' (known: index)"),
    "generated label value invalid":
        (TWO_NODES + "pod_generators: [{per_node: 1, namespace: ns, name: 'p-{n}', labels: {app: [ok, 'not ok']}}]\n",
         "pod_generators[0].labels.app: label value 'not ok' is invalid "
         "(up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends) (pod ns/p-1)"),
    "generated names collide": (TWO_NODES + "pod_generators: [{per_node: 2, namespace: ns, name: 'p-{node}'}]\n",
                                "pod_generators[0]: duplicate pod ns/p-a (first at pod_generators[0])"),
    "unknown node selection": (TWO_NODES + "pod_generators: [{per_node: 1, namespace: ns, name: 'p-{n}', nodes: some}]\n",
                               "pod_generators[0].nodes: 'some' is not one of all, real, virtual or a list of node names"),
    "negative count": ("nodes: [{generate: {count: -1, name: 'v{index}'}}]\n",
                       "nodes[0].generate.count: -1 must not be negative"),
}

# Bounds (harness.model.limits): each refused in bounded time and memory, with a short message.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True))
LIMIT_ERRORS = {
    "node count above the limit": ("nodes: [{generate: {count: 100000000000, name: 'v{index}'}}]\n",
                                   "nodes[0].generate.count: 100000000000 is more than the limit of 5000"),
    "node generators together above the limit":
        ("nodes: [{generate: {count: 3000, name: 'a{index}'}}, {generate: {count: 3000, name: 'b{index}'}}]\n",
         "nodes[1].generate.count: 3000 more nodes exceed the topology's limit of 5000 nodes"),
    "per_node above the limit":
        ("nodes: [{name: a}]\npod_generators: [{per_node: 99999999999, namespace: default, name: 'p{n}'}]\n",
         "pod_generators[0].per_node: 99999999999 is more than the limit of 150000"),
    "generated pods above the total":
        ("cluster_cidr: 10.0.0.0/8\nnodes: [{generate: {count: 2000, name: 'v{index}'}}]\n"
         "pod_generators: [{per_node: 100, namespace: default, name: 'p{n}'}]\n",
         "pod_generators[0].per_node: 100 pods on each of 2000 nodes exceed the limit of 150000 pods"),
    "format width in a template":
        ("nodes: [{generate: {count: 2, name: 'v{index:>3000000000}'}}]\n",
         "nodes[0].generate.name: template 'v{index:>3000000000}': {index} may only carry a width like "
         "{index:03d} (at most 63), no other format spec or !conversion"),
    "conversion in a template":
        ("nodes: [{generate: {count: 2, name: 'v{index!r}'}}]\n",
         "nodes[0].generate.name: template 'v{index!r}': {index} may only carry a width like "
         "{index:03d} (at most 63), no other format spec or !conversion"),
    "width above the limit": ("nodes: [{generate: {count: 2, name: 'v{index:099d}'}}]\n",
                              "nodes[0].generate.name: template 'v{index:099d}': {index} may only carry a width "
                              "like {index:03d} (at most 63), no other format spec or !conversion"),
    "alias bomb": (ALIAS_BOMB, "line 1 column 1: refused YAML: more than 1000000 nodes with aliases expanded "
                               "(an alias bomb?)"),
    "recursive alias": ("nodes: &a [*a]\n", "line 1 column 8: refused YAML: recursive alias (a node contains itself)"),
    "deep nesting": ("nodes: " + "[" * 100000 + "]" * 100000 + "\n",
                     "line 1 column 71: refused YAML: nested deeper than 64 levels"),
    "too many aliases": ("x-a: &a 1\nx-b: [" + ", ".join(["*a"] * 1001) + "]\nnodes: [{name: a}]\n",
                         "line 2 column 4007: refused YAML: more than 1000 aliases in one document"),
    "integer of 6000 digits": ("nodes: [{name: a}]\nnode_cidr_mask_size: 1" + "0" * 6000 + "\n",
                               "cannot read YAML: ValueError: Exceeds the limit (4300 digits) for integer string "
                               "conversion: value has 6001 digits; use sys.set_int_max_str_digits() to increase "
                               "the limit"),
}


@pytest.mark.parametrize("text, expected", LIMIT_ERRORS.values(), ids=LIMIT_ERRORS.keys())
def test_limits(tmp_path, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "topo.yaml").write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_topology("topo.yaml")
    assert str(excinfo.value) == f"topo.yaml: {expected}"


def test_shipped_width_templates_still_load():
    """``{index:02d}``-style widths are what shipped topologies use: still accepted."""
    c = load_topology("scale-100")
    assert len(c.nodes) == 100


def test_file_size_limit(tmp_path, monkeypatch):
    from harness.model.limits import MAX_FILE_BYTES

    monkeypatch.chdir(tmp_path)
    (tmp_path / "topo.yaml").write_text("nodes: [{name: a}]\n" + "#" * MAX_FILE_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"^topo.yaml: file too large \(\d+ bytes, at most 8388608\)$"):
        load_topology("topo.yaml")


def test_special_file_refused(tmp_path):
    from harness.conformance.case import load_case

    fifo = tmp_path / "case.yaml"
    os.mkfifo(fifo)  # opening it would block until a writer comes
    with pytest.raises(ConfigError, match="case.yaml: not a regular file$"):
        load_case(str(fifo))


def test_huge_value_is_cut_in_the_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "topo.yaml").write_text("nodes: [{name: a, kind: " + "k" * 1_000_000 + "}]\n")
    with pytest.raises(ConfigError) as excinfo:
        load_topology("topo.yaml")
    assert str(excinfo.value).startswith("topo.yaml: nodes[0].kind: 'kkk")
    assert len(str(excinfo.value)) < 400


@pytest.mark.parametrize("text, expected", TOPOLOGY_ERRORS.values(), ids=TOPOLOGY_ERRORS.keys())
def test_malformed_topology(tmp_path, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "topo.yaml").write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_topology("topo.yaml")
    assert str(excinfo.value) == f"topo.yaml: {expected}"
    assert "\n" not in str(excinfo.value)


MANIFEST_TOPOLOGY = "nodes: [{name: a}]\nnamespaces: [{name: ns}]\nmanifests: [m.yaml]\n"
POD = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\n"
       "spec: {nodeName: a, containers: [{name: c, image: nginx, ports: [{containerPort: 80}]}]}\n")

MANIFEST_ERRORS = {
    "unsupported kind": ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
                         "documents[0].kind: unsupported kind 'Deployment' (supported: List, Namespace, NetworkPolicy, Pod, "
                         "Service)"),
    "wrong apiVersion": ("apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: d}\n",
                         "documents[0].apiVersion: 'networking.k8s.io/v1beta1' is not an apiVersion of NetworkPolicy "
                         "(expected 'networking.k8s.io/v1')"),
    "pod without nodeName": ("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec: {containers: []}\n",
                             "documents[0].spec.nodeName: required field is missing"),
    "unknown top-level field": (POD + "extra: 1\n",
                                "documents[0].extra: unknown field (known: apiVersion, kind, metadata, spec, status)"),
    "unknown metadata field": (POD.replace("namespace: ns}", "namespace: ns, lables: {}}"),
                               "documents[0].metadata.lables: unknown field (did you mean 'labels'?)"),
    "bad pod-kind annotation": (POD.replace("namespace: ns}", "namespace: ns, annotations: "
                                            "{netpol-harness.io/pod-kind: huge}}"),
                                "documents[0].metadata.annotations.netpol-harness.io/pod-kind: 'huge' is not one of "
                                "full, light"),
    "podIP outside the node CIDR": ("---\n" + POD + "status: {podIP: 10.244.5.5, phase: Running}\n",
                                    "documents[0].status.podIP: 10.244.5.5 is outside the pod CIDR 10.244.0.0/24 "
                                    "of node 'a'"),
    "pod in an unknown namespace": (POD.replace("namespace: ns", "namespace: nope"),
                                    "documents[0].metadata.namespace: unknown namespace 'nope' for pod nope/p "
                                    "(declare it under namespaces: or as a Namespace manifest)"),
    "pod on an unknown node": (POD.replace("nodeName: a", "nodeName: z"),
                               "documents[0].spec.nodeName: unknown node 'z' for pod ns/p"),
    "namespace declared twice": ("apiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n",
                                 "documents[0].metadata.name: namespace 'ns' already exists"),
    "pod declared twice":
        (POD.replace("name: p,", "name: q,") + "---\n" + POD.replace("name: p,", "name: q,"),
         "documents[1]: duplicate pod ns/q (first at documents[0])"),
    "unsupported kind inside a List": ("apiVersion: v1\nkind: List\nitems:\n"
                                       "- {apiVersion: v1, kind: ConfigMap, metadata: {name: s}}\n",
                                       "documents[0].items[0].kind: unsupported kind 'ConfigMap' "
                                       "(supported: List, Namespace, NetworkPolicy, Pod, Service)"),
    "hostNetwork pod": (POD.replace("nodeName: a,", "nodeName: a, hostNetwork: true,"),
                        "documents[0].spec.hostNetwork: hostNetwork pods are not modeled (they share the node's address)"),
    "containerPort zero": (POD.replace("containerPort: 80", "containerPort: 0"),
                           "documents[0].spec.containers[0].ports[0].containerPort: 0 is not a valid port (1..65535)"),
    "port name repeated across containers":
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec: {nodeName: a, containers: ["
         "{name: c, ports: [{containerPort: 80, name: web}]}, {name: d, ports: [{containerPort: 81, name: web}]}]}\n",
         "documents[0].spec.containers[1].ports[0]: duplicate port name web "
         "(first at documents[0].spec.containers[0].ports[0])"),
    "document not a mapping": ("- a\n", "documents[0]: must be a Kubernetes object (a mapping), got a list"),
    "missing kind": ("apiVersion: v1\nmetadata: {name: x}\n", "documents[0].kind: required field is missing"),
}


@pytest.mark.parametrize("text, expected", MANIFEST_ERRORS.values(), ids=MANIFEST_ERRORS.keys())
def test_malformed_manifest(tmp_path, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "topo.yaml").write_text(MANIFEST_TOPOLOGY)
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_topology("topo.yaml")
    assert str(excinfo.value) == f"m.yaml: {expected}"


POLICY_ERRORS = {
    "policy in an unknown namespace": ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                                       "metadata: {name: d, namespace: nope}\nspec: {podSelector: {}}\n",
                                       "documents[0].metadata.namespace: unknown namespace 'nope' for NetworkPolicy nope/d"),
    "policy declared twice": (("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: d}\n"
                               "spec: {podSelector: {}}\n---\n") * 2,
                              "documents[1].metadata.name: NetworkPolicy default/d already exists"),
}


@pytest.mark.parametrize("text, expected", POLICY_ERRORS.values(), ids=POLICY_ERRORS.keys())
def test_malformed_policy_placement(tmp_path, monkeypatch, text, expected):
    pytest.importorskip("harness.model.netpol")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "topo.yaml").write_text(MANIFEST_TOPOLOGY)
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_topology("topo.yaml")
    assert str(excinfo.value) == f"m.yaml: {expected}"


def test_extra_manifest_error_names_its_own_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "topo.yaml").write_text("nodes: [{name: a}]\n")
    (tmp_path / "extra.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n")
    with pytest.raises(ConfigError, match=r"^extra\.yaml: documents\[0\]\.spec\.nodeName: required field is missing$"):
        load_topology("topo.yaml", ["extra.yaml"])

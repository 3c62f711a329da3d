"""Services in the model: parsing, ClusterIP allocation, EndpointSlices, DNS records (pure)."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from harness.errors import ConfigError
from harness.model import Cluster, ContainerPort, Namespace, Node, Pod
from harness.model.manifests import apply_manifest_documents
from harness.model.service import (
    MAX_ENDPOINTS_PER_SLICE,
    endpoint_slices,
    ready_endpoints,
    service_dns_records,
)
from harness.model.topology import topology_from_dict

IP = ipaddress.IPv4Address


def cluster() -> Cluster:
    c = Cluster()
    c.nodes["node-a"] = Node("node-a", IP("172.18.0.2"), ipaddress.IPv4Network("10.244.0.0/24"))
    c.nodes["node-b"] = Node("node-b", IP("172.18.0.3"), ipaddress.IPv4Network("10.244.1.0/24"))
    c.namespaces["db"] = Namespace("db")
    c.add_pod(Pod("db", "mysql-0", "node-a", {"app": "mysql"}, ports=[ContainerPort(3306, "TCP", "mysql")]))
    c.add_pod(Pod("db", "mysql-1", "node-b", {"app": "mysql"}, ports=[ContainerPort(3306, "TCP", "mysql")]))
    c.add_pod(Pod("db", "other", "node-b", {"app": "web"}))
    return c


def apply(c: Cluster, text: str) -> None:
    apply_manifest_documents(list(yaml.safe_load_all(text)), c, "svc.yaml")


SVC = """
apiVersion: v1
kind: Service
metadata: {name: mysql, namespace: db}
spec:
  selector: {app: mysql}
  ports: [{name: mysql, port: 3306, targetPort: mysql}]
"""


def test_service_gets_the_lowest_free_cluster_ip_and_slices_from_selected_pods():
    c = cluster()
    apply(c, SVC)
    svc = c.services["db/mysql"]
    assert svc.cluster_ip == IP("10.96.0.2")  # .1 is the kubernetes Service's
    slices = endpoint_slices(c, svc)
    assert len(slices) == 1
    m = slices[0].to_manifest()
    assert m["apiVersion"] == "discovery.k8s.io/v1" and m["addressType"] == "IPv4"
    assert m["metadata"]["labels"]["kubernetes.io/service-name"] == "mysql"
    assert m["ports"] == [{"name": "mysql", "port": 3306, "protocol": "TCP"}]
    assert [e["addresses"] for e in m["endpoints"]] == [["10.244.0.2"], ["10.244.1.2"]]
    assert [e["nodeName"] for e in m["endpoints"]] == ["node-a", "node-b"]
    assert ready_endpoints(slices, svc.ports[0]) == [(IP("10.244.0.2"), 3306), (IP("10.244.1.2"), 3306)]


def test_not_ready_pod_is_listed_not_ready_unless_publish_not_ready_addresses():
    c = cluster()
    apply(c, SVC)
    c.pods["db/mysql-1"].ready = False
    svc = c.services["db/mysql"]
    eps = endpoint_slices(c, svc)[0].endpoints
    assert [(str(e.address), e.ready, e.serving) for e in eps] == [("10.244.0.2", True, True),
                                                                    ("10.244.1.2", False, False)]
    assert ready_endpoints(endpoint_slices(c, svc), svc.ports[0]) == [(IP("10.244.0.2"), 3306)]
    svc.publish_not_ready_addresses = True
    assert all(e.ready for e in endpoint_slices(c, svc)[0].endpoints)


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_finished_pod_leaves_the_slices_even_with_publish_not_ready_addresses(phase):
    c = cluster()
    apply(c, SVC)
    svc = c.services["db/mysql"]
    svc.publish_not_ready_addresses = True
    c.pods["db/mysql-1"].phase = phase  # ShouldPodBeInEndpoints: isPodTerminal comes first
    assert [str(e.address) for s in endpoint_slices(c, svc) for e in s.endpoints] == ["10.244.0.2"]


def test_named_target_port_missing_on_a_pod_groups_it_apart():
    c = cluster()
    c.add_pod(Pod("db", "mysql-2", "node-a", {"app": "mysql"}))  # no named port "mysql"
    apply(c, SVC)
    slices = endpoint_slices(c, c.services["db/mysql"])
    assert sorted(len(s.ports) for s in slices) == [0, 1]  # reconciler.go: grouped by port list


def test_slices_hold_at_most_100_endpoints():
    c = Cluster()
    c.nodes["n"] = Node("n", IP("172.18.0.2"), ipaddress.IPv4Network("10.244.0.0/23"))
    for i in range(250):
        c.add_pod(Pod("default", f"p{i}", "n", {"app": "x"}))
    apply(c, "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selector: {app: x}, ports: [{port: 80}]}")
    slices = endpoint_slices(c, c.services["default/x"])
    assert [len(s.endpoints) for s in slices] == [MAX_ENDPOINTS_PER_SLICE, MAX_ENDPOINTS_PER_SLICE, 50]
    assert len({s.name for s in slices}) == 3


def test_dns_records_cluster_ip_and_headless():
    c = cluster()
    apply(c, SVC + """---
apiVersion: v1
kind: Service
metadata: {name: mysql-headless, namespace: db}
spec: {clusterIP: None, selector: {app: mysql}}
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: db}
spec: {clusterIP: 10.96.0.10, ports: [{port: 53, protocol: UDP}]}
""")
    c.pods["db/mysql-1"].ready = False
    assert service_dns_records(c) == {
        "mysql.db.svc.cluster.local": [IP("10.96.0.2")],
        "mysql-headless.db.svc.cluster.local": [IP("10.244.0.2")],
        "dns.db.svc.cluster.local": [IP("10.96.0.10")],
    }
    assert c.services["db/mysql-headless"].cluster_ip is None


def test_explicit_cluster_ips_are_reserved_before_allocation():
    c = cluster()
    apply(c, """
apiVersion: v1
kind: Service
metadata: {name: a, namespace: db}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: db}
spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
""")
    assert c.services["db/b"].cluster_ip == IP("10.96.0.2")
    assert c.services["db/a"].cluster_ip == IP("10.96.0.3")


def test_topology_service_cidr_and_manifest_service(tmp_path):
    (tmp_path / "svc.yaml").write_text(SVC.replace("namespace: db", "namespace: default")
                                       .replace("app: mysql", "app: web"))
    c = topology_from_dict({"nodes": [{"name": "a"}], "service_cidr": "10.100.0.0/16",
                            "pods": [{"name": "w", "node": "a", "labels": {"app": "web"}}],
                            "manifests": ["svc.yaml"]}, "t.yaml", tmp_path)
    assert c.services["default/mysql"].cluster_ip == IP("10.100.0.2")
    with pytest.raises(ConfigError, match=r"^t.yaml: service_cidr: 10.240.0.0/12 overlaps cluster_cidr"):
        topology_from_dict({"nodes": [{"name": "a"}], "service_cidr": "10.240.0.0/12"}, "t.yaml")


BAD = [
    # (spec as YAML flow mapping, field path, message fragment)
    ("{selector: {matchLabels: {app: x}}, ports: [{port: 80}]}", "spec.selector.matchLabels", "unknown selector field"),
    ("{selector: {app: x}, ports: [{port: 80}], selecter: {}}", "spec.selecter", "unknown field (did you mean 'selector'"),
    ("{ports: [{port: 0}]}", "spec.ports[0].port", "0 is not a valid port (1..65535)"),
    ("{ports: [{port: 70000}]}", "spec.ports[0].port", "70000 is not a valid port"),
    ("{ports: [{port: 80, targetPort: 65536}]}", "spec.ports[0].targetPort", "65536 is not a valid port"),
    ("{clusterIP: 10.0.0.5, ports: [{port: 80}]}", "spec.clusterIP", "10.0.0.5 is outside the service CIDR 10.96.0.0/12"),
    ("{clusterIP: 10.96.0.1, ports: [{port: 80}]}", "spec.clusterIP", "already allocated to the kubernetes Service"),
    ("{clusterIP: nope, ports: [{port: 80}]}", "spec.clusterIP", "is not an IPv4 address or 'None'"),
    ("{ports: [{name: a, port: 80}, {name: b, port: 80}]}", "spec.ports[1]", "duplicate port 80/TCP (first at documents[0].spec.ports[0])"),
    ("{ports: [{name: a, port: 80}, {name: a, port: 81}]}", "spec.ports[1].name", "duplicate port name 'a'"),
    ("{ports: [{port: 80}, {port: 81}]}", "spec.ports[0].name", "more than one port must name each"),
    ("{ports: [{port: 80, protocol: ICMP}]}", "spec.ports[0].protocol", "'ICMP' is not one of TCP, UDP, SCTP"),
    ("{ports: [{port: 80, targetPort: Bad_Name}]}", "spec.ports[0].name", "not a valid port name"),
    ("{ports: [{port: 80, prot: TCP}]}", "spec.ports[0].prot", "unknown field"),
    ("{type: NodePort, ports: [{port: 80}]}", "spec.type", "'NodePort' is not modeled"),
    ("{externalIPs: [1.2.3.4], ports: [{port: 80}]}", "spec.externalIPs", "not modeled"),
    ("{}", "spec.ports", "required field is missing"),
    ("{selector: {app: 5}, ports: [{port: 80}]}", "spec.selector.app", "must be a string"),
]


@pytest.mark.parametrize(("spec", "field", "message"), BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_service_is_one_line_naming_file_and_field(spec, field, message):
    c = cluster()
    doc = f"apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: db}}\nspec: {spec}\n"
    with pytest.raises(ConfigError) as e:
        apply(c, doc)
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(f"svc.yaml: documents[0].{field}: "), text
    assert message in text


def test_duplicate_service_and_unknown_namespace():
    c = cluster()
    with pytest.raises(ConfigError, match=r"documents\[1\].metadata.name: Service db/mysql already exists"):
        apply(c, SVC + "---" + SVC)
    with pytest.raises(ConfigError, match=r"metadata.namespace: unknown namespace 'nope'"):
        apply(c, SVC.replace("namespace: db", "namespace: nope"))

"""Kubernetes manifests applied to a cluster: Namespace, Pod, NetworkPolicy, List."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from harness.errors import ConfigError
from harness.model import (
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

IP = ipaddress.IPv4Address

# What `kubectl get pod -o yaml` prints, trimmed: many fields the harness must accept and ignore.
KUBECTL_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: mysql-0
  namespace: db
  uid: 0b7c7a5e-1111-2222-3333-444455556666
  resourceVersion: "4242"
  creationTimestamp: "2024-05-01T10:00:00Z"
  generateName: mysql-
  labels: {app: mysql, statefulset.kubernetes.io/pod-name: mysql-0}
  annotations: {kubectl.kubernetes.io/restartedAt: "2024-05-01T09:59:00Z"}
  ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: mysql, uid: x}]
spec:
  nodeName: node-b
  serviceAccountName: default
  restartPolicy: Always
  volumes: [{name: data, emptyDir: {}}]
  initContainers: [{name: init, image: busybox}]
  containers:
    - name: mysql
      image: mysql:8
      args: ["--skip-name-resolve"]
      env: [{name: MYSQL_ROOT_PASSWORD, value: x}]
      resources: {limits: {cpu: "1"}}
      readinessProbe: {tcpSocket: {port: 3306}}
      ports:
        - {containerPort: 3306, name: mysql, protocol: TCP}
    - name: exporter
      image: prom/mysqld-exporter
      ports:
        - {containerPort: 9104, name: metrics}
status:
  phase: Running
  hostIP: 172.18.0.3
  podIP: 10.244.1.7
  podIPs: [{ip: 10.244.1.7}]
  conditions: [{type: Ready, status: "True"}]
"""


@pytest.fixture
def cluster() -> Cluster:
    """Two real nodes and a virtual one, namespace db declared, no pods."""
    c = Cluster(source="test")
    for i, (name, kind) in enumerate([("node-a", NodeKind.REAL), ("node-b", NodeKind.REAL), ("v1", NodeKind.VIRTUAL)]):
        c.nodes[name] = Node(name, IP(f"172.18.0.{i + 2}"), ipaddress.IPv4Network(f"10.244.{i}.0/24"), kind)
    c.namespaces["db"] = Namespace("db", {"tier": "db"})
    return c


def docs(text: str) -> list:
    return list(yaml.safe_load_all(text))


def test_a_kubectl_pod_loads_with_only_what_matters(cluster):
    apply_manifest_documents(docs(KUBECTL_POD), cluster, "pod.yaml")
    pod = cluster.pods["db/mysql-0"]
    assert (pod.node, pod.ip, pod.kind) == ("node-b", IP("10.244.1.7"), PodKind.FULL)
    assert pod.labels == {"app": "mysql", "statefulset.kubernetes.io/pod-name": "mysql-0"}
    assert pod.ports == [ContainerPort(3306, "TCP", "mysql"), ContainerPort(9104, "TCP", "metrics")]
    assert pod.named_port("metrics", "TCP") == 9104


def test_namespace_objects_and_pods_in_one_file(cluster):
    apply_manifest_documents(docs("""
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 53, protocol: UDP}]}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: web}, annotations: {owner: me}}
spec: {finalizers: [kubernetes]}
status: {phase: Active}
"""), cluster, "shop.yaml")
    assert cluster.namespaces["shop"].labels == {"team": "web", NAMESPACE_NAME_LABEL: "shop"}
    pod = cluster.pods["shop/web"]
    assert (pod.ip, pod.ports) == (IP("10.244.0.2"), [ContainerPort(80, "TCP"), ContainerPort(53, "UDP")])


def test_pod_defaults_kind_annotation_and_virtual_nodes(cluster):
    apply_manifest_documents(docs("""
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Pod, metadata: {name: plain}, spec: {nodeName: node-a, containers: [{name: c}]}}
  - apiVersion: v1
    kind: Pod
    metadata: {name: cheap, annotations: {netpol-harness.io/pod-kind: light}}
    spec: {nodeName: node-a, containers: [{name: c}]}
  - {apiVersion: v1, kind: Pod, metadata: {name: far}, spec: {nodeName: v1, containers: [{name: c}]}}
"""), cluster, "list.yaml")
    got = {key: (p.namespace, str(p.ip), p.kind) for key, p in cluster.pods.items()}
    assert got == {"default/plain": ("default", "10.244.0.2", PodKind.FULL),
                   "default/cheap": ("default", "10.244.0.3", PodKind.LIGHT),
                   "default/far": ("default", "10.244.2.2", PodKind.VIRTUAL)}
    assert "default" in cluster.namespaces


def test_pinned_pod_ips_are_reserved_before_allocation(cluster):
    apply_manifest_documents(docs("""
apiVersion: v1
kind: Pod
metadata: {name: first, namespace: db}
spec: {nodeName: node-a, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pinned, namespace: db}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {podIP: 10.244.0.2}
"""), cluster, "pin.yaml")
    assert {k: str(p.ip) for k, p in cluster.pods.items()} == {"db/first": "10.244.0.3", "db/pinned": "10.244.0.2"}


def test_later_batches_allocate_around_existing_pods(cluster):
    cluster.add_pod(Pod("db", "existing", "node-a", ip=IP("10.244.0.2")))
    apply_manifest_documents(docs("apiVersion: v1\nkind: Pod\nmetadata: {name: new, namespace: db}\n"
                                  "spec: {nodeName: node-a, containers: [{name: c}]}\n"), cluster, "new.yaml")
    assert cluster.pods["db/new"].ip == IP("10.244.0.3")


def test_a_pod_that_already_exists_is_rejected(cluster):
    cluster.add_pod(Pod("db", "p", "node-a"))
    with pytest.raises(ConfigError) as excinfo:
        apply_manifest_documents(docs("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: db}\n"
                                      "spec: {nodeName: node-b, containers: [{name: c}]}\n"), cluster, "again.yaml")
    assert str(excinfo.value) == "again.yaml: documents[0]: pod db/p already exists"


def test_a_failing_batch_adds_no_pod(cluster):
    with pytest.raises(ConfigError):
        apply_manifest_documents(docs("""
apiVersion: v1
kind: Pod
metadata: {name: ok, namespace: db}
spec: {nodeName: node-a, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: lost, namespace: nowhere}
spec: {nodeName: node-a, containers: [{name: c}]}
"""), cluster, "half.yaml")
    assert cluster.pods == {}


def test_load_manifests_names_the_failing_file(tmp_path, cluster):
    good = tmp_path / "good.yaml"
    good.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: node-a, containers: 7}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_manifests([str(good), str(bad)], cluster)
    assert str(excinfo.value) == f"{bad}: documents[0].spec.containers: must be a list, got an integer (7)"


def test_load_manifests_applies_every_file(tmp_path, cluster):
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\n"
                                       "spec: {nodeName: node-b, containers: [{name: c}]}\n")
    load_manifests([str(tmp_path / "pod.yaml"), str(tmp_path / "ns.yaml")], cluster)
    assert cluster.pods["shop/p"].ip == IP("10.244.1.2")


POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-web, namespace: db, annotations: {note: x}}
spec:
  podSelector: {matchLabels: {app: mysql}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: 3306}]
"""


def test_network_policies_go_to_the_parser_and_the_cluster(cluster):
    pytest.importorskip("harness.model.netpol")
    apply_manifest_documents(docs(KUBECTL_POD + "---" + POLICY), cluster, "policy.yaml")
    policy = cluster.policies["db/allow-web"]
    assert (policy.namespace, policy.name, policy.policy_types) == ("db", "allow-web", ("Ingress",))
    assert policy.pod_selector.matches(cluster.pods["db/mysql-0"].labels)
    assert len(policy.ingress) == 1


def test_network_policy_errors_name_the_document(cluster):
    pytest.importorskip("harness.model.netpol")
    with pytest.raises(ConfigError) as excinfo:
        apply_manifest_documents(docs(KUBECTL_POD + "---" + POLICY.replace("{podSelector: {matchLabels: {app: web}}}",
                                                                           "{podSelecter: {}}")), cluster, "p.yaml")
    assert str(excinfo.value).startswith("p.yaml: documents[1].spec.ingress[0].from[0].podSelecter: ")

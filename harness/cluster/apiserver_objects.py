"""The served resources and the harness model (``harness.model``) as Kubernetes JSON — pure.

``RESOURCES`` is the discovery table: what kube-apiserver v1.35 lists for these six kinds in
``/api/v1``, ``/apis/networking.k8s.io/v1`` and ``/apis/discovery.k8s.io/v1`` (names, kinds,
short names, verbs). The ``*_object`` functions turn model objects into the JSON a client-go
informer decodes; metadata (uid, resourceVersion, creationTimestamp) is filled by the store.

A pod's status is what a kubelet publishes: first ``Pending`` with ``hostIP`` once bound to a
node (no pod IP yet: kube-router ignores such pods), then ``Running`` with ``podIP``/``podIPs``
and the Ready conditions once its sandbox's network is up (kubernetes v1.35.0
pkg/kubelet/kubelet_pods.go: generateAPIPodStatus).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness.model.cluster import NAMESPACE_NAME_LABEL, Namespace, Node, Pod
from harness.model.netpol import policy_to_manifest
from harness.model.policy import NetworkPolicy


@dataclass(frozen=True)
class Resource:
    """One served resource: its URL name, group/version, kind and scope."""

    name: str  # plural, as in the URL
    group: str  # "" for the core group
    version: str
    kind: str
    namespaced: bool
    singular: str
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def discovery(self) -> dict[str, Any]:
        """The APIResource entry of this resource's group-version document."""
        d: dict[str, Any] = {"name": self.name, "singularName": self.singular, "namespaced": self.namespaced,
                             "kind": self.kind,
                             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
        if self.short_names:
            d["shortNames"] = list(self.short_names)
        return d


RESOURCES: tuple[Resource, ...] = (
    Resource("namespaces", "", "v1", "Namespace", False, "namespace", ("ns",)),
    Resource("nodes", "", "v1", "Node", False, "node", ("no",)),
    Resource("pods", "", "v1", "Pod", True, "pod", ("po",)),
    Resource("services", "", "v1", "Service", True, "service", ("svc",)),
    Resource("networkpolicies", "networking.k8s.io", "v1", "NetworkPolicy", True, "networkpolicy", ("netpol",)),
    Resource("endpointslices", "discovery.k8s.io", "v1", "EndpointSlice", True, "endpointslice"),
)
BY_NAME = {(r.group, r.version, r.name): r for r in RESOURCES}
BY_KIND = {r.kind: r for r in RESOURCES}
GROUP_VERSIONS = sorted({(r.group, r.version) for r in RESOURCES})


def rfc3339(ns: int | None = None) -> str:
    """A metav1.Time as Kubernetes writes it (UTC, seconds)."""
    t = time.gmtime((time.time_ns() if ns is None else ns) / 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)


def _meta(name: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name}
    if namespace is not None:
        m["namespace"] = namespace
    if labels:
        m["labels"] = dict(labels)
    return m


def namespace_object(ns: Namespace) -> dict[str, Any]:
    """A v1 Namespace (Active, with the ``kubernetes.io/metadata.name`` label)."""
    labels = {**ns.labels, NAMESPACE_NAME_LABEL: ns.name}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns.name, labels=labels),
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def node_object(node: Node, since_ns: int | None = None) -> dict[str, Any]:
    """A v1 Node with its pod CIDR and InternalIP: what kube-router reads from its own Node;
    Ready since ``since_ns`` (a fixed time, so republishing an unchanged node writes nothing)."""
    t = rfc3339(since_ns)
    labels = {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "netpol-harness/node-kind": str(node.kind)}
    return {"apiVersion": "v1", "kind": "Node", "metadata": _meta(node.name, labels=labels),
            "spec": {"podCIDR": str(node.pod_cidr), "podCIDRs": [str(node.pod_cidr)]},
            "status": {"addresses": [{"type": "InternalIP", "address": str(node.node_ip)},
                                     {"type": "Hostname", "address": node.name}],
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "lastHeartbeatTime": t, "lastTransitionTime": t}]}}


def pod_object(pod: Pod, node: Node | None, *, running: bool, started_ns: int | None = None) -> dict[str, Any]:
    """A v1 Pod bound to its node; ``running`` adds the pod IP and Ready, as a kubelet does once
    the sandbox network is up."""
    ports = [{"containerPort": p.port, "protocol": p.protocol, **({"name": p.name} if p.name else {})}
             for p in pod.ports]
    container: dict[str, Any] = {"name": "app", "image": "netpol-harness/echo"}
    if ports:
        container["ports"] = ports
    status: dict[str, Any] = {"phase": "Pending", "qosClass": "BestEffort"}
    if node is not None:
        status["hostIP"] = str(node.node_ip)
        status["hostIPs"] = [{"ip": str(node.node_ip)}]
    if running and pod.ip is not None:
        t = rfc3339(started_ns)
        status.update(phase="Running", podIP=str(pod.ip), podIPs=[{"ip": str(pod.ip)}], startTime=t,
                      conditions=[{"type": c, "status": "True", "lastTransitionTime": t}
                                  for c in ("PodReadyToStartContainers", "Initialized", "Ready",
                                            "ContainersReady", "PodScheduled")])
        if pod.phase in ("Succeeded", "Failed"):
            # a finished pod (a Job's, once its command exited) keeps its IP in the status and is
            # no longer Ready; policy controllers and EndpointSlices drop it by this phase
            status["phase"] = pod.phase
            status["conditions"] = [{**c, "status": "False"} if c["type"] in ("Ready", "ContainersReady") else c
                                    for c in status["conditions"]]
        elif not pod.ready:
            status["conditions"] = [{**c, "status": "False"} if c["type"] in ("Ready", "ContainersReady") else c
                                    for c in status["conditions"]]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _meta(pod.name, pod.namespace, pod.labels),
            "spec": {"nodeName": pod.node, "containers": [container], "restartPolicy": "Always",
                     "schedulerName": "default-scheduler", "serviceAccountName": "default"},
            "status": status}


def network_policy_object(policy: NetworkPolicy) -> dict[str, Any]:
    """A networking.k8s.io/v1 NetworkPolicy equal in meaning to the model's. Rules of a direction
    policyTypes leaves out are kept, as the API server stores them (ignored by enforcement)."""
    obj = policy_to_manifest(policy)
    obj["metadata"] = _meta(policy.name, policy.namespace)
    return obj


def kubernetes_service_objects(host: str, port: int, cluster_ip: str = "10.96.0.1") -> list[tuple[str, dict]]:
    """``default/kubernetes``: the Service and EndpointSlice every cluster has, pointing at this
    server (kube-apiserver v1.35 pkg/controlplane/reconcilers: the endpoint reconciler)."""
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": _meta("kubernetes", "default", {"component": "apiserver", "provider": "kubernetes"}),
           "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
                    "sessionAffinity": "None", "ipFamilies": ["IPv4"]},
           "status": {"loadBalancer": {}}}
    eps = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": _meta("kubernetes", "default", {"kubernetes.io/service-name": "kubernetes",
                                                      "endpointslice.kubernetes.io/managed-by":
                                                          "endpointslice-controller.k8s.io"}),
           "addressType": "IPv4",
           "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
           "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
    return [("services", svc), ("endpointslices", eps)]

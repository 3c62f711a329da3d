"""The served API's pure parts: selectors, the resourceVersion'ed store and its watches, the
model -> Kubernetes JSON conversion. No root, no sockets."""

from __future__ import annotations

import json

import pytest

from harness.cluster.apiserver_objects import BY_KIND, network_policy_object, node_object, pod_object
from harness.cluster.apiserver_selectors import Selector, SelectorError, parse_label_selector
from harness.cluster.apiserver_store import INITIAL_EVENTS_END, ApiError, Store
from harness.model.netpol import parse_network_policy
from harness.model.topology import load_topology

NS, POD = BY_KIND["Namespace"], BY_KIND["Pod"]


def _pod(name: str, ns: str = "a", node: str = "n1", **labels: str) -> dict:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": {"nodeName": node}}


def _frames(raw: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for b in raw:
        e = json.loads(b)
        out.append((e["type"], e["object"]["metadata"].get("name", "")))
    return out


@pytest.mark.parametrize("text,labels,want", [
    ("app=web", {"app": "web"}, True),
    ("app==web,tier!=db", {"app": "web", "tier": "fe"}, True),
    ("app in (web,api)", {"app": "api"}, True),
    ("app notin (web,api)", {"app": "api"}, False),
    ("!app", {}, True),
    ("app", {}, False),
    ("n>3", {"n": "4"}, True),
    ("n<3", {"n": "4"}, False),
    ("", {"x": "y"}, True),
])
def test_label_selector_matches(text: str, labels: dict, want: bool) -> None:
    assert Selector(parse_label_selector(text)).matches({"metadata": {"labels": labels}}) is want


@pytest.mark.parametrize("text", ["app=", "app in web", "app in ()", "a b", "app=web,", "-bad=1", "n>x", "=x"])
def test_label_selector_errors(text: str) -> None:
    if text == "app=":  # an empty value is valid: "app has the empty value"
        assert parse_label_selector(text)[0].values == ("",)
        return
    with pytest.raises(SelectorError):
        parse_label_selector(text)


def test_field_selectors_pod_fields_and_unknown_field() -> None:
    sel = Selector.parse(None, "spec.nodeName=n1,metadata.namespace!=b", "Pod")
    assert sel.matches(_pod("p", "a", "n1")) and not sel.matches(_pod("p", "a", "n2"))
    assert not sel.matches(_pod("p", "b", "n1"))
    with pytest.raises(SelectorError, match="field label not supported: spec.nodeName"):
        Selector.parse(None, "spec.nodeName=n1", "NetworkPolicy")


def test_resource_versions_increase_and_objects_carry_kind() -> None:
    s = Store()
    rvs = [int(s.create(NS, {"metadata": {"name": n}})["metadata"]["resourceVersion"]) for n in ("a", "b")]
    p = s.create(POD, _pod("p"))
    assert rvs[0] < rvs[1] < int(p["metadata"]["resourceVersion"])
    assert (p["kind"], p["apiVersion"]) == ("Pod", "v1") and p["metadata"]["uid"]
    items, list_rv = s.list(POD, None)
    assert [i["metadata"]["name"] for i in items] == ["p"] and list_rv == int(p["metadata"]["resourceVersion"])


def test_store_errors_are_kubernetes_statuses() -> None:
    s = Store()
    with pytest.raises(ApiError) as e:
        s.create(POD, _pod("p", "nope"))
    assert (e.value.code, e.value.reason) == (404, "NotFound") and "namespaces" in e.value.message
    s.create(NS, {"metadata": {"name": "a"}})
    s.create(POD, _pod("p"))
    with pytest.raises(ApiError) as e:
        s.create(POD, _pod("p"))
    st = e.value.status()
    assert (st["kind"], st["apiVersion"], st["status"], st["code"], st["reason"]) == \
        ("Status", "v1", "Failure", 409, "AlreadyExists")
    stale = {**_pod("p"), "metadata": {**_pod("p")["metadata"], "resourceVersion": "1"}}
    with pytest.raises(ApiError) as e:
        s.update(POD, stale)
    assert e.value.code == 409 and e.value.reason == "Conflict"


def test_watch_from_revision_selector_transitions_and_delete() -> None:
    s = Store()
    s.create(NS, {"metadata": {"name": "a"}})
    start = str(s.resource_version)
    w = s.watch(POD, None, Selector.parse("app=web", None, "Pod"), start)
    assert w.initial() == []
    s.create(POD, _pod("p", app="web"))
    s.create(POD, _pod("q", app="db"))
    relabelled = s.get(POD, "a", "p")
    s.update(POD, {**relabelled, "metadata": {**relabelled["metadata"], "labels": {"app": "db"}}})
    q = s.get(POD, "a", "q")
    s.update(POD, {**q, "metadata": {**q["metadata"], "labels": {"app": "web"}}})
    s.delete(POD, "a", "q")
    frames, closed = w.next(0.1)
    # p leaves the selector (DELETED for this watch), q enters it (ADDED), then is deleted
    assert _frames(frames) == [("ADDED", "p"), ("DELETED", "p"), ("ADDED", "q"), ("DELETED", "q")]
    assert not closed and w.rv == s.resource_version


def test_watch_list_initial_events_end_with_annotated_bookmark() -> None:
    s = Store()
    s.create(NS, {"metadata": {"name": "a"}})
    for n in ("p1", "p2"):
        s.create(POD, _pod(n))
    w = s.watch(POD, "a", Selector(), None, send_initial_events=True)
    frames = [json.loads(b) for b in w.initial()]
    assert [(f["type"], f["object"]["metadata"].get("name")) for f in frames] == \
        [("ADDED", "p1"), ("ADDED", "p2"), ("BOOKMARK", None)]
    bm = frames[-1]["object"]
    assert bm["metadata"]["annotations"] == {INITIAL_EVENTS_END: "true"}
    assert bm["metadata"]["resourceVersion"] == str(s.resource_version) and bm["kind"] == "Pod"


def test_too_old_revision_is_410_expired_and_compaction_expires_open_watches() -> None:
    s = Store(history=3)
    s.create(NS, {"metadata": {"name": "a"}})
    old = str(s.resource_version)
    for i in range(5):
        s.create(POD, _pod(f"p{i}"))
    with pytest.raises(ApiError) as e:
        s.watch(POD, None, Selector(), old)
    assert (e.value.code, e.value.reason) == (410, "Expired") and "too old resource version" in e.value.message
    with pytest.raises(ApiError) as e:
        s.watch(POD, None, Selector(), str(s.resource_version + 10))
    assert e.value.code == 504
    w = s.watch(POD, None, Selector(), str(s.resource_version))
    s.compact()
    with pytest.raises(ApiError) as e:
        w.next(0.1)
    assert e.value.code == 410


def test_publisher_apply_writes_only_changes() -> None:
    s = Store()
    s.create(NS, {"metadata": {"name": "a"}})
    assert s.apply(POD, _pod("p")) is not None
    rv = s.resource_version
    assert s.apply(POD, _pod("p")) is None and s.resource_version == rv
    assert s.apply(POD, _pod("p", app="x"))["metadata"]["resourceVersion"] == str(rv + 1)


def test_model_objects_round_trip_and_pod_status_like_a_kubelet() -> None:
    cluster = load_topology("k8s-e2e")
    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "n", "namespace": "x"},
           "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                        {"key": "ns", "operator": "NotIn", "values": ["y"]}]}, "podSelector": {}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                        "ports": [{"port": 80, "endPort": 90}, {"protocol": "UDP", "port": "dns"}]}],
                    "egress": [{}]}}
    pol = parse_network_policy(doc, None, "p")
    assert parse_network_policy(network_policy_object(pol), None, "p") == pol
    pod = next(iter(cluster.pods.values()))
    node = cluster.nodes[pod.node]
    pending = pod_object(pod, node, running=False)["status"]
    running = pod_object(pod, node, running=True)["status"]
    assert pending["phase"] == "Pending" and "podIP" not in pending and pending["hostIP"] == str(node.node_ip)
    assert running["phase"] == "Running" and running["podIP"] == str(pod.ip)
    assert {c["type"] for c in running["conditions"]} >= {"Ready", "ContainersReady"}
    import dataclasses
    done = pod_object(dataclasses.replace(pod, phase="Succeeded"), node, running=True)["status"]
    ready = {c["type"]: c["status"] for c in done["conditions"]}
    assert done["phase"] == "Succeeded" and done["podIP"] == str(pod.ip) and ready["Ready"] == "False"
    unready = pod_object(dataclasses.replace(pod, ready=False), node, running=True)["status"]
    assert unready["phase"] == "Running" and {c["type"]: c["status"] for c in unready["conditions"]}["Ready"] == "False"
    n = node_object(node)
    assert n["spec"]["podCIDR"] == str(node.pod_cidr)
    assert {"type": "InternalIP", "address": str(node.node_ip)} in n["status"]["addresses"]

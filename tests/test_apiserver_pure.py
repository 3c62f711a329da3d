"""The API server's pure parts: selectors, the resourceVersion'ed store and its watches, model ->
Kubernetes JSON, merge patches. No root, no sockets."""

from __future__ import annotations

import glob
import ipaddress
import json
import os

import pytest
import yaml

from harness.cluster.apiserver_http import _parse_path, merge_patch
from harness.cluster.apiserver_objects import BY_KIND, namespace_object, network_policy_object, pod_object
from harness.cluster.apiserver_selectors import Selector, SelectorError, parse_label_selector
from harness.cluster.apiserver_store import INITIAL_EVENTS_END, ApiError, Store
from harness.model.cluster import ContainerPort, Namespace, Node, Pod
from harness.model.netpol import parse_network_policy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PODS, NSS = BY_KIND["Pod"], BY_KIND["Namespace"]


def _pod(name: str, ns: str = "default", node: str = "node-a", **labels: str) -> dict:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": {"nodeName": node}}


def _events(lines: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for line in lines:
        e = json.loads(line)
        out.append((e["type"], e["object"]["metadata"].get("name", "")))
    return out


@pytest.fixture
def store() -> Store:
    s = Store(history=8)
    s.apply(NSS, {"metadata": {"name": "default"}})
    return s


# -- selectors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,labels,want", [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "db"}, False),
    ("app!=web", {}, True),
    ("app in (web,db),tier", {"app": "db", "tier": "x"}, True),
    ("app notin (web)", {"app": "web"}, False),
    ("!app", {"x": "1"}, True),
    ("n>3", {"n": "4"}, True),
    ("n<3", {"n": "x"}, False),
    ("", {"a": "b"}, True),
])
def test_label_selector_matches(text: str, labels: dict, want: bool) -> None:
    sel = Selector.parse(text, None, "Pod")
    assert sel.matches({"metadata": {"labels": labels}}) is want


@pytest.mark.parametrize("text", ["app in (", "app=", "a b", "app in ()", "-bad=1", "a,", "n>x", "app=web,,x"])
def test_bad_label_selectors_are_refused(text: str) -> None:
    if text == "app=":  # an empty value is valid ("app" has the empty value)
        assert parse_label_selector(text)[0].values == ("",)
        return
    with pytest.raises(SelectorError):
        parse_label_selector(text)


def test_field_selectors_of_controllers() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns1"}, "spec": {"nodeName": "node-a"}, "status": {}}
    assert Selector.parse(None, "spec.nodeName=node-a", "Pod").matches(pod)
    assert not Selector.parse(None, "spec.nodeName!=node-a", "Pod").matches(pod)
    assert Selector.parse(None, "metadata.name=p,metadata.namespace==ns1", "Pod").matches(pod)
    with pytest.raises(SelectorError, match="field label not supported: spec.nodeName"):
        Selector.parse(None, "spec.nodeName=x", "NetworkPolicy")
    with pytest.raises(SelectorError):
        Selector.parse(None, "garbage", "Pod")


# -- the store ------------------------------------------------------------------------------------
def test_resource_versions_increase_across_kinds(store: Store) -> None:
    a = store.create(PODS, _pod("a"))
    b = store.create(NSS, {"metadata": {"name": "other"}})
    c = store.update(PODS, {**a, "metadata": {**a["metadata"], "labels": {"x": "1"}}})
    rvs = [int(o["metadata"]["resourceVersion"]) for o in (a, b, c)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert c["metadata"]["uid"] == a["metadata"]["uid"]
    items, rv = store.list(PODS, None)
    assert rv == rvs[-1] and [i["metadata"]["labels"] for i in items] == [{"x": "1"}]


def test_store_errors_are_kubernetes_statuses(store: Store) -> None:
    store.create(PODS, _pod("a"))
    with pytest.raises(ApiError) as e:
        store.create(PODS, _pod("a"))
    assert e.value.status()["reason"] == "AlreadyExists" and e.value.code == 409
    with pytest.raises(ApiError) as e:
        store.create(PODS, _pod("b", ns="nowhere"))
    assert e.value.code == 404
    with pytest.raises(ApiError) as e:
        store.update(PODS, {**_pod("a"), "metadata": {**_pod("a")["metadata"], "resourceVersion": "1"}})
    assert e.value.status()["reason"] == "Conflict"
    with pytest.raises(ApiError) as e:
        store.create(PODS, {"metadata": {}})
    assert e.value.code == 422 and e.value.status()["kind"] == "Status"


def test_apply_writes_only_changes(store: Store) -> None:
    first = store.apply(PODS, _pod("a"))
    assert first is not None
    assert store.apply(PODS, _pod("a")) is None
    assert store.apply(PODS, _pod("a", app="web")) is not None


def test_watch_from_a_revision_sends_the_changes_after_it(store: Store) -> None:
    rv = store.resource_version
    store.create(PODS, _pod("a"))
    store.delete(PODS, "default", "a")
    w = store.watch(PODS, None, Selector(), str(rv))
    assert w.initial() == []
    assert _events(w.next(0)[0]) == [("ADDED", "a"), ("DELETED", "a")]


def test_watch_from_zero_starts_with_synthetic_adds(store: Store) -> None:
    store.create(PODS, _pod("a"))
    w = store.watch(PODS, None, Selector(), "0")
    assert _events(w.initial()) == [("ADDED", "a")]
    assert w.next(0)[0] == []


def test_watch_list_ends_initial_events_with_an_annotated_bookmark(store: Store) -> None:
    store.create(PODS, _pod("a"))
    store.create(PODS, _pod("b"))
    w = store.watch(PODS, None, Selector(), "", send_initial_events=True)
    lines = [json.loads(x) for x in w.initial()]
    assert [e["type"] for e in lines] == ["ADDED", "ADDED", "BOOKMARK"]
    bm = lines[-1]["object"]
    assert bm["metadata"]["annotations"] == {INITIAL_EVENTS_END: "true"}
    assert bm["metadata"]["resourceVersion"] == str(store.resource_version) and bm["kind"] == "Pod"


def test_selector_transitions_become_added_and_deleted(store: Store) -> None:
    store.create(PODS, _pod("a", app="db"))
    w = store.watch(PODS, None, Selector.parse("app=web", None, "Pod"), str(store.resource_version))
    cur = store.get(PODS, "default", "a")
    cur = store.update(PODS, {**cur, "metadata": {**cur["metadata"], "labels": {"app": "web"}}})
    store.update(PODS, {**cur, "metadata": {**cur["metadata"], "labels": {"app": "db"}}})
    assert _events(w.next(0)[0]) == [("ADDED", "a"), ("DELETED", "a")]


def test_watch_past_the_history_is_410_expired(store: Store) -> None:
    rv = store.resource_version
    for i in range(10):
        store.create(PODS, _pod(f"p{i}"))
    with pytest.raises(ApiError) as e:
        store.watch(PODS, None, Selector(), str(rv))
    assert e.value.code == 410 and e.value.reason == "Expired" and "too old resource version" in e.value.message
    # a live watcher that falls behind gets it too
    w = store.watch(PODS, None, Selector(), str(store.resource_version))
    with store.transaction():
        for i in range(10):
            store.delete(PODS, "default", f"p{i}")
    with pytest.raises(ApiError) as e:
        w.next(0)
    assert e.value.code == 410


def test_watch_from_the_future_is_a_timeout(store: Store) -> None:
    with pytest.raises(ApiError) as e:
        store.watch(PODS, None, Selector(), str(store.resource_version + 100))
    assert e.value.code == 504


def test_deleting_a_namespace_deletes_its_objects(store: Store) -> None:
    store.create(NSS, {"metadata": {"name": "gone"}})
    store.create(PODS, _pod("a", ns="gone"))
    store.delete(NSS, None, "gone")
    assert store.list(PODS, None)[0] == []


# -- objects --------------------------------------------------------------------------------------
def test_pod_status_follows_the_kubelet() -> None:
    node = Node("node-a", ipaddress.IPv4Address("172.18.0.2"), ipaddress.IPv4Network("10.244.0.0/24"))
    pod = Pod("ns1", "web", "node-a", {"app": "web"}, ipaddress.IPv4Address("10.244.0.5"), [ContainerPort(80)])
    pending = pod_object(pod, node, running=False)
    assert pending["status"]["phase"] == "Pending" and "podIP" not in pending["status"]
    assert pending["status"]["hostIP"] == "172.18.0.2"
    running = pod_object(pod, node, running=True)["status"]
    assert running["phase"] == "Running" and running["podIP"] == "10.244.0.5"
    assert {"type": "Ready", "status": "True"}.items() <= next(c for c in running["conditions"]
                                                             if c["type"] == "Ready").items()


def test_namespace_object_carries_the_name_label() -> None:
    obj = namespace_object(Namespace("ns1", {"team": "a"}))
    assert obj["metadata"]["labels"] == {"team": "a", "kubernetes.io/metadata.name": "ns1"}


def _policies(node: object) -> list[dict]:
    if isinstance(node, dict):
        found = [node] if node.get("kind") == "NetworkPolicy" else []
        return found + [p for v in node.values() for p in _policies(v)]
    if isinstance(node, list):
        return [p for v in node for p in _policies(v)]
    return []


def test_network_policies_round_trip_through_kubernetes_json() -> None:
    docs = []
    for path in sorted(glob.glob(os.path.join(REPO, "cases", "conformance", "*.yaml"))):
        with open(path) as f:
            # templated ones ({{podIP:...}}) are filled in by the conformance runner: skipped
            docs += [(path, d) for doc in yaml.safe_load_all(f) for d in _policies(doc) if "{{" not in json.dumps(d)]
    assert docs, "no NetworkPolicy in cases/conformance"
    for path, doc in docs:
        pol = parse_network_policy(doc, path, "")
        assert parse_network_policy(network_policy_object(pol), path, "") == pol, path


# -- HTTP helpers ---------------------------------------------------------------------------------
def test_merge_patch() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == \
        {"a": {"c": 2, "e": 3}, "d": [2]}


@pytest.mark.parametrize("path,want", [
    ("/api/v1/pods", ("pods", None, None)),
    ("/api/v1/namespaces/ns1/pods/p", ("pods", "ns1", "p")),
    ("/api/v1/namespaces/ns1", ("namespaces", None, "ns1")),
    ("/apis/networking.k8s.io/v1/namespaces/a/networkpolicies", ("networkpolicies", "a", None)),
    ("/api/v1/watch/nodes", ("nodes", None, None)),
])
def test_url_layout(path: str, want: tuple) -> None:
    res, ns, name, _ = _parse_path(path)
    assert (res.name, ns, name) == want


@pytest.mark.parametrize("path", ["/api/v2/pods", "/api/v1/namespaces/a/nodes", "/apis/x/v1/things", "/", "/api/v1/pods/a/b"])
def test_unknown_urls_are_404(path: str) -> None:
    with pytest.raises(ApiError) as e:
        _parse_path(path)
    assert e.value.code == 404

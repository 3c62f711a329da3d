"""The API server's pure parts not in test_apiserver_store.py: a live watch falling behind the
history, watches from the future, namespace deletion, every conformance case's policies through
Kubernetes JSON, merge patches and the URL layout. No root, no sockets."""

from __future__ import annotations

import glob
import json
import os

import pytest
import yaml

from harness.cluster.apiserver_http import _parse_path, merge_patch
from harness.cluster.apiserver_objects import BY_KIND, namespace_object, network_policy_object
from harness.cluster.apiserver_selectors import Selector
from harness.cluster.apiserver_store import ApiError, Store
from harness.model.cluster import Namespace
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


# -- the store ------------------------------------------------------------------------------------
def test_watch_from_zero_starts_with_synthetic_adds(store: Store) -> None:
    store.create(PODS, _pod("a"))
    w = store.watch(PODS, None, Selector(), "0")
    assert _events(w.initial()) == [("ADDED", "a")]
    assert w.next(0)[0] == []


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

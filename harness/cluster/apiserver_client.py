"""Publish a lab through the official ``kubernetes`` Python client: the writer that can target
any API server — the lab's own (``harness.cluster.apiserver``), or later a real kube-apiserver
(envtest assets) or a real cluster.

It writes what ``Publisher.desired()`` describes the way the cluster's own writers do: the
object is created (or replaced, keeping its resourceVersion for optimistic concurrency), then
Pods and Nodes get their status through the ``status`` subresource, as a kubelet does (a real
kube-apiserver drops ``status`` on create: kubernetes v1.35.0 pkg/registry/core/pod/strategy.go
podStrategy.PrepareForCreate). Calls go through the typed ``*V1Api`` methods with plain dicts as
bodies (the client sends dicts as they are): one code path for every kind.
"""

from __future__ import annotations

from typing import Any

# kind -> (API class, method suffix, namespaced): create_<suffix>, read_<suffix>, ...; the typed
# calls are the client's stable surface across its releases (its raw call_api is not).
_CALLS = {"Namespace": ("CoreV1Api", "namespace", False), "Node": ("CoreV1Api", "node", False),
          "Pod": ("CoreV1Api", "namespaced_pod", True), "Service": ("CoreV1Api", "namespaced_service", True),
          "NetworkPolicy": ("NetworkingV1Api", "namespaced_network_policy", True),
          "EndpointSlice": ("DiscoveryV1Api", "namespaced_endpoint_slice", True)}


def _method(api: Any, kind: str, verb: str) -> tuple[Any, bool]:
    from kubernetes import client

    cls, suffix, namespaced = _CALLS[kind]
    return getattr(getattr(client, cls)(api), f"{verb}_{suffix}"), namespaced


def _do(api: Any, kind: str, verb: str, name: str | None, namespace: str | None, body: Any = None) -> Any:
    fn, namespaced = _method(api, kind, verb)
    args = [a for a in (name, namespace if namespaced else None) if a is not None]
    return fn(*args, body) if body is not None else fn(*args)


def write_object(api: Any, obj: dict[str, Any]) -> dict[str, Any]:
    """Create ``obj`` (a served kind), or replace it when it exists; then write its status
    through the ``status`` subresource (Pods, Nodes). Returns the stored object as JSON."""
    from kubernetes.client.exceptions import ApiException

    kind, meta = obj["kind"], obj["metadata"]
    ns, name = meta.get("namespace"), meta["name"]
    try:
        stored = _do(api, kind, "create", None, ns, obj)
    except ApiException as e:
        if e.status != 409:
            raise
        cur = _do(api, kind, "read", name, ns)
        body = {**obj, "metadata": {**meta, "resourceVersion": cur.metadata.resource_version}}
        stored = _do(api, kind, "replace", name, ns, body)
    out = api.sanitize_for_serialization(stored)
    if kind in ("Pod", "Node") and obj.get("status"):
        out = api.sanitize_for_serialization(_status(api, kind, name, ns, {**out, "status": obj["status"]}))
    return out


def _status(api: Any, kind: str, name: str, namespace: str | None, body: dict[str, Any]) -> Any:
    fn, namespaced = _method(api, kind, "replace")
    fn = getattr(fn.__self__, fn.__name__ + "_status")
    return fn(name, namespace, body) if namespaced else fn(name, body)


def delete_object(api: Any, kind: str, namespace: str | None, name: str) -> bool:
    """Delete one object; False when it was already gone."""
    from kubernetes.client.exceptions import ApiException

    try:
        _do(api, kind, "delete", name, namespace)
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


def publish(api: Any, objects: list[tuple[str, dict[str, Any]]]) -> int:
    """Write ``objects`` (``Publisher.desired()``'s pairs) in dependency order: namespaces first,
    so namespaced objects have somewhere to go. Returns the number written."""
    order = {"Namespace": 0, "Node": 1}
    todo = sorted((o for _, o in objects), key=lambda o: order.get(o["kind"], 2))
    for obj in todo:
        write_object(api, obj)
    return len(todo)

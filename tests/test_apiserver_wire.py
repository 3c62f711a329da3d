"""The API server's wire format seen by a raw socket from a node namespace: a watch from a
revision past the history is a 200 stream with one ERROR event (410 Expired), bookmarks on an
idle watch, ``timeoutSeconds`` ending the stream, a protobuf-preferring client answered in JSON;
and ``up --api --keep`` refused in one line. (Real-client tests: test_apiserver_kernel.py.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.cluster.apiserver import LabApi
from harness.cluster.apiserver_objects import BY_KIND
from harness.kernel import netns

pytestmark = [pytest.mark.kernel, pytest.mark.topology("default")]
CLI = os.path.join(os.path.dirname(sys.executable), "netpol-harness")


@pytest.fixture
def api(lab: Any) -> Iterator[LabApi]:
    server = LabApi.start(lab, history=64, bookmark_interval=0.2)
    try:
        yield server
    finally:
        server.stop()


def _node_ns(lab: Any) -> str:
    return lab.node_netns(lab.cluster.real_nodes()[0].name)


def _req(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    h = {"Host": "x", "Connection": "close", "Content-Length": str(len(body)), **(headers or {})}
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode() + body


def _status_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    """The HTTP code and the first JSON object of the body (the first event of a chunked watch)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    code = int(head.split(b" ", 2)[1])
    if b"chunked" in head.lower():
        return code, json.loads(b"".join(body.split(b"\r\n")[1::2]).split(b"\n")[0])
    return code, json.loads(body)


def _raw(lab: Any, api: LabApi, data: bytes, *, timeout: float = 5.0) -> bytes:
    host, port = api.server.address

    def go() -> bytes:
        s = socket.create_connection((host, port), timeout=timeout)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out
                out += chunk
        finally:
            s.close()

    return netns.call_in(_node_ns(lab), go)


def _status_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    code = int(head.split(b" ", 2)[1])
    if b"chunked" in head.lower():
        body = b"".join(body.split(b"\r\n")[1::2])
    return code, json.loads(body.split(b"\n")[0] if b"chunked" in head.lower() else body)


def _req(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    h = {"Host": "x", "Connection": "close", "Content-Length": str(len(body)), **(headers or {})}
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode() + body



def test_watch_410_bookmarks_and_timeout_on_the_wire(lab: Any, api: LabApi) -> None:
    store = api.server.store
    old = store.resource_version
    for i in range(70):
        store.create(BY_KIND["Namespace"], {"metadata": {"name": f"hist-{i}"}})
    code, ev = _status_of(_raw(lab, api, _req("GET", f"/api/v1/pods?watch=true&resourceVersion={old}")))
    assert code == 200 and ev["type"] == "ERROR", ev
    assert ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired", ev
    t0 = time.monotonic()
    raw = _raw(lab, api, _req("GET", f"/api/v1/pods?watch=true&allowWatchBookmarks=true&timeoutSeconds=1"
                                     f"&resourceVersion={store.resource_version}"))
    took = time.monotonic() - t0
    assert 0.9 < took < 3, took
    body = raw.partition(b"\r\n\r\n")[2]
    events = [json.loads(line) for chunk in body.split(b"\r\n")[1::2] for line in chunk.split(b"\n") if line]
    assert events and all(e["type"] == "BOOKMARK" for e in events), events
    assert events[0]["object"]["metadata"]["resourceVersion"] == str(store.resource_version)
    # protobuf preferred, JSON answered (client-go falls back on the Content-Type)
    raw = _raw(lab, api, _req("GET", "/api/v1/namespaces/default/pods",
                              headers={"Accept": "application/vnd.kubernetes.protobuf,application/json"}))
    assert b"Content-Type: application/json" in raw and json.loads(raw.partition(b"\r\n\r\n")[2])["kind"] == "PodList"



def test_up_api_refuses_keep() -> None:
    r = subprocess.run([CLI, "up", "default", "--api", "--keep"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "--api cannot be combined with --keep" in r.stderr, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr



def test_the_client_writer_publishes_the_lab_to_an_api_server(lab: Any) -> None:
    """``apiserver_client.publish`` writes the lab through the official client to an empty API
    server (here a second one of ours; the same calls target a real kube-apiserver): every object
    arrives, Pod and Node status through the status subresource, a second run replaces."""
    pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")
    from kubernetes import client

    from harness.cluster.apiserver import ApiServer, Publisher, _listen_here, underlay_address
    from harness.cluster.apiserver_client import delete_object, publish
    from harness.cluster.apiserver_store import Store

    ip = str(underlay_address(lab.cluster))
    sock = netns.call_in(lab.underlay_netns, _listen_here, ip, 8081, lab.cluster.underlay_cidr.prefixlen, True)
    target = Store()
    with ApiServer(target, sock).start() as server:
        desired = Publisher(lab, Store(), ip, 8081).desired()

        def go() -> tuple[int, int, bool, bool]:
            cfg = client.Configuration()
            cfg.host = server.url
            with client.ApiClient(cfg) as ac:
                first = publish(ac, desired)
                second = publish(ac, desired)  # everything exists: replaced, not refused
                pod = next(o for _, o in desired if o["kind"] == "Pod")
                m = pod["metadata"]
                return first, second, delete_object(ac, "Pod", m["namespace"], m["name"]), \
                    delete_object(ac, "Pod", m["namespace"], m["name"])

        first, second, deleted, again = netns.call_in(_node_ns(lab), go)
    assert first == second == len(desired) and (deleted, again) == (True, False)
    pods = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in target.list(BY_KIND["Pod"], None)[0]}
    assert len(pods) == len(lab.cluster.pods) - 1
    for p in lab.cluster.pods.values():
        if (p.namespace, p.name) in pods:
            st = pods[(p.namespace, p.name)]["status"]
            assert st["phase"] == "Running" and st["podIP"] == str(p.ip), st
    nodes = target.list(BY_KIND["Node"], None)[0]
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted(lab.cluster.nodes)
    assert all(n["status"]["addresses"] for n in nodes)

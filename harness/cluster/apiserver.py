"""A Kubernetes API server for a lab: what a controller (kube-router, kubectl, client-go) needs
to list and watch the lab's Namespaces, Nodes, Pods, Services, NetworkPolicies and
EndpointSlices — plain HTTP, bound only inside the lab.

Pieces (one responsibility each):
- ``apiserver_objects``: the served resources and the model -> Kubernetes JSON conversion;
- ``apiserver_selectors``: label and field selectors;
- ``apiserver_store``: the resourceVersion'ed store, bounded history, watch fan-out;
- ``apiserver_http``: URLs, discovery, verbs, watch streams, Status errors;
- this module: the server's life (its listening socket opened *inside* the lab's underlay
  namespace, on an address of the underlay bridge that every node namespace reaches) and the
  ``Publisher`` that writes the lab's state to the store as it changes.

The server runs as threads of the process that owns the lab: a SIGKILL of that process takes
the server with it, and the socket lives in a lab namespace that ``down``/``gc`` delete, so
nothing needs recording in the run record. The socket is never in the root namespace.

For a controller the server is a URL (``ApiServer.url``) plus delivery semantics: events in
revision order, a bounded history (a watch from an older revision gets 410 Expired and must
relist), bookmarks on request, and watch-list (``sendInitialEvents``) as client-go 1.35 uses it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from harness.cluster.apiserver_http import ApiHTTPServer
from harness.cluster.apiserver_objects import (
    BY_KIND,
    BY_NAME,
    kubernetes_service_objects,
    namespace_object,
    network_policy_object,
    node_object,
    pod_object,
)
from harness.cluster.apiserver_store import ApiError, Store
from harness.errors import HarnessError, KernelError
from harness.kernel import netns, rtnl

if TYPE_CHECKING:
    from harness.lab.lab import Lab
    from harness.model.cluster import Cluster

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080  # kube-apiserver's old insecure port: plain HTTP
UNDERLAY_BRIDGE_INDEX = 2  # harness.lab.lab.UNDERLAY_BRIDGE


def underlay_address(cluster: Cluster) -> ipaddress.IPv4Address:
    """The API server's address: the underlay's first host (.1, which topology loading keeps
    free for the underlay gateway), or the first host no node uses."""
    taken = {n.node_ip for n in cluster.nodes.values()}
    for ip in cluster.underlay_cidr.hosts():
        if ip not in taken:
            return ip
    raise HarnessError(f"{cluster.source or cluster.name}: underlay_cidr: no free address for the API server")


def _listen_here(ip: str, port: int, prefixlen: int, add_address: bool) -> socket.socket:
    """In the calling thread's namespace: put ``ip`` on the underlay bridge, open the socket."""
    if add_address:
        sock = rtnl.Rtnl.here("underlay")
        try:
            sock.run([rtnl.address(UNDERLAY_BRIDGE_INDEX, ip, prefixlen)])
        except KernelError as e:
            # a second server for the same lab (one per controller run) finds the address there
            if "[EEXIST]" not in str(e):
                raise
        finally:
            sock.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(128)
    return s


class ApiServer:
    """The HTTP server over a ``Store``, listening on ``sock``; ``start()``/``stop()``."""

    def __init__(self, store: Store, sock: socket.socket, *, bookmark_interval: float = 5.0):
        self.store = store
        self.http = ApiHTTPServer(sock, store, bookmark_interval=bookmark_interval)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.http.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """``http://host:port``: what ``kubectl --server`` and a controller's kubeconfig take."""
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> ApiServer:
        self._thread = threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"apiserver:{self.url}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End every watch, close every connection, join every thread. Idempotent."""
        if self._thread is None:
            return
        self.http.stopping.set()
        self.store.close()
        self.http.shutdown()
        self.http.close_connections()
        self.http.server_close()  # joins the handler threads (block_on_close)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Publisher:
    """Writes a lab's state to the store: namespaces, nodes, pods, policies, and the
    ``default/kubernetes`` Service/EndpointSlice pointing at the server. ``sync()`` makes the
    store equal to the lab (writes only what changed, deletes what is gone); the lab calls it
    after every pod change. Objects written by API clients are left alone (only keys this
    publisher wrote are deleted)."""

    def __init__(self, lab: Lab, store: Store, host: str, port: int):
        self.lab, self.store, self.host, self.port = lab, store, host, port
        self._mine: dict[str, set[tuple[str, str]]] = {}
        self._since: dict[str, int] = {}  # first publication time per object: stable timestamps
        self._lock = threading.Lock()

    def desired(self) -> list[tuple[str, dict[str, Any]]]:
        """(resource name, object) of everything the lab has now."""
        c = self.lab.cluster
        names = set(c.namespaces) | {p.namespace for p in c.pods.values()} | \
            {p.namespace for p in c.policies.values()} | {"default", "kube-system"}
        from harness.model.cluster import Namespace

        out: list[tuple[str, dict[str, Any]]] = [
            ("namespaces", namespace_object(c.namespaces.get(n) or Namespace(n))) for n in sorted(names)]
        out += [("nodes", node_object(n, self._first_seen(f"node:{n.name}"))) for n in c.nodes.values()]
        # A pod runs once its network is wired (Pending before, as a kubelet publishes it); a
        # virtual one is published like a pod on a remote node (controllers must see it to open
        # its peers' rules).
        out += [("pods", pod_object(p, c.nodes.get(p.node), running=self._running(p),
                                    started_ns=self._started(p.key))) for p in c.pods.values()]
        out += [("networkpolicies", network_policy_object(p)) for p in c.policies.values()]
        out += kubernetes_service_objects(self.host, self.port)
        return out

    def _running(self, pod: Any) -> bool:
        """Whether ``pod`` is published Running: it has an address and, on a real node, the lab
        has wired its network (a lab without ``is_realized`` counts every addressed pod)."""
        if pod.ip is None:
            return False
        node = self.lab.cluster.nodes.get(pod.node)
        realized = getattr(self.lab, "is_realized", None)
        return node is None or not node.is_real or realized is None or realized(pod.key)

    def _first_seen(self, key: str) -> int:
        return self._since.setdefault(key, time.time_ns())

    def _started(self, pod_key: str) -> int:
        """A realized pod started when its network became ready; a virtual one when first seen."""
        try:
            return self.lab.ready_time(pod_key)
        except KeyError:
            return self._first_seen(f"pod:{pod_key}")

    def sync(self) -> int:
        """Make the store match the lab; returns the number of writes."""
        with self._lock:
            want: dict[str, set[tuple[str, str]]] = {}
            writes = 0
            for rname, obj in self.desired():
                res = BY_NAME[(BY_KIND[obj["kind"]].group, BY_KIND[obj["kind"]].version, rname)]
                m = obj["metadata"]
                want.setdefault(rname, set()).add((m.get("namespace") or "", m["name"]))
                writes += self.store.apply(res, obj) is not None
            for rname, keys in self._mine.items():
                res = next(r for r in BY_KIND.values() if r.name == rname)
                for ns, name in keys - want.get(rname, set()):
                    try:
                        self.store.delete(res, ns or None, name)
                        writes += 1
                    except ApiError:
                        pass  # an API client deleted it already
            self._mine = want
            return writes

    def on_pod_change(self, key: str) -> None:
        """The lab's hook after pod ``key`` was added or removed: writes that pod (and a new
        namespace) only, so a lab of thousands of pods is not rebuilt per CNI ADD/DEL."""
        from harness.model.cluster import Namespace

        c = self.lab.cluster
        pods, nss = BY_KIND["Pod"], BY_KIND["Namespace"]
        ns_name, name = key.split("/", 1)
        with self._lock:
            pod = c.pods.get(key)
            mine = self._mine.setdefault("pods", set())
            if pod is None:
                if (ns_name, name) in mine:
                    mine.discard((ns_name, name))
                    try:
                        self.store.delete(pods, ns_name, name)
                    except ApiError:
                        pass  # an API client deleted it already
                return
            if ("", pod.namespace) not in self._mine.setdefault("namespaces", set()):
                self.store.apply(nss, namespace_object(c.namespaces.get(pod.namespace) or Namespace(pod.namespace)))
                self._mine["namespaces"].add(("", pod.namespace))
            self.store.apply(pods, pod_object(pod, c.nodes.get(pod.node), running=self._running(pod),
                                              started_ns=self._started(key)))
            mine.add((pod.namespace, pod.name))

    def on_pod_scheduled(self, key: str) -> None:
        """The lab's hook when pod ``key`` entered the model, before its network is wired:
        published ``Pending`` with its hostIP and no podIP (kubelet's first status; kubernetes
        v1.35.0 pkg/kubelet/kubelet_pods.go: generateAPIPodStatus), Running follows."""
        self.on_pod_change(key)


class LabApi:
    """A lab's API server and publisher: ``LabApi.start(lab)`` ... ``stop()``."""

    def __init__(self, lab: Lab, server: ApiServer, publisher: Publisher):
        self.lab, self.server, self.publisher = lab, server, publisher

    @classmethod
    def start(cls, lab: Lab, *, port: int = DEFAULT_PORT, history: int = 4096,
              bookmark_interval: float = 5.0) -> LabApi:
        """Open the server inside ``lab``'s underlay namespace, publish the lab, follow its pod
        changes. The address is on the underlay bridge (added here; node namespaces reach it
        on their eth0 subnet)."""
        underlay = lab.underlay_netns
        ip = underlay_address(lab.cluster)
        sock = netns.call_in(underlay, _listen_here, str(ip), port, lab.cluster.underlay_cidr.prefixlen, True)
        store = Store(history=history)
        server = ApiServer(store, sock, bookmark_interval=bookmark_interval)
        host, bound = server.address
        publisher = Publisher(lab, store, host, bound)
        publisher.sync()
        server.start()
        lab.subscribe(publisher.on_pod_change)
        if hasattr(lab, "subscribe_scheduled"):
            lab.subscribe_scheduled(publisher.on_pod_scheduled)
        log.info("lab %s: API server at %s", lab.run_id, server.url)
        return cls(lab, server, publisher)

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        """Stop following the lab and stop the server (threads joined)."""
        self.lab.unsubscribe(self.publisher.on_pod_change)
        self.lab.unsubscribe(self.publisher.on_pod_scheduled)
        self.server.stop()

    def __enter__(self) -> LabApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

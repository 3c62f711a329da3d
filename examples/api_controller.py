#!/usr/bin/env python3
"""The harness's kube-router model as a real API client: a network policy controller for one
node that learns the cluster only through the Kubernetes API (the official ``kubernetes``
client) and programs the namespace it runs in with the harness's own kube-router render+apply.

It is what the ``binary`` engine runs when no real kube-router binary is at hand (the
"model-as-API-client" configuration of issue 13):

    netpol-harness conformance cases/conformance --engine binary \\
        --binary-cmd "python3 examples/api_controller.py --master {master} --node {node}"

What it does, after kube-router v2.10.0 (file paths in that tag):

- GETs its own Node for its InternalIP (pkg/utils/node.go: GetNodeObject; kube-router needs
  ``--hostname-override`` when the host name is not the Node's name);
- one informer per kind it watches for policy (pkg/cmd/kube-router.go: the informer factory's
  Pods, Namespaces, NetworkPolicies; Nodes for the node's own address): LIST, then WATCH from
  the list's resourceVersion with bookmarks; a ``410 Gone`` (expired revision) relists, as
  client-go's reflector does (k8s.io/client-go tools/cache/reflector.go: ListAndWatch);
- every relevant event asks for a full sync through a 1-slot channel (pkg/controllers/netpol/
  network_policy_controller.go: RequestFullSync drops a request when one is pending); pod
  events only when the pod is actionable (pkg/controllers/netpol/utils.go: isNetPolActionable
  = not finished, has a pod IP, not hostNetwork) or its relevant fields changed
  (pod.go: newPodEventHandler / isPodUpdateNetPolRelevant: labels, IP, phase; simplified here);
- a periodic full sync every ``--iptables-sync-period`` (default 5m, pkg/options/options.go);
- a full sync renders the node's view with ``harness.engines.kube_router`` (profile
  ``NPH_PROFILE``, backend ``NPH_BACKEND``) and applies it (iptables-save, one ipset restore,
  one iptables-restore: fullPolicySync);
- with ``--metrics-port``, Prometheus metrics under kube-router's names
  (pkg/metrics/metrics_controller.go: ``kube_router_controller_iptables_sync_time`` and
  ``kube_router_controller_policy_chains_sync_time`` histograms, in seconds) plus its own
  ``api_controller_watch_events_total`` / ``api_controller_relists_total`` /
  ``api_controller_syncs_total``.

Assumption (no kube-router source says it): the informer's local cache is rebuilt into a
harness ``Cluster`` per sync — kube-router also reads its listers at the start of each sync.

Every line it prints is one log line (``watch pods MODIFIED batch/job-3 ip=10.244.1.5 rv=17``,
``sync 4 ...``): the binary engine stamps it with the time it read it, so a scenario can tell
when the watch delivered a pod to this node.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from kubernetes import client, watch

from harness.engines.config import EnforcementConfig
from harness.engines.kube_router.engine import KubeRouterEngine
from harness.model.cluster import NAMESPACE_NAME_LABEL, Cluster, ContainerPort, Namespace, Node, Pod
from harness.model.netpol import parse_network_policy

WATCH_TIMEOUT_S = 300  # each WATCH request ends server-side after this and is re-opened from its revision
KINDS = ("nodes", "namespaces", "pods", "networkpolicies")
_print_lock = threading.Lock()


def say(line: str, at_ns: int | None = None) -> None:
    """One log line on stdout, flushed, stamped ``@<CLOCK_REALTIME ns>``: ``at_ns`` (when what it
    tells happened: a watch event's arrival) or when it was said. The engine's own stamp (when its
    reader got the line) lags by the reader thread's scheduling, ~10 ms under load - more than a
    whole enforcement window here. Watch lines carry their arrival time because saying can wait:
    for the GIL while the sync loop renders, or for the print lock while another line's write
    blocks on a full pipe (CI once saw a job's watch line stamped 62 ms after the sync that
    programmed it from the already-updated cache)."""
    stamp = time.time_ns() if at_ns is None else at_ns
    with _print_lock:
        sys.stdout.write(f"@{stamp} {line}\n")
        sys.stdout.flush()


class Metrics:
    """kube-router's sync histograms and the informer counters (no-ops without a port)."""

    def __init__(self, port: int | None):
        self.on = port is not None
        if not self.on:
            return
        from prometheus_client import Counter, Histogram, start_http_server

        self.sync_time = Histogram("kube_router_controller_iptables_sync_time",
                                   "Time it took for controller to sync iptables")
        self.chains_time = Histogram("kube_router_controller_policy_chains_sync_time",
                                     "Time it took for controller to sync policy chains")
        self.events = Counter("api_controller_watch_events", "Watch events received", ["resource", "type"])
        self.relists = Counter("api_controller_relists", "LISTs after an expired watch (410)", ["resource"])
        self.syncs = Counter("api_controller_syncs", "Full syncs done", ["result"])
        start_http_server(port)  # all addresses of this node's namespace (kube-router: --metrics-addr "")

    def event(self, resource: str, kind: str) -> None:
        if self.on:
            self.events.labels(resource, kind).inc()

    def relist(self, resource: str) -> None:
        if self.on:
            self.relists.labels(resource).inc()

    def synced(self, total_s: float, chains_s: float, ok: bool) -> None:
        if self.on:
            self.sync_time.observe(total_s)
            self.chains_time.observe(chains_s)
            self.syncs.labels("ok" if ok else "error").inc()


class SyncChannel:
    """kube-router's fullSyncRequestChan: capacity 1, a request while one is pending is dropped."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending = False

    def request(self) -> bool:
        with self._cond:
            if self._pending:
                return False
            self._pending = True
            self._cond.notify()
            return True

    def take(self, timeout: float) -> bool:
        """True when a request was taken, False when ``timeout`` passed (the periodic sync)."""
        with self._cond:
            if not self._pending:
                self._cond.wait(timeout)
            got, self._pending = self._pending, False
            return got


def actionable(obj: dict[str, Any]) -> bool:
    """kube-router v2.10.0 pkg/controllers/netpol/utils.go: isNetPolActionable."""
    st, spec = obj.get("status") or {}, obj.get("spec") or {}
    return st.get("phase") not in ("Failed", "Succeeded", "Completed") and bool(st.get("podIP")) \
        and not spec.get("hostNetwork")


def pod_relevant(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether a pod event asks for a sync (pod.go: newPodEventHandler, isPodUpdateNetPolRelevant:
    an add only when actionable; an update when labels, IP, phase or host network changed)."""
    if old is None:
        return actionable(new)

    def key(o: dict[str, Any]) -> tuple:
        st, spec = o.get("status") or {}, o.get("spec") or {}
        return ((o.get("metadata") or {}).get("labels") or {}, st.get("podIP"), st.get("phase"),
                spec.get("hostNetwork"), st.get("hostIP"))

    return key(old) != key(new)


class Informer:
    """LIST + WATCH of one resource into a dict (``ns/name`` -> raw object), with relist on 410."""

    def __init__(self, resource: str, lister: Any, on_change: Any, metrics: Metrics, stop: threading.Event):
        self.resource, self.lister, self.on_change, self.metrics, self.stop = resource, lister, on_change, metrics, stop
        self.items: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.rv = ""

    @staticmethod
    def key(obj: dict[str, Any]) -> str:
        m = obj.get("metadata") or {}
        return f"{m.get('namespace') or ''}/{m.get('name')}"

    def relist(self) -> None:
        resp = self.lister(_preload_content=False)
        got = time.time_ns()  # the listing's arrival, before the cache takes it
        data = json.loads(resp.data)
        fresh = {self.key(o): o for o in data.get("items") or []}
        with self.lock:
            old, self.items = self.items, fresh
        self.rv = (data.get("metadata") or {}).get("resourceVersion") or ""
        say(f"list {self.resource} {len(fresh)} items rv={self.rv}")
        # a relist is a replace: everything that changed or went away counts
        for k in set(old) | set(fresh):
            if old.get(k) != fresh.get(k):
                if self.resource == "pods" and fresh.get(k) is not None:
                    # the same line shape as a watch event: a pod that reached us by a relist
                    # (after a 410 or a failed watch) is timed like one that came by the watch
                    ip = (fresh[k].get("status") or {}).get("podIP")
                    say(f"relist {self.resource} {k.lstrip('/')}" + (f" ip={ip}" if ip else "") + f" rv={self.rv}",
                        got)
                self.on_change(self.resource, "RELIST", old.get(k), fresh.get(k))
        self.synced.set()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if not self.synced.is_set() or not self.rv:
                    self.relist()
                self._watch()
            except client.ApiException as e:
                if e.status == 410:  # the revision left the server's history: relist
                    say(f"watch {self.resource} expired (410) at rv={self.rv}: relisting")
                    self.metrics.relist(self.resource)
                    self.rv = ""
                    continue
                say(f"watch {self.resource} error {e.status}: {e.reason}")
                self.stop.wait(1.0)
            except Exception as e:  # noqa: BLE001 - a controller logs and retries, like a reflector
                if self.stop.is_set():
                    return
                say(f"watch {self.resource} failed: {type(e).__name__}: {e}")
                self.rv = ""
                self.stop.wait(1.0)

    def _watch(self) -> None:
        w = watch.Watch()
        # timeout_seconds disables the client's own silent 410 retry: we relist ourselves
        for ev in w.stream(self.lister, resource_version=self.rv, allow_watch_bookmarks=True,
                           timeout_seconds=WATCH_TIMEOUT_S, deserialize=False):
            got = time.time_ns()  # the event's arrival, before the cache (and so a sync) can see it
            if self.stop.is_set():
                w.stop()
                return
            kind, obj = ev.get("type"), ev.get("object") or {}
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.rv = rv
            if kind == "BOOKMARK":
                continue
            k = self.key(obj)
            with self.lock:
                old = self.items.get(k)
                if kind == "DELETED":
                    self.items.pop(k, None)
                else:
                    self.items[k] = obj
            ip = (obj.get("status") or {}).get("podIP") if self.resource == "pods" else None
            say(f"watch {self.resource} {kind} {k.lstrip('/')}" + (f" ip={ip}" if ip else "") + f" rv={rv}", got)
            self.metrics.event(self.resource, str(kind))
            self.on_change(self.resource, kind, old, None if kind == "DELETED" else obj)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.items.values())


def build_cluster(nodes: list[dict], namespaces: list[dict], pods: list[dict], policies: list[dict]) -> Cluster:
    """The node's view as a harness Cluster: nodes with their InternalIP and podCIDR, namespaces
    with labels, actionable pods (with IP and ports), every policy."""
    c = Cluster(name="api")
    for n in nodes:
        m, spec, st = n["metadata"], n.get("spec") or {}, n.get("status") or {}
        ip = next((a["address"] for a in st.get("addresses") or [] if a.get("type") == "InternalIP"), None)
        if ip is None or not spec.get("podCIDR"):
            continue
        c.nodes[m["name"]] = Node(m["name"], ipaddress.IPv4Address(ip), ipaddress.IPv4Network(spec["podCIDR"]))
    for ns in namespaces:
        m = ns["metadata"]
        labels = dict(m.get("labels") or {})
        labels.setdefault(NAMESPACE_NAME_LABEL, m["name"])
        c.namespaces[m["name"]] = Namespace(m["name"], labels)
    for p in pods:
        if not actionable(p):
            continue  # kube-router ignores pods until they have an IP
        m, spec = p["metadata"], p.get("spec") or {}
        node = spec.get("nodeName")
        if node not in c.nodes:
            continue
        ports = [ContainerPort(int(cp["containerPort"]), cp.get("protocol", "TCP"), cp.get("name"))
                 for ctr in spec.get("containers") or [] for cp in ctr.get("ports") or []]
        pod = Pod(m["namespace"], m["name"], node, dict(m.get("labels") or {}),
                  ipaddress.IPv4Address(p["status"]["podIP"]), ports)
        c.pods[pod.key] = pod
    for i, raw in enumerate(policies):
        m = raw["metadata"]
        doc = {"apiVersion": raw.get("apiVersion", "networking.k8s.io/v1"), "kind": "NetworkPolicy",
               "metadata": {k: m[k] for k in ("name", "namespace", "labels") if k in m}, "spec": raw.get("spec") or {}}
        try:
            pol = parse_network_policy(doc, "api", f"networkpolicies[{i}]")
        except Exception as e:  # noqa: BLE001 - one bad policy must not stop the node's enforcement
            say(f"policy {m.get('namespace')}/{m.get('name')} skipped: {e}")
            continue
        c.policies[pol.key] = pol
    return c


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--master", default=None, help="the API server URL (http://host:port); overrides --kubeconfig's")
    p.add_argument("--kubeconfig", default=None, help="a kubeconfig file (the binary engine's {kubeconfig})")
    p.add_argument("--node", required=True, help="this node's Node name (kube-router: --hostname-override)")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    p.add_argument("--iptables-sync-period", type=float, default=300.0, help="periodic full sync, seconds")
    p.add_argument("--profile", default=os.environ.get("NPH_PROFILE", "v2.10"))
    p.add_argument("--backend", default=os.environ.get("NPH_BACKEND", "nft"))
    p.add_argument("--netns", default=os.environ.get("NPH_NETNS", ""),
                   help="the namespace it runs in (the engine sets NPH_NETNS)")
    args = p.parse_args(argv)

    stop = threading.Event()
    channel = SyncChannel()

    def on_signal(*_: object) -> None:
        stop.set()
        channel.request()  # wakes the sync loop out of its wait for the periodic sync

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not args.master and not args.kubeconfig:
        p.error("give --master or --kubeconfig")
    cfg = client.Configuration()
    if args.kubeconfig:
        from kubernetes import config as kube_config

        kube_config.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
    if args.master:  # as kube-router: --master overrides the kubeconfig's server
        cfg.host = args.master
    cfg.proxy = None
    api = client.ApiClient(cfg)
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    me = core.read_node(args.node, _preload_content=False)  # fails loudly when the Node is unknown
    my_ip = next((a["address"] for a in json.loads(me.data)["status"]["addresses"] if a["type"] == "InternalIP"), "?")
    say(f"node {args.node} InternalIP {my_ip}")

    metrics = Metrics(args.metrics_port)

    def on_change(resource: str, kind: str, old: dict | None, new: dict | None) -> None:
        if resource == "pods" and new is not None and not pod_relevant(old, new):
            return
        if resource == "nodes":
            return  # node changes matter to the router, not to the firewall here
        channel.request()

    listers = {"nodes": core.list_node, "namespaces": core.list_namespace,
               "pods": core.list_pod_for_all_namespaces, "networkpolicies": net.list_network_policy_for_all_namespaces}
    informers = {r: Informer(r, listers[r], on_change, metrics, stop) for r in KINDS}
    for inf in informers.values():
        threading.Thread(target=inf.run, name=f"informer-{inf.resource}", daemon=True).start()
    for inf in informers.values():  # WaitForCacheSync
        while not inf.synced.wait(0.1):
            if stop.is_set():
                return 0

    config = EnforcementConfig(profile=args.profile, backend=args.backend)
    engine = KubeRouterEngine()
    engine.validate(config, "api_controller")
    node_engine = engine.node(args.node, args.netns, config)
    index = 0
    first = True
    while not stop.is_set():
        if not first and not channel.take(args.iptables_sync_period):
            reason = "periodic"
        else:
            reason = "initial" if first else "event"
        first = False
        if stop.is_set():
            break
        index += 1
        start = time.time_ns()
        view = build_cluster(*(informers[r].snapshot() for r in KINDS))
        try:
            done = node_engine.program(view, sync_version=start)
            ok, err = True, ""
        except Exception as e:  # noqa: BLE001 - the controller logs a failed sync and keeps running
            ok, err, done = False, f"{type(e).__name__}: {e}", None
        end = time.time_ns()
        metrics.synced((end - start) / 1e9, (done.render_ns if done else 0) / 1e9, ok)
        say(f"sync {index} {reason} pods={len(view.pods)} policies={len(view.policies)} start={start} end={end} "
            f"ms={(end - start) / 1e6:.1f}" + ("" if ok else f" error={err}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

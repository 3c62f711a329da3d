"""service-nat: what an established MySQL connection through a ClusterIP sees when the NAT state
under it changes (issue 12 item 5, the NAT-related reset mechanisms). Run code; the declaration
is ``harness.scenarios.timed.service_nat``, the test ``cases/scenarios/test_service_nat.py``.

A real PyMySQL client in a job pod on node-a connects to a Service's ClusterIP (kube-proxy
iptables mode on both nodes, ``harness.cluster.kube_proxy``) backed by real MariaDB servers,
runs ``SELECT 1``, then one mechanism acts on the established connection and the client runs
``SELECT 1`` again on it. What it saw is recorded verbatim with the MySQL code and the socket
errno. Mechanisms:

- ``ct-delete``: node-a's conntrack entry of the flow is deleted (``conntrack -D`` in node-a's
  namespace), as a conntrack flush, table overflow or expiry would lose it. The next client
  segment finds no entry: with ``nf_conntrack_tcp_loose=1`` (the kernel default) conntrack picks
  the flow up mid-stream as a NEW connection, so kube-proxy's KUBE-SERVICES DNAT runs again and
  may choose another endpoint, which answers the unknown segment with an RST; with
  ``nf_conntrack_tcp_loose=0`` the segment is INVALID, is not NATed, and is dropped (kube-proxy's
  KUBE-FORWARD INVALID drop, kube-router v1.3.2's pod-chain drop) or routed toward the ClusterIP
  and lost.
- ``ct-delete-in-query``: the same loss while the server is still working on a query
  (``SELECT SLEEP(1), 1``): the first segment after the loss is the server's reply. Picked up
  (loose=1) it is a new flow in the reverse direction that nothing de-NATs, so it reaches the
  client from the pod IP, which the client's socket does not know; INVALID (loose=0) it is dropped.
- ``no-endpoints``: a *new* connection while no endpoint is ready (a server pod behind a
  Service that is not ready yet). kube-proxy's filter KUBE-SERVICES REJECT is meant to answer;
  whether it is reached depends on kube-router's FORWARD chain in front of it (v1.3+ accepts
  what its pod chains passed). Counters say which rule took the SYN.
- ``endpoint-removed``: the server pod loses readiness, the EndpointSlice lists it not ready,
  kube-proxy syncs (event path with its delivery delay) and removes the endpoint; the
  established flow keeps its conntrack entry and NAT mapping; a new connection meets the REJECT.

Everything runs in the lab's namespaces; kube-router (policy on the servers) is the configured
profile, applied with the kube-router engine through the registry.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any

import yaml

log = logging.getLogger(__name__)

CLIENT = "batch/job-0"
SERVERS = ("db/mariadb-0", "db/mariadb-1")  # mariadb-0 on node-a (same node), mariadb-1 on node-b
SERVICE = "db/mariadb"

MANIFESTS = """
apiVersion: v1
kind: Service
metadata: {name: mariadb, namespace: db}
spec:
  selector: {app: mariadb}
  ports: [{name: mysql, port: 3306, targetPort: mysql}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-backup, namespace: db}
spec:
  podSelector: {matchLabels: {app: mariadb}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: batch}},
            podSelector: {matchLabels: {app: backup}}}]
    ports: [{port: 3306}]
"""


@dataclass(frozen=True)
class NatConfig:
    """One configuration: mechanism, endpoints behind the Service, nf_conntrack_tcp_loose on the
    nodes, kube-router profile (the INVALID drop is in v1.3.2+), kube-proxy's INVALID drop."""

    name: str
    mechanism: str  # ct-delete | ct-delete-in-query | no-endpoints | endpoint-removed
    endpoints: int = 1
    tcp_loose: int = 1
    profile: str = "v1.3.2"
    proxy_invalid_drop: bool = True
    backend: str = "nft"
    trials: int = 1

    def describe(self) -> dict[str, Any]:
        return {"mechanism": self.mechanism, "endpoints": self.endpoints, "nf_conntrack_tcp_loose": self.tcp_loose,
                "kube_router_profile": self.profile, "kube_proxy_invalid_drop": self.proxy_invalid_drop,
                "backend": self.backend, "trials": self.trials,
                # the report's engine column reads these (harness.report.scenario_report.enforcement_label)
                "engine": "kube-router", "profile": self.profile, "strategy": "restore"}


def topology(endpoints: int) -> dict[str, Any]:
    """Two real nodes; the job pod and mariadb-0 on node-a, mariadb-1 on node-b (if two endpoints)."""
    pods = [{"name": "job-0", "namespace": "batch", "node": "node-a", "labels": {"app": "backup"}}]
    for i, node in enumerate(("node-a", "node-b")[:endpoints]):
        pods.append({"name": f"mariadb-{i}", "namespace": "db", "node": node, "labels": {"app": "mariadb"},
                     "ports": [{"port": 3306, "name": "mysql"}]})
    return {"name": "service-nat", "nodes": [{"name": "node-a"}, {"name": "node-b"}],
            "namespaces": [{"name": "db"}, {"name": "batch"}], "pods": pods}


def build_cluster(endpoints: int):
    """The model: topology + the Service and the servers' ingress policy."""
    from harness.model.manifests import apply_manifest_documents
    from harness.model.topology import topology_from_dict

    cluster = topology_from_dict(topology(endpoints), "service-nat")
    apply_manifest_documents(list(yaml.safe_load_all(MANIFESTS)), cluster, "service-nat manifests")
    return cluster


def _set_tcp_loose(lab: Any, value: int) -> None:
    from harness.kernel import netns

    for node in lab.cluster.real_nodes():
        def write(v: int = value) -> None:
            with open("/proc/sys/net/netfilter/nf_conntrack_tcp_loose", "w") as f:
                f.write(str(v))
        netns.call_in(lab.node_netns(node.name), write)


@dataclass
class Trial:
    """One established connection and what its next query saw after the mechanism."""

    ok_before: bool
    ok_after: bool
    code: int | None
    errno: str | None
    message: str
    exception: str
    endpoint: str | None  # the server the connection was DNATed to first
    after_ms: float  # from the mechanism to the end of the second query
    new_connection: str = ""  # endpoint-removed: what a new connection saw
    endpoint_after: str | None = None  # where node-a's conntrack sent the flow at the second query
    rule_counts: dict[str, int] | None = None  # node-a: packets the deciding rules took (INVALID drops by chain; REJECT vs ACCEPT)

    @property
    def outcome(self) -> Any:
        """What the client saw as a ``harness.outcome.Outcome``, from the errno and the MySQL
        code (never the message): CONNECTED when the query went through; an established
        connection reset is RESET_AFTER_ESTABLISHED; otherwise ``from_mysql`` (ECONNREFUSED ->
        REFUSED, ETIMEDOUT -> TIMEOUT, EHOSTUNREACH -> UNREACHABLE ...)."""
        from harness.outcome import Outcome, errno_number, from_mysql

        if self.ok_after:
            return Outcome.CONNECTED
        seen = from_mysql(self.code, errno_number(self.errno))
        if seen is Outcome.RESET and self.endpoint is not None:  # the flow was established and in use
            return Outcome.RESET_AFTER_ESTABLISHED
        return seen

    @property
    def client_saw(self) -> str:
        """The outcome's serialized word (results.json, the symptom rows)."""
        return self.outcome.word

    def as_dict(self) -> dict[str, Any]:
        return {"ok_before": self.ok_before, "ok_after": self.ok_after, "code": self.code, "errno": self.errno,
                "message": self.message, "exception": self.exception, "endpoint": self.endpoint,
                "after_ms": round(self.after_ms, 1), "client_saw": self.client_saw,
                "new_connection": self.new_connection, "endpoint_after": self.endpoint_after,
                "rule_counts": dict(self.rule_counts or {})}


def _query(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchall()


def _failure(e: BaseException) -> tuple[int | None, str | None, str, str]:
    from harness.outcome import errno_name, exception_errno

    code = e.args[0] if e.args and isinstance(e.args[0], int) else None
    msg = str(e.args[1]) if len(e.args) > 1 else str(e)
    inner = e.__context__ or e.__cause__ or getattr(e, "original_exception", None)
    return code, errno_name(exception_errno(e)), msg, type(inner).__name__ if inner is not None else type(e).__name__


class ServiceNat:
    """A lab with the Service, MariaDB servers, kube-proxy and kube-router for one configuration;
    ``run()`` does the trials. Use as a context manager (everything stopped and removed)."""

    def __init__(self, cfg: NatConfig, read_timeout_s: float = 2.0):
        self.cfg = cfg
        self.read_timeout_s = read_timeout_s
        self.lab: Any = None
        self.dbs: list[Any] = []
        self.proxies: dict[str, Any] = {}

    def __enter__(self) -> ServiceNat:
        from harness.cluster.kube_proxy import KubeProxy, KubeProxyConfig, start_on_lab
        from harness.cluster.mariadb import MariaDB
        from harness.engines import registry
        from harness.engines.config import EnforcementConfig
        from harness.lab.lab import Lab

        cfg = self.cfg
        self.lab = Lab(build_cluster(cfg.endpoints), servers=False)
        self.lab.up()
        try:
            _set_tcp_loose(self.lab, cfg.tcp_loose)
            enforcement = EnforcementConfig(profile=cfg.profile, backend=cfg.backend)
            engine = registry.get_engine(enforcement.engine)
            engine.validate(enforcement)
            routers = [engine.node(n.name, self.lab.node_netns(n.name), enforcement)
                       for n in self.lab.cluster.real_nodes()]
            for ne in routers:
                ne.program(self.lab.cluster, sync_version=time.time_ns(), full=True)
            proxy = KubeProxy(KubeProxyConfig(invalid_drop=cfg.proxy_invalid_drop))
            self.proxies = start_on_lab(self.lab, backend=cfg.backend, proxy=proxy,
                                        delivery="fixed:0.02")
            # kube-proxy prepended its jumps above kube-router's; kube-router's next sync (every
            # event, or its periodic one) puts its own back at position 1 of FORWARD/INPUT/OUTPUT
            # (kube-router v1.3.2 pkg/controllers/netpol/network_policy_controller.go
            # ensureTopLevelChains: ensureRuleAtPosition inserts at 1 and deletes the old one),
            # where they stay (kube-proxy's EnsureRule only checks that its jumps exist).
            for ne in routers:
                ne.program(self.lab.cluster, sync_version=time.time_ns(), full=True)
            password = None
            for key in SERVERS[:cfg.endpoints]:
                db = MariaDB(self.lab, key)
                # one client password for every endpoint, as one Deployment's replicas share a Secret
                password = password or db.password
                db.password = password
                self.dbs.append(db.start())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        from harness.cluster.kube_proxy import stop_all

        stop_all(self.proxies)
        for db in self.dbs:
            db.stop()
        self.dbs = []
        if self.lab is not None:
            self.lab.down()
            self.lab = None

    @property
    def cluster_ip(self) -> str:
        return str(self.lab.cluster.services[SERVICE].cluster_ip)

    def _connect(self) -> Any:
        from harness.cluster.mariadb import connect

        db = self.dbs[0]  # every endpoint has the same client account and password
        return connect(self.lab.pod_netns(CLIENT), self.cluster_ip, 3306, user=db.user, password=db.password,
                       timeout_s=2, io_timeout_s=self.read_timeout_s)

    def _endpoint_of(self, sport: int) -> str | None:
        ct = self.lab.exec("node-a", ["conntrack", "-L", "-p", "tcp", "--orig-port-src", str(sport)]).stdout
        for line in ct.splitlines():
            if f"dst={self.cluster_ip}" in line:
                # the reply tuple's src is the endpoint: the second src= of the line
                srcs = [f.split("=", 1)[1] for f in line.split() if f.startswith("src=")]
                return srcs[1] if len(srcs) > 1 else None
        return None

    def _invalid_drops(self) -> dict[str, int]:
        """Packets counted by node-a's ``--ctstate INVALID -j DROP`` rules, summed per chain kind
        (KUBE-FORWARD: kube-proxy; KUBE-POD-FW / KUBE-NWPLCY-COMMON: kube-router)."""
        tool = "iptables-nft" if self.cfg.backend == "nft" else "iptables-legacy"
        out = self.lab.exec("node-a", [tool, "-w", "-t", "filter", "-L", "-v", "-x", "-n"]).stdout
        counts: dict[str, int] = {}
        chain = ""
        for line in out.splitlines():
            if line.startswith("Chain "):
                name = line.split()[1]
                chain = "KUBE-POD-FW" if name.startswith("KUBE-POD-FW-") else name
            elif "ctstate INVALID" in line and "DROP" in line.split():
                counts[chain] = counts.get(chain, 0) + int(line.split()[0])
        return counts

    def _watch_new_flows(self, sport: int) -> Any:
        """``conntrack -E -e NEW`` on node-a for the flow's source port: a mid-stream pickup shows
        up as a NEW event whose reply tuple names the endpoint the DNAT chose this time."""
        import subprocess

        from harness.kernel import netns

        proc = netns.popen(self.lab.node_netns("node-a"),
                           ["conntrack", "-E", "-e", "NEW", "-p", "tcp", "--orig-port-src", str(sport)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(0.05)  # the event socket is subscribed before the segment goes out
        return proc

    def _first_new_endpoint(self, proc: Any) -> str | None:
        time.sleep(0.05)
        proc.terminate()
        out, _ = proc.communicate(timeout=5)
        for line in out.splitlines():
            srcs = [f.split("=", 1)[1] for f in line.split() if f.startswith("src=")]
            if len(srcs) > 1:
                return srcs[1]
        return None

    def _forward_counters(self) -> dict[str, int]:
        """node-a's packets counted by kube-proxy's no-endpoints REJECT and by kube-router's final
        accept of KUBE-ROUTER-FORWARD (explicit ACCEPT of mark 0x20000, v2.10 KUBE-NWPLCY-TAIL)."""
        tool = "iptables-nft" if self.cfg.backend == "nft" else "iptables-legacy"
        out: dict[str, int] = {}
        for chain, needle, key in (("KUBE-SERVICES", "has no endpoints", "kube-proxy REJECT"),
                                   ("KUBE-ROUTER-FORWARD", "explicitly", "kube-router ACCEPT")):
            text = self.lab.exec("node-a", [tool, "-w", "-t", "filter", "-L", chain, "-v", "-x", "-n"]).stdout
            out[key] = sum(int(ln.split()[0]) for ln in text.splitlines() if needle in ln)
        return out

    def _set_servers_ready(self, ready: bool) -> None:
        """Every server pod's readiness set; the EndpointSlice change delivered to kube-proxy on
        every node, returning once each has synced it."""
        from harness.cluster.kube_proxy import proxy_view

        for key in SERVERS[:self.cfg.endpoints]:
            self.lab.cluster.pods[key].ready = ready
        emitted = time.time_ns()
        view = proxy_view(self.lab.cluster)
        for p in self.proxies.values():
            p.deliver(view, emitted)
        for p in self.proxies.values():
            p.wait_synced(emitted)

    def _no_endpoints(self) -> Trial:
        """Every endpoint unready (kube-proxy synced), then one new connection; readiness back."""
        self._set_servers_ready(False)
        try:
            before = self._forward_counters()
            t0 = time.monotonic()
            try:
                self._connect().close()
                trial = Trial(True, True, None, None, "", "", None, (time.monotonic() - t0) * 1e3)
            except Exception as e:
                code, errno, msg, exc = _failure(e)
                trial = Trial(True, False, code, errno, msg, exc, None, (time.monotonic() - t0) * 1e3)
            after = self._forward_counters()
            trial.rule_counts = {k: after[k] - before[k] for k in after if after[k] - before[k]}
            return trial
        finally:
            self._set_servers_ready(True)

    def trial(self) -> Trial:
        """One connection through the mechanism."""
        if self.cfg.mechanism == "no-endpoints":
            return self._no_endpoints()
        conn = self._connect()
        try:
            _query(conn)
            sport = conn._sock.getsockname()[1]
            endpoint = self._endpoint_of(sport)
            time.sleep(0.1)  # let the last ACKs pass before the state changes under the flow
            t0 = time.monotonic()
            new_conn = ""
            if self.cfg.mechanism == "ct-delete":
                self._delete_flow(sport)
            elif self.cfg.mechanism == "endpoint-removed":
                new_conn = self._remove_endpoints()
            if self.cfg.mechanism == "ct-delete-in-query":
                return self._in_query(conn, sport, endpoint)
            events = self._watch_new_flows(sport)
            try:
                drops0 = self._invalid_drops()
                try:
                    _query(conn)
                except Exception as e:
                    code, errno, msg, exc = _failure(e)
                    trial = Trial(True, False, code, errno, msg, exc, endpoint, (time.monotonic() - t0) * 1e3,
                                  new_conn)
                else:
                    trial = Trial(True, True, None, None, "", "", endpoint, (time.monotonic() - t0) * 1e3, new_conn)
                trial.endpoint_after = self._first_new_endpoint(events) or self._endpoint_of(sport)
            finally:
                if events.poll() is None:  # a process left in node-a's namespace would keep it alive
                    events.kill()
                    events.wait(5)
            drops1 = self._invalid_drops()
            trial.rule_counts = {k: drops1.get(k, 0) - drops0.get(k, 0) for k in drops1
                                   if drops1.get(k, 0) - drops0.get(k, 0)}
            return trial
        finally:
            try:
                conn.close()
            except Exception:
                pass

    def _delete_flow(self, sport: int) -> None:
        out = self.lab.exec("node-a", ["conntrack", "-D", "-p", "tcp", "--orig-port-src", str(sport),
                                       "--orig-dst", self.cluster_ip])
        if "1 flow entries have been deleted" not in out.stderr:
            raise RuntimeError(f"conntrack -D did not delete the flow: {out.stderr.strip()}")

    def _in_query(self, conn: Any, sport: int, endpoint: str | None) -> Trial:
        """The second query runs in a thread; the flow's entry is deleted while the server sleeps."""
        import threading

        result: dict[str, Any] = {}

        def query() -> None:
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT SLEEP(1), 1")
                    cur.fetchall()
            except Exception as e:
                result["error"] = e

        worker = threading.Thread(target=query, name="service-nat-query")
        worker.start()
        time.sleep(0.4)  # the query is at the server (it ACKed it), the reply is ~0.6 s away
        t0 = time.monotonic()
        drops0 = self._invalid_drops()
        self._delete_flow(sport)
        worker.join(self.read_timeout_s + 5)
        after = (time.monotonic() - t0) * 1e3
        if "error" in result:
            code, errno, msg, exc = _failure(result["error"])
            trial = Trial(True, False, code, errno, msg, exc, endpoint, after)
        else:
            trial = Trial(True, True, None, None, "", "", endpoint, after)
        drops1 = self._invalid_drops()
        trial.rule_counts = {k: drops1.get(k, 0) - drops0.get(k, 0) for k in drops1
                               if drops1.get(k, 0) - drops0.get(k, 0)}
        return trial

    def _remove_endpoints(self) -> str:
        """Every server loses readiness; kube-proxy syncs on both nodes; then a new connection."""
        self._set_servers_ready(False)
        try:
            self._connect().close()
            return "connected"
        except Exception as e:
            code, errno, msg, _exc = _failure(e)
            return f"{code} {errno}: {msg}"
        finally:
            self._set_servers_ready(True)

    def run(self, progress=None) -> dict[str, Any]:
        """``trials`` trials; one observation: the trials and their counts."""
        trials = []
        for i in range(self.cfg.trials):
            trials.append(self.trial().as_dict())
            if progress is not None:
                progress(i + 1, self.cfg.trials)
        counts: dict[str, int] = {}
        for t in trials:
            counts[t["client_saw"]] = counts.get(t["client_saw"], 0) + 1
        return {"config": self.cfg.describe(), "trials": trials, "counts": counts,
                "cluster_ip": self.cluster_ip,
                "endpoints": [str(ipaddress.IPv4Address(self.lab.cluster.pods[k].ip))
                              for k in SERVERS[:self.cfg.endpoints]]}

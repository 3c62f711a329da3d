"""client-path (kube-router #1652 as reported): a job pod runs ``mariadb-dump --host=mysql.db
--ssl --user=nph app`` right after it starts, resolving the name through the lab's cluster DNS
(dnsmasq in kube-system, kubelet's resolv.conf) and speaking TLS to a real MariaDB.

Setting (default topology): ``db/mariadb-0`` on node-a (TLS, ``REQUIRE SSL``, schema ``app``),
``db/allow-backup`` (ingress from ``app=backup`` in ``batch`` on 3306), cluster DNS
``kube-system/kube-dns-0`` on node-a serving ``mysql.db.svc.cluster.local`` -> the server pod's
IP. Assumption until the Service model is wired in: the record points at the pod, as a headless
Service's does (the integrator swaps in ``service_dns_records(cluster)`` for a ClusterIP).

``egress`` adds the production pattern in the job's namespace: ``batch/default-deny-egress``
(every pod, Egress, no rule) + ``batch/allow-dns`` (UDP and TCP 53 to ``k8s-app=kube-dns`` in
kube-system) + ``batch/allow-mysql`` (TCP 3306 to ``app=mariadb`` in db); ``mysql-only`` leaves
out allow-dns (the misconfiguration: resolution itself is denied).

Each run creates ``batch/job-<i>`` through the controller, starts a DNS packet watcher in its
namespace (when each query left, when its answer or an ICMP error came) and runs the client at
once (``wait_programmed``: after every node programmed the pod). Then the client is rerun every
``poll_s`` until it succeeds (at most ``until_success_s``): the time a ``sleep`` before the job
would have needed. ``abort``: once programmed, a ``mariadb --ssl -e 'SELECT SLEEP(5)'`` session is
aborted by the server side while established: ``kill-connection`` (MariaDB's ``KILL CONNECTION``:
the server closes the socket) or ``sock-destroy`` (``ss -K`` in the server pod's namespace: the
kernel aborts the server's socket, SOCK_DESTROY -> tcp_abort sends an RST).

Every run gives symptom rows (``harness.analysis.symptoms``) for the first attempt.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.analysis import symptoms
from harness.analysis.dns_queries import pair_queries
from harness.cluster import dns as cluster_dns
from harness.cluster.dns import ClusterDNS
from harness.cluster.mariadb import PORT, MariaDB
from harness.controller import Controller, ControllerConfig
from harness.controller.mitigations import parse_mitigations
from harness.engines.config import EnforcementConfig
from harness.errors import ConfigError, HarnessError
from harness.kernel import netns
from harness.model.cluster import Pod
from harness.model.policy import LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule
from harness.model.service import Service, ServicePort, service_dns_records
from harness.scenarios.job import allow_backup
from harness.scenarios.tls_client import TOOLS, client_finish, client_run, client_start

log = logging.getLogger(__name__)

SERVER = "db/mariadb-0"
SERVER_NODE = "node-a"
HOST = "mysql.db"  # the service name as the job in namespace batch writes it
RECORD = "mysql.db.svc.cluster.local"
DATABASE = "app"
EGRESS = ("none", "dns+mysql", "mysql-only")
ABORTS = (None, "kill-connection", "sock-destroy")
NAME = "client-path"
# How the job reaches the names: ``clusterip`` is the reporter's path (the name resolves to a
# ClusterIP, kube-proxy's iptables mode on every node DNATs it to the server pod, and the pods'
# nameserver is the kube-dns Service's ClusterIP too); ``headless`` resolves straight to the pod
# IPs (a headless Service; no service proxy on the path) - the comparison that shows what the
# Service path adds.
SERVICE_PATHS = ("clusterip", "headless")
KUBE_DNS_IP = "10.96.0.10"  # kubeadm's default clusterDNS (the 10th address of 10.96.0.0/12)


def services(path: str) -> list[Service]:
    """The ``mysql`` Service in ``db`` (port 3306 -> the MariaDB pod) and ``kube-dns`` in
    kube-system (UDP+TCP 53 -> the dnsmasq pod), ClusterIP or headless per ``path``."""
    headless = path == "headless"
    mysql = Service("db", "mysql", [ServicePort(PORT, "TCP", "mysql")], selector={"app": "mariadb"},
                    cluster_ip=None if headless else ipaddress.IPv4Address("10.96.0.20"), headless=headless)
    kube_dns = Service(cluster_dns.NAMESPACE, "kube-dns", [ServicePort(53, "UDP", "dns"), ServicePort(53, "TCP", "dns-tcp")],
                       selector=dict(cluster_dns.LABELS),
                       cluster_ip=None if headless else ipaddress.IPv4Address(KUBE_DNS_IP), headless=headless)
    return [mysql, kube_dns]


def _ns_selector(name: str) -> LabelSelector:
    return LabelSelector.of({"kubernetes.io/metadata.name": name})


def egress_policies(kind: str) -> list[NetworkPolicy]:
    """The job namespace's egress policies for ``kind`` (``EGRESS``): default-deny egress, then
    allow DNS to kube-dns (UDP+TCP 53) unless ``mysql-only``, and allow MySQL to the server."""
    if kind == "none":
        return []
    every = LabelSelector()
    pols = [NetworkPolicy("batch", "default-deny-egress", every, ("Egress",))]
    if kind == "dns+mysql":
        pols.append(NetworkPolicy("batch", "allow-dns", every, ("Egress",), egress=(PolicyRule(
            peers=(PolicyPeer(pod_selector=LabelSelector.of({"k8s-app": "kube-dns"}),
                              namespace_selector=_ns_selector("kube-system")),),
            ports=(PolicyPort("UDP", 53), PolicyPort("TCP", 53))),)))
    pols.append(NetworkPolicy("batch", "allow-mysql", every, ("Egress",), egress=(PolicyRule(
        peers=(PolicyPeer(pod_selector=LabelSelector.of({"app": "mariadb"}), namespace_selector=_ns_selector("db")),),
        ports=(PolicyPort("TCP", PORT),)),)))
    return pols


@dataclass
class ClientPathConfig(EnforcementConfig):
    """One configuration: the enforcement fields and the scenario's own. ``mechanism``: what the
    configuration sets up for a failing first attempt (the symptom table's mechanism column; the
    DNS evidence the run saw is added to it)."""

    name: str = "none"
    mechanism: str = ""
    egress: str = "none"
    mitigation: str = "none"
    service: str = "clusterip"
    delivery: Any = field(default_factory=lambda: {"node-a": 0.3, "node-b": 0.0})
    job_node: str = "node-b"
    tool: str = "mariadb-dump"
    wait_programmed: bool = False
    abort: str | None = None
    until_success_s: float = 12.0
    poll_s: float = 0.2
    client_timeout_s: float = 40.0
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["delivery"] = self.delivery if isinstance(self.delivery, dict | str | float | int) else str(self.delivery)
        return d


def dns_evidence(rows: list[dict[str, Any]]) -> str:
    """The DNS part of a run's mechanism, from the watched queries: ``answered``, ``answered
    after a retry`` (a query sent again after the resolver's timeout), ``ICMP-rejected`` (an ICMP
    error came back), ``unanswered`` (the resolver gave up), or ``no query``."""
    if not rows:
        return "no query"
    results = {r["result"] for r in rows}
    if any(r.startswith("ICMP") for r in results):
        return "ICMP-rejected"
    if "no answer" in results:
        return "unanswered"
    if any(r["retries"] for r in rows):
        return "answered after a retry"
    return "answered"


def symptom_rows(obs: dict[str, Any], cfg: ClientPathConfig) -> list[dict[str, str]]:
    """The run's first attempt as a symptom row (``harness.analysis.symptoms``)."""
    first = obs["first"]
    conf = f"{NAME}/{cfg.name}"
    if first["ok"]:
        return [symptoms.row("", None, None, "none (the client succeeded)", conf)]
    mech = f"{cfg.mechanism or 'unexpected'} [DNS {obs['dns_evidence']}]"
    return [symptoms.row(first["message"], first["code"], first["errno"], mech, conf)]


class ClientPathScenario:
    """The DNS server, the TLS MariaDB, the policies and the controller for one configuration."""

    def __init__(self, lab: Any, config: ClientPathConfig):
        self.lab = lab
        self.config = config
        if config.egress not in EGRESS:
            raise ConfigError(config.name, "egress", f"{config.egress!r} is not one of {', '.join(EGRESS)}")
        if config.abort not in ABORTS:
            raise ConfigError(config.name, "abort", f"{config.abort!r} is not one of kill-connection, sock-destroy")
        if config.service not in SERVICE_PATHS:
            raise ConfigError(config.name, "service", f"{config.service!r} is not one of {', '.join(SERVICE_PATHS)}")
        if config.tool not in TOOLS:
            raise ConfigError(config.name, "tool", f"{config.tool!r} is not one of {', '.join(TOOLS)}")
        self.mits = parse_mitigations(config.mitigation, field_name="mitigation")
        self.dns: ClusterDNS | None = None
        self.db: MariaDB | None = None
        self.ctl: Controller | None = None
        self.dns_update_s: float | None = None
        self.proxies: dict[str, Any] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> ClientPathScenario:
        lab, cfg = self.lab, self.config
        if SERVER not in lab.cluster.pods:
            lab.add_pod(Pod("db", "mariadb-0", SERVER_NODE, {"app": "mariadb"}))
        ip = str(lab.cluster.pods[SERVER].ip)
        for pol in [allow_backup(), *egress_policies(cfg.egress)]:
            lab.cluster.policies[pol.key] = pol
        stack = self._stack
        try:
            # the DNS pod exists before the controller starts: its first view holds it (allow-dns's peer)
            self.dns = ClusterDNS(lab, {}, node=SERVER_NODE).start()
            stack.callback(self.dns.stop)
            # following changes: the records appear as the Services' would (measured: rename -> served)
            for svc in services(cfg.service):
                lab.cluster.services[svc.key] = svc
            records = service_dns_records(lab.cluster)
            if cfg.service == "headless":
                records[RECORD] = [ipaddress.IPv4Address(ip)]  # the server pod may not be Ready-listed yet
            self.dns_update_s = self.dns.update(records)
            if cfg.service == "clusterip":
                from harness.cluster.kube_proxy import start_on_lab, stop_all

                # kube-proxy runs on every node before the policy controller starts, as on a booted
                # node; kube-router's first sync then puts its FORWARD jump above kube-proxy's
                self.proxies = start_on_lab(lab, backend=cfg.backend, delivery="fixed:0.02", seed=cfg.seed)
                stack.callback(stop_all, self.proxies)
                self.dns.nameserver = KUBE_DNS_IP
            names = [HOST, f"{HOST}.svc", RECORD]
            self.db = MariaDB(lab, SERVER, tls_names=names, database=DATABASE).start()
            stack.callback(self.db.stop)
            ccfg = self.mits.configure(ControllerConfig(delivery=cfg.delivery, seed=cfg.seed)
                                       .with_enforcement(cfg.enforcement()))
            self.ctl = Controller(lab, ccfg).start()
            stack.callback(self.ctl.stop)
        except BaseException:
            stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _first_attempt(self, key: str, seq: int) -> dict[str, Any]:
        cfg, dns, db, ctl = self.config, self.dns, self.db, self.ctl
        assert dns is not None and db is not None and ctl is not None
        if cfg.abort is None:
            return client_run(dns, self.lab, key, HOST, db, tool=cfg.tool, timeout_s=cfg.client_timeout_s).as_dict()
        proc, start = client_start(dns, self.lab, key, HOST, db, tool="mariadb", query="SELECT SLEEP(5)")
        session = self._await_session(proc)
        aborted = time.time_ns()
        if cfg.abort == "kill-connection":
            r = db.admin(f"KILL CONNECTION {session}")
            if r.returncode != 0:
                raise HarnessError(f"KILL CONNECTION {session}: {r.stderr.strip()}")
        else:  # the kernel aborts the server's socket of this client: an RST leaves the server pod
            job_ip = str(self.lab.cluster.pods[key].ip)
            netns.run(self.lab.pod_netns(SERVER), ["ss", "-K", "-t", "dst", job_ip])
        run = client_finish(proc, start, "mariadb", cfg.client_timeout_s).as_dict()
        run["aborted_ns"] = aborted
        return run

    def _await_session(self, proc: Any, timeout: float = 10.0) -> int:
        """The server's thread id of the client's session once it runs its query."""
        assert self.db is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.db.admin("SELECT ID FROM information_schema.PROCESSLIST WHERE USER='nph' "
                              "AND INFO LIKE 'SELECT SLEEP%'")
            ids = [int(x) for x in r.stdout.split()]
            if ids:
                return ids[0]
            if proc.poll() is not None:
                raise HarnessError(f"the client ended before its session was seen: {proc.stderr.read()!r}")
            time.sleep(0.01)
        proc.kill()
        raise HarnessError("the client's session did not appear in the server's process list")

    def run_once(self, index: int) -> dict[str, Any]:
        """One job pod start; the observation (times CLOCK_REALTIME ns, durations ms from ready)."""
        from harness.probe.dnswatch import DnsWatch

        cfg, ctl, lab, dns, db = self.config, self.ctl, self.lab, self.dns, self.db
        assert ctl is not None and dns is not None and db is not None
        key = f"batch/job-{index}"
        added = ctl.add_pod(Pod("batch", f"job-{index}", cfg.job_node, {"app": "backup"}))
        ready = added.ready_ns
        watch = DnsWatch(lab.pod_netns(key)).start()
        try:
            if cfg.wait_programmed or cfg.abort:
                ctl.await_event(added.event.seq, timeout=30, nodes="all")
            first = self._first_attempt(key, added.event.seq)
            first_dns_end = time.time_ns()
            success = first["end_ns"] if first["ok"] else None
            polls = 0
            deadline = time.monotonic() + cfg.until_success_s
            while success is None and time.monotonic() < deadline:
                time.sleep(cfg.poll_s)
                r = client_run(dns, lab, key, HOST, db, tool=cfg.tool, timeout_s=cfg.client_timeout_s)
                polls += 1
                if r.ok:
                    success = r.end_ns
        finally:
            watch.stop()
        packets = watch.packets
        rows_all = pair_queries(packets)
        first_rows = [r.as_dict(ready) for r in rows_all if r.sent_ns and r.sent_ns[0] <= first_dns_end]
        syncs = {}
        for node in sorted({SERVER_NODE, cfg.job_node}):
            s = ctl.timeline.sync_including(node, added.event.seq)
            syncs[node] = None if s is None else (s.in_force_ns - ready) / 1e6
        obs: dict[str, Any] = {
            "run": index, "pod": key, "node": cfg.job_node, "ip": str(added.pod.ip), "ready_ns": ready,
            "first": first, "first_ms": (first["end_ns"] - ready) / 1e6,
            "client_start_ms": (first["start_ns"] - ready) / 1e6,
            "success_ns": success, "client_success_ms": None if success is None else (success - ready) / 1e6,
            "polls": polls, "dns_queries": first_rows, "dns_evidence": dns_evidence(first_rows),
            "dns_resolve_ms": _resolve_ms(first_rows, (first["start_ns"] - ready) / 1e6),
            "programmed_ms": syncs,
        }
        if "aborted_ns" in first:
            obs["aborted_ms"] = (first["aborted_ns"] - ready) / 1e6
        obs["symptom_rows"] = symptom_rows(obs, cfg)
        ctl.remove_pod(key)
        ctl.wait_idle(30)
        return obs


def _resolve_ms(rows: list[dict[str, Any]], start_ms: float) -> float | None:
    """How long the first attempt's name resolution took: client start -> the last answer or
    error its queries got (for unanswered queries: their last send; the resolver gave up later)."""
    ends = [r["answered_ms"] if r["answered_ms"] is not None else max(r["sent_ms"]) for r in rows]
    return None if not ends else max(ends) - start_ms

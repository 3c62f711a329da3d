"""job-to-mysql (the seed issue #1652 of DESIGN.md, k0s #2261): job pods that talk to a protected MariaDB right
after they start.

Setting (on the default topology): ``db/mariadb-0`` on node-a runs a real ``mariadbd`` on
3306, selected by ``allow-backup`` (ingress from ``app=backup`` pods of namespace ``batch`` on
TCP 3306). Each run creates ``batch/job-<i>`` (``app=backup``) on the job node through the
controller (CNI ADD + pod-added event), and at once

- a SYN prober from the job pod to 3306 (``probe_rate``/s, kernel timestamps): the datapath's
  view, what clusterloader2 measures with curl at 1 s resolution;
- the job's real client (PyMySQL: connect + ``SELECT 1``), after the configuration's
  mitigations (sleep, retry, cni-wait, ...): what the customer's CronJob sees.

After the client is done, a success poller runs (every 20 ms) so every run also has its time
until success. Then the pod is deleted and the controller drained before the next run.

``pod_backend="docker"``: the job pod is a real Docker container (``harness.lab.docker_pods``)
whose command IS the client: the ``mariadb`` CLI (one ``SELECT 1``), started right after the
CNI ADD as kubelet starts a pod's containers. Its exit code and stderr line are the first
attempt; its sandbox / network-ready / application-started timestamps go into the observation
(``container``, ``app_start_ms``). The SYN prober and the success poller run in the container's
network namespace exactly as for a netns pod. Of the mitigations only those acting before the
container starts or in the controller apply (cni-wait, default-deny); sleep, retry and
init-wait wrap the Python client and are refused for this backend.

    with JobScenario(lab, JobConfig("none", delivery={"node-a": 0.3})) as sc:
        obs = [sc.run_once(i) for i in range(3)]
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.cluster.mariadb import PORT, MariaDB
from harness.controller import Controller, ControllerConfig
from harness.controller.mitigations import Mitigation, PodContext, parse_mitigations
from harness.engines.config import EnforcementConfig
from harness.errors import ConfigError
from harness.model.cluster import Pod
from harness.model.policy import LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule
from harness.outcome import Outcome, errno_name
from harness.scenarios.mysql import MysqlAttempt, mysql_attempt
from harness.scenarios.running import controller_and_prober

log = logging.getLogger(__name__)

SERVER = "db/mariadb-0"
SERVER_NODE = "node-a"
POD_BACKENDS = ("netns", "docker")
# Mitigations that wrap the harness's Python client: a container's command is the client itself.
CLIENT_MITIGATIONS = ("sleep", "retry", "init-wait")


def allow_backup(port: int = PORT) -> NetworkPolicy:
    """db/allow-backup: pods app=mariadb accept TCP ``port`` from app=backup pods of ns batch."""
    return NetworkPolicy(
        "db", "allow-backup", LabelSelector.of({"app": "mariadb"}), ("Ingress",),
        ingress=(PolicyRule(peers=(PolicyPeer(
            pod_selector=LabelSelector.of({"app": "backup"}),
            namespace_selector=LabelSelector.of({"kubernetes.io/metadata.name": "batch"})),),
            ports=(PolicyPort("TCP", port),)),))


@dataclass
class JobConfig(EnforcementConfig):
    """One configuration of the scenario: the enforcement fields (``EnforcementConfig``: engine,
    profile, strategy, iptables backend, reject_with = None (a plain REJECT: ICMP
    port-unreachable) or ``tcp-reset``, ...) and the scenario's own. ``delivery``: the
    controller's per-node delivery delay (node-a learning late is what makes the cross-node
    race); ``mitigation``: a ``parse_mitigations`` spec; ``pod_backend``: ``netns`` (the job is a
    PyMySQL client in a netns pod) or ``docker`` (the job pod is a container running the
    ``mariadb`` CLI). ``topology`` / ``synthetic_policies``:
    the cluster the lab is built from (``harness.scenarios.clusters.scenario_cluster``; the job
    scenario itself works on any topology whose node-a and node-b are real). ``probe_s`` and
    ``until_success_s`` must outlast node-a's delivery delay plus its sync (seconds at scale)."""

    name: str
    mitigation: str = "none"
    delivery: Any = field(default_factory=lambda: {"node-a": 0.3, "node-b": 0.0})
    job_node: str = "node-b"
    probe_rate: float = 200.0
    probe_s: float = 1.5
    client_timeout_s: float = 1.0
    until_success_s: float = 5.0
    seed: int = 0
    pod_backend: str = "netns"
    topology: str = "default"
    synthetic_policies: int = 0

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["delivery"] = self.delivery if isinstance(self.delivery, dict | str | float | int) else str(self.delivery)
        return d


def _attempt_json(a: Any) -> dict[str, Any]:
    return {"ok": a.ok, "start_ns": a.start_ns, "end_ns": a.end_ns, "code": getattr(a, "code", None),
            "errno": a.errno, "message": getattr(a, "message", ""), "outcome": a.outcome}


def cli_error_line(output: str) -> str:
    """The line a person reads in a failed ``mariadb`` run's log: its ``ERROR ...`` line, else
    the first non-empty one."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return next((ln for ln in lines if ln.startswith("ERROR")), lines[0] if lines else "")


def container_attempt(res: Any) -> MysqlAttempt:
    """A job container's run (``JobResult``) as the job's first client attempt: ok = exit code
    0; ``code`` and ``errno`` are the numbers the CLI prints in its line (``ERROR 2002 (HY000):
    Can't connect to server on '10.244.0.4' (115)`` -> 2002, EINPROGRESS; ``ERROR 2013 (HY000):
    Lost connection ... system error: 104`` -> 2013, ECONNRESET), verbatim: the outcome comes
    from those numbers (``MysqlAttempt.outcome``), never from the words around them.
    Start = the application started, end = the engine's FinishedAt."""
    end = res.finished_ns or time.time_ns()
    if res.exit_code == 0:
        return MysqlAttempt(True, res.app_started_ns, end)
    line = cli_error_line(res.output)
    if res.exit_code is None:
        return MysqlAttempt(False, res.app_started_ns, end, None, "ETIMEDOUT",
                            f"still running at the harness's timeout: {line}".strip())
    m = re.match(r"ERROR (\d+)", line)
    n = re.search(r"(?:\((\d+)\)|system error: (\d+))\s*$", line)
    name = errno_name(int(n.group(1) or n.group(2))) if n else None
    return MysqlAttempt(False, res.app_started_ns, end, int(m.group(1)) if m else None, name,
                        line or f"exit code {res.exit_code}")


def _job_docker_lab(lab: Any, pods: Any, hold: bool) -> Any:
    """The lab as the controller sees it when job pods are containers: ``batch/job-*`` pods
    become container pods (``DockerLab``), their command started right after network ready
    (kubelet's order) or, with ``hold``, left waiting for ``JobScenario.run_once`` to release
    it once the cni-wait mitigation reported the network ready."""
    from harness.lab.docker_pods import DockerLab

    class JobDockerLab(DockerLab):
        def add_pod(self, pod: Any) -> int:
            if not self.select(pod):
                return self._lab.add_pod(pod)
            return self.pods.add(pod, self._commands.pop(pod.key, None), start=not hold,
                                 env=self._envs.pop(pod.key, None)).network_ready_ns

    dlab = JobDockerLab(lab, pods, select=lambda p: p.namespace == "batch" and p.name.startswith("job-"))
    dlab.hold = hold
    return dlab


class JobScenario:
    """The MariaDB server, the controller and a prober for one configuration (context manager).
    ``engine``: the docker engine for ``pod_backend="docker"`` (default: ``Engine.obtain()``, a
    running engine or a private one started for this scenario)."""

    def __init__(self, lab: Any, config: JobConfig, engine: Any = None):
        self.lab = lab
        self.config = config
        self.mits = parse_mitigations(config.mitigation, field_name="mitigation")
        if config.pod_backend not in POD_BACKENDS:
            raise ConfigError(config.name, "pod_backend",
                              f"{config.pod_backend!r} is not one of {', '.join(POD_BACKENDS)}")
        self.docker_backend = config.pod_backend == "docker"
        if self.docker_backend:
            bad = [str(m) for m in self.mits if m.name in CLIENT_MITIGATIONS]
            if bad:
                raise ConfigError(config.name, "mitigation", f"{'+'.join(bad)} wraps the harness's Python "
                                  "client; with pod_backend docker the container's command is the client")
        self.engine = engine
        self.db: MariaDB | None = None
        self.ctl: Controller | None = None
        self.prober: Any = None
        self.docker: Any = None
        self.dlab: Any = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> JobScenario:
        cfg = self.config
        lab = self.lab
        if SERVER not in lab.cluster.pods:
            lab.add_pod(Pod("db", "mariadb-0", SERVER_NODE, {"app": "mariadb"}))
        pol = allow_backup()
        lab.cluster.policies[pol.key] = pol
        stack = self._stack = contextlib.ExitStack()
        try:
            self.db = MariaDB(lab, SERVER).start()
            stack.callback(self.db.stop)
            ctl_lab = lab
            if self.docker_backend:
                from harness.lab.docker_pods import DockerPods

                self.docker = DockerPods(lab, self.engine)
                stack.callback(self.docker.close)
                # a mitigation that delays the network-ready report holds the container's start
                hold = any(type(m).network_ready is not Mitigation.network_ready for m in self.mits)
                self.dlab = _job_docker_lab(lab, self.docker, hold)
                ctl_lab = self.dlab
            ccfg = self.mits.configure(ControllerConfig(delivery=cfg.delivery, seed=cfg.seed)
                                       .with_enforcement(cfg.enforcement()))
            self.ctl, self.prober = stack.enter_context(controller_and_prober(ctl_lab, ccfg, 0.5))
        except BaseException:
            stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        # prober, controller, containers, then the server: the reverse of __enter__
        self._stack.close()

    def run_once(self, index: int) -> dict[str, Any]:
        """One job pod start; returns the observation (every time CLOCK_REALTIME ns)."""
        from harness.probe.packet import FlowSpec

        cfg, ctl, lab, db = self.config, self.ctl, self.lab, self.db
        assert ctl is not None and db is not None
        key = f"batch/job-{index}"
        argv: list[str] = []
        if self.dlab is not None:
            from harness.lab.docker_pods import mariadb_job_argv

            argv = mariadb_job_argv(db.ip, PORT, timeout_s=max(1, math.ceil(cfg.client_timeout_s)), user=db.user)
            self.dlab.set_command(key, argv, env=db.client_env())
        added = ctl.add_pod(Pod("batch", f"job-{index}", cfg.job_node, {"app": "backup"}))
        ready = added.ready_ns
        ns = lab.pod_netns(key)
        src = str(added.pod.ip)
        # No settle time: the lab's network-ready moment means forwarding (Lab.add_pod waits
        # for the host veth), so the job starts at once, as a container right after CNI ADD.
        flow = self.prober.add_flow(FlowSpec(ns, src, db.ip, PORT, "TCP", rate=cfg.probe_rate,
                                             count=int(cfg.probe_rate * cfg.probe_s), flow_id=key))
        ctx = PodContext(ctl, key, ready, added.event.seq)
        for m in self.mits:
            m.network_ready(ctx)
        released = time.time_ns()

        def attempt():
            return mysql_attempt(ns, db.ip, user=db.user, password=db.password, timeout_s=cfg.client_timeout_s)

        container = None
        if self.docker is not None:
            # the container's command is the client: its one run is the job's first attempt
            if self.dlab is not None and self.dlab.hold:
                self.docker.start(key)
            res = self.docker.result(key, timeout=cfg.client_timeout_s + 30)
            client_start = res.app_started_ns
            attempts: list[Any] | None = [container_attempt(res)]
            container = {"sandbox_ns": res.sandbox_ns, "network_ready_ns": res.network_ready_ns,
                         "go_ns": res.go_ns, "app_started_ns": res.app_started_ns, "finished_ns": res.finished_ns,
                         "exit_code": res.exit_code, "output": res.output[-2000:], "argv": argv}
        else:
            for m in self.mits:
                m.before_client(ctx, attempt)
            client_start = time.time_ns()
            attempts = None
            for m in self.mits:
                attempts = m.run_client(attempt)
                if attempts is not None:
                    break
            if attempts is None:
                attempts = [attempt()]
        client_ok = next((a.end_ns for a in attempts if a.ok), None)
        # time until success for every run, whatever the client did (PyMySQL from the pod's
        # namespace: a container's namespace outlives its command until CNI DEL)
        polls = 0
        success = client_ok
        deadline = time.monotonic() + cfg.until_success_s
        while success is None and time.monotonic() < deadline:
            time.sleep(0.02)
            r = attempt()
            polls += 1
            if r.ok:
                # its completion: the attempt's start is no bound on when its SYN left (a busy
                # interpreter can hold this thread for ms while the controller forks its tools)
                success = r.end_ns
        # the probes have said what they can once they have been connected for a while
        while not flow.done.is_set():
            ok = [r.send_ns for r in flow.records if r.outcome is Outcome.CONNECTED]
            if len(ok) >= 20 and max(ok) - min(ok) >= 100_000_000:
                flow.stop()
                break
            time.sleep(0.02)
        self.prober.wait([flow], timeout=cfg.probe_s + 5)
        server_engine = ctl.nodes[SERVER_NODE].engine
        programmed = None
        if sync_records(server_engine):
            try:
                programmed = ctl.await_event(added.event.seq, timeout=30, nodes=SERVER_NODE)
            except Exception:  # noqa: BLE001 - recorded, the run still reports what it saw
                programmed = None
        series = flow.series()
        first_conn = next((r.send_ns for r in series if r.outcome is Outcome.CONNECTED), None)
        sync_a = ctl.timeline.sync_including(SERVER_NODE, added.event.seq)
        ev = ctl.timeline.event(added.event.seq)
        delivered_a = ev.delivered_ns.get(SERVER_NODE)
        if not sync_records(server_engine):
            # a real controller (binary engine): its event delivery is the watch path; node-a's
            # binary printed the pod with its IP when its watch brought it (the engine stamps
            # each line as it reads it; examples/api_controller.py: "watch pods MODIFIED ns/name ip=...")
            delivered_a = server_engine.first_log_ns(f"{key} ip={src}", after_ns=ready - 10**9)
        obs = {
            "run": index, "pod": key, "node": cfg.job_node, "ip": src, "pod_backend": cfg.pod_backend,
            "ready_ns": ready, "released_ns": released, "client_start_ns": client_start,
            "event": {"seq": ev.seq, "emitted_ns": ev.emitted_ns, "delivered_ns": dict(ev.delivered_ns)},
            "server_sync": None if sync_a is None else {
                "node": sync_a.node, "start_ns": sync_a.start_ns, "in_force_ns": sync_a.in_force_ns,
                "reasons": sync_a.reasons, "end_ns": sync_a.end_ns,
                "phases": [[p.name, p.start_ns, p.end_ns] for p in sync_a.phases]},
            "programmed_ns": programmed,
            "attempts": [_attempt_json(a) for a in attempts],
            "first": _attempt_json(attempts[0]),
            "client_ok_ns": client_ok,
            "success_ns": success, "success_polls": polls,
            "probe": {"rate": cfg.probe_rate, "counts": flow.counts(),
                      "first_connected_ns": first_conn,
                      "series": [[r.send_ns, r.outcome.value] for r in series]},
            "notes": {k: v for k, v in ctx.notes.items() if isinstance(v, int | float | str | bool)},
        }
        if container is not None:
            obs["container"] = container
        obs["reachability_latency_ms"] = None if first_conn is None else (first_conn - ready) / 1e6
        obs["client_success_ms"] = None if success is None else (success - ready) / 1e6
        # when the job's client began after network ready (a container: its command's exec)
        obs["app_start_ms"] = (client_start - ready) / 1e6
        obs["first_failed"] = not attempts[0].ok
        # the latency's parts on node-a: event delivery, waiting for a running sync, the sync
        # itself up to its rules in force (latency ~= delivery + wait + sync)
        obs["server_delivery_ms"] = None if delivered_a is None else (delivered_a - ready) / 1e6
        obs["server_sync_ms"] = None if sync_a is None else (sync_a.in_force_ns - sync_a.start_ns) / 1e6
        obs["server_sync_wait_ms"] = None if sync_a is None or delivered_a is None else \
            (sync_a.start_ns - delivered_a) / 1e6
        ctl.remove_pod(key)
        ctl.wait_idle(30)
        return obs


def sync_records(node_engine: Any) -> bool:
    """Whether a node engine reports its syncs (False for the binary engine: a real controller
    tells the harness nothing; probes and its log are what there is)."""
    return getattr(node_engine, "sync_records", True)


def cli_denied(scenario: JobScenario, name: str = "intruder") -> str:
    """The ``mariadb`` CLI's own error line from a pod the policy denies (app=other in batch),
    once node-a has programmed it: what a CronJob's log shows for this configuration's reject."""
    from harness.scenarios.mysql import cli_attempt

    ctl, db = scenario.ctl, scenario.db
    assert ctl is not None and db is not None
    added = ctl.add_pod(Pod("batch", name, scenario.config.job_node, {"app": "other"}))
    try:
        if all(sync_records(nc.engine) for nc in ctl.nodes.values()):
            ctl.await_event(added.event.seq, timeout=30, nodes="all")
        else:
            # no sync records (a real binary): the pod is denied before and after node-a hears
            # of it (the policy isolates the server); give the watch path a moment
            time.sleep(1.0)
        code, line = cli_attempt(scenario.lab.pod_netns(added.pod.key), db.ip, user=db.user, password=db.password)
        return line or f"exit code {code}"
    finally:
        ctl.remove_pod(added.pod.key)
        ctl.wait_idle(30)

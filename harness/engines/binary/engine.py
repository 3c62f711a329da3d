"""The ``binary`` engine: a real controller binary per node, watching the lab through its
served Kubernetes API (``harness.cluster.apiserver``).

    netpol-harness conformance cases/conformance --engine binary \\
        --binary-cmd "python3 examples/api_controller.py --master {master} --node {node}"

Per real node the command template (``template``: ``{master}``, ``{node}``, ``{node_ip}``,
``{pod_cidr}``, ``{metrics_port}``, ``{kubeconfig}``) runs inside the node's namespace — so every iptables,
ipset or nft call it makes, and every netlink socket it opens, programs that node — in its own
session, with a minimal environment (``PATH``, ``PYTHONPATH`` = this repository, ``LANG``,
``HOME=/root``, ``XTABLES_LOCKFILE`` = a lock of its own per node, ``NPH_*``). Its stdout and stderr go, each line prefixed with the CLOCK_REALTIME
ns the harness read it at, to ``<run dir>/binary-<node>.log`` (``BinaryNode.log_path``;
``log_lines()`` reads it back). Its pid goes into the run record (owner ``binary``, marked by
an ``NPH_BINARY_MARKER=nph-<run>-binary-<node>`` environment entry, since its command line is
the user's), so ``down`` and ``gc`` stop it after a crash. ``stop()`` sends SIGTERM to its
process group and SIGKILL after ``grace_s``.

The engine needs the lab: the controller loop and the conformance runner hand it over with
``bind_lab(lab)``. The first node that starts opens the lab's API server (``LabApi.start``), the
last one that stops closes it. The API follows the lab at once for pods (the lab's hooks:
Pending when the pod enters the model, Running with podIP once wired); every other change
(relabels, policies) is published when an event is delivered (``deliver``) or a node is
programmed (``program``): ``publisher.sync()`` writes only what changed.

It is asynchronous and sends **no sync records**: lag is what the probes see (first success,
CL2-style, at their resolution). Where a caller must know that a change is in force before it
looks (the conformance runner's ``program``; ``wait_initial``), the node's kernel state is
watched until it settles (``settle``). With ``metrics_port`` the binary's Prometheus metrics
are scraped with prometheus_client's parser (``metrics()``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from harness.controller.timeline import Timeline
from harness.engines.base import BeforeApply, NotProgrammed, Programmed
from harness.engines.binary import scrape, settle
from harness.engines.binary.template import (
    FLAG,
    PORT_FLAG,
    check_program,
    kubeconfig_text,
    parse_template,
    placeholders,
    render,
)
from harness.engines.config import EnforcementConfig, check_common
from harness.errors import ConfigError, HarnessError
from harness.kernel import netns
from harness.model.cluster import Cluster

log = logging.getLogger(__name__)

OWNER = "binary"  # the run record's owner name of every binary process
MARKER_VAR = "NPH_BINARY_MARKER"
GRACE_S = 5.0  # SIGTERM -> SIGKILL
INITIAL_TIMEOUT_S = 60.0
LOG_TAIL = 5  # lines of the binary's log quoted in an error
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def child_path(parent: dict[str, str] | None = None) -> str:
    """The binary's ``PATH``: the harness's interpreter directory first (``python3`` is one that
    can import ``harness``), then the caller's."""
    parent = os.environ if parent is None else parent
    return os.pathsep.join(dict.fromkeys([os.path.dirname(sys.executable), parent.get("PATH") or DEFAULT_PATH]))


def marker(run_id: str, node: str) -> str:
    """The environment entry that marks node ``node``'s binary of run ``run_id`` in the record."""
    return f"{MARKER_VAR}=nph-{run_id}-binary-{node}"


class BinaryNode:
    """One node's binary (see the module docstring)."""

    reports_syncs = True  # asynchronous: the loop hands it every event and runs no sync of its own
    sync_records = False  # ... and it never writes one: lag is the probes' (callers check this)
    strategy = "binary"

    def __init__(self, engine: BinaryEngine, node: str, netns_name: str, config: EnforcementConfig,
                 timeline: Timeline):
        self.engine, self.node, self.netns, self.config, self.timeline = engine, node, netns_name, config, timeline
        self.errors: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.argv: list[str] = []
        self.log_path: str | None = None
        self._log: Any = None
        self._log_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._marker: str | None = None
        self._api: Any = None
        self.started_ns: int | None = None
        self._baseline: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, view: Cluster) -> None:
        """Open (or share) the lab's API, start the binary in the node's namespace."""
        lab = self.engine.lab
        node = view.nodes.get(self.node) or lab.cluster.nodes[self.node]
        self._api = self.engine.acquire_api()
        try:
            self._start_process(lab, node)
        except BaseException:
            self.engine.release_api()
            self._api = None
            raise

    def _start_process(self, lab: Any, node: Any) -> None:
        cfg = self.config
        assert cfg.binary_cmd is not None
        st = getattr(lab, "state", None)
        run_dir = st.dir if st is not None else None
        kubeconfig = self.engine.kubeconfig(run_dir) if "kubeconfig" in placeholders(cfg.binary_cmd) else ""
        self.argv = render(cfg.binary_cmd, master=self._api.url, node=self.node, node_ip=str(node.node_ip),
                           pod_cidr=str(node.pod_cidr), metrics_port=cfg.metrics_port, kubeconfig=kubeconfig)
        path = child_path()
        self.argv[0] = check_program(tuple(self.argv), path)
        self._marker = marker(lab.run_id, self.node)
        env = {"PATH": path, "PYTHONPATH": _REPO_ROOT, "LANG": "C.UTF-8", "HOME": "/root",
               "NPH_NODE": self.node, "NPH_NETNS": self.netns, "NPH_ENGINE": cfg.engine,
               "NPH_BACKEND": cfg.backend, "NPH_PROFILE": cfg.profile, "NPH_STRATEGY": cfg.strategy,
               MARKER_VAR: self._marker.split("=", 1)[1],
               # one xtables lock per node, as on a real node (harness.kernel.backends.node_env)
               "XTABLES_LOCKFILE": netns.path(self.netns)}
        if run_dir is not None:
            self.log_path = os.path.join(run_dir, f"binary-{self.node}.log")
            self._log = open(self.log_path, "a", buffering=1)  # noqa: SIM115 - closed in stop()
        self._baseline = settle.fingerprint(self.netns)
        self.started_ns = time.time_ns()
        try:
            self.proc = netns.popen(self.netns, self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, close_fds=True, start_new_session=True)
        except OSError as e:
            raise ConfigError(None, FLAG, f"cannot start {self.argv[0]!r} on {self.node}: {e}") from None
        if st is not None:
            from harness.lab.state import process_start_time

            st.own_process(OWNER, self.proc.pid, process_start_time(self.proc.pid), marker=self._marker,
                           marker_in="environ")
        self._write_log(f"# {self.node}: started pid {self.proc.pid}: {' '.join(self.argv)}")
        self._reader = threading.Thread(target=self._read_output, name=f"binary-{self.node}-out", daemon=True)
        self._reader.start()
        log.info("binary engine %s: pid %d %s", self.node, self.proc.pid, " ".join(self.argv))

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the binary's process group, SIGKILL after the grace period; forget it in the run
        record; release the API. Idempotent."""
        proc = self.proc
        if proc is not None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=self.engine.grace_s)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                self.errors.append(f"binary on {self.node} ignored SIGTERM for {self.engine.grace_s:g} s: killed")
                proc.wait(timeout=5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # what it forked and left behind
            code = proc.returncode
            if code is not None and code > 0:
                self.errors.append(f"binary {self.argv[0]} on {self.node} exited {code}")
            self._write_log(f"# {self.node}: exited {code}")
            st = getattr(self.engine.lab, "state", None)
            if st is not None:
                st.disown(OWNER, pid=proc.pid)
            self.proc = None
        if self._reader is not None:
            self._reader.join(timeout)
            self._reader = None
        with self._log_lock:
            if self._log is not None:
                self._log.close()
                self._log = None
        if self._api is not None:
            self._api = None
            self.engine.release_api()

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # its own session: the group is the binary and its children

    def alive(self) -> bool:
        """True while the binary runs."""
        return self.proc is not None and self.proc.poll() is None

    # -- its output -----------------------------------------------------------------------------
    def _write_log(self, line: str) -> None:
        with self._log_lock:
            if self._log is not None:
                self._log.write(f"{time.time_ns()} {line}\n")

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self._write_log(raw.decode("utf-8", errors="replace").rstrip("\n")[:65536])

    def log_lines(self) -> list[tuple[int, str]]:
        """``(time ns, line)`` of everything the binary printed so far: its own ``@<ns>`` stamp if
        it wrote one, else when the harness read the line."""
        if self.log_path is None or not os.path.exists(self.log_path):
            return []
        out = []
        with open(self.log_path, errors="replace") as f:
            for ln in f:
                t, _, text = ln.rstrip("\n").partition(" ")
                if t.isdigit() and not text.startswith("# "):
                    # a binary may stamp its own lines "@<CLOCK_REALTIME ns> ..." (same host clock):
                    # that moment is exact, the receive time only an upper bound
                    own, _, rest = text.partition(" ")
                    if own.startswith("@") and own[1:].isdigit():
                        out.append((int(own[1:]), rest))
                    else:
                        out.append((int(t), text))
        return out

    def first_log_ns(self, *needles: str, after_ns: int = 0) -> int | None:
        """When the binary first printed a line holding every one of ``needles`` after ``after_ns``."""
        return next((t for t, text in self.log_lines() if t >= after_ns and all(n in text for n in needles)), None)

    def _tail(self) -> str:
        lines = [text for _, text in self.log_lines()][-LOG_TAIL:]
        return " | ".join(lines)[-500:] if lines else "(no output)"

    # -- events ---------------------------------------------------------------------------------
    def wants_sync(self, event: Any, before: Cluster) -> bool:
        return False  # the binary decides itself; it hears of changes through the API

    def deliver(self, event: Any) -> None:
        """The change is in the lab's model already (the controller applied it at emission):
        publish it, so the binary's watches carry it."""
        self.engine.publish()

    def request_sync(self, reason: str) -> None:
        self.engine.publish()  # a real controller resyncs on its own timer; nothing to ask it

    def sync_version(self, start_ns: int) -> int:
        return start_ns

    def wait_quiet(self, quiet_s: float = 1.0, timeout: float = 30.0) -> bool:
        """Wait until the node's kernel state stopped changing: a change that starts within
        ``quiet_s`` (the binary's sync of what was just published) is waited for until it held
        ``stable_s``. True if something changed. What ``Controller.wait_idle`` waits for, since
        the binary's own work is invisible to the loop."""
        if not self.alive():
            return False
        done = settle.wait_settled(self.netns, settle.fingerprint(self.netns), stable_s=self.engine.stable_s,
                                   quiet_s=quiet_s, timeout=timeout, alive=self.alive)
        return done.changed

    def wait_initial(self, timeout: float = INITIAL_TIMEOUT_S) -> None:
        """Wait until the binary has programmed the node once (its netfilter state changed after
        its start and settled); NotProgrammed when it exits first or nothing changes in
        ``timeout``. Returns None: the binary reports no sync record."""
        done = settle.wait_settled(self.netns, self._baseline or "", quiet_s=timeout, timeout=timeout,
                                   stable_s=self.engine.stable_s, alive=self.alive)
        if not self.alive():
            raise NotProgrammed(f"binary {self.argv[0]} on {self.node} exited "
                                f"({self.proc.returncode if self.proc else '?'}) before programming the node: "
                                f"{self._tail()}")
        if not done.changed:
            raise NotProgrammed(f"binary {self.argv[0]} on {self.node}: the node's rules did not change within "
                                f"{timeout:g} s of its start: {self._tail()}")
        self._baseline = done.digest
        return None

    def program(self, view: Cluster, *, sync_version: int, full: bool = False,
                before_apply: BeforeApply | None = None) -> Programmed:
        """Publish the lab's model (``view`` is the lab's cluster for the conformance runner) and
        wait until the node's kernel state settled; NotProgrammed when the binary died. The
        record's times are the publication and the last change seen (no phases: a binary does
        not say what it did)."""
        baseline, published_ns = self.engine.publish_for(self)
        done = settle.wait_settled(self.netns, baseline, stable_s=self.engine.stable_s, quiet_s=self.engine.quiet_s,
                                   alive=self.alive)
        if not self.alive():
            raise NotProgrammed(f"binary {self.argv[0]} on {self.node} exited: {self._tail()}")
        self._baseline = done.digest
        end = done.at_ns if done.changed else published_ns
        return Programmed(sync_version, self.strategy, 0,
                          {"start_ns": published_ns, "end_ns": end, "total": max(end - published_ns, 0),
                           "changed": int(done.changed)})

    # -- metrics --------------------------------------------------------------------------------
    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        """The binary's Prometheus metrics now (``scrape.parse``); HarnessError without a
        ``metrics_port`` or when the scrape fails."""
        port = self.config.metrics_port
        if port is None:
            raise HarnessError(f"{PORT_FLAG}: the binary engine was given no metrics port")
        node = self.engine.lab.cluster.nodes[self.node]
        try:
            return scrape.scrape(self.netns, str(node.node_ip), port)
        except (OSError, ValueError) as e:
            raise HarnessError(f"binary on {self.node}: metrics at {node.node_ip}:{port}: {e}") from None


class BinaryEngine:
    """The binary engine (``name = "binary"``): ``config.binary_cmd`` runs on every real node
    against the lab's API, which the engine serves while any of its nodes runs."""

    name = "binary"
    sync_records = False  # its nodes never write a sync record (see BinaryNode)

    def __init__(self, *, grace_s: float = GRACE_S, stable_s: float = settle.STABLE_S,
                 quiet_s: float = settle.QUIET_S):
        self.grace_s, self.stable_s, self.quiet_s = grace_s, stable_s, quiet_s
        self.lab: Any = None
        self.api: Any = None
        self._users = 0
        self._lock = threading.RLock()
        self._nodes: list[BinaryNode] = []
        self._published: tuple[int, dict[str, str]] | None = None  # (time, baseline per node)

    def validate(self, config: EnforcementConfig, source: str | None = None) -> None:
        check_common(config, source)
        argv = parse_template(config.binary_cmd, source)
        if argv is None:
            raise ConfigError(source, FLAG, "the binary engine needs a command template (--binary-cmd)")
        port = config.metrics_port
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise ConfigError(source, PORT_FLAG, f"{port!r} is not a port (1..65535)")
        if "metrics_port" in placeholders(argv, source) and port is None:
            raise ConfigError(source, PORT_FLAG, "the command uses {metrics_port}: give --metrics-port")
        check_program(argv, child_path(), source)

    def require_tools(self, config: EnforcementConfig) -> None:
        return None  # the binary brings its own; a failed start is reported with its log

    def bind_lab(self, lab: Any) -> None:
        """The lab the binaries run against (the controller loop and the conformance runner call
        it before making nodes)."""
        with self._lock:
            if self.lab is not None and self.lab is not lab and self._users:
                raise HarnessError("the binary engine is serving another lab")
            self.lab = lab

    def node(self, node: str, netns_name: str, config: EnforcementConfig, timeline: Timeline) -> BinaryNode:
        if self.lab is None:
            raise HarnessError("the binary engine needs its lab: call bind_lab(lab) first (Controller and the "
                               "conformance runner do)")
        ne = BinaryNode(self, node, netns_name, config, timeline)
        self._nodes.append(ne)
        return ne

    # -- the served API -------------------------------------------------------------------------
    def acquire_api(self) -> Any:
        """The lab's API server, opened by the first node that starts."""
        with self._lock:
            if self.api is None:
                from harness.cluster.apiserver import LabApi

                self.api = LabApi.start(self.lab)
            self._users += 1
            return self.api

    def release_api(self) -> None:
        """Closed when the last node stopped."""
        with self._lock:
            self._users -= 1
            if self._users <= 0 and self.api is not None:
                self.api.stop()
                self.api = None
                self._users = 0
                self._published = None

    def kubeconfig(self, run_dir: str | None) -> str:
        """The path of a kubeconfig naming the served API (``{kubeconfig}``), written once per run
        into the run directory (removed with it)."""
        if run_dir is None:
            raise HarnessError(f"{FLAG}: {{kubeconfig}} needs a lab with a run directory")
        path = os.path.join(run_dir, "binary-kubeconfig.yaml")
        with self._lock:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(kubeconfig_text(self.api.url))
        return path

    def publish(self) -> int:
        """Make the API equal to the lab's model now; the number of writes."""
        with self._lock:
            return self.api.publisher.sync() if self.api is not None else 0

    def publish_for(self, node: BinaryNode) -> tuple[str, int]:
        """Publish for a ``program`` of ``node``: when the publication writes something, every
        running node's fingerprint is taken just before it (the baseline its settle compares
        with); a node programmed after another one for the same change (the runner programs
        nodes one after the other) gets the baseline of that publication. (baseline, time)."""
        with self._lock:
            if self.api is None:
                raise NotProgrammed(f"binary engine on {node.node}: not started")
            running = [n for n in self._nodes if n.alive()]
            before = {n.node: settle.fingerprint(n.netns) for n in running}
            writes = self.api.publisher.sync()
            if writes or self._published is None:
                self._published = (time.time_ns(), before)
            at, baselines = self._published
            return baselines.get(node.node, before.get(node.node, "")), at

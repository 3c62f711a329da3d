"""Container-backed pods: real Docker containers wired into the lab like a CNI plugin.

The kubelet order, reproduced with real processes:

1. **sandbox**: the container is created with ``--network none`` and started; its entrypoint
   (``/bin/sh``) blocks on a fifo in a bind-mounted control directory, so the application has
   not started yet. ``sandbox_ns`` is taken once the container runs (its PID is known).
2. **CNI ADD**: the container's network namespace (``/proc/<pid>/ns/net``) is bind-mounted at
   ``/run/netns/nph-<run>-d-<hash>`` and wired by the lab's own full-pod code: veth with the
   host end on the node's kube-bridge, ``eth0`` with the pod IP, the gateway's permanent ARP
   entry, default route via the gateway, ``lo`` up; the pod enters the lab's model (so probes,
   ``exec``, echo servers, ``matrix`` and the controller's API cluster see it like any full
   pod). ``network_ready_ns`` is taken right after the last netlink ack.
3. **application start**: one write to the fifo releases the entrypoint, which ``exec``s the
   pod's command. ``app_started_ns`` is the moment the harness saw the exec happen (the
   process's command line changed; polled every 0.1 ms, so it is an upper bound with that
   resolution); ``go_ns`` is taken right before the signal is written.

Removal mirrors CNI DEL: the application is killed, the veth deleted (the pod is cut off at
the returned time), the namespace name unmounted, then the container (the sandbox) removed.

Two ways in:

- ``DockerPods(lab)``: ``add(pod, argv)``, ``start``, ``wait``/``result``, ``remove``;
  ``run_job_container(lab, pod, argv)`` does a whole job run and returns a ``JobResult``.
- ``DockerLab(lab, pods)``: a stand-in for the Lab whose ``add_pod``/``remove_pod`` make
  container pods, so ``Controller(DockerLab(...), cfg).add_pod(pod)`` emits its events for a
  container pod exactly as for a netns pod (the command comes from ``set_command``).

The sandbox is wired by ``Lab.adopt_pod``: exactly the lab's own full-pod wiring (veth,
address, routes, listeners, run journal), so a container pod is a full pod in every respect.
"""

from __future__ import annotations

import calendar
import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError, KernelError
from harness.kernel import netns
from harness.lab import state
from harness.lab.docker_engine import LABEL, RUN_LABEL, Engine, gc_engines

log = logging.getLogger(__name__)

MS_BIND = 4096
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)

CTL_MOUNT = "/nph"
# The sandbox's entrypoint: wait for the go signal, then become the pod's command.
ENTRYPOINT = ["/bin/sh", "-c", f'read _ < {CTL_MOUNT}/go; exec "$@"', "nph-entry"]
DEFAULT_COMMAND = ["sleep", "infinity"]
EXEC_POLL_S = 0.0001
KIND = "container"

def _hash(text: str, n: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _iso_ns(stamp: str) -> int | None:
    """Docker's RFC 3339 time with nanoseconds (``2026-11-26T01:45:16.193891208Z``) -> ns."""
    if not stamp or stamp.startswith("0001-"):
        return None
    main, _, frac = stamp.rstrip("Z").partition(".")
    secs = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000_000 + int((frac + "000000000")[:9])


@dataclass
class ContainerPod:
    """One container-backed pod and its timestamps (CLOCK_REALTIME ns; 0 = not yet)."""

    key: str
    container_id: str
    name: str
    netns: str
    pid: int
    ctl_dir: str
    argv: list[str]
    sandbox_ns: int = 0
    network_ready_ns: int = 0
    go_ns: int = 0
    app_started_ns: int = 0
    mounted: bool = False  # its namespace has the lab name ``netns``
    wired: bool = False


@dataclass
class JobResult:
    """A job container's run: when its sandbox, network and application came up, how it ended."""

    key: str
    sandbox_ns: int
    network_ready_ns: int
    app_started_ns: int
    exit_code: int | None
    output: str
    go_ns: int = 0
    finished_ns: int | None = None  # the engine's FinishedAt (ns resolution)
    removed_ns: int | None = None  # CNI DEL: the pod's veth was gone

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class DockerPods:
    """Container-backed pods of one lab. Starts (or reuses) an engine unless given one; use as
    a context manager: ``close()`` removes every container (and a private engine it started)."""

    def __init__(self, lab: Any, engine: Engine | None = None):
        self.lab = lab
        self._own_engine = engine is None
        self.engine = engine if engine is not None else Engine.obtain()
        self.image = self.engine.pod_image()
        self.pods: dict[str, ContainerPod] = {}
        self._lock = threading.RLock()

    def __enter__(self) -> DockerPods:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- CNI-like lifecycle -------------------------------------------------------------------
    def add(self, pod: Any, argv: Sequence[str] | None = None, *, start: bool = True,
            env: dict[str, str] | None = None) -> ContainerPod:
        """Create ``pod`` as a container: sandbox, CNI ADD, then (``start``) its command
        ``argv`` (default ``sleep infinity``). The pod joins the lab's model; its echo
        listeners (``pod.ports``) are opened in its namespace before the command starts."""
        lab = self.lab
        if not lab.is_up:
            raise HarnessError("lab is not up")
        if pod.key in lab.cluster.pods:
            raise HarnessError(f"pod {pod.key} already exists in lab {lab.run_id}")
        node = lab.cluster.nodes.get(pod.node)
        if node is None or not node.is_real:
            raise HarnessError(f"pod {pod.key}: a container pod needs a real node, not {pod.node!r}")
        argv = list(argv or DEFAULT_COMMAND)
        tag = _hash(pod.key)
        name = f"{lab.prefix}d-{tag}"
        cname = f"{lab.prefix}{tag}"
        ctl = os.path.join(state.STATE_ROOT, lab.run_id, "docker", tag)
        os.makedirs(ctl, exist_ok=True)
        fifo = os.path.join(ctl, "go")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fifo)
        os.mkfifo(fifo, 0o600)
        volumes = Engine.host_mounts()
        volumes[ctl] = {"bind": CTL_MOUNT, "mode": "rw"}
        kwargs: dict[str, Any] = {}
        if self.engine.cgroup_parent:
            kwargs["cgroup_parent"] = self.engine.cgroup_parent
        container = self.engine.client.containers.create(
            self.image, command=argv, entrypoint=ENTRYPOINT, name=cname, hostname=pod.name[:63],
            network_mode="none", volumes=volumes, tmpfs={"/tmp": "", "/run": ""}, environment=env or {},
            labels={LABEL: "pod", RUN_LABEL: lab.run_id, f"{LABEL}.pod": pod.key}, detach=True, **kwargs)
        cp = ContainerPod(pod.key, container.id, cname, name, 0, ctl, argv)
        with self._lock:
            self.pods[pod.key] = cp
        try:
            container.start()
            info = self.engine.client.api.inspect_container(container.id)
            cp.pid = int(info["State"]["Pid"])
            if not cp.pid:
                raise KernelError(f"container {cname} of pod {pod.key} is not running: "
                                  f"{info['State'].get('Error') or info['State'].get('Status')}")
            cp.sandbox_ns = time.time_ns()
            self._mount_netns(cp)
            # CNI ADD: the lab wires the sandbox exactly like a full pod of its own.
            cp.network_ready_ns = lab.adopt_pod(pod, name, record={"backend": KIND,
                                                                   "container": container.id})
            cp.wired = True
            log.info("container pod %s: sandbox %s, network ready +%.1f ms", pod.key, cname,
                     (cp.network_ready_ns - cp.sandbox_ns) / 1e6)
            if start:
                self.start(pod.key)
        except BaseException:
            with contextlib.suppress(Exception):
                self.remove(pod.key)
            raise
        return cp

    def _mount_netns(self, cp: ContainerPod) -> None:
        """Give the container's network namespace a lab name (so every netns.* primitive works)."""
        p = netns.path(cp.netns)
        os.makedirs(netns.NETNS_DIR, exist_ok=True)
        fd = os.open(p, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
        os.close(fd)
        src = f"/proc/{cp.pid}/ns/net"
        if _libc.mount(src.encode(), p.encode(), b"none", MS_BIND, None) != 0:
            err = ctypes.get_errno()
            os.unlink(p)
            raise KernelError(f"bind-mount {src} on {p}: {os.strerror(err)}")
        cp.mounted = True

    def start(self, key: str, timeout: float = 10.0) -> int:
        """Release the pod's command (the go signal); returns ``app_started_ns``."""
        cp = self.pods[key]
        fifo = os.path.join(cp.ctl_dir, "go")
        try:
            with open(f"/proc/{cp.pid}/cmdline", "rb") as f:
                before = f.read()
        except OSError:
            before = b""
        deadline = time.monotonic() + timeout
        while True:
            # Non-blocking open fails with ENXIO until the entrypoint has the fifo open for reading.
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                if time.monotonic() > deadline:
                    raise KernelError(f"container pod {key}: entrypoint never waited for the go signal") from None
                time.sleep(0.0005)
        try:
            # stamped just before the write: the command cannot have started earlier, even if
            # this thread is descheduled right after the write (seen on a loaded 2-core runner)
            go = time.time_ns()
            os.write(fd, b"go\n")
            cp.go_ns = go
        finally:
            os.close(fd)
        # The exec happened between the last poll that still saw the entrypoint (``last``) and
        # the first that saw the command (``seen``): record ``seen``, the later bound. If the
        # command has already exited by then, its exit (Docker's FinishedAt) may lie before
        # ``seen``, so the earlier bound is the one consistent with it.
        seen = last = cp.go_ns
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            exited = False
            try:
                with open(f"/proc/{cp.pid}/cmdline", "rb") as f:
                    now = f.read()
            except OSError:
                now, exited = b"", True
            seen = time.time_ns()
            if now != before:
                if exited or not now:
                    seen = last
                break
            last = seen
            time.sleep(EXEC_POLL_S)
        cp.app_started_ns = seen
        return seen

    def wait(self, key: str, timeout: float = 60.0) -> tuple[int | None, str]:
        """Wait for the pod's command to exit: (exit code, stdout+stderr). On timeout the
        exit code is None (the container keeps running)."""
        cp = self.pods[key]
        c = self.engine.client.containers.get(cp.container_id)
        code: int | None
        try:
            code = int(c.wait(timeout=timeout)["StatusCode"])
        except Exception as e:  # requests' ReadTimeout / ConnectionError: still running
            log.debug("container pod %s: wait: %s", key, e)
            code = None
        out = c.logs(stdout=True, stderr=True).decode(errors="replace")
        return code, out

    def result(self, key: str, timeout: float = 60.0) -> JobResult:
        """Wait for the pod's command and collect its timestamps, exit code and output."""
        cp = self.pods[key]
        code, out = self.wait(key, timeout)
        finished = None
        with contextlib.suppress(Exception):
            finished = _iso_ns(self.engine.client.api.inspect_container(cp.container_id)["State"]["FinishedAt"])
        return JobResult(key, cp.sandbox_ns, cp.network_ready_ns, cp.app_started_ns, code, out,
                         go_ns=cp.go_ns, finished_ns=finished if code is not None else None)

    def exec(self, key: str, argv: Sequence[str], timeout: float = 60.0) -> tuple[int, str]:
        """``docker exec`` inside the pod's container (its mounts and namespaces, not only its
        network namespace: for that, ``lab.exec`` works as for any pod)."""
        cp = self.pods[key]
        c = self.engine.client.containers.get(cp.container_id)
        res = c.exec_run(list(argv), demux=False)
        return int(res.exit_code), (res.output or b"").decode(errors="replace")

    def remove(self, key: str) -> int:
        """CNI DEL: kill the command, cut the pod off (veth deleted; the returned CLOCK_REALTIME
        ns), drop it from the lab, unmount its namespace name, remove the container."""
        with self._lock:
            cp = self.pods.pop(key, None)
        if cp is None:
            raise HarnessError(f"no container pod {key!r}")
        client = self.engine.client
        with contextlib.suppress(Exception):
            client.api.kill(cp.container_id)
        gone = time.time_ns()
        lab = self.lab
        if cp.wired and lab.is_up and key in lab.cluster.pods:
            gone = lab.remove_pod(key)  # servers, veth, ARP entry, namespace name
        if cp.mounted:
            netns.delete(cp.netns)  # idempotent (unmount + unlink): covers a half-made pod
        with contextlib.suppress(Exception):
            client.api.remove_container(cp.container_id, force=True, v=True)
        shutil.rmtree(cp.ctl_dir, ignore_errors=True)
        return gone

    def is_container(self, key: str) -> bool:
        return key in self.pods

    def close(self) -> None:
        """Remove every container pod, then stop the engine if this manager started it."""
        for key in list(self.pods):
            try:
                self.remove(key)
            except Exception as e:  # keep going: the rest must still be removed
                log.warning("removing container pod %s: %s", key, e)
        if self._own_engine:
            self.engine.close()

    # -- description -------------------------------------------------------------------------
    def describe(self) -> tuple[list[list[str]], list[list[str]]]:
        """``lab.describe()``: container pods show the kind ``container`` (their adopt record)."""
        return self.lab.describe()


class DockerLab:
    """The lab as the controller sees it, with container pods: ``add_pod`` makes every pod
    ``select(pod)`` accepts (default: all) a container running the command given by
    ``set_command`` (default ``sleep infinity``), started right after network ready;
    ``remove_pod`` mirrors it. Everything else is the wrapped lab's."""

    def __init__(self, lab: Any, pods: DockerPods, select: Callable[[Any], bool] | None = None):
        self._lab = lab
        self.pods = pods
        self.select = select or (lambda pod: True)
        self._commands: dict[str, list[str]] = {}
        self._envs: dict[str, dict[str, str]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lab, name)

    def set_command(self, key: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        """The command the next container pod ``key`` runs (and its environment, e.g. a
        client's password, which must not be on a command line)."""
        self._commands[key] = list(argv)
        if env:
            self._envs[key] = dict(env)

    def add_pod(self, pod: Any) -> int:
        if not self.select(pod):
            return self._lab.add_pod(pod)
        return self.pods.add(pod, self._commands.pop(pod.key, None), env=self._envs.pop(pod.key, None)).network_ready_ns

    def remove_pod(self, key: str) -> int:
        if self.pods.is_container(key):
            return self.pods.remove(key)
        return self._lab.remove_pod(key)

    def describe(self) -> tuple[list[list[str]], list[list[str]]]:
        return self.pods.describe()


def select_pods(lab: Any, spec: str) -> list[str]:
    """Realized full pods named by ``spec``: ``all``, comma-separated ``ns/name`` keys, or
    comma-separated ``label=value`` (a pod matching any). Light pods share a namespace and
    cannot become containers; they are never selected."""
    full = [k for k in lab.realized_pods() if not lab.is_light(k)]
    if spec.strip() == "all":
        return full
    out = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        if "/" in item:
            if item not in full:
                raise HarnessError(f"--docker: {item}: no full pod of that name in the lab")
            out.append(item)
        elif "=" in item:
            k, _, v = item.partition("=")
            out += [p for p in full if lab.cluster.pods[p].labels.get(k) == v]
        else:
            raise HarnessError(f"--docker: {item!r}: expected all, ns/name or label=value")
    return list(dict.fromkeys(out))


def containerize(pods: DockerPods, keys: Sequence[str]) -> list[ContainerPod]:
    """Turn realized full pods into container pods with the same name, node, labels, IP and
    ports: CNI DEL of the netns pod, then the container's sandbox + CNI ADD + ``sleep``."""
    out = []
    for key in keys:
        pod = pods.lab.cluster.pods[key]
        pods.lab.remove_pod(key)
        out.append(pods.add(pod))  # pod.ip is kept: the same address comes back
    return out


def up_docker(lab: Any, spec: str, engine: Engine | None = None) -> DockerPods:
    """For ``netpol-harness up --docker SPEC``: a manager with the selected pods as containers;
    ``describe()`` gives the lab's tables with their kind shown as ``container``."""
    pods = DockerPods(lab, engine)
    try:
        containerize(pods, select_pods(lab, spec))
    except BaseException:
        pods.close()
        raise
    return pods


def run_job_container(lab: Any, pod: Any, argv: Sequence[str], *, pods: DockerPods | None = None,
                      timeout: float = 60.0, remove: bool = True, env: dict[str, str] | None = None) -> JobResult:
    """Run a job as a container pod: sandbox, CNI ADD, ``argv`` started right after network
    ready (with ``env``), wait for it to exit (``timeout`` s), then (``remove``) CNI DEL and container removal.
    Uses ``pods`` (its engine) or a temporary manager (starting/reusing an engine: slow)."""
    own = pods is None
    mgr = pods if pods is not None else DockerPods(lab)
    try:
        mgr.add(pod, argv, env=env)
        res = mgr.result(pod.key, timeout)
        if remove:
            res.removed_ns = mgr.remove(pod.key)
        return res
    finally:
        if own:
            mgr.close()


def gc_containers(engine: Engine) -> list[str]:
    """On a reused engine: remove harness containers whose run has no live owner, then the
    harness's pod images if no harness container is left; returns what was removed. (A private
    engine's containers and images go with the engine: see ``gc``.)"""
    removed = []
    for c in engine.client.containers.list(all=True, filters={"label": RUN_LABEL}):
        rid = c.labels.get(RUN_LABEL, "")
        try:
            alive = state.load(rid).owner_alive()
        except HarnessError:
            alive = False
        if not alive:
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
                removed.append(c.name)
    # Pod images no container uses any more (a crashed run could not remove the one it imported).
    if not engine.client.containers.list(all=True, filters={"label": RUN_LABEL}):
        for img in engine.client.images.list(filters={"label": f"{LABEL}=pod-image"}):
            with contextlib.suppress(Exception):
                engine.client.images.remove(img.id)  # not forced: fails if anyone's container uses it
                removed.append(img.id[:19])
    return removed


def gc() -> dict[str, list[str]]:
    """Docker part of ``netpol-harness gc``: private engines of dead owners (with their
    containers), and harness containers of dead runs on a reused engine that answers."""
    out: dict[str, list[str]] = {"engines": gc_engines(), "containers": []}
    with contextlib.suppress(Exception):
        from harness.lab.docker_engine import USER_SOCKET, _ping

        urls = [os.environ["DOCKER_HOST"]] if os.environ.get("DOCKER_HOST") else []
        if os.path.exists(USER_SOCKET):
            urls.append("unix://" + USER_SOCKET)
        for url in urls:
            client = _ping(url, timeout=2.0)
            if client is not None:
                out["containers"] += gc_containers(Engine(client, url, private=False))
                client.close()
    return out


def mariadb_job_argv(host: str, port: int = 3306, *, timeout_s: int = 2, query: str = "SELECT 1",
                     user: str = "nph") -> list[str]:
    """The job command of the job-to-mysql scenario: the ``mariadb`` command-line client, one
    query, no config files (what a CronJob's container runs). The password goes in the
    container's environment (``MYSQL_PWD``, see ``MariaDB.client_env``), not in ``argv``."""
    return ["mariadb", "--no-defaults", "-h", host, "-P", str(port), "-u", user,
            f"--connect-timeout={timeout_s}", "--batch", "--skip-column-names", "-e", query]


def command_line(argv: Sequence[str]) -> str:
    """For logs and reports."""
    return shlex.join(argv)


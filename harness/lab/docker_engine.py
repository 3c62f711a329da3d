"""A Docker engine for container-backed pods: reuse the user's, or run a private, harmless one.

``Engine.obtain()`` first asks an engine the user already runs (``DOCKER_HOST``, then
``/var/run/docker.sock``). When none answers it starts Debian's ``dockerd`` for this process
with everything private under ``/run/nph-docker/<engine_id>/`` (data root, exec root with the
managed containerd's state, socket, pid file, config file, trust key; the directories ``0700``,
the API socket ``0600 root:root`` — ``--group root`` and a chmod before first use — so
membership of the host's ``docker`` group gives no way in) and with every feature
that would touch the root network namespace off: ``--iptables=false --ip6tables=false
--ip-forward=false --ip-masq=false --bridge=none --userland-proxy=false`` (no docker0, no
iptables rules, ip_forward untouched; containers only ever use ``--network none``). Its
containers live under the cgroup parent ``nph-docker-<engine_id>`` so a crashed engine's
containers can still be found and killed. ``close()`` stops it and removes every trace;
``gc_engines()`` does the same for engines whose owner process died.

The pod image is a ``docker import`` of a tiny root filesystem (empty mount points, the host's
``/bin -> usr/bin``-style symlinks and a generated minimal ``/etc``: passwd and group with root
and nobody only, hosts, resolv.conf, nsswitch.conf, plus the host's ``ld.so.cache`` and
``alternatives`` symlinks so host programs find their libraries); the host's ``/usr`` (and
``/lib*`` if they are real directories) are bind-mounted read-only at run time, so host
programs such as ``python3`` and the ``mariadb`` client run inside. The host's ``/etc`` is not
(no /etc/shadow, no host accounts or keys in a pod). Its tag carries the content hash of the
tar, so an existing image is reused.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any

from harness.errors import EnvironmentProblem, HarnessError
from harness.lab import state
from harness.lab.private_dir import private_dir

log = logging.getLogger(__name__)

ENGINE_ROOT = "/run/nph-docker"
USER_SOCKET = "/var/run/docker.sock"
IMAGE_REPO = "nph-pod"
LABEL = "netpol-harness"  # label key on every image and container the harness makes
RUN_LABEL = "netpol-harness.run"
DOCKERD_CANDIDATES = ("dockerd", "/usr/sbin/dockerd", "/usr/bin/dockerd")
INSTALL_HINT = "apt-get install -y docker.io"
HOST_RO_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
# The pod's /etc: generated, never the host's (which holds shadow, keys, the host's accounts).
MINIMAL_ETC = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": "root:x:0:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "resolv.conf": "# netpol-harness pod: no cluster DNS\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
}
# Copied from the host: the dynamic linker's cache (libraries in directories only
# /etc/ld.so.conf.d names are found through it; the multiarch dirs are built into ld.so) and the
# alternatives symlinks some /usr/bin names resolve through (/usr/bin/x -> /etc/alternatives/x).
HOST_ETC_FILES = ("/etc/ld.so.cache",)
HOST_ETC_SYMLINK_DIRS = ("/etc/alternatives",)
ROOTFS_DIRS = ("proc", "sys", "dev", "tmp", "run", "nph", "var", "var/tmp", "root")
START_TIMEOUT = 60.0
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)

# Everything that would make dockerd change the root network namespace, switched off.
DOCKERD_NET_FLAGS = ("--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
                     "--bridge=none", "--userland-proxy=false")


def _docker() -> Any:
    try:
        import docker  # the SDK; optional for everything but this backend
    except ImportError:
        raise EnvironmentProblem("the Python docker SDK is not installed", "pip install docker") from None
    return docker


def find_dockerd() -> str | None:
    """Path of a ``dockerd`` binary, or None."""
    for c in DOCKERD_CANDIDATES:
        p = shutil.which(c)
        if p:
            return p
    return None


def _ping(base_url: str, timeout: float = 3.0) -> Any | None:
    """A DockerClient for ``base_url`` if an engine answers there, else None."""
    docker = _docker()
    try:
        client = docker.DockerClient(base_url=base_url, version="auto", timeout=timeout)
        client.ping()
    except Exception as e:  # connection refused, no socket, API error: not usable
        log.debug("no docker engine at %s: %s", base_url, e)
        return None
    client.api.timeout = 120
    return client


def _engine_error_line(log_path: str) -> str:
    """The engine's own reason for failing: the last error/fatal line of its log."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return "no log"
    for ln in reversed(lines):
        if "level=fatal" in ln or "level=error" in ln or ln.startswith("failed") or "Error" in ln:
            return ln
    return lines[-1] if lines else "empty log"


@dataclass
class Engine:
    """A Docker engine the harness talks to. ``private`` engines were started by us and are
    stopped (every trace removed) by ``close()``."""

    client: Any
    base_url: str
    private: bool
    engine_id: str | None = None
    dir: str | None = None
    pid: int | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    start_seconds: float = 0.0
    images_made: list[str] = field(default_factory=list)

    @property
    def cgroup_parent(self) -> str | None:
        return f"nph-docker-{self.engine_id}" if self.private else None

    # -- obtaining ---------------------------------------------------------------------------
    @classmethod
    def obtain(cls, *, reuse: bool = True, dockerd: str | None = None) -> Engine:
        """Reuse an engine that answers (``DOCKER_HOST``, ``/var/run/docker.sock``) unless
        ``reuse`` is false; otherwise start a private one. Raises EnvironmentProblem (with the
        engine's own error line) when Docker cannot run here."""
        if reuse:
            urls = []
            if os.environ.get("DOCKER_HOST"):
                urls.append(os.environ["DOCKER_HOST"])
            if os.path.exists(USER_SOCKET):
                urls.append("unix://" + USER_SOCKET)
            for url in urls:
                client = _ping(url)
                if client is not None:
                    log.info("reusing the docker engine at %s", url)
                    return cls(client, url, private=False)
        return cls.start_private(dockerd=dockerd)

    @classmethod
    def start_private(cls, *, dockerd: str | None = None, timeout: float = START_TIMEOUT) -> Engine:
        """Start ``dockerd`` with private roots under ``/run/nph-docker/<id>/`` and the network
        features off; wait until it answers."""
        _docker()
        binary = dockerd or find_dockerd()
        if binary is None:
            raise EnvironmentProblem("no docker engine answers and dockerd is not installed", INSTALL_HINT)
        if os.geteuid() != 0:
            raise EnvironmentProblem("starting a private docker engine needs root", "run as root")
        private_dir(ENGINE_ROOT)  # root-owned, no symlink, not group/world-writable
        os.chmod(ENGINE_ROOT, 0o700)  # also when an older harness made it 0755
        while True:
            eid = secrets.token_hex(3)
            d = os.path.join(ENGINE_ROOT, eid)
            try:
                os.mkdir(d, 0o700)
                break
            except FileExistsError:
                continue
        sock = os.path.join(d, "docker.sock")
        cfg = os.path.join(d, "daemon.json")
        with open(cfg, "w") as f:
            # dockerd 20.10 writes a libtrust key to /etc/docker/key.json unless told otherwise.
            json.dump({"deprecated-key-path": os.path.join(d, "key.json")}, f)
        argv = [binary, "--config-file", cfg, "--data-root", os.path.join(d, "data"),
                "--exec-root", os.path.join(d, "exec"), "-H", "unix://" + sock,
                "--pidfile", os.path.join(d, "docker.pid"), "--group", "root", *DOCKERD_NET_FLAGS,
                "--cgroup-parent", f"nph-docker-{eid}", "--shutdown-timeout", "2"]
        record = {"engine_id": eid, "owner_pid": os.getpid(),
                  "owner_start": state.process_start_time(os.getpid()), "dockerd": None, "argv": argv}
        _write_record(d, record)
        log_path = os.path.join(d, "dockerd.log")
        t0 = time.perf_counter()
        with open(log_path, "ab") as logf:
            # Own session: a Ctrl-C at the terminal reaches us, and we stop it in order.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    start_new_session=True)
        record["dockerd"] = [proc.pid, state.process_start_time(proc.pid)]
        _write_record(d, record)
        eng = cls(None, "unix://" + sock, private=True, engine_id=eid, dir=d, pid=proc.pid, proc=proc)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if proc.poll() is not None:
                    raise EnvironmentProblem(f"dockerd exited with code {proc.returncode}: "
                                             f"{_engine_error_line(log_path)}", f"log: {log_path}")
                if os.path.exists(sock):
                    os.chmod(sock, 0o600)  # root only (dockerd makes it 0660 for --group)
                    client = _ping(eng.base_url, timeout=2.0)
                    if client is not None:
                        eng.client = client
                        break
                if time.monotonic() > deadline:
                    raise EnvironmentProblem(f"dockerd did not answer within {timeout:.0f} s: "
                                             f"{_engine_error_line(log_path)}", f"log: {log_path}")
                time.sleep(0.05)
        except BaseException:
            eng.close()  # the error message carries the engine's own line; the log goes with the dir
            raise
        eng.start_seconds = time.perf_counter() - t0
        log.info("private docker engine %s up in %.2f s (%s)", eid, eng.start_seconds, binary)
        return eng

    # -- images ------------------------------------------------------------------------------
    def pod_image(self) -> str:
        """The pod image (``nph-pod:<content hash>``), imported once per engine."""
        data = rootfs_tar()
        tag = f"{IMAGE_REPO}:{hashlib.sha256(data).hexdigest()[:16]}"
        with contextlib.suppress(Exception):
            self.client.images.get(tag)
            return tag
        repo, _, t = tag.partition(":")
        self.client.api.import_image_from_data(data, repository=repo, tag=t,
                                               changes=[f"LABEL {LABEL}=pod-image"])
        self.images_made.append(tag)
        return tag

    @staticmethod
    def host_mounts() -> dict[str, dict[str, str]]:
        """Read-only bind mounts of the host's program directories (those that are real
        directories here; symlinks such as ``/bin -> usr/bin`` are in the image itself)."""
        return {p: {"bind": p, "mode": "ro"} for p in HOST_RO_DIRS
                if os.path.isdir(p) and not os.path.islink(p)}

    # -- closing -----------------------------------------------------------------------------
    def close(self, *, remove_images: bool = True) -> None:
        """Private engine: stop it and remove its directory, mounts and cgroups. Reused engine:
        remove the images this process imported (unless ``remove_images`` is false)."""
        if not self.private:
            if remove_images and self.client is not None:
                for tag in self.images_made:
                    with contextlib.suppress(Exception):
                        self.client.images.remove(tag, force=True)
                self.images_made.clear()
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.private and self.dir is not None:
            _stop_engine(self.dir, self.engine_id or "", self.proc)
            self.proc = None


def _write_record(d: str, record: dict[str, Any]) -> None:
    tmp = os.path.join(d, "engine.json.tmp")
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, os.path.join(d, "engine.json"))


def _mounts_under(d: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == d or mp.startswith(d.rstrip("/") + "/"):
                out.append(mp)
    return out


def cgroup_dirs(parent: str) -> list[str]:
    """Every cgroup v1/v2 directory named ``parent`` (one per mounted hierarchy)."""
    out = []
    root = "/sys/fs/cgroup"
    candidates = [os.path.join(root, parent)]
    with contextlib.suppress(OSError):
        candidates += [os.path.join(root, h, parent) for h in os.listdir(root)]
    for c in candidates:
        if os.path.isdir(c):
            out.append(c)
    return out


def _kill_cgroup(parent: str) -> None:
    """SIGKILL every process left in the engine's cgroup subtree (containers of a crashed
    engine), then remove the (now empty) cgroups, deepest first."""
    for top in cgroup_dirs(parent):
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError), open(os.path.join(dirpath, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        with contextlib.suppress(ProcessLookupError, ValueError):
                            os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.05)
    for top in cgroup_dirs(parent):
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            for _ in range(20):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


def procs_referencing(d: str) -> list[int]:
    """Processes whose command line names the engine directory (dockerd, containerd, shims)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if (d.rstrip("/") + "/").encode() in f.read():
                    out.append(int(p))
    return [p for p in out if p != os.getpid()]


def _stop_engine(d: str, eid: str, proc: subprocess.Popen | None) -> None:
    """Stop a private engine and remove every trace: dockerd (SIGTERM: it stops its containers
    and its containerd), leftovers (SIGKILL), cgroups, mounts, the directory."""
    pids = procs_referencing(d)
    dockerd_pid = proc.pid if proc is not None else None
    if dockerd_pid is None:
        with contextlib.suppress(OSError, ValueError), open(os.path.join(d, "docker.pid")) as f:
            cand = int(f.read().strip())
            if cand in pids:
                dockerd_pid = cand
    if dockerd_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(dockerd_pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    break
            elif not os.path.exists(f"/proc/{dockerd_pid}") or state._is_zombie(dockerd_pid):
                break
            time.sleep(0.02)
    for pid in procs_referencing(d):  # containerd / shims that outlived dockerd
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
    _kill_cgroup(f"nph-docker-{eid}")
    for mp in sorted(_mounts_under(d), key=len, reverse=True):
        _libc.umount2(mp.encode(), MNT_DETACH)
    shutil.rmtree(d, ignore_errors=True)
    if os.path.exists(d):
        log.warning("could not fully remove %s", d)


def list_engine_records() -> list[dict[str, Any]]:
    """Records of private engines (any owner)."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for eid in sorted(os.listdir(ENGINE_ROOT)):
            p = os.path.join(ENGINE_ROOT, eid, "engine.json")
            try:
                with open(p) as f:
                    rec = json.load(f)
            except (OSError, ValueError):
                rec = {"engine_id": eid, "owner_pid": None, "owner_start": None}
            rec["dir"] = os.path.join(ENGINE_ROOT, eid)
            out.append(rec)
    return out


def gc_engines() -> list[str]:
    """Stop and remove private engines whose owner process is dead; returns their ids.
    An engine whose owner lives is never touched."""
    removed = []
    for rec in list_engine_records():
        if state.process_alive(rec.get("owner_pid"), rec.get("owner_start")):
            continue
        d = rec["dir"]
        if rec.get("owner_pid") is None and time.time() - os.path.getmtime(d) < 60:
            continue  # being created right now
        _stop_engine(d, rec["engine_id"], None)
        removed.append(rec["engine_id"])
    return removed


def rootfs_tar() -> bytes:
    """The pod image's root filesystem as a tar (deterministic: same host, same bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            ti.mode = mode
            tar.addfile(ti)

        for p in HOST_RO_DIRS:
            name = p.lstrip("/")
            if os.path.islink(p):
                ti = tarfile.TarInfo(name)
                ti.type = tarfile.SYMTYPE
                ti.linkname = os.readlink(p)
                tar.addfile(ti)
            elif os.path.isdir(p):
                add_dir(name)
        for name in ROOTFS_DIRS:
            add_dir(name, 0o1777 if name in ("tmp", "var/tmp") else 0o755)
        add_dir("etc")

        def add_file(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tar.addfile(ti, io.BytesIO(data))

        for name, text in MINIMAL_ETC.items():
            add_file(f"etc/{name}", text.encode())
        for p in HOST_ETC_FILES:
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    add_file(p.lstrip("/"), f.read())
        for d in HOST_ETC_SYMLINK_DIRS:
            if not os.path.isdir(d) or os.path.islink(d):
                continue
            add_dir(d.lstrip("/"))
            for name in sorted(os.listdir(d)):
                p = os.path.join(d, name)
                if os.path.islink(p):
                    ti = tarfile.TarInfo(p.lstrip("/"))
                    ti.type = tarfile.SYMTYPE
                    ti.linkname = os.readlink(p)
                    tar.addfile(ti)
    return buf.getvalue()


def engine_or_skip_reason() -> tuple[Engine | None, str | None]:
    """For tests: an engine, or (None, reason) when Docker cannot run here."""
    try:
        return Engine.obtain(), None
    except HarnessError as e:
        return None, str(e)

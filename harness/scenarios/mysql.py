"""A real MariaDB server inside a lab pod's namespace, and real MySQL clients against it.

    with MariaDB(lab, "db/mariadb-0") as db:          # mariadbd bound to the pod's IP:3306
        r = mysql_attempt(lab.pod_netns("batch/job-1"), db.ip)   # PyMySQL: connect + SELECT 1
        r.ok, r.code, r.errno, r.message                  # e.g. False, 2003, "ECONNREFUSED", ...

The server (Debian's ``mariadbd``) gets its own datadir, socket and pid file in a temp dir;
``mariadb-install-db`` runs once per machine into a cached template datadir which every server
copies. The server is killed with the harness process (PR_SET_PDEATHSIG) and its pid is written
next to the lab's run record (``<state dir>/mariadb.pid``), so ``gc_servers`` can stop it after a
crash of a process that was SIGKILLed itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from harness.errors import EnvironmentProblem, HarnessError
from harness.kernel import netns
from harness.outcome import Outcome, errno_name, errno_number, exception_errno, from_mysql

log = logging.getLogger(__name__)

PORT = 3306
MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "mariadb-install-db"
TEMPLATE_ROOT = "/var/tmp/netpol-harness-mariadb"
PIDFILE = "mariadb.pid"
STATE_ROOT = "/run/netpol-harness"
# Small InnoDB files: the template is copied per server (the defaults make it 114 MB).
SERVER_OPTIONS = ("--innodb-log-file-size=4M", "--innodb-buffer-pool-size=16M", "--skip-log-bin",
                  "--performance-schema=OFF", "--skip-name-resolve", "--innodb-use-native-aio=0")
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_template_lock = threading.Lock()


def require_mariadb() -> None:
    """EnvironmentProblem with the install hint if the server or installer is missing."""
    if not os.path.exists(MARIADBD) or shutil.which(INSTALL_DB) is None:
        raise EnvironmentProblem("MariaDB server not installed (mariadbd, mariadb-install-db)",
                                 "apt-get install mariadb-server mariadb-client")


def server_version() -> str:
    """``mariadbd --version`` (first line), for reports."""
    try:
        out = subprocess.run([MARIADBD, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    return out.strip().splitlines()[0] if out.strip() else "?"


def template_datadir() -> str:
    """A datadir made by ``mariadb-install-db`` once per machine and server version (cached)."""
    require_mariadb()
    version = server_version().split()[2] if len(server_version().split()) > 2 else "unknown"
    path = os.path.join(TEMPLATE_ROOT, version.replace("/", "_"))
    with _template_lock:
        if os.path.exists(os.path.join(path, "ready")):
            return path
        tmp = tempfile.mkdtemp(prefix="template-", dir=_ensure_dir(TEMPLATE_ROOT))
        data = os.path.join(tmp, "data")
        proc = subprocess.run([INSTALL_DB, "--no-defaults", f"--datadir={data}", "--user=root",
                               "--skip-test-db", "--auth-root-authentication-method=normal",
                               *SERVER_OPTIONS[:2]], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            first = next((ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()), "?")
            raise HarnessError(f"mariadb-install-db failed: {first}")
        open(os.path.join(tmp, "ready"), "w").close()
        with contextlib.suppress(OSError):
            os.rename(tmp, path)  # a concurrent process may have won: use theirs
        if not os.path.exists(os.path.join(path, "ready")):
            raise HarnessError(f"could not create the MariaDB template in {path}")
        shutil.rmtree(tmp, ignore_errors=True)
        return path


def _ensure_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def _preexec(ns_fd: int):
    def enter() -> None:  # between fork and exec: async-signal-safe calls only
        if _libc.setns(ns_fd, 0x40000000) != 0:  # CLONE_NEWNET
            os._exit(127)
        # die with the harness: a crashed test run must not leave a server holding a netns
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.setpgid(0, 0)
    return enter


class MariaDB:
    """``mariadbd`` in the namespace of lab pod ``pod_key``, bound to the pod's IP on ``port``,
    with ``--skip-grant-tables`` (any user, no password). ``start()`` returns once the server
    accepts connections; ``stop()`` shuts it down and removes its files."""

    def __init__(self, lab: Any, pod_key: str, port: int = PORT):
        self.lab = lab
        self.pod_key = pod_key
        self.port = port
        self.ip = str(lab.cluster.pods[pod_key].ip)
        self.proc: subprocess.Popen | None = None
        self.dir: str | None = None
        self.pidfile: str | None = None
        self.started_s = 0.0

    def __enter__(self) -> MariaDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> MariaDB:
        t0 = time.monotonic()
        template = template_datadir()
        self.dir = tempfile.mkdtemp(prefix=f"nph-mariadb-{self.lab.run_id}-")
        data = os.path.join(self.dir, "data")
        shutil.copytree(os.path.join(template, "data"), data)
        argv = [MARIADBD, "--no-defaults", f"--datadir={data}", f"--socket={self.dir}/mysqld.sock",
                f"--pid-file={self.dir}/mysqld.pid", f"--log-error={self.dir}/error.log",
                f"--tmpdir={self.dir}", f"--bind-address={self.ip}", f"--port={self.port}", "--user=root",
                "--skip-grant-tables", *SERVER_OPTIONS]
        fd = os.open(netns.path(self.lab.pod_netns(self.pod_key)), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.proc = subprocess.Popen(argv, preexec_fn=_preexec(fd), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.close(fd)
        state_dir = os.path.join(STATE_ROOT, str(self.lab.run_id))
        if os.path.isdir(state_dir):
            self.pidfile = os.path.join(state_dir, PIDFILE)
            with open(self.pidfile, "w") as f:
                f.write(f"{self.proc.pid} {self.dir}\n")
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.started_s = time.monotonic() - t0
        log.info("mariadbd %d in %s on %s:%d up in %.2f s", self.proc.pid, self.pod_key, self.ip, self.port,
                 self.started_s)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ns = self.lab.pod_netns(self.pod_key)
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise HarnessError(f"mariadbd exited with {self.proc.returncode}: {self.error_log_tail()}")
            r = mysql_attempt(ns, self.ip, self.port, timeout_s=1.0)
            if r.ok:
                return
            time.sleep(0.05)
        raise HarnessError(f"mariadbd in {self.pod_key} not answering within {timeout:g} s: {self.error_log_tail()}")

    def error_log_tail(self, lines: int = 3) -> str:
        try:
            with open(os.path.join(self.dir or "", "error.log")) as f:
                return " | ".join(ln.strip() for ln in f.readlines()[-lines:])
        except OSError:
            return "(no error log)"

    def stop(self) -> None:
        """SIGTERM (clean shutdown), SIGKILL after 10 s; remove the datadir and pid file."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.pidfile:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.pidfile)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def gc_servers() -> int:
    """For ``netpol-harness gc``: kill MariaDB servers recorded by runs whose owner is dead (they
    normally die with it through PR_SET_PDEATHSIG; this catches a server started from a thread
    that has since exited) and remove datadirs of dead runs. Returns how many were killed."""
    from harness.lab import state

    killed = 0
    for pidfile in glob.glob(os.path.join(STATE_ROOT, "*", PIDFILE)):
        run_id = os.path.basename(os.path.dirname(pidfile))
        try:
            owner_alive = state.load(run_id).owner_alive()
        except HarnessError:
            owner_alive = False
        if owner_alive:
            continue
        with contextlib.suppress(OSError, ValueError):
            pid_s, datadir = open(pidfile).read().split(maxsplit=1)
            pid = int(pid_s)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            if b"mariadbd" in cmd and datadir.strip().encode() in cmd:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            shutil.rmtree(datadir.strip(), ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(pidfile)
    # datadirs of servers that died with their harness (PR_SET_PDEATHSIG) but were not removed
    for datadir in glob.glob(os.path.join(tempfile.gettempdir(), "nph-mariadb-*-*")):
        run_id = os.path.basename(datadir).split("-")[2]
        try:
            alive = state.load(run_id).owner_alive()
        except HarnessError:
            alive = False
        if not alive:
            shutil.rmtree(datadir, ignore_errors=True)
    return killed


@dataclass
class MysqlAttempt:
    """One client attempt: connect + ``SELECT 1`` (PyMySQL, the kernel's TCP stack in the pod).
    ``code``: the MySQL client error (2003 can't connect, 2013 lost connection ...), ``errno``:
    the socket errno name under it (ECONNREFUSED, ECONNRESET, ETIMEDOUT), ``message`` verbatim."""

    ok: bool
    start_ns: int
    end_ns: int
    code: int | None = None
    errno: str | None = None
    message: str = ""

    @property
    def outcome(self) -> Outcome:
        """The attempt's outcome from its numbers: the MySQL client code and the errno under it
        (``harness.outcome.from_mysql``), never the message."""
        if self.ok:
            return Outcome.CONNECTED
        return from_mysql(self.code, errno_number(self.errno))

    def describe(self) -> str:
        return "ok" if self.ok else f"ERROR {self.code} {self.errno}".strip()


def mysql_attempt(ns: str, host: str, port: int = PORT, *, src_ip: str | None = None,
                  timeout_s: float = 1.0) -> MysqlAttempt:
    """Connect with PyMySQL from namespace ``ns`` and run ``SELECT 1``; never raises for a
    network or server error (it is the observation)."""
    import pymysql

    start = time.time_ns()
    try:
        with netns.entered(ns):  # the socket is made in this thread's (the pod's) namespace
            conn = pymysql.connect(host=host, port=port, user="root", connect_timeout=timeout_s,
                                   read_timeout=timeout_s, write_timeout=timeout_s, bind_address=src_ip)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
        finally:
            conn.close()
    except pymysql.err.MySQLError as e:
        code = e.args[0] if e.args and isinstance(e.args[0], int) else None
        msg = str(e.args[1]) if len(e.args) > 1 else str(e)
        # PyMySQL wraps the socket error (2003: OSError while connecting, kept as
        # original_exception and as context; 2013: OSError while reading) - its errno decides.
        # A 2013 without one is an EOF: the server side closed the connection.
        return MysqlAttempt(False, start, time.time_ns(), code, errno_name(exception_errno(e)), msg)
    return MysqlAttempt(True, start, time.time_ns())


def cli_attempt(ns: str, host: str, port: int = PORT, timeout_s: int = 2) -> tuple[int, str]:
    """The ``mariadb`` command-line client run inside ``ns`` (what a CronJob's shell sees):
    (exit code, first line of its stderr, e.g. ``ERROR 2002 (HY000): Can't connect ...``)."""
    proc = netns.run(ns, ["mariadb", "--no-defaults", "-h", host, "-P", str(port), "-u", "root",
                          f"--connect-timeout={timeout_s}", "-e", "SELECT 1"], check=False, timeout=timeout_s + 10)
    err = next((ln.strip() for ln in proc.stderr.splitlines() if ln.strip()), "")
    return proc.returncode, err

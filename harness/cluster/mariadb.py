"""A real MariaDB server in a lab pod's network namespace, bound to the lab and to its clients.

    with MariaDB(lab, "db/mariadb-0") as db:        # mariadbd on the pod's IP:3306
        db.user, db.password                          # the scenario's client account
        db.admin("SELECT 1")                          # root over the server's unix socket

What a process in the lab can and cannot do with it:

- **grants, no ``--skip-grant-tables``**: the template is made by ``mariadb-install-db`` with
  root authenticated by ``unix_socket`` only (the harness, uid 0, is the only process that can
  reach the socket: it sits in a root-only directory); at start the harness creates the client
  account ``nph`` with a generated password and only ``USAGE`` (enough for ``SELECT 1``; no
  FILE, no schema rights) and drops anonymous accounts. A login over TCP without the password,
  with a wrong one, or as root is refused.
- **``--secure-file-priv``** names an empty private directory: ``SELECT ... INTO OUTFILE``
  and ``LOAD_FILE`` cannot touch any other host file, whoever asks.
- **not root**: when the Debian package's ``mysql`` account exists the server is started as
  that user (the child drops to it before ``exec``, so PR_SET_PDEATHSIG survives: a setuid by
  mariadbd itself would clear it), its datadir owned accordingly.
- **state**: the template datadir is cached per server version in a root-owned ``0700``
  directory whose every component is verified (``private_dir``: no symlinks, root-owned, not
  group/world-writable); each server copies it into a fresh ``mkdtemp`` directory.
- **TLS** (``tls_names=[...]``): a CA and a server certificate made per run
  (``harness.cluster.tls``; subjectAltNames: the given names and the pod IP) in the server's
  private directory, ``--ssl-ca/--ssl-cert/--ssl-key`` on the server, and the client account
  ``REQUIRE SSL``: a client without ``--ssl`` is refused. ``database`` then names a small schema
  (one table, three rows) the account may dump: ``SELECT, LOCK TABLES, SHOW VIEW`` on it only.
- **ownership**: the server's process (pid + start time + its directory as the cmdline marker)
  and its directory are recorded in the lab's run record under the owner ``mariadb``, so
  ``netpol-harness gc`` stops and removes them after a crash without knowing about MariaDB.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

from harness.cluster import child
from harness.errors import EnvironmentProblem, HarnessError
from harness.kernel import netns
from harness.lab.private_dir import private_dir, regular_file_in

log = logging.getLogger(__name__)

PORT = 3306
MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "mariadb-install-db"
CLIENT = "mariadb"
# Root-owned 0700 cache (verified on every use): never a fixed path in world-writable /var/tmp.
CACHE_ROOT = "/var/cache/netpol-harness/mariadb"
OWNER = "mariadb"  # the owner name in the lab's run record
SERVER_USER = "mysql"  # Debian's mariadb-server account
CLIENT_USER = "nph"
# Small InnoDB files: the template is copied per server (the defaults make it 114 MB).
SERVER_OPTIONS = ("--innodb-log-file-size=4M", "--innodb-buffer-pool-size=16M", "--skip-log-bin",
                  "--performance-schema=OFF", "--skip-name-resolve", "--innodb-use-native-aio=0")
PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_template_lock = threading.Lock()


def require_mariadb() -> None:
    """EnvironmentProblem with the install hint if the server, installer or client is missing."""
    if not os.path.exists(MARIADBD) or shutil.which(INSTALL_DB) is None or shutil.which(CLIENT) is None:
        raise EnvironmentProblem("MariaDB server not installed (mariadbd, mariadb-install-db, mariadb)",
                                 "apt-get install mariadb-server mariadb-client")


def _version() -> str:
    try:
        out = subprocess.run([MARIADBD, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    words = out.split()
    return words[2].replace("/", "_") if len(words) > 2 else "unknown"


def template_datadir(cache_root: str = CACHE_ROOT) -> str:
    """A datadir made by ``mariadb-install-db`` once per server version, cached under the
    verified root-owned ``cache_root`` (HarnessError naming the component if it is not safe).
    Returns the directory holding ``data/`` and the ``ready`` marker."""
    require_mariadb()
    path = os.path.join(cache_root, _version())
    with _template_lock:
        private_dir(cache_root)
        # one builder at a time across processes too (the lock file lives in the root-only cache)
        lock_fd = os.open(os.path.join(cache_root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            return _template_locked(cache_root, path)
        finally:
            os.close(lock_fd)


def _template_locked(cache_root: str, path: str) -> str:
    if os.path.lexists(path):
        private_dir(path, create=False)  # an existing template must pass the same checks
        if regular_file_in(path, "ready"):
            return path
        shutil.rmtree(path)  # half-made by a crashed build (only root can write here)
    tmp = tempfile.mkdtemp(prefix="template-", dir=cache_root)  # 0700, in a root-only dir
    data = os.path.join(tmp, "data")
    proc = subprocess.run([INSTALL_DB, "--no-defaults", f"--datadir={data}", "--user=root",
                           "--skip-test-db", "--auth-root-authentication-method=socket",
                           *SERVER_OPTIONS[:2]], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        first = next((ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()), "?")
        raise HarnessError(f"mariadb-install-db failed: {first}")
    open(os.path.join(tmp, "ready"), "w").close()
    os.rename(tmp, path)
    return path


def server_account() -> tuple[int, int] | None:
    """(uid, gid) of the Debian package's ``mysql`` account, or None (then the server runs as root)."""
    try:
        pw = pwd.getpwnam(SERVER_USER)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def _preexec(ns_fd: int, account: tuple[int, int] | None):
    def enter() -> None:  # between fork and exec
        if _libc.setns(ns_fd, CLONE_NEWNET) != 0:
            os._exit(127)
        if account is not None:  # drop root before exec: a setuid in mariadbd would clear PDEATHSIG
            uid, gid = account
            os.setgroups([gid])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        # die with the harness: a crashed test run must not leave a server holding a netns
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.setpgid(0, 0)
    return enter


def _chown_tree(top: str, uid: int, gid: int) -> None:
    for dirpath, dirs, files in os.walk(top):
        os.chown(dirpath, uid, gid, follow_symlinks=False)
        for n in dirs + files:
            os.chown(os.path.join(dirpath, n), uid, gid, follow_symlinks=False)


def _sql_string(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "''") + "'"


def connect(ns: str, host: str, port: int = PORT, *, user: str, password: str, timeout_s: float = 1.0,
            io_timeout_s: float | None = None, src_ip: str | None = None, ssl_ca: str | None = None) -> Any:
    """A PyMySQL connection to ``host:port`` made from namespace ``ns`` as ``user``/``password``
    (``timeout_s`` to connect, ``io_timeout_s``, default the same, per read and write; bound to
    ``src_ip`` and verifying the server against ``ssl_ca`` when given). The socket is made in the
    pod's namespace and keeps talking there from any thread. Raises ``pymysql.err.MySQLError``:
    the caller decides what a failure means (a readiness wait retries, a scenario classifies)."""
    import pymysql

    io = timeout_s if io_timeout_s is None else io_timeout_s
    with netns.entered(ns):  # the socket is made in this thread's (the pod's) namespace
        return pymysql.connect(host=host, port=port, user=user, password=password, connect_timeout=timeout_s,
                               read_timeout=io, write_timeout=io, bind_address=src_ip, ssl_ca=ssl_ca)


def select_one(ns: str, host: str, port: int = PORT, *, user: str, password: str, timeout_s: float = 1.0,
               src_ip: str | None = None, ssl_ca: str | None = None) -> None:
    """Log in (``connect``) and run ``SELECT 1``; returns once the answer is read, raises
    ``pymysql.err.MySQLError`` otherwise. The one client path of the readiness wait and the
    scenarios' attempts."""
    conn = connect(ns, host, port, user=user, password=password, timeout_s=timeout_s, src_ip=src_ip, ssl_ca=ssl_ca)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
    finally:
        conn.close()


class MariaDB:
    """``mariadbd`` in the namespace of lab pod ``pod_key``, bound to the pod's IP on ``port``,
    with grant tables on: the client account ``user``/``password`` (``USAGE`` only), root only
    through the unix socket. ``start()`` returns once the client account can log in over TCP;
    ``stop()`` shuts it down and removes its files and its entries in the run record."""

    def __init__(self, lab: Any, pod_key: str, port: int = PORT, *, tls_names: list[str] | None = None,
                 database: str | None = None):
        self.lab = lab
        self.tls_names = tls_names
        self.database = database
        self.tls: Any = None  # harness.cluster.tls.TlsFiles once started with tls_names
        self.pod_key = pod_key
        self.port = port
        self.ip = str(lab.cluster.pods[pod_key].ip)
        self.user = CLIENT_USER
        self.password = secrets.token_urlsafe(18)
        self.proc: subprocess.Popen | None = None
        self.dir: str | None = None
        self.started_s = 0.0

    def __enter__(self) -> MariaDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def socket(self) -> str:
        return os.path.join(self.dir or "", "server", "mysqld.sock")

    @property
    def files_dir(self) -> str:
        """The ``--secure-file-priv`` directory (empty, private)."""
        return os.path.join(self.dir or "", "files")

    def client_env(self) -> dict[str, str]:
        """Environment for a ``mariadb`` CLI client: the password, never on a command line."""
        return {"MYSQL_PWD": self.password}

    def start(self, timeout: float = 60.0) -> MariaDB:
        """Copy the template, start the server in the pod's namespace, create the client
        account; returns once it can log in over TCP. On any failure everything made is removed."""
        t0 = time.monotonic()
        template = template_datadir()
        # mkdtemp: 0700, a fresh unguessable name; 0711 so the server account can reach its subdirs
        self.dir = tempfile.mkdtemp(prefix=f"nph-mariadb-{self.lab.run_id}-")
        try:
            self._launch(template)
            self._wait_socket(timeout)
            self._grant()
            self._wait_tcp(timeout)
        except BaseException:
            self.stop()
            raise
        self.started_s = time.monotonic() - t0
        assert self.proc is not None
        log.info("mariadbd %d in %s on %s:%d up in %.2f s", self.proc.pid, self.pod_key, self.ip, self.port,
                 self.started_s)
        return self

    def _launch(self, template: str) -> None:
        assert self.dir is not None
        account = server_account()
        os.chmod(self.dir, 0o711)
        st = self.lab.state
        if st is not None:  # recorded before anything is made in it: gc finds it after a crash
            st.own_path(OWNER, self.dir)
        server = os.path.join(self.dir, "server")
        data = os.path.join(server, "data")
        os.mkdir(server, 0o700)
        os.mkdir(self.files_dir, 0o700)
        os.mkdir(os.path.join(server, "tmp"), 0o700)
        shutil.copytree(os.path.join(template, "data"), data, symlinks=True)
        if account is not None:
            _chown_tree(server, *account)
            os.chown(self.files_dir, *account)
        tls_args: list[str] = []
        if self.tls_names is not None:
            from harness.cluster.tls import make_server_tls

            tls_dir = os.path.join(self.dir, "tls")
            os.mkdir(tls_dir, 0o755)  # the CA is public; the key file itself is 0600, the server's
            self.tls = make_server_tls(tls_dir, names=self.tls_names, ips=[self.ip])
            if account is not None:
                os.chown(self.tls.key, *account)
            tls_args = [f"--ssl-ca={self.tls.ca}", f"--ssl-cert={self.tls.cert}", f"--ssl-key={self.tls.key}"]
        argv = [MARIADBD, "--no-defaults", f"--datadir={data}", f"--socket={self.socket}",
                f"--pid-file={server}/mysqld.pid", f"--log-error={server}/error.log",
                f"--tmpdir={server}/tmp", f"--secure-file-priv={self.files_dir}",
                f"--bind-address={self.ip}", f"--port={self.port}", *SERVER_OPTIONS, *tls_args]
        if account is None:
            argv.append("--user=root")  # no mysql account on this machine: the server refuses root otherwise
        fd = os.open(netns.path(self.lab.pod_netns(self.pod_key)), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.proc = subprocess.Popen(argv, preexec_fn=_preexec(fd, account), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.close(fd)
        if st is not None:
            from harness.lab.state import process_start_time

            st.own_process(OWNER, self.proc.pid, process_start_time(self.proc.pid), marker=self.dir)

    def admin(self, sql: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
        """Run ``sql`` as root over the unix socket (``unix_socket`` authentication: this
        process's uid 0); the completed ``mariadb`` CLI process (not checked)."""
        return subprocess.run([CLIENT, "--no-defaults", f"--socket={self.socket}", "-u", "root", "--batch",
                               "--skip-column-names", "-e", sql], capture_output=True, text=True, timeout=timeout)

    def _alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise HarnessError(f"mariadbd exited with {self.proc.returncode}: {self.error_log_tail()}")

    def _wait_socket(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._alive()
            if os.path.exists(self.socket) and self.admin("SELECT 1", timeout=5).returncode == 0:
                return
            time.sleep(0.05)
        raise HarnessError(f"mariadbd in {self.pod_key} not answering on its socket within {timeout:g} s: "
                           f"{self.error_log_tail()}")

    def _grant(self) -> None:
        # Anonymous accounts would let anyone in; the client gets USAGE only (SELECT 1 needs no more).
        sql = ("DELETE FROM mysql.global_priv WHERE User=''; FLUSH PRIVILEGES; "
               f"CREATE USER {_sql_string(self.user)}@'%' IDENTIFIED BY {_sql_string(self.password)}; "
               f"GRANT USAGE ON *.* TO {_sql_string(self.user)}@'%'")
        if self.tls is not None:
            sql += f"; ALTER USER {_sql_string(self.user)}@'%' REQUIRE SSL"
        if self.database:
            db = "`" + self.database.replace("`", "``") + "`"
            sql += (f"; CREATE DATABASE {db}; CREATE TABLE {db}.backup_probe (id INT PRIMARY KEY, note VARCHAR(32)); "
                    f"INSERT INTO {db}.backup_probe VALUES (1, 'one'), (2, 'two'), (3, 'three'); "
                    f"GRANT SELECT, LOCK TABLES, SHOW VIEW ON {db}.* TO {_sql_string(self.user)}@'%'")
        proc = self.admin(sql)
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if ln.strip()), "?")
            raise HarnessError(f"mariadbd in {self.pod_key}: creating the client account failed: {first}")

    def _wait_tcp(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ns = self.lab.pod_netns(self.pod_key)
        last = "?"
        while time.monotonic() < deadline:
            self._alive()
            last = self.login(ns)
            if not last:
                return
            time.sleep(0.05)
        raise HarnessError(f"mariadbd in {self.pod_key}: {self.user} cannot log in on {self.ip}:{self.port} "
                           f"within {timeout:g} s: {last}")

    def login(self, ns: str, *, user: str | None = None, password: str | None = None,
              timeout_s: float = 1.0) -> str:
        """Log in over TCP from namespace ``ns`` (PyMySQL) and run ``SELECT 1``: "" on success,
        else the client's error (``(1045, "Access denied ...")``). Defaults: the client account."""
        import pymysql

        try:
            select_one(ns, self.ip, self.port, user=self.user if user is None else user,
                       password=self.password if password is None else password, timeout_s=timeout_s,
                       ssl_ca=self.tls.ca if self.tls else None)
        except pymysql.err.MySQLError as e:
            return str(e.args) if e.args else repr(e)
        return ""

    def error_log_tail(self, lines: int = 3) -> str:
        return child.log_tail(os.path.join(self.dir or "", "server", "error.log"), lines, "(no error log)")

    def stop(self) -> None:
        """SIGTERM (clean shutdown), SIGKILL after 10 s; remove the server's directory and its
        entries in the run record."""
        proc, self.proc = self.proc, None
        child.stop(proc, grace_s=10)  # SIGTERM is MariaDB's clean shutdown
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        st = self.lab.state
        if st is not None and (proc is not None or self.dir):
            st.disown(OWNER, pid=proc.pid if proc is not None else None, path=self.dir)
        self.dir = None

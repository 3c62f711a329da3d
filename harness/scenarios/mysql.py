"""Real MySQL clients against the lab's MariaDB server (``harness.cluster.mariadb``).

    with MariaDB(lab, "db/mariadb-0") as db:          # mariadbd bound to the pod's IP:3306
        r = mysql_attempt(lab.pod_netns("batch/job-1"), db.ip, user=db.user, password=db.password)
        r.ok, r.code, r.errno, r.message                  # e.g. False, 2003, "ECONNREFUSED", ...

The server half (template datadir, grants, process ownership) lives in
``harness.cluster.mariadb``; this module is the client's side of the scenario.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass

from harness.cluster.mariadb import CLIENT_USER, PORT, select_one
from harness.kernel import netns
from harness.outcome import Outcome, errno_name, errno_number, exception_errno, from_mysql

log = logging.getLogger(__name__)


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


def mysql_attempt(ns: str, host: str, port: int = PORT, *, user: str = CLIENT_USER, password: str = "",
                  src_ip: str | None = None, timeout_s: float = 1.0) -> MysqlAttempt:
    """Connect with PyMySQL from namespace ``ns`` as ``user``/``password`` (the server's client
    account: ``db.user``, ``db.password``) and run ``SELECT 1`` (``harness.cluster.mariadb.select_one``,
    the path MariaDB's own readiness wait takes); never raises for a network or server error (it
    is the observation: classified here)."""
    import pymysql

    start = time.time_ns()
    try:
        select_one(ns, host, port, user=user, password=password, timeout_s=timeout_s, src_ip=src_ip)
    except pymysql.err.MySQLError as e:
        code = e.args[0] if e.args and isinstance(e.args[0], int) else None
        msg = str(e.args[1]) if len(e.args) > 1 else str(e)
        # PyMySQL wraps the socket error (2003: OSError while connecting, kept as
        # original_exception and as context; 2013: OSError while reading) - its errno decides.
        # A 2013 without one is an EOF: the server side closed the connection.
        return MysqlAttempt(False, start, time.time_ns(), code, errno_name(exception_errno(e)), msg)
    return MysqlAttempt(True, start, time.time_ns())


def cli_attempt(ns: str, host: str, port: int = PORT, timeout_s: int = 2, *, user: str = CLIENT_USER,
                password: str = "") -> tuple[int, str]:
    """The ``mariadb`` command-line client run inside ``ns`` (what a CronJob's shell sees) as
    ``user`` (the password in ``MYSQL_PWD``, never on a command line): (exit code, first line
    of its stderr, e.g. ``ERROR 2002 (HY000): Can't connect ...``)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MYSQL_PWD": password}
    proc = netns.popen(ns, ["mariadb", "--no-defaults", "-h", host, "-P", str(port), "-u", user,
                            f"--connect-timeout={timeout_s}", "-e", "SELECT 1"], env=env, text=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _out, stderr = proc.communicate(timeout=timeout_s + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, stderr = proc.communicate()
    err = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "")
    return proc.returncode, err

"""The reporter's client shape (kube-router #1652): ``mariadb-dump --host=<service name> --ssl
--user=... <db>`` (and the ``mariadb`` CLI), run in a job pod with kubelet's resolv.conf, so
glibc resolves the name through the lab's cluster DNS with its real timeouts and retries.

    run = client_run(dns, lab, "batch/job-0", "mysql.db", db, tool="mariadb-dump")
    run.ok, run.code, run.errno, run.message          # e.g. False, 2005, "EAI_AGAIN", "mariadb-dump: Got error: ..."

``parse_client_error`` (pure) takes the numbers out of the tools' error line: the MySQL client
code and the number in parentheses at its end (``(115)``: an errno; ``(-3)``: a getaddrinfo
code, EAI_AGAIN) or after ``system error:``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from harness.outcome import Outcome, errno_name, errno_number, from_mysql

TOOLS = ("mariadb-dump", "mariadb")
_CODE = re.compile(r"(?:Got error: |ERROR )(\d+)")
_NUM = re.compile(r"(?:\((-?\d+)\)|system error: (-?\d+))[^()]*$")


def error_line(stderr: str) -> str:
    """The line a person reads in the job's log: the first with an error code, else the first."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return next((ln for ln in lines if _CODE.search(ln)), lines[0] if lines else "")


def parse_client_error(line: str) -> tuple[int | None, str | None]:
    """(MySQL client code, errno or EAI name) from a ``mariadb``/``mariadb-dump`` error line:
    ``mariadb-dump: Got error: 2005: "Unknown server host 'mysql.db' (-3)" when trying to
    connect`` -> (2005, "EAI_AGAIN"); ``ERROR 2002 (HY000): Can't connect to server on 'x'
    (115)`` -> (2002, "EINPROGRESS"); ``... system error: 104`` -> (..., "ECONNRESET")."""
    m = _CODE.search(line)
    code = int(m.group(1)) if m else None
    n = _NUM.search(line.rstrip().rstrip('"').removesuffix(" when trying to connect").rstrip('"'))
    num = n.group(1) or n.group(2) if n else None
    return code, errno_name(int(num)) if num is not None else None


@dataclass
class ClientRun:
    """One run of the job's client: exit code 0 = ok; ``code``/``errno`` from its error line
    (verbatim in ``message``); ``output_bytes``: what it wrote to stdout (the dump)."""

    tool: str
    ok: bool
    start_ns: int
    end_ns: int
    exit_code: int | None
    code: int | None = None
    errno: str | None = None
    message: str = ""
    output_bytes: int = 0

    @property
    def outcome(self) -> Outcome:
        """From the numbers (``from_mysql``), never from the words."""
        return Outcome.CONNECTED if self.ok else from_mysql(self.code, errno_number(self.errno))

    def as_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "ok": self.ok, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "exit_code": self.exit_code, "code": self.code, "errno": self.errno, "message": self.message,
                "output_bytes": self.output_bytes, "outcome": self.outcome.word,
                "duration_ms": (self.end_ns - self.start_ns) / 1e6}


def client_argv(tool: str, host: str, user: str, database: str, *, ssl: bool = True, query: str = "SELECT 1",
                ca: str | None = None) -> list[str]:
    """The job's command line: ``mariadb-dump --host=<host> --ssl --user=<user> <db>`` as the
    reporter ran it, or the ``mariadb`` CLI with one query; ``ca``: also verify the server's
    certificate against it (``--ssl-ca``, ``--ssl-verify-server-cert``). No password on it:
    the environment carries ``MYSQL_PWD``."""
    if tool not in TOOLS:
        raise ValueError(f"tool {tool!r} is not one of {', '.join(TOOLS)}")
    argv = [tool, "--no-defaults", f"--host={host}"]
    argv += ["--ssl"] if ssl else ["--skip-ssl"]
    if ca:
        argv += [f"--ssl-ca={ca}", "--ssl-verify-server-cert"]
    argv.append(f"--user={user}")
    if tool == "mariadb-dump":
        return [*argv, "--skip-dump-date", database]
    return [*argv, "--batch", "--skip-column-names", "-e", query, database]


def client_start(dns: Any, lab: Any, pod_key: str, host: str, db: Any, *, tool: str = "mariadb-dump",
                 ssl: bool = True, verify: bool = False, query: str = "SELECT 1") -> tuple[subprocess.Popen, int]:
    """Start the job's client in pod ``pod_key`` with the pod's resolv.conf (``dns.popen``)
    against ``db`` (a ``MariaDB``) by ``host`` name: (process, start ns)."""
    argv = client_argv(tool, host, db.user, db.database or "mysql", ssl=ssl, query=query,
                       ca=db.tls.ca if verify and db.tls else None)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **db.client_env()}
    start = time.time_ns()
    proc = dns.popen(lab, pod_key, argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)
    return proc, start


def client_finish(proc: subprocess.Popen, start: int, tool: str, timeout_s: float = 60.0) -> ClientRun:
    """Wait for a ``client_start`` process: its ClientRun (killed after ``timeout_s``: exit code None)."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        rc = None
    end = time.time_ns()
    text = err.decode(errors="replace")
    if rc == 0:
        return ClientRun(tool, True, start, end, 0, output_bytes=len(out))
    line = error_line(text) or (f"killed after {timeout_s:g} s" if rc is None else f"exit code {rc}")
    code, name = parse_client_error(line)
    return ClientRun(tool, False, start, end, rc, code, name, line, len(out))


def client_run(dns: Any, lab: Any, pod_key: str, host: str, db: Any, *, tool: str = "mariadb-dump",
               ssl: bool = True, verify: bool = False, timeout_s: float = 60.0, query: str = "SELECT 1",
               ) -> ClientRun:
    """Run the job's client to its end (``client_start`` + ``client_finish``); never raises for a
    network or server error (it is the observation)."""
    proc, start = client_start(dns, lab, pod_key, host, db, tool=tool, ssl=ssl, verify=verify, query=query)
    return client_finish(proc, start, tool, timeout_s)

"""The MariaDB scenario server: a real mariadbd in a lab pod, real clients, nothing left behind."""

from __future__ import annotations

import os

import pytest

from harness.errors import EnvironmentProblem
from harness.model.cluster import Pod
from harness.scenarios.mysql import MariaDB, _errno_from_message, cli_attempt, mysql_attempt, require_mariadb


def test_errno_from_pymysql_messages():
    assert _errno_from_message("Can't connect to MySQL server on 'x' ([Errno 111] Connection refused)") == \
        "ECONNREFUSED"
    assert _errno_from_message("Can't connect to MySQL server on 'x' (timed out)") == "ETIMEDOUT"
    assert _errno_from_message("Lost connection to MySQL server during query") == "ECONNRESET"
    assert _errno_from_message("something else") is None


@pytest.mark.kernel
@pytest.mark.topology("default")
def test_mariadb_in_a_pod_answers_real_clients_and_leaves_nothing(lab):
    try:
        require_mariadb()
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    lab.add_pod(Pod("db", "mariadb-0", "node-a", {"app": "mariadb"}))
    lab.add_pod(Pod("batch", "job-0", "node-b", {"app": "backup"}))
    ns = lab.pod_netns("batch/job-0")
    db = MariaDB(lab, "db/mariadb-0").start()
    try:
        pid, datadir = db.proc.pid, db.dir
        assert open(f"/run/netpol-harness/{lab.run_id}/mariadb.pid").read().split()[0] == str(pid)
        # the server lives in the pod's namespace, not the root one
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        ok = mysql_attempt(ns, db.ip)
        assert ok.ok and ok.end_ns > ok.start_ns
        refused = mysql_attempt(ns, db.ip, port=3307)
        assert (refused.ok, refused.code, refused.errno) == (False, 2003, "ECONNREFUSED")
        assert cli_attempt(ns, db.ip) == (0, "")
        code, line = cli_attempt(ns, db.ip, port=3307)
        assert code == 1 and line.startswith("ERROR 2002 (HY000)")
    finally:
        db.stop()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not os.path.exists(datadir)
    assert not os.path.exists(f"/run/netpol-harness/{lab.run_id}/mariadb.pid")

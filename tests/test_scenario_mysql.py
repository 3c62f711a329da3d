"""The MariaDB scenario server: a real mariadbd in a lab pod, real clients, nothing left behind."""

from __future__ import annotations

import os
import pwd
import stat

import pytest

from harness.cluster import mariadb
from harness.cluster.mariadb import MariaDB, require_mariadb, server_account
from harness.errors import EnvironmentProblem, HarnessError
from harness.lab import state
from harness.lab.private_dir import private_dir
from harness.lab.rootns import root_namespace_snapshot
from harness.model.cluster import Pod
from harness.outcome import Outcome, errno_name, exception_errno
from harness.scenarios.mysql import MysqlAttempt, cli_attempt, mysql_attempt


def test_pymysql_errors_are_classified_by_their_numbers_not_their_message():
    """PyMySQL wraps the socket error the way connections.py does (raised inside ``except``, kept
    as ``original_exception``); the outcome comes from the code and that errno."""
    import pymysql

    def wrapped(code: int, cause: BaseException | None, msg: str) -> pymysql.err.OperationalError:
        try:
            try:
                if cause is not None:
                    raise cause
                raise EOFError
            except (OSError, EOFError) as e:
                exc = pymysql.err.OperationalError(code, msg)
                if isinstance(e, OSError):
                    exc.original_exception = e
                raise exc from None if cause is None else e
        except pymysql.err.OperationalError as final:
            return final

    # the message says "timed out", the errno says refused: the errno wins
    e = wrapped(2003, ConnectionRefusedError(111, "Connection refused"), "Can't connect (timed out)")
    assert errno_name(exception_errno(e)) == "ECONNREFUSED"
    assert MysqlAttempt(False, 0, 1, 2003, errno_name(exception_errno(e)), str(e)).outcome is Outcome.REFUSED
    e = wrapped(2003, TimeoutError("timed out"), "Can't connect")
    assert MysqlAttempt(False, 0, 1, 2003, errno_name(exception_errno(e))).outcome is Outcome.TIMEOUT
    # 2013 without a socket error under it (EOF): the server side closed it
    e = wrapped(2013, None, "Lost connection to MySQL server during query")
    assert exception_errno(e) is None
    assert MysqlAttempt(False, 0, 1, 2013, None, "refused [Errno 111]").outcome is Outcome.RESET
    assert MysqlAttempt(True, 0, 1).outcome is Outcome.CONNECTED


def _need_mariadb():
    try:
        require_mariadb()
    except EnvironmentProblem as e:
        pytest.skip(str(e))


def _status_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("Uid:")).split()[1])


@pytest.mark.kernel
@pytest.mark.topology("default")
def test_mariadb_in_a_pod_answers_real_clients_and_leaves_nothing(lab):
    _need_mariadb()
    lab.add_pod(Pod("db", "mariadb-0", "node-a", {"app": "mariadb"}))
    lab.add_pod(Pod("batch", "job-0", "node-b", {"app": "backup"}))
    ns = lab.pod_netns("batch/job-0")
    before = root_namespace_snapshot()
    db = MariaDB(lab, "db/mariadb-0").start()
    try:
        pid, datadir = db.proc.pid, db.dir
        # the run record owns the server and its directory (gc stops them without knowing MariaDB)
        owned = state.load(lab.run_id).owned
        assert {(o["owner"], o["kind"], o.get("pid"), o.get("path")) for o in owned} == {
            ("mariadb", "process", pid, None), ("mariadb", "path", None, datadir)}
        assert not os.path.exists(f"/run/netpol-harness/{lab.run_id}/mariadb.pid")
        # the server lives in the pod's namespace, not the root one
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        creds = {"user": db.user, "password": db.password}
        ok = mysql_attempt(ns, db.ip, **creds)
        assert ok.ok and ok.end_ns > ok.start_ns
        refused = mysql_attempt(ns, db.ip, port=3307, **creds)
        assert (refused.ok, refused.code, refused.errno) == (False, 2003, "ECONNREFUSED")
        assert refused.outcome is Outcome.REFUSED
        assert cli_attempt(ns, db.ip, **creds) == (0, "")
        code, line = cli_attempt(ns, db.ip, port=3307, **creds)
        assert code == 1 and line.startswith("ERROR 2002 (HY000)")
    finally:
        db.stop()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not os.path.exists(datadir)
    assert state.load(lab.run_id).owned == []
    assert root_namespace_snapshot() == before, "the root namespace changed around a MariaDB server"


@pytest.mark.kernel
@pytest.mark.topology("default")
def test_mariadb_refuses_strangers_and_host_files(lab, tmp_path):
    """Grant tables on: no login without the generated password, none as root or anonymous
    over TCP; no file access outside the empty --secure-file-priv directory; not root."""
    _need_mariadb()
    lab.add_pod(Pod("db", "mariadb-0", "node-a", {"app": "mariadb"}))
    lab.add_pod(Pod("batch", "job-0", "node-b", {"app": "backup"}))
    ns = lab.pod_netns("batch/job-0")
    target = f"/tmp/nph-outfile-{lab.run_id}"
    with MariaDB(lab, "db/mariadb-0") as db:
        assert db.login(ns) == ""
        for user, password in ((db.user, ""), (db.user, "wrong"), ("root", ""), ("", ""), ("mysql", "")):
            err = db.login(ns, user=user, password=password)
            assert err.startswith(("(1045,", "(1698,")), (user, password, err)  # Access denied
        wrong = mysql_attempt(ns, db.ip, user=db.user, password="wrong")
        assert not wrong.ok and wrong.code == 1045
        code, line = cli_attempt(ns, db.ip, user=db.user, password="")
        assert code == 1 and line.startswith("ERROR 1045"), line

        import pymysql

        def as_client(sql):
            from harness.kernel import netns
            with netns.entered(ns):
                conn = pymysql.connect(host=db.ip, port=db.port, user=db.user, password=db.password)
            try:
                with conn.cursor() as cur:
                    cur.execute(sql)
                    return cur.fetchall()
            finally:
                conn.close()

        with pytest.raises(pymysql.err.MySQLError):
            as_client(f"SELECT 1 INTO OUTFILE '{target}'")
        assert as_client("SELECT LOAD_FILE('/etc/shadow')") == ((None,),)
        # even root (the harness, over the unix socket) is held to the empty --secure-file-priv dir
        assert db.admin("SELECT 1").stdout.strip() == "1"
        out = db.admin(f"SELECT 1 INTO OUTFILE '{target}'")
        assert out.returncode != 0 and "secure-file-priv" in out.stderr, out.stderr
        assert db.admin("SELECT LOAD_FILE('/etc/shadow') IS NULL").stdout.strip() == "1"
        assert db.admin("SELECT @@secure_file_priv").stdout.strip().rstrip("/") == db.files_dir
        assert os.listdir(db.files_dir) == []
        assert "--skip-grant-tables" not in open(f"/proc/{db.proc.pid}/cmdline").read()
        if server_account() is not None:
            assert _status_uid(db.proc.pid) == pwd.getpwnam("mysql").pw_uid != 0
        else:
            assert _status_uid(db.proc.pid) == 0
    assert not os.path.exists(target)


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (chown to another uid)")


def test_template_cache_is_not_in_world_writable_var_tmp():
    assert not mariadb.CACHE_ROOT.startswith(("/var/tmp", "/tmp"))
    if os.geteuid() == 0 and os.path.exists(mariadb.MARIADBD):
        path = mariadb.template_datadir()
        assert path.startswith(mariadb.CACHE_ROOT + "/")
        st = os.lstat(mariadb.CACHE_ROOT)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)


@pytest.mark.parametrize("attack", ["foreign-dir", "symlink", "world-writable", "foreign-parent"])
def test_a_template_cache_prepared_by_someone_else_is_refused(tmp_path, attack):
    """Another local user pre-creates the cache (or a symlink to a directory they own, with a
    fake ``ready`` template in it): root refuses it with one line naming the path."""
    _need_root()
    _need_mariadb()
    nobody = pwd.getpwnam("nobody").pw_uid
    base = tmp_path / "cache"
    base.mkdir(mode=0o755)
    root = base / "mariadb"
    evil = tmp_path / "evil"
    (evil / "data").mkdir(parents=True)
    (evil / "ready").write_text("")
    os.chown(evil, nobody, -1)
    version = mariadb._version()
    if attack == "foreign-dir":
        root.mkdir(mode=0o700)
        os.rename(evil, root / version)
        os.chown(root, nobody, -1)
    elif attack == "symlink":
        root.mkdir(mode=0o700)
        os.symlink(evil, root / version)
    elif attack == "world-writable":
        root.mkdir()
        os.chmod(root, 0o777)
    else:
        os.chown(base, nobody, -1)
    with pytest.raises(HarnessError) as e:
        mariadb.template_datadir(str(root))
    msg = str(e.value)
    assert "\n" not in msg and "refusing" in msg and str(base) in msg


def test_private_dir_creates_root_0700_and_accepts_sticky_tmp(tmp_path):
    _need_root()
    d = tmp_path / "a" / "b"
    os.chmod(tmp_path, 0o1777)  # like /tmp: sticky, world-writable, root-owned
    assert private_dir(str(d)) == str(d)
    for p in (tmp_path / "a", d):
        st = os.lstat(p)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)
    os.chmod(tmp_path, 0o777)  # world-writable without the sticky bit: anyone could rename a/
    with pytest.raises(HarnessError, match="writable by group or others"):
        private_dir(str(d))
    with pytest.raises(HarnessError, match="absolute"):
        private_dir("relative/x")


def test_container_attempt_from_the_mariadb_cli_run():
    """A docker job pod's run as the job's first attempt: the CLI's error line parsed verbatim."""
    from harness.lab.docker_pods import JobResult
    from harness.scenarios.job import cli_error_line, container_attempt

    line = "ERROR 2002 (HY000): Can't connect to server on '10.244.0.6' (115)"
    failed = container_attempt(JobResult("batch/job-0", 1, 2, 5, 1, f"{line}\n", go_ns=4, finished_ns=9))
    assert (failed.ok, failed.code, failed.errno, failed.message) == (False, 2002, "EINPROGRESS", line)
    assert (failed.start_ns, failed.end_ns) == (5, 9)
    assert failed.outcome is Outcome.ERROR  # 115: the CLI's connect failed, refused or timed out alike
    ok = container_attempt(JobResult("batch/job-1", 1, 2, 5, 0, "1\n", finished_ns=7))
    assert ok.ok and ok.code is None and ok.outcome == "connected"
    hung = container_attempt(JobResult("batch/job-2", 1, 2, 5, None, ""))
    assert not hung.ok and hung.errno == "ETIMEDOUT" and hung.message.startswith("still running")
    assert cli_error_line("Warning: x\nERROR 2003 (HY000): y (111)\n") == "ERROR 2003 (HY000): y (111)"
    refused = container_attempt(JobResult("k", 1, 2, 5, 1, "ERROR 2003 (HY000): y (111)"))
    assert (refused.errno, refused.outcome) == ("ECONNREFUSED", Outcome.REFUSED)
    lost = container_attempt(JobResult("k", 1, 2, 5, 1, "ERROR 2013 (HY000): Lost connection to server at "
                                       "'handshake: reading initial communication packet', system error: 104"))
    assert (lost.code, lost.errno, lost.outcome) == (2013, "ECONNRESET", Outcome.RESET)
    assert hung.outcome is Outcome.TIMEOUT


def test_docker_job_config_refuses_client_mitigations():
    from harness.errors import ConfigError
    from harness.scenarios.job import JobConfig, JobScenario

    with pytest.raises(ConfigError, match=r"docker-retry: mitigation: retry wraps"):
        JobScenario(object(), JobConfig("docker-retry", mitigation="retry", pod_backend="docker"))
    with pytest.raises(ConfigError, match=r"x: pod_backend: 'vm' is not one of netns, docker"):
        JobScenario(object(), JobConfig("x", pod_backend="vm"))


def test_scenario_cluster_at_scale_adds_seeded_policies_outside_the_scenario_namespaces(tmp_path):
    """scale-100 + 100 synthetic policies: node-a/node-b real, the policies live in the
    topology's namespaces (never db or batch), and the same seed gives the same policies."""
    from harness.errors import ConfigError
    from harness.model.policy import LabelSelector
    from harness.scenarios.clusters import SCALE_POLICIES, is_default, scenario_cluster
    from harness.scenarios.job import allow_backup

    c = scenario_cluster("scale-100", SCALE_POLICIES, seed=0)
    assert len(c.nodes) == 100 and len(c.pods) == 5000 and len(c.policies) == SCALE_POLICIES
    assert c.nodes["node-a"].is_real and c.nodes["node-b"].is_real
    assert not {p.namespace for p in c.policies.values()} & {"db", "batch"}
    # no generated policy selects the scenario's pods: they exist in db/batch only
    server = Pod("db", "mariadb-0", "node-a", {"app": "mariadb"})
    assert not any(p.namespace == server.namespace and p.pod_selector.matches(server.labels)
                   for p in c.policies.values())
    assert allow_backup().pod_selector == LabelSelector.of({"app": "mariadb"})
    again = scenario_cluster("scale-100", SCALE_POLICIES, seed=0)
    assert list(again.policies) == list(c.policies) and again.policies == c.policies
    assert scenario_cluster("default").policies == {} and is_default("default", 0)
    assert not is_default("scale-100", 0) and not is_default("default", 5)
    bad = tmp_path / "one-node.yaml"
    bad.write_text("name: one\nnodes:\n  - {name: node-a, kind: real}\n")
    with pytest.raises(ConfigError, match="node-b"):
        scenario_cluster(str(bad))


GC_CHILD = """
import time
from harness.cluster.mariadb import MariaDB
from harness.lab.lab import Lab
from harness.model.cluster import Pod
from harness.model.topology import load_topology
lab = Lab(load_topology("default"), servers=False)
lab.up()
lab.add_pod(Pod("db", "mariadb-0", "node-a", {"app": "mariadb"}))
db = MariaDB(lab, "db/mariadb-0").start()
print(lab.run_id, db.proc.pid, db.dir, flush=True)
time.sleep(300)
"""


@pytest.mark.kernel
def test_gc_after_a_killed_owner_removes_the_server_and_its_files():
    """SIGKILL the process that runs a lab with a MariaDB server: ``gc`` removes the run, and
    with it the server's process and directory, from the run record alone."""
    import signal
    import subprocess
    import sys

    _need_mariadb()
    if os.geteuid() != 0:
        pytest.skip("needs root")
    child = subprocess.Popen([sys.executable, "-c", GC_CHILD], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        run_id, pid_s, datadir = child.stdout.readline().split()  # type: ignore[union-attr]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert [o["kind"] for o in state.load(run_id).owned] == ["path", "process"]
    rep = state.gc()
    assert run_id in rep.removed
    assert not os.path.exists(datadir)
    with pytest.raises(HarnessError):
        state.load(run_id)
    cmd = open(f"/proc/{pid_s}/cmdline", "rb").read() if os.path.exists(f"/proc/{pid_s}") else b""
    assert datadir.encode() not in cmd  # the server is gone (PDEATHSIG, else gc's stop)


def test_template_is_built_root_only_and_a_half_made_one_is_replaced(tmp_path):
    _need_root()
    _need_mariadb()
    root = tmp_path / "cache" / "mariadb"
    half = root / mariadb._version()
    half.mkdir(parents=True, mode=0o700)  # a crashed build: no ready marker
    os.chmod(root.parent, 0o700)
    os.chmod(root, 0o700)
    (half / "junk").write_text("x")
    path = mariadb.template_datadir(str(root))
    assert path == str(half) and (half / "ready").is_file() and not (half / "junk").exists()
    assert (half / "data" / "mysql").is_dir()
    for p in (root, half):
        st = os.lstat(p)
        assert (st.st_uid, stat.S_IMODE(st.st_mode) & 0o077) == (0, 0), p
    assert mariadb.template_datadir(str(root)) == path  # cached: reused as is

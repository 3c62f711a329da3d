"""The MariaDB scenario server: a real mariadbd in a lab pod, real clients, nothing left behind."""

from __future__ import annotations

import os

import pytest

from harness.errors import EnvironmentProblem
from harness.model.cluster import Pod
from harness.outcome import Outcome, errno_name, exception_errno
from harness.scenarios.mysql import MariaDB, MysqlAttempt, cli_attempt, mysql_attempt, require_mariadb


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
        assert refused.outcome is Outcome.REFUSED
        assert cli_attempt(ns, db.ip) == (0, "")
        code, line = cli_attempt(ns, db.ip, port=3307)
        assert code == 1 and line.startswith("ERROR 2002 (HY000)")
    finally:
        db.stop()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not os.path.exists(datadir)
    assert not os.path.exists(f"/run/netpol-harness/{lab.run_id}/mariadb.pid")


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

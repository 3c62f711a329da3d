"""Cluster DNS: dnsmasq in a kube-system pod, kubelet's resolv.conf in a pod's own mount
namespace, real glibc clients resolving through it; nothing left behind."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import pytest

from harness.cluster import dns
from harness.cluster.dns import ClusterDNS, check_records, hosts_file, resolv_conf, stable_ip
from harness.errors import ConfigError, EnvironmentProblem
from harness.lab import state
from harness.lab.rootns import root_namespace_snapshot
from harness.model.cluster import Pod


def test_resolv_conf_is_kubelets_cluster_first_format():
    assert resolv_conf("batch", ["10.244.0.254"]) == (
        "nameserver 10.244.0.254\n"
        "search batch.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n")
    # the host's search list follows, duplicates omitted (omitDuplicates)
    assert resolv_conf("db", ["10.96.0.10"], host_search=["cluster.local", "corp.example"]).splitlines()[1] == \
        "search db.svc.cluster.local svc.cluster.local cluster.local corp.example"


def test_records_are_checked_and_written_sorted():
    recs = check_records({"Mysql.db.svc.cluster.local.": ["10.244.0.3"], "a.b.svc.cluster.local": []})
    assert recs == {"mysql.db.svc.cluster.local": [ipaddress.IPv4Address("10.244.0.3")],
                    "a.b.svc.cluster.local": []}
    assert hosts_file({"b.x.svc.cluster.local": [ipaddress.IPv4Address("10.0.0.2")],
                       "a.x.svc.cluster.local": [ipaddress.IPv4Address("10.0.0.9")]}) == \
        "10.0.0.2 b.x.svc.cluster.local\n10.0.0.9 a.x.svc.cluster.local\n"
    with pytest.raises(ConfigError, match=r"records\.example\.com: not a name under cluster\.local"):
        check_records({"example.com": ["10.0.0.1"]})
    with pytest.raises(ConfigError, match=r"records\.x\.y\.svc\.cluster\.local"):
        check_records({"x.y.svc.cluster.local": ["fd00::1"]})


def _need_dnsmasq():
    try:
        dns.require_dnsmasq()
    except EnvironmentProblem as e:
        pytest.skip(str(e))


GETADDRINFO = ("import socket, sys, time\n"
               "t = time.monotonic()\n"
               "try:\n"
               "    r = sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 3306, socket.AF_INET)})\n"
               "    print('ok', ' '.join(r), f'{time.monotonic() - t:.3f}')\n"
               "except socket.gaierror as e:\n"
               "    print('gaierror', e.errno, f'{time.monotonic() - t:.3f}', e.strerror)\n")


def _resolve(d: ClusterDNS, lab, pod: str, name: str) -> list[str]:
    p = d.popen(lab, pod, [sys.executable, "-c", GETADDRINFO, name], stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    return out.split()


@pytest.mark.kernel
@pytest.mark.topology("default")
def test_dnsmasq_serves_records_follows_updates_and_leaves_nothing(lab):
    _need_dnsmasq()
    lab.add_pod(Pod("db", "mariadb-0", "node-a", {"app": "mariadb"}))
    lab.add_pod(Pod("batch", "job-0", "node-b", {"app": "backup"}))
    db_ip = str(lab.cluster.pods["db/mariadb-0"].ip)
    before = root_namespace_snapshot()
    host_resolv = open("/etc/resolv.conf", "rb").read()
    d = ClusterDNS(lab, {"mysql.db.svc.cluster.local": [db_ip]}).start()
    try:
        pid, ddir = d.proc.pid, d.dir
        assert d.ip == str(stable_ip(lab.cluster, "node-a")) == "10.244.0.254"
        owned = state.load(lab.run_id).owned
        assert {(o["owner"], o["kind"], o.get("pid"), o.get("path")) for o in owned} >= {
            ("dns", "process", pid, None), ("dns", "path", None, ddir)}
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert open(f"/proc/{pid}/status").read().split("Uid:")[1].split()[0] != "0"  # not root
        ns = lab.pod_netns("batch/job-0")
        assert dns.query(ns, d.ip, "mysql.db.svc.cluster.local") == ("NOERROR", [db_ip])
        assert dns.query(ns, d.ip, "nope.db.svc.cluster.local") == ("NXDOMAIN", [])
        # no upstream: a name outside the cluster is not forwarded anywhere (answered NXDOMAIN)
        assert dns.query(ns, d.ip, "example.com") == ("NXDOMAIN", [])
        assert "forwarded" not in open(d.log_path).read()
        # glibc through kubelet's resolv.conf: the short name via the search list (ndots:5)
        words = _resolve(d, lab, "batch/job-0", "mysql.db")
        assert words[:2] == ["ok", db_ip], words
        words = _resolve(d, lab, "batch/job-0", "nope.db")
        assert words[:2] == ["gaierror", "-2"], words  # EAI_NONAME: every search domain said NXDOMAIN
        # the mariadb CLI's resolver: getent uses the same glibc path
        p = d.popen(lab, "batch/job-0", ["getent", "ahostsv4", "mysql.db"], stdout=subprocess.PIPE, text=True)
        assert db_ip in p.communicate(timeout=10)[0]
        # the host's resolv.conf is untouched, the pod saw its own
        p = d.popen(lab, "batch/job-0", ["cat", "/etc/resolv.conf"], stdout=subprocess.PIPE, text=True)
        assert p.communicate(timeout=10)[0] == resolv_conf("batch", [d.ip])
        assert open("/etc/resolv.conf", "rb").read() == host_resolv
        # updates: a changed address, a new name, a removed name are served without a restart
        delay = d.update({"mysql.db.svc.cluster.local": ["10.244.0.77"], "web.db.svc.cluster.local": [db_ip]})
        assert 0 < delay < 5
        assert dns.query(ns, d.ip, "mysql.db.svc.cluster.local") == ("NOERROR", ["10.244.0.77"])
        assert dns.query(ns, d.ip, "web.db.svc.cluster.local") == ("NOERROR", [db_ip])
        d.update({"web.db.svc.cluster.local": [db_ip]})
        assert dns.query(ns, d.ip, "mysql.db.svc.cluster.local") == ("NXDOMAIN", [])
        assert d.proc.pid == pid
    finally:
        d.stop()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not os.path.exists(ddir)
    assert [o for o in state.load(lab.run_id).owned if o["owner"] == "dns"] == []
    assert "kube-system/kube-dns-0" not in lab.cluster.pods
    assert root_namespace_snapshot() == before, "the root namespace changed around the DNS server"


GC_CHILD = """
import time
from harness.cluster.dns import ClusterDNS
from harness.lab.lab import Lab
from harness.model.topology import load_topology
lab = Lab(load_topology("default"), servers=False)
lab.up()
d = ClusterDNS(lab, {"mysql.db.svc.cluster.local": ["10.244.0.9"]}).start()
print(lab.run_id, d.proc.pid, d.dir, flush=True)
time.sleep(300)
"""


@pytest.mark.kernel
def test_gc_after_a_killed_owner_removes_the_dns_server_and_its_files():
    """SIGKILL the process that runs a lab with the DNS server: ``gc`` removes the run, and with
    it dnsmasq and its directory, from the run record alone."""
    import signal

    _need_dnsmasq()
    if os.geteuid() != 0:
        pytest.skip("needs root")
    child = subprocess.Popen([sys.executable, "-c", GC_CHILD], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        run_id, pid_s, ddir = child.stdout.readline().split()  # type: ignore[union-attr]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert {o["kind"] for o in state.load(run_id).owned if o["owner"] == "dns"} == {"path", "process"}
    rep = state.gc()
    assert run_id in rep.removed
    assert not os.path.exists(ddir)
    cmd = open(f"/proc/{pid_s}/cmdline", "rb").read() if os.path.exists(f"/proc/{pid_s}") else b""
    assert ddir.encode() not in cmd  # dnsmasq is gone (PDEATHSIG, else gc's stop)


@pytest.mark.kernel
@pytest.mark.topology("default")
def test_mariadb_dump_over_tls_by_service_name(lab):
    """The reporter's client shape through the pod's resolv.conf: ``mariadb-dump --host=mysql.db
    --ssl`` dumps the schema; the certificate verifies against the run's CA for that name; a
    client without TLS is refused (REQUIRE SSL)."""
    from harness.cluster.mariadb import MariaDB, require_mariadb
    from harness.scenarios.tls_client import client_run

    _need_dnsmasq()
    try:
        require_mariadb()
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    lab.add_pod(Pod("db", "mariadb-0", "node-a", {"app": "mariadb"}))
    lab.add_pod(Pod("batch", "job-0", "node-b", {"app": "backup"}))
    ip = str(lab.cluster.pods["db/mariadb-0"].ip)
    with ClusterDNS(lab, {"mysql.db.svc.cluster.local": [ip]}) as d, \
            MariaDB(lab, "db/mariadb-0", tls_names=["mysql.db", "mysql.db.svc.cluster.local"], database="app") as db:
        assert os.stat(db.tls.key).st_mode & 0o077 == 0
        run = client_run(d, lab, "batch/job-0", "mysql.db", db, tool="mariadb-dump", verify=True)
        assert run.ok, run.message
        assert run.output_bytes > 0
        out = client_run(d, lab, "batch/job-0", "mysql.db", db, tool="mariadb",
                         query="SHOW STATUS LIKE 'Ssl_version'")
        assert out.ok, out.message
        plain = client_run(d, lab, "batch/job-0", "mysql.db", db, tool="mariadb", ssl=False)
        assert (plain.ok, plain.code) == (False, 1045), plain.message
        # a name the certificate does not carry fails verification
        d.update({"mysql.db.svc.cluster.local": [ip], "other.db.svc.cluster.local": [ip]})
        bad = client_run(d, lab, "batch/job-0", "other.db", db, tool="mariadb", verify=True)
        assert not bad.ok and bad.code == 2026, bad.message

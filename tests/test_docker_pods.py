"""Container-backed pods against a real Docker engine and the real kernel (default topology:
node-a, node-b). One engine per session (``docker_engine``); the engine-lifecycle tests start
their own private engines (~0.3 s each here) to check what stopping one leaves behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys

import pytest

from harness.controller import Controller, ControllerConfig
from harness.errors import HarnessError
from harness.kernel import netns
from harness.lab import state
from harness.lab.docker_engine import (
    ENGINE_ROOT,
    RUN_LABEL,
    Engine,
    cgroup_dirs,
    gc_engines,
    procs_referencing,
)
from harness.lab.docker_fixtures import docker_skip_reason
from harness.lab.docker_pods import DockerLab, run_job_container
from harness.lab.rootns import root_namespace_snapshot
from harness.model.cluster import ContainerPort, Pod
from harness.model.policy import LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule

pytestmark = pytest.mark.kernel


def _connect(lab, src, dst, port=80, protocol="TCP"):
    # No settle time and no retry: network ready means forwarding (Lab.adopt_pod waits for it).
    return lab.connect(src, dst, port, protocol, timeout=0.5)


def root_snapshot() -> dict[str, object]:
    """What the root network namespace looks like (links, addresses, routes, netfilter rules
    without counters, ip_forward)."""
    def run(argv):
        p = subprocess.run(argv, capture_output=True, text=True)
        return p.stdout if p.returncode == 0 else f"<{argv[0]} failed>"

    def rules(text):
        return sorted(ln for ln in text.splitlines() if ln and not ln.startswith(("#", ":")))

    links = sorted(re.sub(r"^\d+: ", "", ln).split(":")[0] for ln in run(["ip", "-o", "link"]).splitlines())
    snap: dict[str, object] = {
        "links": links,
        "addrs": sorted(run(["ip", "-o", "addr"]).splitlines()),
        "routes": sorted(run(["ip", "route", "show", "table", "all"]).splitlines()),
        "iptables": rules(run(["iptables-save"])),
        "ip6tables": rules(run(["ip6tables-save"])),
        "nft": run(["nft", "list", "ruleset"]) if shutil.which("nft") else "",
    }
    for key in ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv4/conf/all/route_localnet"):
        with open("/proc/sys/" + key) as f:
            snap[key] = f.read().strip()
    return snap


def _skip_without_docker():
    reason = docker_skip_reason()
    if reason:
        pytest.skip(reason)


# -- reachability and timestamps ---------------------------------------------------------------
def test_container_pod_is_reachable_across_nodes_like_a_full_pod(lab, docker_pods):
    web = docker_pods.add(Pod("dock", "web", "node-a", {"app": "web"},
                              ports=[ContainerPort(port=80, protocol="TCP"), ContainerPort(port=81, protocol="UDP")]))
    peer = docker_pods.add(Pod("dock", "peer", "node-b", {"app": "peer"}))
    ip = lab.cluster.pods["dock/web"].ip
    assert ip in lab.cluster.nodes["node-a"].pod_cidr
    assert lab.pod_netns("dock/web") == web.netns and netns.exists(web.netns)
    # a netns pod on the other node -> the container (its echo listeners run in its netns)
    assert _connect(lab, "frontend/web-1", "dock/web", 80) == "connected"
    assert _connect(lab, "frontend/web-1", "dock/web", 81, "UDP") == "connected"
    assert _connect(lab, "frontend/web-1", "dock/web", 0, "ICMP") == "connected"
    # container -> netns pod on the other node, container -> container across nodes
    assert _connect(lab, "dock/web", "frontend/web-1", 80) == "connected"
    assert _connect(lab, "dock/peer", "dock/web", 80) == "connected"
    assert _connect(lab, "dock/peer", "dock/web", 82) == "refused"  # real kernel: nothing listens
    # inside the container (its own mounts and processes) the pod's eth0 is what the lab made
    code, out = docker_pods.exec("dock/web", ["ip", "-4", "-o", "addr", "show", "eth0"])
    assert code == 0 and f"inet {ip}/24" in out
    code, out = docker_pods.exec("dock/peer", ["ip", "route"])
    assert code == 0 and "default via 10.244.1.1 dev eth0" in out
    # a real client from the host's programs, inside the container, across nodes
    code, out = docker_pods.exec("dock/peer", ["python3", "-c",
                                 f"import socket; socket.create_connection(('{ip}', 80), timeout=2); print('up')"])
    assert (code, out.strip()) == (0, "up")
    assert peer.sandbox_ns < peer.network_ready_ns
    rows = {r[0]: r for r in docker_pods.describe()[1]}
    assert rows["dock/web"][2] == "container" and rows["frontend/web-1"][2] == "full"


def test_job_container_timestamps_in_kubelet_order(lab, docker_pods):
    target = lab.cluster.pods["frontend/web-0"].ip  # node-a, echo on 80
    argv = ["python3", "-c", "import socket, sys, time; t = time.time_ns(); "
            f"socket.create_connection(('{target}', 80), timeout=2).close(); print(t); sys.exit(3)"]
    res = run_job_container(lab, Pod("batch", "job-1", "node-b", {"app": "backup"}), argv, pods=docker_pods)
    assert res.exit_code == 3, res.output
    client_t = int(res.output.strip().splitlines()[-1])  # the application's own first clock reading
    assert 0 < res.sandbox_ns < res.network_ready_ns <= res.go_ns <= res.app_started_ns <= client_t
    assert res.finished_ns is not None and client_t < res.finished_ns < res.removed_ns
    # the job's command started right after network ready (not after some fixed wait)
    assert res.app_started_ns - res.network_ready_ns < 1e9
    # removal mirrors CNI DEL: the pod, its namespace, container and control dir are gone
    assert "batch/job-1" not in lab.cluster.pods and "batch/job-1" not in lab.realized_pods()
    assert not [n for n in netns.list_names(lab.prefix) if n.startswith(lab.prefix + "d-")]
    assert not docker_pods.engine.client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={lab.run_id}"})
    assert not os.listdir(os.path.join(state.STATE_ROOT, lab.run_id, "docker"))


def test_failed_job_reports_exit_code_and_output(lab, docker_pods):
    res = run_job_container(lab, Pod("batch", "job-bad", "node-a"), ["sh", "-c", "echo nope >&2; exit 7"],
                            pods=docker_pods)
    assert (res.exit_code, res.output.strip()) == (7, "nope")
    assert not res.ok


def test_no_leftovers_after_manager_closes(lab, docker_engine):
    from harness.lab.docker_pods import DockerPods

    with DockerPods(lab, docker_engine) as pods:
        cps = [pods.add(Pod("dock", f"p{i}", node)) for i, node in enumerate(["node-a", "node-b", "node-a"])]
        assert all(netns.exists(c.netns) for c in cps)
    client = docker_engine.client
    assert not client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={lab.run_id}"})
    assert not any(netns.exists(c.netns) for c in cps)
    assert not [k for k in lab.cluster.pods if k.startswith("dock/")]
    assert lab.realized_pods() == [k for k in lab.cluster.pods if not lab.cluster.pods[k].node.startswith("v")]


def test_controller_events_for_a_container_job_pod(lab, docker_engine):
    """kube-router #1652 with a real container: the job's client, started right after network
    ready, is refused until the server's node (0.6 s late) has synced the pod into the policy."""
    from harness.errors import EnvironmentProblem
    from harness.kernel.backends import require_tools
    from harness.lab.docker_pods import DockerPods

    try:
        require_tools("nft")
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    pol = NetworkPolicy("db", "allow-backup", LabelSelector.of({"app": "mysql"}), ("Ingress",),
                        ingress=(PolicyRule(peers=(PolicyPeer(
                            pod_selector=LabelSelector.of({"app": "backup"}),
                            namespace_selector=LabelSelector.of({"kubernetes.io/metadata.name": "batch"})),),
                            ports=(PolicyPort("TCP", 3306),)),))
    lab.cluster.policies[pol.key] = pol
    server = lab.cluster.pods["db/mysql-0"].ip
    client = ("import socket, time, errno\n"
              "end = time.monotonic() + 6\n"
              "while time.monotonic() < end:\n"
              "    t = time.time_ns()\n"
              "    try:\n"
              f"        socket.create_connection(('{server}', 3306), timeout=0.3).close(); print(t, 'ok'); break\n"
              "    except OSError as e:\n"
              "        print(t, errno.errorcode.get(e.errno, 'timeout'), flush=True); time.sleep(0.02)\n")
    with DockerPods(lab, docker_engine) as pods:
        dlab = DockerLab(lab, pods)
        with Controller(dlab, ControllerConfig(backend="nft", delivery={"node-a": 0.6, "node-b": 0.0})) as ctl:
            dlab.set_command("batch/job-1", ["python3", "-c", client])
            added = ctl.add_pod(Pod("batch", "job-1", "node-b", {"app": "backup"}))
            assert pods.is_container("batch/job-1") and added.pod.ip is not None
            assert added.ready_ns == pods.pods["batch/job-1"].network_ready_ns
            res = pods.result("batch/job-1", timeout=15)
            ctl.await_event(added.event.seq, timeout=10, nodes="node-a")
            sync_a = ctl.timeline.sync_including("node-a", added.event.seq)
            assert sync_a is not None and sync_a.ok
            lines = [ln.split() for ln in res.output.splitlines()]
            assert res.exit_code == 0 and lines[-1][1] == "ok", res.output
            refused = [int(t) for t, what in lines if what == "ECONNREFUSED"]
            assert refused, res.output  # kube-router's REJECT before node-a knew the pod
            assert all(t < sync_a.in_force_ns for t in refused)
            # the app's first try came right away: after the release (go_ns) and no later than
            # shortly after app_started_ns, which is only an upper bound of the exec (a poll: under
            # load the app's first connect was seen 2.9 ms before it; 50 ms is generous for 2 cores)
            assert res.go_ns <= int(lines[0][0]) <= res.app_started_ns + 50_000_000
            assert not ctl.errors
            dlab.remove_pod("batch/job-1")
            assert "batch/job-1" not in lab.cluster.pods


def test_mariadb_client_job_container_against_a_real_server(lab, docker_pods):
    """The job-to-mysql scenario's docker configuration in one run: the real ``mariadb`` client
    as the container's command, started right after network ready, against a real MariaDB."""
    from harness.cluster.mariadb import MariaDB, require_mariadb
    from harness.lab.docker_pods import mariadb_job_argv

    try:
        require_mariadb()
    except HarnessError as e:
        pytest.skip(str(e))
    lab.add_pod(Pod("db", "mariadb-0", "node-a", {"app": "mariadb"}))
    before = root_namespace_snapshot()
    with MariaDB(lab, "db/mariadb-0") as db:
        res = run_job_container(lab, Pod("batch", "job-1", "node-b", {"app": "backup"}),
                                mariadb_job_argv(db.ip, db.port, query="SELECT 40 + 2", user=db.user),
                                pods=docker_pods, env=db.client_env())
        # without the password (the container's MYSQL_PWD) the same client is refused
        denied = run_job_container(lab, Pod("batch", "job-2", "node-b", {"app": "backup"}),
                                   mariadb_job_argv(db.ip, db.port, user=db.user), pods=docker_pods)
    assert (res.exit_code, res.output.strip()) == (0, "42"), res.output
    assert denied.exit_code == 1 and "ERROR 1045" in denied.output, denied.output
    assert root_namespace_snapshot() == before, "the root namespace changed around a docker + MariaDB run"
    assert res.sandbox_ns < res.network_ready_ns <= res.app_started_ns < (res.finished_ns or 0)


# -- the engine itself -------------------------------------------------------------------------
def test_private_engine_leaves_root_namespace_and_host_unchanged(lab):
    _skip_without_docker()
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from harness.lab.docker_pods import DockerPods

    before = root_snapshot()
    before_bytes = root_namespace_snapshot()
    had_key = os.path.exists("/etc/docker/key.json")
    eng = Engine.start_private()
    try:
        d = eng.dir
        assert d is not None and os.path.isdir(d)
        # root only: no member of the host's docker group can command this engine
        sock = os.stat(os.path.join(d, "docker.sock"))
        assert (stat.S_IMODE(sock.st_mode), sock.st_uid, sock.st_gid) == (0o600, 0, 0)
        for p in (ENGINE_ROOT, d):
            assert stat.S_IMODE(os.stat(p).st_mode) & 0o077 == 0, p
        with DockerPods(lab, eng) as pods:
            pods.add(Pod("dock", "x", "node-a"))
            assert eng.client.images.list(filters={"label": "netpol-harness"})
            # a minimal /etc: no /etc/shadow, no host accounts; host programs still run
            code, out = pods.exec("dock/x", ["sh", "-c", "test -e /etc/shadow; echo $?; cut -d: -f1 /etc/passwd"])
            assert (code, out.split()) == (0, ["1", "root", "nobody"]), out
            code, out = pods.exec("dock/x", ["python3", "-c", "print(6 * 7)"])
            assert (code, out.strip()) == (0, "42"), out
            during = root_snapshot()
            during_bytes = root_namespace_snapshot()
    finally:
        eng.close()
    after = root_snapshot()
    assert "docker0" not in during["links"]  # type: ignore[operator]
    assert not [r for r in during["iptables"] if "DOCKER" in r]  # type: ignore[union-attr]
    assert during == before, "the root namespace changed while the engine ran"
    assert after == before
    assert during_bytes == before_bytes and root_namespace_snapshot() == before_bytes
    assert os.path.exists("/etc/docker/key.json") == had_key
    # everything the engine had is gone: directory (data root with the image), processes, cgroups, mounts
    assert not os.path.exists(d)
    assert not procs_referencing(d)
    assert not cgroup_dirs(f"nph-docker-{eng.engine_id}")
    with open("/proc/self/mountinfo") as f:
        assert d not in f.read()


GC_CHILD = """
import sys, time
from harness.lab.docker_engine import Engine, RUN_LABEL
eng = Engine.start_private()
img = eng.pod_image()
c = eng.client.containers.create(img, command=["sleep", "300"], network_mode="none",
    volumes=Engine.host_mounts(), cgroup_parent=eng.cgroup_parent, labels={RUN_LABEL: "000000"})
c.start()
print(eng.dir, eng.engine_id, flush=True)
time.sleep(300)
"""


def test_gc_removes_the_engine_of_a_killed_owner():
    _skip_without_docker()
    if os.geteuid() != 0:
        pytest.skip("needs root")
    child = subprocess.Popen([sys.executable, "-c", GC_CHILD], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        line = child.stdout.readline().split()  # type: ignore[union-attr]
        assert len(line) == 2, "child did not start its engine"
        d, eid = line
        assert procs_referencing(d), "dockerd should run"
        assert cgroup_dirs(f"nph-docker-{eid}")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    removed = gc_engines()
    assert eid in removed
    assert not os.path.exists(d)
    assert not procs_referencing(d)
    assert not cgroup_dirs(f"nph-docker-{eid}")  # its container was killed with it
    assert eid not in os.listdir(ENGINE_ROOT)


def test_gc_on_a_reused_engine_removes_dead_runs_containers_and_images():
    """A user's engine (here: a private one seen as reused) keeps nothing of a dead run."""
    _skip_without_docker()
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from harness.lab.docker_pods import gc_containers

    eng = Engine.start_private()
    try:
        user = Engine(eng.client, eng.base_url, private=False)
        img = user.pod_image()
        dead = eng.client.containers.create(img, command=["true"], network_mode="none",
                                            labels={RUN_LABEL: "dead00"}, cgroup_parent=eng.cgroup_parent)
        other = eng.client.containers.create(img, command=["true"], network_mode="none",
                                             labels={"someone": "else"}, cgroup_parent=eng.cgroup_parent)
        removed = gc_containers(user)
        names = [c.name for c in eng.client.containers.list(all=True)]
        assert dead.name in removed and dead.name not in names
        assert other.name in names  # not ours: never touched, nor the image it uses
        assert eng.client.images.list(filters={"label": "netpol-harness=pod-image"})
        other.remove()
        gc_containers(user)
        assert not eng.client.images.list(filters={"label": "netpol-harness=pod-image"})
    finally:
        eng.close()


def test_up_docker_turns_selected_pods_into_containers_with_the_same_address(lab, docker_engine):
    from harness.lab.docker_pods import select_pods, up_docker

    assert select_pods(lab, "app=web") == ["frontend/web-0", "frontend/web-1"]
    ip = lab.cluster.pods["frontend/web-1"].ip
    pods = up_docker(lab, "frontend/web-1", docker_engine)
    try:
        assert pods.is_container("frontend/web-1") and lab.cluster.pods["frontend/web-1"].ip == ip
        assert lab.pod_netns("frontend/web-1").startswith(lab.prefix + "d-")
        rows = {r[0]: r[2] for r in pods.describe()[1]}
        assert rows["frontend/web-1"] == "container" and rows["frontend/web-0"] == "full"
        assert _connect(lab, "frontend/web-0", "frontend/web-1", 80) == "connected"  # its echo server came back
        with pytest.raises(HarnessError, match="expected all, ns/name or label=value"):
            select_pods(lab, "web")
    finally:
        pods.close()
    assert "frontend/web-1" not in lab.cluster.pods

"""The lab on the real kernel: layout, reachability, isolation, cleanup, gc, concurrency."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.errors import ConfigError, HarnessError
from harness.kernel import netns
from harness.lab import state
from harness.lab.lab import Lab
from harness.model.cluster import Cluster, ContainerPort, Node, NodeKind, Pod, PodKind

pytestmark = pytest.mark.kernel
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTS = [ContainerPort(80, "TCP"), ContainerPort(80, "UDP"), ContainerPort(81, "TCP"), ContainerPort(81, "UDP"),
         ContainerPort(82, "SCTP")]

# The same small cluster for in-process tests and child processes (as source text).
CLUSTER_SRC = textwrap.dedent("""
    import ipaddress as ia
    from harness.model.cluster import Cluster, ContainerPort, Node, NodeKind, Pod, PodKind

    def small_cluster(light=True):
        c = Cluster(name="lab-test")
        for i, n in enumerate(["node-a", "node-b"]):
            c.nodes[n] = Node(n, ia.IPv4Address(f"172.18.0.{i + 2}"), ia.IPv4Network(f"10.244.{i}.0/24"))
        c.nodes["node-v"] = Node("node-v", ia.IPv4Address("172.18.0.99"), ia.IPv4Network("10.244.9.0/24"),
                                 NodeKind.VIRTUAL)
        ports = [ContainerPort(80, "TCP"), ContainerPort(80, "UDP"), ContainerPort(81, "TCP"),
                 ContainerPort(81, "UDP"), ContainerPort(82, "SCTP")]
        for node in ("node-a", "node-b"):
            tag = node[-1]
            c.add_pod(Pod("x", f"full-{tag}1", node, {"pod": "full"}, ports=list(ports)))
            c.add_pod(Pod("y", f"full-{tag}2", node, {"pod": "full"}, ports=list(ports)))
            if light:
                c.add_pod(Pod("x", f"light-{tag}1", node, {"pod": "light"}, ports=list(ports), kind=PodKind.LIGHT))
                c.add_pod(Pod("y", f"light-{tag}2", node, {"pod": "light"}, ports=list(ports), kind=PodKind.LIGHT))
        c.add_pod(Pod("z", "virtual", "node-v", ports=list(ports)))
        return c
""")
_ns: dict = {}
exec(CLUSTER_SRC, _ns)
small_cluster = _ns["small_cluster"]


def run_child(code: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-c", CLUSTER_SRC + textwrap.dedent(code)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def sh(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout


def server_pids(run_id: str) -> list[int]:
    """Processes whose command line names this run's echo server (found from /proc, not state)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"harness.lab.echo_server" in b" ".join(argv) and run_id.encode() in argv:
                if state.process_alive(int(pid), None):
                    out.append(int(pid))
    return out


# -- layout ------------------------------------------------------------------------------------------
def test_layout_names_addresses_routes_sysctls(lab_factory):
    lb = lab_factory(small_cluster())
    rid = lb.run_id
    names = netns.list_names(f"nph-{rid}-")
    assert f"nph-{rid}-u" in names and f"nph-{rid}-n-node-a" in names and f"nph-{rid}-l-node-b-0" in names
    assert len(names) == 1 + 2 + 2 + 4  # underlay, nodes, light hosts, full pods; virtual: nothing
    node_ns = lb.node_netns("node-a")
    links = json.loads(lb.exec("node-a", ["ip", "-j", "-d", "link"]).stdout)
    by_name = {ln["ifname"]: ln for ln in links}
    assert by_name["kube-bridge"]["linkinfo"]["info_kind"] == "bridge"
    assert all(len(n) <= 15 for n in by_name)
    ports_on_bridge = [ln["ifname"] for ln in links if ln.get("master") == "kube-bridge"]
    assert len(ports_on_bridge) == 3  # two full pods + the light host
    addrs = json.loads(lb.exec("node-a", ["ip", "-j", "-4", "addr"]).stdout)
    got = {(a["ifname"], i["local"], i["prefixlen"]) for a in addrs for i in a["addr_info"]}
    assert ("kube-bridge", "10.244.0.1", 24) in got and ("eth0", "172.18.0.2", 16) in got
    routes = json.loads(lb.exec("node-a", ["ip", "-j", "-4", "route"]).stdout)
    dsts = {r["dst"]: r.get("gateway") for r in routes}
    assert "default" not in dsts
    assert dsts["10.244.1.0/24"] == "172.18.0.3" and dsts["10.244.9.0/24"] == "172.18.0.99"
    for key, value in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1"),
                       ("net/ipv4/conf/all/rp_filter", "0")):
        assert netns.call_in(node_ns, lambda k=key: open(f"/proc/sys/{k}").read().strip()) == value, key
    pod = lb.cluster.pods["x/full-a1"]
    paddrs = json.loads(lb.exec("x/full-a1", ["ip", "-j", "-4", "addr"]).stdout)
    assert {(a["ifname"], i["local"], i["prefixlen"]) for a in paddrs for i in a["addr_info"]} == {
        ("lo", "127.0.0.1", 8), ("eth0", str(pod.ip), 24)}
    proutes = json.loads(lb.exec("x/full-a1", ["ip", "-j", "-4", "route"]).stdout)
    assert {"dst": "default", "gateway": "10.244.0.1"}.items() <= proutes[0].items()
    light = json.loads(lb.exec("x/light-a1", ["ip", "-j", "-4", "addr", "show", "eth0"]).stdout)
    assert {(i["local"], i["prefixlen"]) for i in light[0]["addr_info"]} == {
        (str(lb.cluster.pods["x/light-a1"].ip), 32), (str(lb.cluster.pods["y/light-a2"].ip), 32)}
    assert lb.pod_netns("x/light-a1") == lb.pod_netns("y/light-a2") == f"nph-{rid}-l-node-a-0"
    # Permanent ARP entries: node -> each local pod (pod MAC 0a:58 + IP), pod -> gateway.
    neigh = {(e["dst"], e["lladdr"]) for e in json.loads(lb.exec("node-a", ["ip", "-j", "-4", "neigh"]).stdout)
             if "PERMANENT" in e.get("state", [])}
    assert ("10.244.0.2", "0a:58:0a:f4:00:02") in neigh and len(neigh) == 4  # 2 full + 2 light pods
    pod_neigh = json.loads(lb.exec("x/full-a1", ["ip", "-j", "-4", "neigh"]).stdout)
    assert [(e["dst"], e["lladdr"], e["state"]) for e in pod_neigh] == [("10.244.0.1", "0a:58:0a:f4:00:01",
                                                                          ["PERMANENT"])]
    under = json.loads(netns.run(f"nph-{rid}-u", ["ip", "-j", "-4", "route"]).stdout)
    assert under == []  # the underlay has no address and no route at all
    with pytest.raises(HarnessError, match="virtual"):
        lb.pod_netns("z/virtual")


# -- reachability -------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["TCP", "UDP", "ICMP"])
def test_matrix_all_pods_reach_each_other(lab_factory, protocol):
    lb = lab_factory(small_cluster())
    m = lb.matrix(protocol=protocol, port=81)
    realized = [k for k in lb.cluster.pods if k != "z/virtual"]
    assert set(m) == {(s, d) for s in realized for d in realized}
    same_host = {(s, d) for (s, d) in m if s != d and lb.is_light(s) and lb.is_light(d)
                 and lb.cluster.pods[s].node == lb.cluster.pods[d].node}
    assert same_host == {("x/light-a1", "y/light-a2"), ("y/light-a2", "x/light-a1"),
                         ("x/light-b1", "y/light-b2"), ("y/light-b2", "x/light-b1")}
    for cell, outcome in m.items():
        assert outcome == ("n/a-same-light-host" if cell in same_host else "connected"), (cell, outcome)


def test_outcomes_refused_unreachable_timeout(lab_factory):
    lb = lab_factory(small_cluster())
    assert lb.connect("x/full-a1", "x/full-b1", 83, "TCP") == "refused"  # nobody listens: RST
    assert lb.connect("x/light-a1", "x/full-b1", 83, "UDP") == "refused"  # ICMP port unreachable
    assert lb.connect("x/full-a1", "x/light-b1", 83, "UDP") == "refused"
    assert lb.connect("x/full-a1", "x/light-b1", 82, "TCP") == "refused"  # SCTP port: not a TCP listener
    # The virtual node's CIDR is routed to its (absent) node IP: ARP fails, nothing answers in time.
    assert lb.connect("x/full-a1", "z/virtual", 80, "TCP", timeout=0.3) == "timeout"


def test_nothing_routes_out_of_the_lab(lab_factory):
    lb = lab_factory(small_cluster(light=True))
    host_addrs = [i["local"] for a in json.loads(sh("ip", "-j", "-4", "addr")) for i in a["addr_info"]
                  if not i["local"].startswith("127.")]
    default_gw = [r["gateway"] for r in json.loads(sh("ip", "-j", "-4", "route")) if r["dst"] == "default"]
    targets = sorted({"192.0.2.1", "8.8.8.8", *host_addrs, *default_gw})
    # The node answers with ICMP net-unreachable (it has no default route) ...
    for src in ("x/full-a1", "x/light-b1"):
        assert lb.connect(src, "192.0.2.1", 80, "TCP") == "unreachable"
    # ... rate-limited per source by the host-wide net.ipv4.route.error_cost (5 burst, then 1/s),
    # so later probes may see no answer at all. Either way nothing arrives: the root namespace
    # would answer a ping to its own address and refuse TCP port 80.
    cells = [(src, dst, proto) for src in ("x/full-a1", "x/light-b1") for dst in targets
             for proto in ("TCP", "UDP", "ICMP")]
    with ThreadPoolExecutor(len(cells)) as ex:
        outcomes = list(ex.map(lambda c: lb.connect(c[0], c[1], 80, c[2], timeout=0.4), cells))
    for cell, outcome in zip(cells, outcomes, strict=True):
        assert outcome in ("unreachable", "timeout"), (cell, outcome)


# -- runtime changes ----------------------------------------------------------------------------------------
def test_add_and_remove_pods_at_runtime(lab_factory):
    lb = lab_factory(small_cluster())
    before = time.time_ns()
    ready = lb.add_pod(Pod("x", "new-full", "node-b", {"pod": "new"}, ports=[ContainerPort(80)]))
    after = time.time_ns()
    assert before < ready <= after
    new_ip = lb.cluster.pods["x/new-full"].ip
    assert new_ip in lb.cluster.nodes["node-b"].pod_cidr
    assert lb.connect("x/full-a1", "x/new-full", 80) == "connected"
    assert lb.connect("x/new-full", "y/light-a2", 81, "UDP") == "connected"
    ready_l = lb.add_pod(Pod("y", "new-light", "node-a", ports=[ContainerPort(80, "UDP")], kind=PodKind.LIGHT))
    assert ready_l > ready
    assert lb.connect("x/new-full", "y/new-light", 80, "UDP") == "connected"
    assert lb.connect("x/new-full", "y/new-light", 80, "TCP") == "refused"  # only 80/UDP served
    # a pod on a virtual node only enters the model
    lb.add_pod(Pod("z", "virtual-2", "node-v"))
    assert lb.cluster.pods["z/virtual-2"].kind is PodKind.VIRTUAL
    with pytest.raises(ConfigError, match="duplicate pod"):
        lb.add_pod(Pod("x", "new-full", "node-a"))

    ns_new = lb.pod_netns("x/new-full")
    gone = lb.remove_pod("x/new-full")
    assert gone >= ready and not netns.exists(ns_new) and "x/new-full" not in lb.cluster.pods
    assert lb.connect("x/full-a1", str(new_ip), 80, timeout=0.3) in ("timeout", "unreachable")
    lb.remove_pod("y/new-light")
    light_ip = str(lb.cluster.pods["x/light-a1"].ip)
    addrs = lb.exec("x/light-a1", ["ip", "-4", "-o", "addr", "show", "eth0"]).stdout
    assert light_ip in addrs and "y/new-light" not in lb.cluster.pods
    assert lb.connect("x/full-b1", "x/light-a1", 80) == "connected"  # neighbours unaffected
    st = state.load(lb.run_id)  # the run record follows (journal) for other processes
    assert "x/new-full" not in st.pods and "z/virtual-2" in st.pods


def test_a_new_pod_can_connect_the_moment_add_pod_returns(lab_factory):
    """CNI ADD's "ready" must mean forwarding: the host veth's qdisc and bridge port come alive
    in deferred kernel work after the carrier turns on. Before add_pod waited for it, 14 of 100
    connects started right after it returned timed out; 30 in a row then pass by chance ~1%."""
    lb = lab_factory(small_cluster(light=False))
    outcomes = []
    for i in range(30):
        key = f"x/job-{i}"
        lb.add_pod(Pod("x", f"job-{i}", "node-b", {"pod": "job"}))
        outcomes.append(lb.connect(key, "x/full-a1", 80, timeout=0.5))  # cross-node, at once
        lb.remove_pod(key)
    assert outcomes == ["connected"] * 30


def test_exec_and_call_run_inside(lab_factory):
    lb = lab_factory(small_cluster(light=False))
    out = lb.exec("y/full-b2", ["ip", "-4", "-o", "addr", "show", "eth0"])
    assert out.returncode == 0 and str(lb.cluster.pods["y/full-b2"].ip) in out.stdout
    assert lb.exec("node-b", ["sh", "-c", "exit 7"]).returncode == 7
    root_ino = os.stat("/proc/self/ns/net").st_ino
    ino = lb.call("y/full-b2", lambda: os.stat("/proc/thread-self/ns/net").st_ino)
    assert ino != root_ino and ino == os.stat(netns.path(lb.pod_netns("y/full-b2"))).st_ino


# -- isolation from the host, cleanup -------------------------------------------------------------------------
ROOT_SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter",
                "net/bridge/bridge-nf-call-iptables", "net/ipv6/conf/default/disable_ipv6",
                "net/ipv6/conf/all/disable_ipv6", "net/ipv4/icmp_ratelimit", "net/ipv4/icmp_msgs_per_sec")


def root_snapshot() -> dict:
    links = [(ln["ifname"], ln["ifindex"], tuple(sorted(ln.get("flags", []))), ln.get("mtu"), ln.get("master"))
             for ln in json.loads(sh("ip", "-j", "link"))]
    addrs = sorted((a["ifname"], i["family"], i["local"], i["prefixlen"])
                   for a in json.loads(sh("ip", "-j", "addr")) for i in a["addr_info"])
    snap = {"links": links, "addrs": addrs, "routes4": sh("ip", "-4", "route", "show", "table", "all"),
            "rules": sh("ip", "rule"), "ipsets": sh("ipset", "list", "-n")}
    for tool in ("iptables-nft-save", "iptables-legacy-save"):
        snap[tool] = [ln for ln in sh(tool).splitlines() if not ln.startswith("#")]
    for key in ROOT_SYSCTLS:
        with open(f"/proc/sys/{key}") as f:
            snap[key] = f.read()
    return snap


def test_root_namespace_unchanged_and_nothing_left(lab_factory):
    before = root_snapshot()
    lb = lab_factory(small_cluster())
    assert lb.matrix(pods=["x/full-a1", "x/light-b1"])[("x/full-a1", "x/light-b1")] == "connected"
    during = root_snapshot()
    assert during == before  # no link, address, route, rule, sysctl or netfilter change in root
    rid = lb.run_id
    servers = server_pids(rid)
    assert servers
    lb.down()
    assert root_snapshot() == before
    assert netns.list_names(f"nph-{rid}-") == []
    assert server_pids(rid) == []
    assert not os.path.exists(os.path.join(state.STATE_ROOT, rid))


def test_gc_removes_a_sigkilled_lab_but_never_a_live_one():
    victim = run_child("""
        import sys, time
        from harness.lab import Lab
        lab = Lab(small_cluster()).up()
        if sys.argv[-1:] == ["keep"]:
            pass
        print(lab.run_id, flush=True)
        time.sleep(120)
    """)
    kept = run_child("""
        import time
        from harness.lab import Lab
        lab = Lab(small_cluster()).up()
        lab.detach()  # like `up --keep`: the server must outlive us
        print(lab.run_id, flush=True)
        time.sleep(120)
    """)
    try:
        rid = victim.stdout.readline().strip()
        kept_rid = kept.stdout.readline().strip()
        assert rid and kept_rid, victim.stderr.read() if not rid else kept.stderr.read()
        assert len(netns.list_names(f"nph-{rid}-")) == 9 and server_pids(rid)
        # While the owners live, gc leaves both alone.
        rep = state.gc(include_kept=True)
        assert rid in rep.live and kept_rid in rep.live and netns.list_names(f"nph-{rid}-")
    finally:
        victim.send_signal(signal.SIGKILL)
        kept.send_signal(signal.SIGKILL)
        victim.wait()
        kept.wait()
        for p in (victim, kept):
            p.stdout.close()
            p.stderr.close()
            p.stdin.close()
    try:
        assert server_pids(kept_rid)  # detached server survives its owner
        rep = state.gc()
        assert rid in rep.removed and kept_rid in rep.kept
        assert netns.list_names(f"nph-{rid}-") == [] and server_pids(rid) == []
        assert netns.list_names(f"nph-{kept_rid}-")
        rep = state.gc(include_kept=True)
        assert kept_rid in rep.removed
        assert netns.list_names(f"nph-{kept_rid}-") == [] and server_pids(kept_rid) == []
        assert not os.path.exists(os.path.join(state.STATE_ROOT, kept_rid))
    finally:
        for r in (rid, kept_rid):
            if r and os.path.exists(os.path.join(state.STATE_ROOT, r)):
                state.remove_run(state.load(r))


def test_two_labs_built_at_once_do_not_collide():
    code = """
        import json, sys
        from harness.lab import Lab
        with Lab(small_cluster()) as lab:
            print(lab.run_id, flush=True)
            sys.stdin.readline()  # both labs are up now
            m = lab.matrix(protocol="TCP")
            print(json.dumps(sorted(set(m.values()))), flush=True)
    """
    kids = [run_child(code), run_child(code)]
    try:
        rids = [k.stdout.readline().strip() for k in kids]
        assert all(rids) and rids[0] != rids[1], [k.stderr.read() for k in kids]
        a, b = (set(netns.list_names(f"nph-{r}-")) for r in rids)
        assert len(a) == len(b) == 9 and not a & b
        for k in kids:
            k.stdin.write("go\n")
            k.stdin.flush()
        outcomes = [json.loads(k.stdout.readline()) for k in kids]
        assert outcomes == [["connected", "n/a-same-light-host"]] * 2
        assert [k.wait(timeout=30) for k in kids] == [0, 0]
        assert all(netns.list_names(f"nph-{r}-") == [] for r in rids)
    finally:
        for k in kids:
            if k.poll() is None:
                k.kill()
                k.wait()
            for f in (k.stdout, k.stderr, k.stdin):
                f.close()


# -- fixtures and errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("lab", [small_cluster(light=False)], indirect=True)
def test_lab_fixture_from_a_cluster_object(lab):
    assert lab.connect("x/full-a1", "y/full-b2", 80, "TCP") == "connected"
    assert lab.cluster is not None and "x/full-a1" in lab.cluster.pods


def test_lab_without_real_nodes_is_a_one_line_error():
    c = Cluster(name="only-virtual")
    c.nodes["v"] = Node("v", ipaddress.IPv4Address("172.18.0.9"), ipaddress.IPv4Network("10.244.5.0/24"),
                        NodeKind.VIRTUAL)
    lb = Lab(c)
    with pytest.raises(HarnessError, match="no real node"):
        lb.up()
    assert lb.run_id and netns.list_names(f"nph-{lb.run_id}-") == []  # the partial lab is gone
    assert not os.path.exists(os.path.join(state.STATE_ROOT, lb.run_id))


def test_a_failure_halfway_removes_the_partial_lab():
    c = small_cluster(light=False)
    dup = Pod("y", "dup", "node-a", kind=PodKind.LIGHT, ip=ipaddress.IPv4Address("10.244.0.77"))
    c.pods[dup.key] = dup
    c.pods["y/dup2"] = Pod("y", "dup2", "node-a", kind=PodKind.LIGHT, ip=ipaddress.IPv4Address("10.244.0.77"))
    lb = Lab(c)
    with pytest.raises(HarnessError, match=r"add address 10\.244\.0\.77/32 .*EEXIST"):
        lb.up()
    assert netns.list_names(f"nph-{lb.run_id}-") == [] and server_pids(lb.run_id) == []
    assert not os.path.exists(os.path.join(state.STATE_ROOT, lb.run_id))


def test_cross_node_probing_is_not_capped_by_the_host_neighbour_table(lab_factory):
    # More destinations than the default host-wide gc_thresh3 (1,024): without permanent
    # entries on the node, the 1,025th ARP entry fails with ENOBUFS.
    from harness.lab.bench import bench_cluster

    lb = lab_factory(bench_cluster(1, 2 * 1300, nodes=2))
    dsts = [k for k, p in lb.cluster.pods.items() if p.kind is PodKind.LIGHT and p.node == "node-1"]
    assert len(dsts) == 1300
    with ThreadPoolExecutor(64) as ex:
        outcomes = list(ex.map(lambda d: lb.connect("bench/full-0", d, 80, "UDP", timeout=2.0), dsts))
    assert {o: outcomes.count(o) for o in set(outcomes)} == {"connected": 1300}

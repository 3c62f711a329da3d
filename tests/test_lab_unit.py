"""Lab parts that need no root: netlink encoding, run records and gc decisions, the
environment report without binaries, the bench cluster, the ICMP checksum."""

from __future__ import annotations

import ipaddress
import json
import os
import struct
import subprocess
import sys

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from harness.errors import HarnessError
from harness.kernel import netlink, rtnl
from harness.lab import check, reach, state
from harness.lab.bench import bench_cluster
from harness.model.cluster import PodKind


def decode(msg_class, req: rtnl.Request):
    """Parse our hand-packed request with pyroute2's independent decoder."""
    m = msg_class(netlink.pack(req, 1))
    m.decode()
    return m


# -- rtnetlink encoding --------------------------------------------------------------------------------
def test_veth_request_decodes_with_peer_in_other_namespace():
    m = decode(ifinfmsg, rtnl.veth("veth0123456789a", "eth0", peer_netns_fd=7, master=3, index=16, peer_index=2))
    assert m["header"]["type"] == rtnl.RTM_NEWLINK
    assert m["header"]["flags"] & rtnl.NLM_F_CREATE and m["header"]["flags"] & rtnl.NLM_F_EXCL
    assert (m.get_attr("IFLA_IFNAME"), m.get_attr("IFLA_MASTER"), m["index"], m["flags"]) == (
        "veth0123456789a", 3, 16, rtnl.IFF_UP)
    info = m.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = dict(info.get_attr("IFLA_INFO_DATA")["attrs"])["VETH_INFO_PEER"]
    assert dict(peer["attrs"]) == {"IFLA_IFNAME": "eth0", "IFLA_NET_NS_FD": 7}
    assert peer["index"] == 2 and peer["flags"] == 0  # the peer cannot be opened before it is linked


def test_bridge_address_and_route_requests_decode():
    b = decode(ifinfmsg, rtnl.bridge("kube-bridge", index=3, mac=bytes.fromhex("0a580af40001")))
    assert b.get_attr("IFLA_ADDRESS") == "0a:58:0a:f4:00:01"
    assert b.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "bridge"
    a = decode(ifaddrmsg, rtnl.address(2, "10.244.0.7", 24))
    assert (a["index"], a["prefixlen"], a.get_attr("IFA_LOCAL"), a.get_attr("IFA_ADDRESS")) == (
        2, 24, "10.244.0.7", "10.244.0.7")
    d = decode(ifaddrmsg, rtnl.address(2, "10.244.0.7", 32, delete=True))
    assert d["header"]["type"] == rtnl.RTM_DELADDR
    r = decode(rtmsg, rtnl.route("10.244.1.0/24", gateway="172.18.0.3", oif=2, onlink=True))
    assert (r["dst_len"], r.get_attr("RTA_DST"), r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_OIF")) == (
        24, "10.244.1.0", "172.18.0.3", 2)
    assert r["flags"] & rtnl.RTNH_F_ONLINK and r["table"] == 254
    default = decode(rtmsg, rtnl.route("0.0.0.0/0", gateway="10.244.0.1", oif=2))
    assert default["dst_len"] == 0 and default.get_attr("RTA_DST") is None
    link = decode(rtmsg, rtnl.route("10.244.0.0/24", oif=2))
    assert link["scope"] == rtnl.RT_SCOPE_LINK and link.get_attr("RTA_GATEWAY") is None


# -- run records and gc --------------------------------------------------------------------------------
@pytest.fixture
def state_root(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "STATE_ROOT", str(tmp_path))
    return tmp_path


def dead_process() -> tuple[int, int | None]:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    start = state.process_start_time(p.pid)
    p.wait()
    return p.pid, start


def test_run_record_roundtrip_and_journal(state_root):
    st = state.new_run()
    assert state.RUN_ID_RE.match(st.run_id) and st.owner_pid == os.getpid() and st.owner_alive()
    st.namespaces = [f"nph-{st.run_id}-u"]
    st.pods = {"x/a": {"netns": f"nph-{st.run_id}-p-1", "ip": "10.244.0.2", "node": "n", "kind": "full"}}
    st.save()
    st.journal("x/b", {"netns": f"nph-{st.run_id}-p-2", "ip": "10.244.0.3", "node": "n", "kind": "full"})
    st.journal("x/a", None)
    back = state.load(st.run_id)
    assert sorted(back.pods) == ["x/b"] and f"nph-{st.run_id}-p-2" in back.namespaces
    with pytest.raises(HarnessError, match="no lab run"):
        state.load("000000")
    with pytest.raises(HarnessError, match="already exists"):
        state.new_run(run_id=st.run_id)


def test_process_identity_needs_pid_and_start_time():
    me = os.getpid()
    assert state.process_alive(me, state.process_start_time(me))
    assert not state.process_alive(me, (state.process_start_time(me) or 0) + 1)  # a recycled pid
    pid, start = dead_process()
    assert not state.process_alive(pid, start)


def test_gc_decisions_live_dead_kept(state_root):
    live = state.new_run()
    dead = state.new_run()
    dead.owner_pid, dead.owner_start = dead_process()
    dead.save()
    kept = state.new_run(kept=True)
    kept.owner_pid, kept.owner_start = dead_process()
    kept.save()
    rep = state.gc()
    assert rep.live == [live.run_id] and rep.removed == [dead.run_id] and rep.kept == [kept.run_id]
    assert not (state_root / dead.run_id).exists() and (state_root / live.run_id).exists()
    rep = state.gc(include_kept=True)
    assert rep.removed == [kept.run_id] and rep.live == [live.run_id]


def test_stop_server_refuses_a_process_that_is_not_our_server(state_root):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not state.stop_server(p.pid, state.process_start_time(p.pid), "abcdef")
        assert p.poll() is None  # not killed: its command line is not the run's echo server
    finally:
        p.kill()
        p.wait()


def _marked_sleeper(marker: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(60)", marker])


def test_gc_stops_and_removes_what_a_dead_run_owned_by_owner(state_root, tmp_path):
    """A component records its process and directory in the run record; gc of the dead run
    stops and removes them by the record alone (no import of the component)."""
    st = state.new_run()
    d = tmp_path / f"nph-thing-{st.run_id}-x"
    d.mkdir()
    (d / "f").write_text("x")
    p = _marked_sleeper(str(d))
    start = state.process_start_time(p.pid)
    try:
        st.own_process("thing", p.pid, state.process_start_time(p.pid), marker=str(d))
        st.own_path("thing", str(d))
        back = state.load(st.run_id)
        assert [(o["owner"], o["kind"]) for o in back.owned] == [("thing", "process"), ("thing", "path")]
        back.owner_pid, back.owner_start = dead_process()
        back.save()
        rep = state.gc()
        assert rep.removed == [st.run_id] and rep.processes == 1
        assert not state.process_alive(p.pid, start)  # stopped (and reaped: it was our child)
        assert not d.exists()
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("mismatch", ["start-time", "cmdline"])
def test_gc_never_kills_a_recycled_pid(state_root, tmp_path, mismatch):
    """The recorded pid now belongs to another process: a different start time, or a command
    line without the recorded marker. gc leaves it running."""
    st = state.new_run()
    d = tmp_path / f"nph-thing-{st.run_id}-x"
    p = _marked_sleeper("something-else")
    try:
        start = state.process_start_time(p.pid)
        if mismatch == "start-time":
            st.own_process("thing", p.pid, (start or 0) + 1, marker="something-else")
        else:
            st.own_process("thing", p.pid, start, marker=str(d))
        st.owner_pid, st.owner_start = dead_process()
        st.save()
        rep = state.gc()
        assert rep.removed == [st.run_id] and rep.processes == 0
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()


def test_a_run_record_claims_only_its_own_paths(state_root, tmp_path):
    st = state.new_run()
    for bad in ("relative", str(tmp_path / "someone-else"), f"/tmp/../etc/nph-{st.run_id}-x", "/"):
        with pytest.raises(HarnessError, match="owned path"):
            st.own_path("thing", bad)
    # a crafted record naming a foreign directory: gc leaves it alone
    victim = tmp_path / "victim"
    victim.mkdir()
    st.owned.append({"owner": "x", "kind": "path", "path": str(victim)})
    st.owner_pid, st.owner_start = dead_process()
    st.save()
    state.gc()
    assert victim.exists()


def test_lab_commands_do_not_import_scenarios():
    import harness.lab.commands as commands
    import harness.lab.state as st_module

    for mod in (commands, st_module):
        assert "harness.scenarios" not in open(mod.__file__).read(), mod.__name__


def test_namespace_name_pattern_only_matches_lab_runs():
    assert state.NETNS_RE.match("nph-3fa2c1-u") and state.NETNS_RE.match("nph-3fa2c1-p-0123456789")
    for other in ("nph-3fa2c1-node", "nph-exp1-a", "nph-check-abcdef", "cni-1234", "nph-3FA2C1-u"):
        assert not state.NETNS_RE.match(other), other


# -- environment check -----------------------------------------------------------------------------------
def test_check_names_missing_binaries_with_install_hints(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to find
    monkeypatch.setattr(check, "_kernel_checks", lambda: [])
    res = {c.name: c for c in check.checks()}
    assert not res["binary ipset"].ok and res["binary ipset"].hint == "apt-get install -y ipset"
    assert not res["binary conntrack"].ok and res["binary conntrack"].hint == "apt-get install -y conntrack"
    assert not res["binary iptables-legacy-restore"].ok and "iptables" in res["binary iptables-legacy-restore"].hint
    problems = check.environment_problems(cached=False)
    assert any("ipset" in str(p) and "apt-get install -y ipset" in str(p) for p in problems)
    check.environment_problems(cached=False)  # leave no cached result behind for other tests
    monkeypatch.undo()
    check._cached_problems.cache_clear()


# -- bench cluster, probes --------------------------------------------------------------------------------
def test_bench_cluster_fits_ten_thousand_light_pods():
    c = bench_cluster(100, 10000, nodes=2)
    ips = [p.ip for p in c.pods.values()]
    assert len(c.pods) == 10100 and len(set(ips)) == 10100
    for p in c.pods.values():
        node = c.nodes[p.node]
        assert p.ip in node.pod_cidr and p.ip != node.gateway_ip
    assert sum(p.kind is PodKind.LIGHT for p in c.pods.values()) == 10000
    a, b = (n.pod_cidr for n in c.nodes.values())
    assert not a.overlaps(b) and a.subnet_of(c.cluster_cidr)
    assert ipaddress.IPv4Address("172.18.0.3") == c.nodes["node-1"].node_ip


def test_icmp_checksum_of_a_known_echo_request():
    # echo request id 0x1234 seq 1, payload "abcd": 16-bit words 0800 0000 1234 0001 6162 6364
    # sum to 0xDEFB (no carry), one's complement 0x2104 (RFC 1071)
    hdr = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"abcd"
    csum = reach._checksum(hdr)
    full = struct.pack("!BBHHH", 8, 0, csum, 0x1234, 1) + b"abcd"
    assert reach._checksum(full) == 0
    assert csum == 0x2104


def test_state_file_is_json_with_the_fields_other_processes_need(state_root):
    st = state.new_run()
    data = json.loads((state_root / st.run_id / "state.json").read_text())
    assert {"run_id", "owner_pid", "owner_start", "kept", "namespaces", "servers", "pods", "nodes"} <= set(data)


def test_permanent_neighbour_request_decodes():
    from pyroute2.netlink.rtnl.ndmsg import ndmsg

    n = decode(ndmsg, rtnl.neighbour(3, ipaddress.IPv4Address("10.244.0.9"), bytes.fromhex("0a580af40009")))
    assert n["header"]["type"] == rtnl.RTM_NEWNEIGH and n["header"]["flags"] & rtnl.NLM_F_REPLACE
    assert (n["ifindex"], n["state"], n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR")) == (
        3, rtnl.NUD_PERMANENT, "10.244.0.9", "0a:58:0a:f4:00:09")
    d = decode(ndmsg, rtnl.neighbour(3, "10.244.0.9", delete=True))
    assert d["header"]["type"] == rtnl.RTM_DELNEIGH and d.get_attr("NDA_LLADDR") is None


def test_root_namespace_snapshot_ignores_only_what_changes_by_itself():
    from harness.lab.rootns import normalize

    save = ("# Generated by iptables-save v1.8.9 on {t}\n*filter\n:INPUT ACCEPT [{n}:{b}]\n"
            "-A INPUT -j ACCEPT\nCOMMIT\n# Completed on {t}\n")
    a = save.format(t="Wed Dec  2 16:00:00 2026", n=1, b=60)
    b = save.format(t="Wed Dec  2 16:00:09 2026", n=9, b=900)
    assert normalize("iptables-legacy-save", a) == normalize("iptables-legacy-save", b)
    assert normalize("iptables-legacy-save", a) != normalize("iptables-legacy-save", a.replace("ACCEPT\nCOMMIT",
                                                                                                "DROP\nCOMMIT"))
    nft = "table inet x {{\n chain c {{\n  counter packets {p} bytes {b} accept\n }}\n}}\n"
    assert normalize("nft list ruleset", nft.format(p=1, b=2)) == normalize("nft list ruleset", nft.format(p=5, b=9))
    addr = "inet 10.0.0.5/24 brd 10.0.0.255 scope global dynamic eth0\n valid_lft {v}sec preferred_lft {v}sec\n"
    assert normalize("ip addr", addr.format(v=3600)) == normalize("ip addr", addr.format(v=3590))
    assert normalize("ip addr", addr.format(v=1)) != normalize("ip addr", addr.format(v=1).replace(".5/", ".6/"))
    assert normalize("ip -d link", "1: lo: <LOOPBACK>") == "1: lo: <LOOPBACK>"  # byte for byte

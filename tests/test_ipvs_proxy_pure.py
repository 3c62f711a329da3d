"""kube-router's IPVS proxy, pure parts: the plan (v2.10.0 layout), one sync as ordered calls,
the ipvsadm text both ways, the ipset restore text, input errors. No root."""

from __future__ import annotations

import pytest

from harness.cluster.ipvs_proxy import detect, ipvsadm
from harness.cluster.ipvs_proxy.plan import (
    FIREWALL_CHAIN,
    KUBE_DUMMY_IF,
    ProxyConfig,
    RealServer,
    ServicePort,
    VirtualService,
    plan,
)
from harness.cluster.ipvs_proxy.sync import (
    ADD_ADDRESS,
    ADD_REAL,
    ADD_SERVICE,
    DEL_ADDRESS,
    DEL_REAL,
    DEL_SERVICE,
    EDIT_REAL,
    EDIT_SERVICE,
    ROUTE,
    ipset_restore,
    sync_ops,
)
from harness.errors import ConfigError, KernelError

CFG = ProxyConfig("172.18.0.2", "10.244.0.0/24", local_ips=("172.18.0.2", "127.0.0.1"))
DB = ServicePort("10.96.0.10", 3306, endpoints=(("10.244.0.5", 3306), ("10.244.1.7", 3306)), namespace="db",
                 name="mariadb")
DNS = ServicePort("10.96.0.2", 53, "UDP", endpoints=(("10.244.0.3", 53),))


def test_plan_holds_cluster_ips_services_and_masq_reals():
    p = plan([DB, DNS], CFG)
    assert p.dummy_link == KUBE_DUMMY_IF == "kube-dummy-if"
    assert p.addresses == ["10.96.0.2", "10.96.0.10"]  # sorted by address, once each
    assert [(s.protocol, s.vip, s.port, s.scheduler) for s in p.services] == [
        ("udp", "10.96.0.2", 53, "rr"), ("tcp", "10.96.0.10", 3306, "rr")]
    assert p.services[1].reals == (RealServer("10.244.0.5", 3306, 1, "masq"), RealServer("10.244.1.7", 3306, 1, "masq"))


def test_plan_sysctls_in_kube_router_order():
    assert plan([], CFG).sysctls == [
        ("net/ipv4/vs/conntrack", 1), ("net/ipv4/vs/expire_nodest_conn", 1),
        ("net/ipv4/vs/expire_quiescent_template", 1), ("net/ipv4/vs/conn_reuse_mode", 0),
        ("net/ipv4/conf/all/arp_ignore", 1), ("net/ipv4/conf/all/arp_announce", 2)]
    assert plan([], CFG).rp_filter_ifaces == ["all", "kube-bridge", "kube-dummy-if", "eth0"]


def test_plan_ipsets_and_firewall():
    p = plan([DB, DNS], CFG)
    sets = {s.name: s for s in p.ipsets}
    assert sets["kube-router-local-ips"].entries == ("172.18.0.2", "127.0.0.1")
    assert sets["kube-router-svip"].entries == ("10.96.0.2", "10.96.0.10")
    assert sets["kube-router-svip-prt"].entries == ("10.96.0.2,udp:53", "10.96.0.10,tcp:3306")
    assert sets["kube-router-svip-prt"].options == "hash:ip,port timeout 0"
    rules = p.filter_rules
    assert rules[0] == ["-N", FIREWALL_CHAIN]
    assert [r[-1] for r in rules[1:4]] == ["ACCEPT"] * 3  # the common ICMP accepts
    assert rules[4][-5:] == ["--match-set", "kube-router-svip-prt", "dst,dst", "-j", "ACCEPT"]
    assert rules[5][-7:] == ["!", "--match-set", "kube-router-local-ips", "dst", "-j", "REJECT",
                             "--reject-with", "icmp-port-unreachable"][-7:]
    assert rules[6][:3] == ["-I", "INPUT", "1"] and rules[6][-1] == FIREWALL_CHAIN
    assert plan([], ProxyConfig("172.18.0.2", "10.244.0.0/24", permit_all=False)).filter_rules == [
        ["-N", FIREWALL_CHAIN]]


def test_masquerade_rules_default_and_all():
    nat = plan([], CFG).nat_rules
    assert nat == [["-A", "POSTROUTING", "-m", "ipvs", "--ipvs", "--vdir", "ORIGINAL", "--vmethod", "MASQ",
                    "-m", "comment", "--comment", "", "!", "-s", "10.244.0.0/24", "!", "-d", "10.244.0.0/24",
                    "-j", "SNAT", "--to-source", "172.18.0.2", "--random-fully"]]
    all_ = plan([], ProxyConfig("172.18.0.2", "10.244.0.0/24", masquerade_all=True)).nat_rules
    assert len(all_) == 2 and "-s" not in all_[0] and all_[1] == nat[0]


def test_first_sync_adds_everything_in_order():
    ops = sync_ops(plan([DB], CFG), [], [])
    assert [o.kind for o in ops] == [ADD_ADDRESS, ROUTE, ADD_SERVICE, ADD_REAL, ADD_REAL]
    assert ipvsadm.restore_text(ops) == ("-A -t 10.96.0.10:3306 -s rr\n"
                                         "-a -t 10.96.0.10:3306 -r 10.244.0.5:3306 -m -w 1\n"
                                         "-a -t 10.96.0.10:3306 -r 10.244.1.7:3306 -m -w 1\n")


def test_unchanged_resync_still_calls_per_endpoint_and_address():
    """kube-router's ipvsAddServer: NewDestination, EEXIST -> UpdateDestination: a call per endpoint."""
    p = plan([DB], CFG)
    ops = sync_ops(p, p.services, ["10.96.0.10"])
    assert [o.kind for o in ops] == [ADD_ADDRESS, ROUTE, EDIT_REAL, EDIT_REAL]


def test_endpoint_replaced_and_stale_service_and_vip_removed():
    p_old = plan([DB, DNS], CFG)
    new_db = ServicePort("10.96.0.10", 3306, endpoints=(("10.244.0.9", 3306),))
    ops = sync_ops(plan([new_db], CFG), p_old.services, ["10.96.0.2", "10.96.0.10"])
    kinds = [(o.kind, o.vip, o.real.ip if o.real else "") for o in ops]
    assert kinds == [(ADD_ADDRESS, "10.96.0.10", ""), (ROUTE, "10.96.0.10", ""), (ADD_REAL, "10.96.0.10", "10.244.0.9"),
                     (DEL_ADDRESS, "10.96.0.2", ""), (DEL_SERVICE, "10.96.0.2", ""),
                     (DEL_REAL, "10.96.0.10", "10.244.0.5"), (DEL_REAL, "10.96.0.10", "10.244.1.7")]
    text = ipvsadm.restore_text(ops)
    assert "-D -u 10.96.0.2:53\n" in text and "-d -t 10.96.0.10:3306 -r 10.244.0.5:3306\n" in text


def test_scheduler_or_affinity_change_edits_the_service():
    p = plan([DB], CFG)
    sticky = ServicePort(DB.cluster_ip, DB.port, endpoints=DB.endpoints, affinity_timeout_s=10800, scheduler="lc")
    ops = sync_ops(plan([sticky], CFG), p.services, ["10.96.0.10"])
    assert [o.kind for o in ops][:3] == [ADD_ADDRESS, ROUTE, EDIT_SERVICE]
    assert ipvsadm.op_line(ops[2]) == "-E -t 10.96.0.10:3306 -s lc -p 10800"


def test_parse_save_round_trip():
    text = ("-A -t 10.96.0.10:3306 -s rr\n-a -t 10.96.0.10:3306 -r 10.244.0.5:3306 -m -w 1\n"
            "-A -u 10.96.0.2:53 -s lc -p 300\n-a -u 10.96.0.2:53 -r 10.244.0.3:53 -m -w 0\n")
    got = ipvsadm.parse_save(text)
    assert got == [VirtualService("tcp", "10.96.0.10", 3306, "rr", 0, (RealServer("10.244.0.5", 3306),)),
                   VirtualService("udp", "10.96.0.2", 53, "lc", 300, (RealServer("10.244.0.3", 53, 0),))]
    with pytest.raises(KernelError, match="unexpected line"):
        ipvsadm.parse_save("-A -x 1.2.3.4:5\n")


def test_ipset_restore_uses_tmp_sets_and_swap():
    text = ipset_restore(plan([DB], CFG).ipsets)
    lines = text.splitlines()
    tmp_ip = lines[0].split()[1]
    assert tmp_ip.startswith("TMP-") and len(tmp_ip) == 20  # TMP- + 16 base32 chars of sha1[:10]
    assert lines[:2] == [f"create {tmp_ip} hash:ip timeout 0", f"flush {tmp_ip}"]
    assert f"add {tmp_ip} 172.18.0.2 timeout 0" in lines
    assert f"swap {tmp_ip} kube-router-svip" in lines and lines[-1].startswith("destroy TMP-")
    assert sum(ln.startswith("destroy ") for ln in lines) == 2  # one TMP set per option string


@pytest.mark.parametrize(("svc", "field"), [
    (ServicePort("10.96.0.300", 80), "services[0].cluster_ip"),
    (ServicePort("10.96.0.1", 0), "services[0].port"),
    (ServicePort("10.96.0.1", 80, "ICMP"), "services[0].protocol"),
    (ServicePort("10.96.0.1", 80, scheduler="wrr"), "services[0].scheduler"),
    (ServicePort("10.96.0.1", 80, endpoints=(("10.244.0.1", 70000),)), "services[0].endpoints[0]"),
])
def test_bad_input_names_the_field(svc, field):
    with pytest.raises(ConfigError) as e:
        plan([svc], CFG)
    assert field in str(e.value) and "\n" not in str(e.value)


def test_duplicate_service_port_is_an_error():
    with pytest.raises(ConfigError, match=r"services\[1\]\.port"):
        plan([DB, DB], CFG)


def test_detect_reads_the_kernel_config(tmp_path, monkeypatch):
    import gzip

    cfg = tmp_path / "config.gz"
    cfg.write_bytes(gzip.compress(b"# CONFIG_IP_VS is not set\nCONFIG_DUMMY=m\n"))
    assert detect._config_says_missing("CONFIG_IP_VS", cfg)
    assert not detect._config_says_missing("CONFIG_DUMMY", cfg)
    (tmp_path / "6.1.0-47-amd64").mkdir()
    (tmp_path / "6.1.0-47-amd64" / "modules.dep").write_text(
        "kernel/net/netfilter/ipvs/ip_vs.ko: kernel/net/netfilter/nf_conntrack.ko\n")
    assert detect._in_module_lists("ip_vs", "6.1.0-47-amd64", tmp_path)
    assert not detect._in_module_lists("dummy", "6.1.0-47-amd64", tmp_path)

"""kube-router's IPVS proxy applied to a real node namespace. Needs root and a kernel with
CONFIG_IP_VS + CONFIG_DUMMY: elsewhere (this project's CI host) the applier tests skip with the
detected reason, e.g. "kernel lacks CONFIG_IP_VS"; the kernel matrix runs the same code inside
a Debian 6.1 guest (tests/test_ipvs_proxy_matrix.py)."""

from __future__ import annotations

import os

import pytest

from harness.cluster.ipvs_proxy import detect
from harness.cluster.ipvs_proxy.plan import ProxyConfig, RealServer, ServicePort
from harness.kernel import netns

REASON = detect.missing()


def test_without_ipvs_the_command_exits_4_naming_the_reason(capsys):
    if not REASON:
        pytest.skip("this kernel has IPVS")
    from harness.cli import main

    assert main(["bench", "ipvs", "--smoke", "--out", "/dev/null"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and REASON in err[0] and "kernels run" in err[0]


@pytest.fixture
def node_lab():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if REASON:
        pytest.skip(REASON)
    from harness.cluster.ipvs_proxy import experiment
    from harness.lab import Lab

    experiment.load_modules()
    with Lab(experiment.cluster(), servers=False) as lab:
        yield lab


def test_applier_programs_and_removes_the_node_state(node_lab):
    from harness.cluster.ipvs_proxy import experiment
    from harness.cluster.ipvs_proxy.apply import IpvsProxy

    ips = {k: str(node_lab.cluster.pods[k].ip) for k in experiment.SERVERS}
    node = node_lab.node_netns(experiment.NODE)
    proxy = IpvsProxy(node, ProxyConfig(experiment.NODE_IP, experiment.POD_CIDR))
    svc = ServicePort("10.96.0.10", 80, endpoints=tuple((ip, 8080) for ip in ips.values()))
    rec = proxy.sync([svc])
    assert rec.ops["add-service"] == 1 and rec.ops["add-real"] == 2
    assert set(rec.phases_ms) >= {"list", "addresses", "ipvs", "ipset"}
    (got,) = proxy.state()
    assert (got.vip, got.port, got.scheduler) == ("10.96.0.10", 80, "rr")
    assert set(got.reals) == {RealServer(ip, 8080) for ip in ips.values()}
    assert proxy.dummy_addresses() == ["10.96.0.10"]
    assert proxy.sysctl("net/ipv4/vs/expire_nodest_conn") == "1"
    assert "10.96.0.10,tcp:80" in netns.run(node, ["ipset", "list", "kube-router-svip-prt"]).stdout
    assert "-j KUBE-ROUTER-SERVICES" in netns.run(node, ["iptables", "-S", "INPUT"]).stdout
    again = proxy.sync([svc])
    assert "add-service" not in again.ops and again.ops["edit-real"] == 2
    gone = sorted(ips.values())[0]
    proxy.remove_real(svc, gone, 8080)
    assert {r.ip for r in proxy.state()[0].reals} == set(ips.values()) - {gone}
    proxy.teardown()
    assert proxy.state() == []
    assert "kube-dummy-if" not in netns.run(node, ["ip", "-o", "link"]).stdout

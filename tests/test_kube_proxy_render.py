"""kube-proxy iptables mode rendered from the model (pure): names, rules, partial syncs, bounds."""

from __future__ import annotations

import ipaddress

from harness.cluster.kube_proxy.proxy import TokenBucket
from harness.cluster.kube_proxy.render import (
    KubeProxyConfig,
    ProxyView,
    ServicePortView,
    endpoint_chain_name,
    probability,
    proxy_view,
    render,
    service_port_chain_name,
)
from harness.model import Cluster, ContainerPort, Namespace, Node, Pod
from harness.model.service import Service, ServiceDecl, ServicePort, add_services

IP = ipaddress.IPv4Address


def test_chain_names_match_kube_proxys_own_test_expectations():
    # v1.28.0:pkg/proxy/iptables/proxier_test.go TestOverallIPTablesRulesWithMultipleServices
    assert service_port_chain_name("ns1/svc1:p80", "tcp") == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert endpoint_chain_name("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert service_port_chain_name("ns4/svc4:p80", "tcp") == "KUBE-SVC-4SW47YFZTEDKD3PK"
    assert endpoint_chain_name("ns4/svc4:p80", "tcp", "10.180.0.4:80") == "KUBE-SEP-UKSFD7AGPMPPLUHC"


def test_probability_formatting():
    assert [probability(n) for n in (3, 2)] == ["0.3333333333", "0.5000000000"]
    assert probability(7) == "0.1428571429"


def view(*ports: ServicePortView) -> ProxyView:
    return ProxyView(tuple(ports), "10.244.0.0/16")


def test_service_with_three_endpoints_and_one_without():
    v = view(ServicePortView("ns1/svc1:p80", IP("172.30.0.41"), 80, "tcp",
                             ("10.180.0.1:80", "10.180.0.2:80", "10.180.0.3:80")),
             ServicePortView("ns6/svc6:p80", IP("172.30.0.46"), 80, "tcp", ()))
    text = render(v).restore_text()
    svc, sep1 = "KUBE-SVC-XPGD46QRK7WJZT7O", "KUBE-SEP-SXIVWICOYRO3J4NJ"
    lines = text.splitlines()
    assert lines[0] == "*filter" and lines.count("COMMIT") == 2
    assert ('-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp '
            "-d 172.30.0.46 --dport 80 -j REJECT") in lines
    assert (f'-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 '
            f"--dport 80 -j {svc}") in lines
    assert (f'-A {svc} -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 '
            "! -s 10.244.0.0/16 -j KUBE-MARK-MASQ") in lines
    svc_rules = [ln for ln in lines if ln.startswith(f"-A {svc} ") and "-j KUBE-SEP-" in ln]
    assert [("--probability 0.3333333333" in r, "--probability 0.5000000000" in r, "statistic" in r)
            for r in svc_rules] == [(True, False, True), (False, True, True), (False, False, False)]
    assert svc_rules[0] == (f'-A {svc} -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random '
                            f"--probability 0.3333333333 -j {sep1}")
    assert f"-A {sep1} -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ" in lines
    assert f"-A {sep1} -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80" in lines
    assert "-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN" in lines
    assert ('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE '
            "--random-fully") in lines
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000" in lines
    assert "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP" in lines
    assert lines[-2].endswith("-j KUBE-NODEPORTS")  # the tail call is the last rule of KUBE-SERVICES
    # no nat chain for the service without endpoints
    assert not any(service_port_chain_name("ns6/svc6:p80", "tcp") in ln for ln in lines)


def test_partial_sync_skips_unchanged_services_and_deletes_stale_chains():
    a = ServicePortView("ns/a", IP("10.96.0.2"), 80, "tcp", ("10.244.0.2:80",))
    b = ServicePortView("ns/b", IP("10.96.0.3"), 80, "tcp", ("10.244.0.3:80",))
    rs = render(view(a, b))
    text = rs.restore_text(skip={"ns/a"}, stale_nat_chains=["KUBE-SEP-OLD"])
    assert service_port_chain_name("ns/a", "tcp") in text  # the KUBE-SERVICES capture stays
    assert f":{service_port_chain_name('ns/a', 'tcp')} - [0:0]" not in text
    assert f":{service_port_chain_name('ns/b', 'tcp')} - [0:0]" in text
    assert ":KUBE-SEP-OLD - [0:0]" in text and "-X KUBE-SEP-OLD" in text


def test_large_cluster_mode_drops_endpoint_comments():
    eps = tuple(f"10.244.{i // 250}.{i % 250 + 2}:80" for i in range(1001))
    rs = render(view(ServicePortView("ns/big", IP("10.96.0.2"), 80, "tcp", eps)))
    assert rs.large_cluster_mode
    group = rs.services["ns/big"]
    assert not any("->" in r for r in group.rules)
    assert all("--comment" not in r for r in group.rules if "-j DNAT" in r)


def test_masquerade_all_and_mark_bit():
    v = view(ServicePortView("ns/a", IP("10.96.0.2"), 53, "udp", ("10.244.0.2:53",)))
    rs = render(v, KubeProxyConfig(masquerade_all=True, masquerade_bit=15))
    rules = rs.services["ns/a"].rules
    assert rules[0].endswith("-m udp -p udp -d 10.96.0.2 --dport 53 -j KUBE-MARK-MASQ")
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00008000" in rs.nat_rules_head


def test_proxy_view_from_model_skips_headless_and_not_ready():
    c = Cluster()
    c.nodes["a"] = Node("a", IP("172.18.0.2"), ipaddress.IPv4Network("10.244.0.0/24"))
    c.namespaces["db"] = Namespace("db")
    for i in range(3):
        c.add_pod(Pod("db", f"m{i}", "a", {"app": "m"}, ports=[ContainerPort(3306, "TCP", "mysql")]))
    c.pods["db/m1"].ready = False
    add_services(c, [ServiceDecl(Service("db", "m", [ServicePort(3306, "TCP", "", "mysql")], {"app": "m"}), None, "s"),
                     ServiceDecl(Service("db", "h", [ServicePort(3306)], {"app": "m"}, headless=True), None, "h")])
    v = proxy_view(c)
    assert [(p.name, str(p.cluster_ip), p.endpoints) for p in v.ports] == [
        ("db/m", "10.96.0.2", ("10.244.0.2:3306", "10.244.0.4:3306"))]


def test_token_bucket_allows_a_burst_of_two_then_one_per_interval():
    b = TokenBucket(1.0, 2, now=0.0)
    assert b.wait_s(0.0) == 0
    b.take(0.0)
    assert b.wait_s(0.0) == 0
    b.take(0.0)
    assert b.wait_s(0.0) == 1.0
    assert b.wait_s(0.6) == 0.4 or abs(b.wait_s(0.6) - 0.4) < 1e-9
    assert b.wait_s(1.0) == 0


def test_stale_udp_conntrack_follows_clean_stale_entries():
    from harness.cluster.kube_proxy.render import stale_udp_conntrack

    dns = ServicePortView("kube-system/kube-dns:dns", IP("10.96.0.10"), 53, "udp", ("10.244.0.5:53", "10.244.1.5:53"))
    tcp = ServicePortView("db/m", IP("10.96.0.2"), 3306, "tcp", ("10.244.0.2:3306",))
    empty = ServicePortView("kube-system/kube-dns:dns", IP("10.96.0.10"), 53, "udp", ())
    # first sync: every UDP port with endpoints is newly active; TCP is never touched
    assert stale_udp_conntrack(None, view(dns, tcp)) == [["-D", "--orig-dst", "10.96.0.10", "-p", "udp"]]
    assert stale_udp_conntrack(view(dns, tcp), view(dns, tcp)) == []
    # an endpoint removed: its NATed entries go, so a client that keeps sending reaches another one
    one = ServicePortView(dns.name, dns.cluster_ip, 53, "udp", ("10.244.1.5:53",))
    assert stale_udp_conntrack(view(dns), view(one)) == [
        ["-D", "--orig-dst", "10.96.0.10", "--dst-nat", "10.244.0.5", "-p", "udp"]]
    # 0 -> some endpoints: the black-hole entries of the empty time go; a deleted port too
    assert stale_udp_conntrack(view(empty), view(one)) == [["-D", "--orig-dst", "10.96.0.10", "-p", "udp"]]
    assert stale_udp_conntrack(view(one), view()) == [["-D", "--orig-dst", "10.96.0.10", "-p", "udp"]]


def _cli(argv):
    import argparse

    from harness.cluster.kube_proxy import commands

    p = argparse.ArgumentParser(prog="netpol-harness")
    sub = p.add_subparsers(dest="command")
    bench = sub.add_parser("bench").add_subparsers(dest="bench")
    commands.register(sub, bench)
    args = p.parse_args(argv)
    return args.func(args)


def test_cli_prints_the_restore_input_and_the_slices(tmp_path, capsys):
    import yaml

    (tmp_path / "t.yaml").write_text(
        "nodes: [{name: a}]\nnamespaces: [{name: db}]\n"
        "pods: [{name: m0, namespace: db, node: a, labels: {app: m}, ports: [{port: 3306, name: mysql}]}]\n"
        "manifests: [s.yaml]\n")
    (tmp_path / "s.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: m, namespace: db}\n"
                                     "spec: {selector: {app: m}, ports: [{name: mysql, port: 3306, targetPort: mysql}]}\n")
    assert _cli(["kube-proxy", str(tmp_path / "t.yaml")]) == 0
    out = capsys.readouterr().out
    svc = service_port_chain_name("db/m:mysql", "tcp")
    assert f"-j {svc}" in out and "-j DNAT --to-destination 10.244.0.2:3306" in out and out.count("COMMIT") == 2
    assert _cli(["kube-proxy", str(tmp_path / "t.yaml"), "--slices"]) == 0
    (slice_,) = list(yaml.safe_load_all(capsys.readouterr().out))
    assert slice_["kind"] == "EndpointSlice" and slice_["endpoints"][0]["addresses"] == ["10.244.0.2"]

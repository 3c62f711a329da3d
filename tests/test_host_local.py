"""harness.model.host_local and Cluster.allocate_ip: pod IPs round-robin like host-local IPAM
(containernetworking/plugins v1.9.1 plugins/ipam/host-local/backend/allocator). Pure, no root."""

from __future__ import annotations

import ipaddress

import pytest

from harness.errors import ConfigError
from harness.model import host_local
from harness.model.cluster import Cluster, Node, Pod

A = ipaddress.ip_address
NET = ipaddress.ip_network("10.244.0.0/29")  # range .1-.6, gateway .1


def test_the_range_is_network_plus_one_to_the_last_address_without_the_v4_broadcast():
    assert host_local.host_range(NET) == (int(A("10.244.0.1")), int(A("10.244.0.6")))
    v6 = ipaddress.ip_network("fd00::/126")
    assert host_local.host_range(v6) == (int(A("fd00::1")), int(A("fd00::3")))  # IPv6: no broadcast


def test_round_robin_starts_after_the_last_reserved_wraps_and_skips_gateway_and_used():
    gw = A("10.244.0.1")
    assert host_local.round_robin(NET, gw, set(), None) == A("10.244.0.2")  # RangeStart is the gateway
    assert host_local.round_robin(NET, gw, set(), A("10.244.0.3")) == A("10.244.0.4")
    assert host_local.round_robin(NET, gw, set(), A("10.244.0.6")) == A("10.244.0.2")  # wrap, gateway skipped
    assert host_local.round_robin(NET, gw, {A("10.244.0.4"), A("10.244.0.5")}, A("10.244.0.3")) == A("10.244.0.6")
    # the last reserved address itself is the last candidate (GetIter stops back at the start)
    used = {A(f"10.244.0.{i}") for i in (2, 4, 5, 6)}
    assert host_local.round_robin(NET, gw, used, A("10.244.0.3")) == A("10.244.0.3")
    assert host_local.round_robin(NET, gw, used | {A("10.244.0.3")}, A("10.244.0.3")) is None  # full
    assert host_local.round_robin(NET, gw, set(), A("10.9.9.9")) == A("10.244.0.2")  # outside: from the start
    assert host_local.round_robin(ipaddress.ip_network("10.0.0.0/31"), None, set(), None) is None


def test_round_robin_works_on_a_v6_64_without_listing_it():
    net = ipaddress.ip_network("fd00:10:244::/64")
    assert host_local.round_robin(net, A("fd00:10:244::1"), set(), A("fd00:10:244::ffff")) == A("fd00:10:244::1:0")


def test_lowest_free_reuses_at_once():
    used = {A("10.244.0.3")}
    assert host_local.lowest_free(NET, A("10.244.0.1"), used) == A("10.244.0.2")


def _cluster() -> Cluster:
    c = Cluster()
    c.nodes["n"] = Node("n", A("172.18.0.2"), NET)
    return c


def test_a_deleted_pods_ip_comes_back_only_after_the_rest_of_the_range():
    c = _cluster()
    ips = [str(c.add_pod(Pod("x", f"p{i}", "n")).ip) for i in range(3)]
    assert ips == ["10.244.0.2", "10.244.0.3", "10.244.0.4"]
    c.remove_pod("x/p1")  # 10.244.0.3 is free again, but not next
    assert [str(c.add_pod(Pod("x", f"q{i}", "n")).ip) for i in range(3)] == ["10.244.0.5", "10.244.0.6",
                                                                             "10.244.0.3"]
    with pytest.raises(ConfigError, match="no free address left"):
        c.add_pod(Pod("x", "full", "n"))


def test_a_given_ip_is_a_reservation_like_a_requested_ip():
    c = _cluster()
    c.add_pod(Pod("x", "fixed", "n", ip=A("10.244.0.5")))
    assert str(c.allocate_ip("n")) == "10.244.0.6"
    assert str(c.allocate_ip("n")) == "10.244.0.2"  # allocate_ip reserves: a second call moves on
    assert c == _cluster_with(c)  # the cursor is bookkeeping, not part of the cluster's equality


def _cluster_with(c: Cluster) -> Cluster:
    other = _cluster()
    other.pods, other.namespaces = dict(c.pods), dict(c.namespaces)
    return other


def test_churn_lowest_gives_the_freed_ip_at_once_where_the_lab_goes_round_robin():
    from harness.bench.churn import lowest_free_ip

    c = _cluster()
    for i in range(3):
        c.add_pod(Pod("x", f"p{i}", "n"))
    c.remove_pod("x/p0")
    assert str(lowest_free_ip(c, "n")) == "10.244.0.2" and str(c.allocate_ip("n")) == "10.244.0.5"

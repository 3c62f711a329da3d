"""The `lab` fixture on the shipped topologies: every realized pod reaches every other one
(no policy yet) over TCP, UDP and ICMP, within and across nodes, full and light."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.kernel


def served(pod, protocol):
    return [p.port for p in pod.ports if p.protocol == protocol]


@pytest.mark.topology("default")
def test_default_topology_all_pairs_reach(lab):
    pods = lab.cluster.pods
    realized = [k for k in pods if k in lab.realized_pods()]
    kinds = {lab.cluster.pods[k].kind.value for k in realized}
    nodes = {pods[k].node for k in realized}
    assert {"full", "light"} <= kinds and len(nodes) >= 2  # the test covers both kinds, across nodes
    for protocol in ("TCP", "UDP"):
        for dst in realized:
            ports = served(pods[dst], protocol)
            if not ports:
                continue
            m = lab.matrix(pods=realized, port=ports[0], protocol=protocol)
            for (s, d), outcome in m.items():
                if d != dst:
                    continue
                expect = "n/a-same-light-host" if s != d and lab.is_light(s) and lab.is_light(d) and \
                    pods[s].node == pods[d].node else "connected"
                assert outcome == expect, (s, d, protocol, ports[0])
    m = lab.matrix(pods=realized, protocol="ICMP")
    assert {v for v in m.values()} <= {"connected", "n/a-same-light-host"}
    assert sum(v == "connected" for v in m.values()) >= len(realized) ** 2 - len(realized)


@pytest.mark.topology("k8s-e2e")
def test_k8s_e2e_topology_is_a_full_9x9_truth_table_without_policies(lab):
    keys = sorted(lab.cluster.pods)
    assert keys == [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
    for port in (80, 81):
        for protocol in ("TCP", "UDP"):
            m = lab.matrix(port=port, protocol=protocol)
            assert len(m) == 81 and set(m.values()) == {"connected"}, (port, protocol)

"""Golden dumps of the example cluster (harness.engines.kube_router.render.synthetic.example_cluster), one per profile.

The goldens were checked line by line against kube-router's source; where each kind of line
comes from (cloudnativelabs/kube-router, pkg/controllers/netpol unless said otherwise):

- ``-I INPUT|FORWARD|OUTPUT 1 ... "kube-router netpol - <uuid>"``: ensureTopLevelChains, uuid =
  addUUIDForRuleSpec (sha256 of chain + args joined);
- KUBE-ROUTER-INPUT first rules (cluster IP range, LOCAL TCP/UDP(/SCTP v2.10) node ports):
  ensureTopLevelChains, inserted at positions 1..n;
- per local pod, KUBE-ROUTER-FORWARD/OUTPUT ``-d`` and FORWARD physdev ``-d``:
  interceptPodInboundTraffic; INPUT/FORWARD/OUTPUT ``-s`` and FORWARD physdev ``-s``:
  interceptPodOutboundTraffic (pod.go);
- ``-j KUBE-NWPLCY-TAIL`` (v2.10): ensureTailChainPosition; last rule ``--mark 0x20000`` ACCEPT:
  ensureExplicitAccept (utils.AppendUnique moves both to the end);
- KUBE-NWPLCY-DEFAULT: ensureDefaultNetworkPolicyChain; KUBE-NWPLCY-COMMON: ensureCommonPolicyChain;
  KUBE-NWPLCY-TAIL: populateDefaultTailChain (REJECTs only with --netpol-default-deny);
- policy chains: processIngressRules/processEgressRules -> appendRuleToPolicyChain (MARK then
  RETURN-if-marked), sets: syncNetworkPolicyChains + evalIPBlockPeer (/0 as two /1, nomatch);
- pod chains: setupPodNetpolRules (``-I 1``, so reversed), dropUnmarkedTrafficRules, final
  0x20000 mark (pod.go).

Regenerate after a deliberate change with ``NPH_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.engines.kube_router.render.kube_router import dump, render_node
from harness.engines.kube_router.render.synthetic import example_cluster

GOLDEN = Path(__file__).parent / "golden" / "render"
V = 1700000000000000000

CASES = {
    "example_v1.2_node-a": dict(node="node-a", profile="v1.2"),
    "example_v1.3_node-a": dict(node="node-a", profile="v1.3"),
    "example_v2.6_node-a": dict(node="node-a", profile="v2.6"),
    "example_v2.6_node-b": dict(node="node-b", profile="v2.6"),
    "example_v2.10_node-a_default-deny": dict(node="node-a", profile="v2.10", default_deny=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    case = dict(CASES[name])
    node = case.pop("node")
    text = dump(render_node(example_cluster(), node, sync_version=V, **case))
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("NPH_UPDATE_GOLDEN"):
        path.write_text(text)
    expected = path.read_text()
    assert text.splitlines() == expected.splitlines()

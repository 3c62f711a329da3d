"""Golden dumps of the example cluster (harness.engines.kube_router.render.synthetic.example_cluster), one per
profile tag (``profiles.PROFILES``).

The goldens were checked line by line against kube-router's source at the tag in their name; where
each kind of line comes from (cloudnativelabs/kube-router, pkg/controllers/netpol unless said
otherwise; v1.2.x: ``v1.2.1:pod.go syncPodFirewallChains`` instead of the pod-chain items below,
see ``kube_router._v12_pod_chains``):

- ``-I INPUT|FORWARD|OUTPUT 1 ... "kube-router netpol - <uuid>"``: ensureTopLevelChains, uuid =
  addUUIDForRuleSpec (sha256 of chain + args joined);
- KUBE-ROUTER-INPUT first rules (cluster IP range, LOCAL TCP/UDP(/SCTP v2.10) node ports):
  ensureTopLevelChains, inserted at positions 1..n;
- per local pod, KUBE-ROUTER-FORWARD/OUTPUT ``-d`` and FORWARD physdev ``-d``:
  interceptPodInboundTraffic; INPUT/FORWARD/OUTPUT ``-s`` and FORWARD physdev ``-s``:
  interceptPodOutboundTraffic (pod.go);
- ``-j KUBE-NWPLCY-TAIL`` (v2.10.0): ensureTailChainPosition; last rule ``--mark 0x20000`` ACCEPT
  (v1.3.1..v2.6.3): ensureExplicitAccept (utils.AppendUnique moves it to the end);
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

# One golden per profile tag (the aliases render the same text, checked below); node-b is virtual
# and has no local pods with a chain.
CASES = {
    "example_v1.1.1_node-a": dict(node="node-a", profile="v1.1.1"),
    "example_v1.2.1_node-a": dict(node="node-a", profile="v1.2.1"),
    "example_v1.2.2_node-a": dict(node="node-a", profile="v1.2.2"),
    "example_v1.3.0_node-a": dict(node="node-a", profile="v1.3.0"),
    "example_v1.3.1_node-a": dict(node="node-a", profile="v1.3.1"),
    "example_v1.3.2_node-a": dict(node="node-a", profile="v1.3.2"),
    "example_v1.4.0_node-a": dict(node="node-a", profile="v1.4.0"),
    "example_v1.5.0_node-a": dict(node="node-a", profile="v1.5.0"),
    "example_v1.5.1_node-a": dict(node="node-a", profile="v1.5.1"),
    "example_v2.0.0_node-a": dict(node="node-a", profile="v2.0.0"),
    "example_v2.1.2_node-a": dict(node="node-a", profile="v2.1.2"),
    "example_v2.2.0_node-a": dict(node="node-a", profile="v2.2.0"),
    "example_v2.5.0_node-a": dict(node="node-a", profile="v2.5.0"),
    "example_v2.6.0_node-a": dict(node="node-a", profile="v2.6.0"),
    "example_v2.6.3_node-a": dict(node="node-a", profile="v2.6.3"),
    "example_v2.6.3_node-b": dict(node="node-b", profile="v2.6.3"),
    "example_v2.8.0_node-a": dict(node="node-a", profile="v2.8.0"),
    "example_v2.10.0_node-a": dict(node="node-a", profile="v2.10.0"),
    "example_v2.10.0_node-a_default-deny": dict(node="node-a", profile="v2.10.0", default_deny=True),
    "example_v2.11.1_node-a": dict(node="node-a", profile="v2.11.1"),
    "example_v2.11.1_node-a_default-deny": dict(node="node-a", profile="v2.11.1", default_deny=True),
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


@pytest.mark.parametrize("alias", ["v1.2", "v1.3", "v2.6", "v2.10", "v2.11"])
def test_alias_renders_its_tag(alias):
    from harness.engines.kube_router.render.profiles import ALIASES

    def text(profile):
        return dump(render_node(example_cluster(), "node-a", sync_version=V, profile=profile))
    assert text(alias) == text(ALIASES[alias])

"""Dual-stack in the kernel: kube-router v2.10's IPv6 half programmed with ip6tables and inet6 sets
next to the IPv4 half, and conformance cases probed over IPv6 whose verdicts match the oracle."""

from __future__ import annotations

import os

import pytest

from harness.conformance.case import apply_step, load_case
from harness.conformance.runner import RunOptions, full_sync, node_engines, run_case
from harness.engines.kube_router.apply import inspect
from harness.errors import EnvironmentProblem
from harness.kernel.backends import require_tools
from harness.outcome import Outcome

pytestmark = pytest.mark.kernel

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
IPV6_BLOCK_CASE = os.path.join(HERE, "dualstack", "ipblock-v6-except.yaml")
# cases of IPv4 topologies, run over IPv6 (runner: RunOptions.family -> enable_dual_stack)
CASES = [os.path.join(ROOT, "cases", "conformance", name) for name in (
    "07-allow-from-namespace.yaml", "17-named-port-ingress.yaml", "23-udp-only.yaml", "29-policy-update.yaml")]


def _tools(backend: str) -> None:
    try:
        require_tools(backend)
    except EnvironmentProblem as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("backend, path", [("nft", p) for p in [IPV6_BLOCK_CASE, *CASES]]
                         + [("legacy", IPV6_BLOCK_CASE), ("legacy", CASES[0])],
                         ids=lambda v: os.path.splitext(os.path.basename(v))[0] if "/" in str(v) else v)
def test_conformance_verdicts_over_ipv6_match_the_oracle(backend, path):
    _tools(backend)
    result = run_case(load_case(path), RunOptions(backend=backend, profile="v2.10", family="IPv6"))
    assert result.error is None, result.failure_summary()
    assert result.oracle_disagreements == 0, result.failure_summary()
    assert result.mismatch_count == 0, result.failure_summary()
    outcomes = sum((s.outcomes for s in result.steps), start=type(result.steps[0].outcomes)())
    # the IPv6 rules really decide: denied cells are refused (ICMPv6 port unreachable), not lost
    assert outcomes[Outcome.REFUSED] > 0 and outcomes[Outcome.CONNECTED] > 0, outcomes
    assert outcomes[Outcome.TIMEOUT] == 0, outcomes


def test_dual_stack_sync_programs_both_families_and_cleans_its_own_sets():
    _tools("nft")
    from harness.lab import Lab

    case = load_case(IPV6_BLOCK_CASE)
    cluster = case.load_cluster()
    opts = RunOptions(backend="nft", profile="v2.10")
    with Lab(cluster) as lab, node_engines(lab, lab.cluster, opts) as engines:
        apply_step(lab.cluster, case.steps[0], case.source)
        _, syncs = full_sync(lab.cluster, lab, opts, engines)
        ns = lab.node_netns("node-a")
        v4, v6 = inspect(ns, "nft"), inspect(ns, "nft", family="IPv6")
        a6 = str(lab.cluster.pods["x/a"].ip6)
        v6_sets = {n: e for n, e in v6["sets"].items() if n.startswith("inet6:KUBE-")}
        assert v6_sets and all(":" in entry for entries in v6_sets.values() for entry in entries)
        assert [a6] in v6_sets.values()  # the policy's target set holds x/a's IPv6 address
        assert any(f"-d {a6}/128" in r for r in v6["chains"]["KUBE-ROUTER-FORWARD"])
        assert not any("fd00:" in r for r in v4["chains"]["KUBE-ROUTER-FORWARD"])
        t = syncs[0].timings
        assert set(t["families"]) == {"IPv4", "IPv6"}
        assert any(e["argv"][0] == "ip6tables-nft-restore" for e in t["exec_log"])
        # a second sync renames every chain and swaps every set; only stale sets of its family go
        apply_step(lab.cluster, case.steps[1], case.source)
        _, syncs = full_sync(lab.cluster, lab, opts, engines)
        after = inspect(ns, "nft", family="IPv6")
        assert set(v6_sets) <= set(after["sets"])  # step 0's policy is still there: same names
        assert any(n.startswith("KUBE-DST-") for n in after["sets"])  # the IPv4 half kept its sets
        assert not [n for s in syncs for n in s.timings["stale_sets"]]
        # the first policy goes: each family destroys its own stale sets (cleanupStaleIPSets per family)
        del lab.cluster.policies["x/allow-v6-block"]
        _, syncs = full_sync(lab.cluster, lab, opts, engines)
        stale = [n for s in syncs for n in s.timings["stale_sets"]]
        assert any(n.startswith("inet6:KUBE-") for n in stale) and any(n.startswith("KUBE-") for n in stale), stale
        left = inspect(ns, "nft", family="IPv6")["sets"]
        assert not set(stale) & set(left)


def test_light_and_full_pods_answer_alike_over_both_families():
    """No policy: the IPv6 matrix of the default topology (full and light pods, two nodes) is its
    IPv4 matrix, cell for cell (unserved ports refuse in both)."""
    from harness.lab import Lab
    from harness.model.dualstack import enable_dual_stack
    from harness.model.topology import load_topology

    with Lab(enable_dual_stack(load_topology("default"))) as lab:
        assert any(lab.is_light(k) for k in lab.cluster.pods)
        v4, v6 = lab.matrix(port=80), lab.matrix(port=80, family="IPv6")
        assert v6 == v4
        assert Outcome.CONNECTED in v6.values() and Outcome.REFUSED in v6.values()

"""kube-router v1.2.x's departures from the NetworkPolicy spec, as the conformance runner expects
them (``harness.engines.kube_router.deviations``; pure, no root). The kernel side (the datapath
gives exactly these verdicts) is cases/test_conformance.py::test_v12_deviations_are_recorded_per_tag_not_mismatches."""

from __future__ import annotations

import os

import pytest

from harness.analysis.truthtable import TruthTable
from harness.conformance.case import apply_step, load_case, probe_pods
from harness.conformance.runner import RunOptions, engine_deviations, with_deviations
from harness.engines.kube_router.deviations import (
    DIRECTIONLESS_JUMPS,
    NO_ENDPORT,
    has_deviations,
    spec_deviations,
)
from harness.engines.kube_router.engine import KubeRouterEngine
from harness.engines.kube_router.render.profiles import PROFILES

CASES = os.path.join(os.path.dirname(__file__), "..", "cases", "conformance")


def _after_first_step(name: str):
    case = load_case(os.path.join(CASES, name))
    cluster = case.load_cluster()
    apply_step(cluster, case.steps[0], case.source)
    return case, cluster, probe_pods(cluster)


def test_direction_less_jumps_let_the_namespace_in():
    # deny-ingress (Ingress) + egress-in-namespace (Egress) both select x/*: v1.2.1:pod.go jumps from
    # x/b's chain to both, so egress-in-namespace's rule (src x/*, dst x/*) marks x/a -> x/b
    _, cluster, pods = _after_first_step("48-deny-ingress-allow-egress-in-namespace.yaml")
    devs = spec_deviations(cluster, "v1.2.1", pods, 80)
    assert sorted((d.src, d.dst) for d in devs) == sorted(
        (s, d) for s in ("x/a", "x/b", "x/c") for d in ("x/a", "x/b", "x/c") if s != d)
    assert all(d.allowed and d.kind == DIRECTIONLESS_JUMPS for d in devs)
    assert "v1.2.1:pod.go" in devs[0].why
    # what the spec denies from outside x stays denied: the egress rule needs the source in x
    assert not any(d.src.startswith(("y/", "z/")) for d in devs)
    assert spec_deviations(cluster, "v1.2.2", pods, 80) == devs  # the rules are equal through v1.2.3


def test_no_endport_in_v12():
    # 21-endport-range step 2: x/a may be reached from y on 79..80; v1.2.x matches 79 only
    case = load_case(os.path.join(CASES, "21-endport-range.yaml"))
    cluster = case.load_cluster()
    for step in case.steps[:3]:
        apply_step(cluster, step, case.source)
    pods = probe_pods(cluster)
    devs = spec_deviations(cluster, "v1.2.1", pods, 80)
    assert sorted((d.src, d.dst) for d in devs) == [("y/a", "x/a"), ("y/b", "x/a"), ("y/c", "x/a")]
    assert all(d.kind == NO_ENDPORT and not d.allowed for d in devs)
    assert spec_deviations(cluster, "v1.2.1", pods, 79) == []  # the range's first port is matched
    assert spec_deviations(cluster, "v1.3.1", pods, 80) == []


@pytest.mark.parametrize("tag", sorted(PROFILES))
def test_only_the_v1_1_and_v1_2_profiles_have_deviations(tag):
    # v1.1.1 (per-rule) has the v1.2 layout's direction-less jumps and no endPort too
    assert has_deviations(tag) == tag.startswith(("v1.1.", "v1.2."))


def test_runner_expects_the_engines_verdict_in_deviating_cells():
    case, cluster, pods = _after_first_step("48-deny-ingress-allow-egress-in-namespace.yaml")
    devs = engine_deviations(KubeRouterEngine(), RunOptions(profile="v1.2.1"), cluster, pods, case.steps[0])
    assert len(devs) == 6
    assert engine_deviations(KubeRouterEngine(), RunOptions(profile="v2.10"), cluster, pods, case.steps[0]) == []
    assert engine_deviations(object(), RunOptions(), cluster, pods, case.steps[0]) == []  # no such method: none
    table = TruthTable(pods, default=False, ignore_self=True)
    adjusted = with_deviations(table, devs)
    assert adjusted.get("x/a", "x/b") is True and adjusted.get("y/a", "x/b") is False
    assert "direction-less-jumps" in adjusted.cell("x/a", "x/b").detail
    assert table.get("x/a", "x/b") is False  # the input table is left alone

"""The conformance suite: every case of cases/conformance/ on both iptables backends, in the kernel.

Each case builds its own lab of the case's topology, programs kube-router's rules (profile from
``--profile``, default v2.10; strategy ``restore``) on every real node at every step, probes all
pairs and must match the expected table (hand-written, else the oracle's) in every cell.
Without root or the ipset/iptables binaries the cases skip with the reason.

``cases/conformance/deviations/`` holds cases where kube-router itself departs from the
NetworkPolicy API (the renderer reproduces kube-router faithfully, the oracle follows the API):
they are strict xfails, so a fix of the deviation in the renderer's profile shows up as XPASS.
Departures of one release (v1.2.x: no endPort, direction-less jumps) are the engine's
``spec_deviations`` instead: the runner expects the tag's verdict in those cells and lists them.
"""

from __future__ import annotations

import glob
import os

import pytest

from harness.conformance.case import load_case
from harness.conformance.runner import RunOptions, run_case
from harness.engines.kube_router.render.profiles import get_profile
from harness.errors import EnvironmentProblem

HERE = os.path.dirname(__file__)
CASE_FILES = sorted(glob.glob(os.path.join(HERE, "conformance", "*.yaml")))
DEVIATION_FILES = sorted(glob.glob(os.path.join(HERE, "conformance", "deviations", "*.yaml")))
BACKENDS = ("nft", "legacy")


def _id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _profile(request: pytest.FixtureRequest) -> str:
    try:
        return request.config.getoption("--profile")
    except ValueError:  # the harness plugin is not loaded
        return "v2.10"


def _run(path: str, backend: str, profile: str, request: pytest.FixtureRequest):
    case = load_case(path)
    try:
        result = run_case(case, RunOptions(backend=backend, profile=profile))
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    for step in result.steps:
        request.node.user_properties.append((f"step{step.index}_sync_ms", round(step.sync_ms, 2)))
    assert result.error is None, result.failure_summary()
    assert result.steps and all(s.diff.correct + s.diff.count > 0 for s in result.steps), "no cell was checked"
    assert result.oracle_disagreements == 0, f"{case.name}: the oracle contradicts the hand-written table\n\n" + (
        result.failure_summary())
    assert result.mismatch_count == 0, (
        f"{case.name}: {result.mismatch_count} mismatching cells on {backend}/{profile}\n\n"
        + result.failure_summary())


@pytest.mark.kernel
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", CASE_FILES, ids=_id)
def test_conformance_case(path: str, backend: str, request: pytest.FixtureRequest) -> None:
    # a profile's own departures from the API (v1.2.x: no endPort, direction-less jumps) are
    # expected by the runner cell by cell (the engine's spec_deviations), not xfailed per case
    _run(path, backend, _profile(request), request)


V12_DEVIATION_CASES = {"48-deny-ingress-allow-egress-in-namespace": "direction-less-jumps",
                       "21-endport-range": "no-endport"}


@pytest.mark.kernel
@pytest.mark.parametrize("profile", ["v1.2.1", "v1.2.2", "v1.3.1"])
def test_v12_deviations_are_recorded_per_tag_not_mismatches(profile: str) -> None:
    # v1.2.1:pod.go syncPodFirewallChains (jumps without -d/-s to every policy selecting the pod)
    # and v1.2.1:policy.go processNetworkPolicyPorts (no endPort): the kernel gives the tag's
    # verdict in exactly the cells the profile's deviations name; v1.3.1 has none
    for name, kind in V12_DEVIATION_CASES.items():
        try:
            result = run_case(load_case(os.path.join(HERE, "conformance", name + ".yaml")),
                              RunOptions(backend="nft", profile=profile))
        except EnvironmentProblem as e:
            pytest.skip(str(e))
        assert result.error is None and result.mismatch_count == 0, result.failure_summary()
        kinds = {d.kind for s in result.steps for d in s.deviations}
        if get_profile(profile).policy_pods_only:
            assert kind in kinds, (name, kinds)
        else:
            assert result.deviation_count == 0


@pytest.mark.kernel
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", DEVIATION_FILES, ids=_id)
def test_known_kube_router_deviation(path: str, backend: str, request: pytest.FixtureRequest) -> None:
    request.applymarker(pytest.mark.xfail(strict=True, reason=load_case(path, check=False).name))
    _run(path, backend, _profile(request), request)

"""The conformance suite: every case of cases/conformance/ on both iptables backends, in the kernel.

Each case builds its own lab of the case's topology, programs kube-router's rules (profile from
``--profile``, default v2.10; strategy ``restore``) on every real node at every step, probes all
pairs and must match the expected table (hand-written, else the oracle's) in every cell.
Without root or the ipset/iptables binaries the cases skip with the reason.

``cases/conformance/deviations/`` holds cases where kube-router itself departs from the
NetworkPolicy API (the renderer reproduces kube-router faithfully, the oracle follows the API):
they are strict xfails, so a fix of the deviation in the renderer's profile shows up as XPASS.
"""

from __future__ import annotations

import glob
import os

import pytest

from harness.conformance.case import load_case, uses_field
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
    profile = _profile(request)
    if not get_profile(profile).end_port and uses_field(load_case(path, check=False), "endPort"):
        # Releases before endPort support match only `port`: a known difference of the profile.
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"profile {profile} renders no endPort ranges"))
    _run(path, backend, profile, request)


@pytest.mark.kernel
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", DEVIATION_FILES, ids=_id)
def test_known_kube_router_deviation(path: str, backend: str, request: pytest.FixtureRequest) -> None:
    request.applymarker(pytest.mark.xfail(strict=True, reason=load_case(path, check=False).name))
    _run(path, backend, _profile(request), request)

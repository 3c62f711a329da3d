"""The conformance suite: every case of cases/conformance/ on both iptables backends, in the kernel.

Each case builds its own lab of the case's topology, programs kube-router's rules (profile from
``--profile``, default v2.10; strategy ``restore``) on every real node at every step, probes all
pairs and must match the expected table (hand-written, else the oracle's) in every cell.
Without root or the ipset/iptables binaries the cases skip with the reason.
"""

from __future__ import annotations

import glob
import os

import pytest

from harness.conformance.case import load_case
from harness.conformance.runner import RunOptions, run_case
from harness.errors import EnvironmentProblem

CASE_FILES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "conformance", "*.yaml")))
BACKENDS = ("nft", "legacy")


def _id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


@pytest.mark.kernel
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", CASE_FILES, ids=_id)
def test_conformance_case(path: str, backend: str, request: pytest.FixtureRequest) -> None:
    case = load_case(path)
    try:
        profile = request.config.getoption("--profile")
    except ValueError:  # the harness plugin is not loaded
        profile = "v2.10"
    options = RunOptions(backend=backend, profile=profile)
    try:
        result = run_case(case, options)
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    for step in result.steps:
        request.node.user_properties.append((f"step{step.index}_sync_ms", round(step.sync_ms, 2)))
    assert result.error is None, result.failure_summary()
    assert result.steps and all(s.diff.correct > 0 for s in result.steps), "no cell was checked"
    assert result.mismatch_count == 0 and result.oracle_disagreements == 0, (
        f"{case.name}: {result.mismatch_count} mismatching cells on {backend}/{profile}\n\n"
        + result.failure_summary())

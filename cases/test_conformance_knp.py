"""The conformance cases on the kube-network-policies engine (nftables + NFQUEUE; v1.1.1).

nftables only: the iptables backend choice does not apply to this engine (its COMPAT datapath
uses iptables-nft for the queue rule alone, see harness/engines/kube_network_policies/ruleset.py).
Smoke size (the default run) takes a handful of cases covering features the engine's own
evaluation handles differently from kube-router's rules (named ports, endPort, UDP, updates,
light pods, a kube-router deviation); ``--scenario-size full`` (or NPH_SCENARIO_SIZE=full) takes every case,
kube-router's known deviations included: this engine follows the API there, so they must pass.
A denied probe is dropped here (NF_DROP), not refused, so every denied cell costs a timeout.
"""

from __future__ import annotations

import glob
import os

import pytest

from harness.conformance.case import load_case
from harness.conformance.runner import RunOptions, run_case
from harness.errors import EnvironmentProblem
from harness.scenarios.options import scenario_size

HERE = os.path.dirname(__file__)
CASE_FILES = sorted(glob.glob(os.path.join(HERE, "conformance", "*.yaml")))
DEVIATION_FILES = sorted(glob.glob(os.path.join(HERE, "conformance", "deviations", "*.yaml")))
SMOKE = ("17-named-port-ingress", "21-endport-range", "23-udp-only", "29-policy-update",
         "47-default-topology-light-pods", "egress-named-port-without-to")


def _id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "knp_case" in metafunc.fixturenames:
        files = CASE_FILES + DEVIATION_FILES
        if scenario_size(metafunc.config) != "full":
            files = [f for f in files if _id(f) in SMOKE]
        metafunc.parametrize("knp_case", files, ids=[_id(f) for f in files])


@pytest.mark.kernel
def test_conformance_case_on_kube_network_policies(knp_case: str, request: pytest.FixtureRequest) -> None:
    case = load_case(knp_case)
    try:
        result = run_case(case, RunOptions(engine="kube-network-policies", profile="v1.1.1"))
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    assert result.error is None, result.failure_summary()
    assert result.steps and all(s.diff.correct + s.diff.count > 0 for s in result.steps), "no cell was checked"
    assert not result.engine_errors, result.engine_errors
    assert result.mismatch_count == 0, (
        f"{case.name}: {result.mismatch_count} mismatching cells on kube-network-policies\n\n"
        + result.failure_summary())

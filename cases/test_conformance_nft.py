"""The conformance cases on kube-router v2.11.1's nftables datapath (``--use-nftables-for-netpol``:
``datapath: nftables``, profile v2.11.1), in the kernel.

Smoke size (the default run) takes a handful of cases covering what the nftables render writes
differently from the iptables one (ipBlock except sub-chains, named ports, endPort ranges, UDP,
policy updates with stale-chain GC); NPH_SCENARIO_SIZE=full takes
every case. The deviations of cases/conformance/deviations/ (kube-router's policy semantics,
shared by both datapaths) are strict xfails here too; cases/conformance/deviations/nftables/ holds
those of the nftables datapath alone (the iptables suite does not run them).
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
NFT_DEVIATION_FILES = sorted(glob.glob(os.path.join(HERE, "conformance", "deviations", "nftables", "*.yaml")))
SMOKE = ("02-default-deny-all", "14-ipblock-egress-except", "17-named-port-ingress", "21-endport-range",
         "23-udp-only", "29-policy-update", "ipblock-overlapping-cidrs")
OPTIONS = RunOptions(profile="v2.11.1", datapath="nftables")


def _id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _pick(metafunc: pytest.Metafunc, files: list[str]) -> list[str]:
    if scenario_size(metafunc.config) != "full":
        return [f for f in files if _id(f) in SMOKE]
    return files


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name, files in (("nft_case", CASE_FILES), ("nft_deviation", DEVIATION_FILES + NFT_DEVIATION_FILES)):
        if name in metafunc.fixturenames:
            picked = _pick(metafunc, files)
            metafunc.parametrize(name, picked, ids=[_id(f) for f in picked])


def _run(path: str):
    case = load_case(path)
    try:
        result = run_case(case, OPTIONS)
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    assert result.error is None, result.failure_summary()
    assert result.steps and all(s.diff.correct + s.diff.count > 0 for s in result.steps), "no cell was checked"
    return case, result


@pytest.mark.kernel
def test_conformance_case_on_nftables_datapath(nft_case: str) -> None:
    case, result = _run(nft_case)
    assert not result.engine_errors, result.engine_errors
    assert result.mismatch_count == 0, (
        f"{case.name}: {result.mismatch_count} mismatching cells on the nftables datapath\n\n"
        + result.failure_summary())


@pytest.mark.kernel
def test_known_deviation_on_nftables_datapath(nft_deviation: str, request: pytest.FixtureRequest) -> None:
    request.applymarker(pytest.mark.xfail(strict=True, reason=load_case(nft_deviation, check=False).name))
    case, result = _run(nft_deviation)
    assert result.mismatch_count == 0, result.failure_summary()

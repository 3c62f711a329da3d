"""One enforcement configuration reaches a scenario's kernel calls: the pytest ``--backend``
option, through the ``enforcement`` fixture and ``configured``, decides which iptables a
window scenario's controller programs (the rules land in that backend's tables inside the
node namespace, and not in the other's). Runs a scenario-shaped test file in an inner pytest
session, as ``netpol-harness suite --backend legacy`` runs ``cases/scenarios``."""

from __future__ import annotations

import pytest

from harness.engines.config import EnforcementConfig
from harness.engines.options import from_pytest

pytest_plugins = ["pytester"]

INNER = '''
import pytest

from harness.engines.config import configured
from harness.kernel import netns
from harness.scenarios.windows import EstablishedSurvivesSync, WindowConfig

pytestmark = [pytest.mark.kernel, pytest.mark.topology("default")]


def test_scenario_backend(lab, enforcement):
    cfg = configured(WindowConfig, enforcement, "backend-probe", delivery=0.0)
    with EstablishedSurvivesSync(lab, cfg) as sc:
        sc.ctl.wait_idle(10)
        node = lab.node_netns("node-a")
        legacy = netns.run(node, ["iptables-legacy-save", "-t", "filter"]).stdout
        nft = netns.run(node, ["iptables-nft-save", "-t", "filter"]).stdout
    print(f"BACKEND={cfg.backend} LEGACY_RULES={legacy.count('-A KUBE-')} NFT_RULES={nft.count('-A KUBE-')}")
'''


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_backend_option_reaches_the_scenarios_kernel_calls(pytester, backend):
    from harness.kernel.backends import require_tools

    try:
        require_tools("legacy")
        require_tools("nft")
    except Exception as e:  # EnvironmentProblem: not root or a tool missing
        pytest.skip(str(e))
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-s", "--backend", backend)
    result.assert_outcomes(passed=1)
    line = next(ln[ln.index("BACKEND="):] for ln in result.outlines if "BACKEND=" in ln)
    fields = dict(kv.split("=") for kv in line.split())
    assert fields["BACKEND"] == backend
    ours, other = ("LEGACY_RULES", "NFT_RULES") if backend == "legacy" else ("NFT_RULES", "LEGACY_RULES")
    assert int(fields[ours]) > 10, line  # the scenario's chains are in this backend's tables
    assert int(fields[other]) == 0, line  # and nothing in the other's


def test_from_pytest_defaults_without_options():
    class NoOptions:
        def getoption(self, name):
            raise ValueError(name)

    assert from_pytest(NoOptions()) == EnforcementConfig()

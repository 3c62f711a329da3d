"""policy-creation-latency: deny-all in force, an allow policy created at t0; the allowed client
is connected from policy_enforcement_latency on, per apply strategy."""

from __future__ import annotations

import time

import pytest

from harness.scenarios.options import scenario_size
from harness.scenarios.windows import PolicyCreation, WindowConfig

pytestmark = [pytest.mark.kernel, pytest.mark.topology("default")]

STRATEGIES = {"smoke": ("restore", "incremental"), "full": ("restore", "per-rule", "netlink", "incremental")}
RUNS = {"smoke": 3, "full": 30}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "strategy" in metafunc.fixturenames:
        metafunc.parametrize("strategy", STRATEGIES[scenario_size(metafunc.config)])


def test_policy_creation_latency(lab, strategy, scenario_recorder, record_property, pytestconfig):
    cfg = WindowConfig(strategy, strategy=strategy, delivery=0.0)
    t0 = time.monotonic()
    with PolicyCreation(lab, cfg) as sc:
        obs = [sc.run_once(i) for i in range(RUNS[scenario_size(pytestconfig)])]
    entry = scenario_recorder.record("policy-creation-latency", strategy, cfg.describe(), obs,
                                     expectation="every run enforced, and denied before t0",
                                     check=lambda s: s["failures"] == 0, runtime_s=time.monotonic() - t0)
    s = entry["summary"]
    for key in ("p50", "p99", "max"):
        record_property(f"policy_enforcement_{key}_ms", s["stats"][key])
    for o in obs:
        assert o["probe"]["connected_before"] == 0 and o["probe"]["denied_before"] > 0  # deny-all was in force
        assert o["enforcement_latency_ms"] is not None, "the allow policy never took effect"
        # nothing connects before the controller started applying the policy
        assert o["enforcement_latency_ms"] * 1e6 >= o["sync"]["start_ns"] - o["t0_ns"]

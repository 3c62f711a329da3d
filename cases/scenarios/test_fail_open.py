"""fail-open (kube-router #873): a new pod selected by an ingress policy is reachable by pods the
policy denies until node-a's sync includes it; a connection opened in that window survives
enforcement (conntrack ESTABLISHED is accepted before the pod chain's REJECT). With
``--netpol-default-deny`` (v2.10) the window closes: unprogrammed local pods are refused."""

from __future__ import annotations

import time

import pytest

from harness.engines.config import configured
from harness.scenarios.options import scenario_size
from harness.scenarios.windows import FailOpen, WindowConfig

pytestmark = [pytest.mark.kernel, pytest.mark.topology("default")]

DELAY = {"node-a": 0.3, "node-b": 0.0}
KNP_EXPECT = "denied traffic let through in every run, the connection opened in the window survives"
KNP_CHECK = lambda s: s["failures"] == s["runs"] and s["survived_enforcement"] == s["runs"]  # noqa: E731
CONFIGS = [
    ("v2.10", {}, "denied traffic let through in every run, the connection opened in the window survives",
     lambda s: s["failures"] == s["runs"] and s["survived_enforcement"] == s["runs"]),
    ("v2.10-default-deny", {"default_deny": True}, "no denied probe ever connected (fail-closed)",
     lambda s: s["failures"] == 0),
    # kube-network-policies v1.1.1: the new pod is queued only once its IP is in node-a's podips
    # set (the nftables sync after the cache has it); until then denied traffic passes, and the
    # connection opened then carries the "accepted" label (the table's last rule) and survives.
    # --fail-open (queue bypass) only matters while no verdict loop listens: same window without it.
    ("kube-network-policies", {"engine": "kube-network-policies"}, KNP_EXPECT, KNP_CHECK),
    ("kube-network-policies-no-fail-open", {"engine": "kube-network-policies", "fail_open": False}, KNP_EXPECT,
     KNP_CHECK),
]
RUNS = {"smoke": 2, "full": 30}
KNP_FULL_RUNS = 10  # the main job's ~2 min budget for this engine's configurations (~2.5 s a run)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fo_config" in metafunc.fixturenames:
        metafunc.parametrize("fo_config", CONFIGS, ids=[c[0] for c in CONFIGS])


def test_fail_open(lab, fo_config, scenario_recorder, scenario_progress, record_property, pytestconfig, enforcement):
    name, fields, expectation, check = fo_config
    cfg = configured(WindowConfig, enforcement, name, delivery=DELAY, **fields)
    t0 = time.monotonic()
    with FailOpen(lab, cfg) as sc:
        size = scenario_size(pytestconfig)
        runs = KNP_FULL_RUNS if size == "full" and cfg.engine == "kube-network-policies" else RUNS[size]
        obs = [sc.run_once(i) for i in scenario_progress.runs(runs)]
    entry = scenario_recorder.record("fail-open", name, cfg.describe(), obs, expectation=expectation, check=check,
                                     runtime_s=time.monotonic() - t0)
    s = entry["summary"]
    record_property("fail_open_window_max_ms", s["stats"]["max"])
    record_property("let_through", f"{s['failures']}/{s['runs']}")
    assert entry["verdict"] == "pass", f"{name}: expected {expectation}; got {s}"
    # kube-network-policies drops (NF_DROP): the client times out instead of being refused
    refused = "ETIMEDOUT" if cfg.engine == "kube-network-policies" else "ECONNREFUSED"
    for o in obs:
        # once enforced, a new connection from the denied pod is refused
        assert o["new_connection_after"] == {"ok": False, "errno": refused}
        if not fields.get("default_deny"):
            assert o["long_lived"]["conntrack_established"], "no ESTABLISHED conntrack entry for the flow"
            assert o["fail_open_ms"] > 0 and not o["long_lived"]["reset"]

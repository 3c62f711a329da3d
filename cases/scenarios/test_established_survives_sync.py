"""established-survives-sync: long-lived allowed connections across full syncs (each renames
every chain and rewrites the table): zero resets. Guards kube-router's ordering of the
ESTABLISHED accept before the pod chain's REJECT."""

from __future__ import annotations

import time

import pytest

from harness.engines.config import configured
from harness.scenarios.options import scenario_size
from harness.scenarios.windows import EstablishedSurvivesSync, WindowConfig

pytestmark = [pytest.mark.kernel, pytest.mark.topology("default")]

SYNCS = {"smoke": 10, "full": 100}
CONFIGS = [("v2.10", "v2.10", None), ("v1.2-legacy", "v1.2", "legacy")]  # None: the session's backend


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "config" in metafunc.fixturenames:
        chosen = CONFIGS if scenario_size(metafunc.config) == "full" else CONFIGS[:1]
        metafunc.parametrize("config", chosen, ids=[c[0] for c in chosen])


def test_established_survives_sync(lab, config, scenario_recorder, scenario_progress, record_property,
                                   pytestconfig, enforcement):
    name, profile, backend = config
    size = scenario_size(pytestconfig)
    pinned = {"backend": backend} if backend else {}
    cfg = configured(WindowConfig, enforcement, name, profile=profile, delivery=0.0, **pinned)
    t0 = time.monotonic()
    with EstablishedSurvivesSync(lab, cfg) as sc:
        obs = sc.run(SYNCS[size], progress=scenario_progress.callback("sync"))
    scenario_recorder.record(
        "established-survives-sync", name, cfg.describe(), obs, expectation="zero resets across the syncs",
        check=lambda s: s["resets"] == 0 and s["closed"] == 0 and s["established"] == s["flows"],
        runtime_s=time.monotonic() - t0)
    record_property("resets", obs["resets"])
    record_property("syncs", obs["syncs"])
    assert obs["syncs"] == SYNCS[size] and obs["versions"] == SYNCS[size]
    assert obs["established"] == obs["flows"]
    assert obs["resets"] == 0 and obs["closed"] == 0, obs["events"]
    assert obs["exchanges"] > obs["flows"] * 5

"""ipset-update-window: allowed traffic during repeated updates of the policy's source set.
kube-router v1.2 flushes and refills each set in place (an allowed client is missing from it
for a moment); v1.3+ restores into a TMP set and swaps it in atomically.

The swap must show no refused probe (a certain, kernel-guaranteed fact). The v1.2 window is a
few microseconds per update: whether a probe lands in it is chance, so it is measured and
reported, not asserted."""

from __future__ import annotations

import time

import pytest

from harness.engines.config import configured
from harness.scenarios.options import scenario_size
from harness.scenarios.windows import SetUpdateWindow, WindowConfig

pytestmark = [pytest.mark.kernel, pytest.mark.topology("default")]

CONFIGS = [
    ("v1.2-flush-refill", "v1.2", "refused allowed probes possible (measured)", None),
    ("v1.3-swap", "v1.3", "no allowed probe refused", lambda s: s["failures"] == 0),
]
UPDATES = {"smoke": 20, "full": 300}


@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_ipset_update_window(lab, config, scenario_recorder, scenario_progress, record_property, pytestconfig, enforcement):
    name, profile, expectation, check = config
    cfg = configured(WindowConfig, enforcement, name, profile=profile, delivery=0.0, probe_rate=2000.0)
    t0 = time.monotonic()
    with SetUpdateWindow(lab, cfg) as sc:
        obs = sc.run(UPDATES[scenario_size(pytestconfig)], rate=2000.0, progress=scenario_progress.callback("update"))
    entry = scenario_recorder.record("ipset-update-window", name, cfg.describe(), obs, expectation=expectation,
                                     check=check, runtime_s=time.monotonic() - t0)
    s = entry["summary"]
    record_property("refused_probes", s["failures"])
    record_property("probes", s["runs"])
    assert obs["syncs"] >= obs["updates"] * 0.5, "the updates did not each cause a sync on node-a"
    assert obs["probe"]["sent"] > 1000
    assert entry["verdict"] in ("pass", "info"), f"{name}: {s['failures']} allowed probes refused: {obs['windows']}"

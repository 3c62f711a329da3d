"""Larger kernel churn points (``pytest -m scale``; minutes each, a loaded shared machine
inflates them): a 100-node lab (2 real nodes) at two churn rates, per strategy. Results go to
reports/churn/ for ``netpol-harness simulate validate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.bench.churn import ChurnRunConfig, run_churn
from harness.model import churn as ch

pytestmark = [pytest.mark.scale, pytest.mark.kernel]

OUT = Path("reports/churn")


@pytest.mark.parametrize("strategy", ["restore", "incremental"])
@pytest.mark.parametrize("rate", [1.0, 4.0])
def test_scale_churn(netpol_kernel_guard, strategy, rate):
    spec = ch.ChurnSpec(duration_s=60, seed=1, namespaces=4, create_per_s=rate, lifetime_s=20,
                        status_update_delay=ch.Delay("fixed", (0.1,)), bursts=ch.Bursts(30, 10, 1.0),
                        label_changes_per_s=0.2, policy_changes_per_s=0.05)
    cfg = ChurnRunConfig(nodes=100, pods_per_node=20, policies=200, strategy=strategy, probe_s=10.0)
    r = run_churn(spec, cfg)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"scale-100n-{strategy}-{rate:g}ps.json").write_text(json.dumps(r, indent=1, default=str))
    assert r["reach"]["n"] > 0 and r["reach"]["p99"] is not None

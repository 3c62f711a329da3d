"""The real bench runs (``pytest -m scale``; minutes): the default sweep points, datapath counts and
canary sizes, bounded by their budgets. Results are saved under reports/bench/ for ``compare``."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from harness.bench import baseline as bl
from harness.bench.canaries import run_canaries
from harness.bench.commands import format_datapath, format_metrics, format_sweep
from harness.bench.datapath import DatapathConfig, run_datapath
from harness.bench.sweep import SweepConfig, run_sweep
from harness.errors import EnvironmentProblem
from harness.kernel import netns
from harness.kernel.backends import require_tools

pytestmark = [pytest.mark.scale, pytest.mark.kernel]
OUT = Path("reports/bench")


@pytest.fixture
def run():
    try:
        require_tools("nft")
        require_tools("legacy")
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    rid = uuid.uuid4().hex[:8]
    yield rid
    assert netns.list_names(f"nph-{rid}") == []


def test_scale_sweep(run):
    b = run_sweep(run, SweepConfig(repeat=5, budget_s=600))
    bl.save(bl.stamp(b), OUT / "sweep-scale.json")
    print(format_sweep(b))
    measured = [c for c in b.extra["cells"] if c["median_ms"] and not c["extrapolated"]]
    assert {c["strategy"] for c in measured} == {"restore", "netlink", "incremental", "per-rule"}
    assert max(c["pods"] for c in measured) >= 1000


def test_scale_datapath(run):
    b = run_datapath(run, DatapathConfig(budget_s=300))
    bl.save(bl.stamp(b), OUT / "datapath-scale.json")
    print(format_datapath(b))
    assert any(r["rules"] >= 10_000 for r in b.extra["rows"])


def test_scale_canaries(run):
    b = run_canaries(run, repeat=5)
    bl.save(bl.stamp(b), OUT / "canaries-scale.json")
    print(format_metrics(b, "canaries"))
    assert b.metrics["iptables_restore.nft.restore_ms"].n == 5

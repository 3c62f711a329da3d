"""``bench churn`` at smoke size on the real kernel: kube-router's controllers on two real nodes,
the rest virtual, a few seconds of churn; every probed pod becomes reachable, is fail-open until
its own node programs it, and the lab leaves nothing behind, also when interrupted."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from harness.bench.churn import ChurnRunConfig, run_churn
from harness.model import churn as ch
from harness.sim.costfit import default_baseline, load_cost_model
from harness.sim.study import validate

pytestmark = pytest.mark.kernel

SPEC = ch.ChurnSpec(duration_s=4, seed=5, namespaces=2, create_per_s=2.0, lifetime_s=4,
                    status_update_delay=ch.Delay("fixed", (0.05,)), label_changes_per_s=0.5,
                    policy_changes_per_s=0.5)


def _netns_with(run_id: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [ln for ln in out.splitlines() if f"nph-{run_id}-" in ln]


def test_churn_smoke_measures_reach_and_fail_open_with_probes(netpol_kernel_guard):
    run_id = uuid.uuid4().hex[:6]
    cfg = ChurnRunConfig(nodes=10, pods_per_node=3, policies=4, probe_s=2.0, settle_s=0.5, delivery="fixed:0.05")
    r = run_churn(SPEC, cfg, run_id=run_id)
    assert _netns_with(run_id) == []
    assert r["reach"]["n"] >= 3 and r["reach"]["unfinished"] == 0
    for p in r["pods"]:
        # the server refused the pod until its IP was in the policy's set, then admitted it
        assert p["outcomes"]["to_server"].get("connected", 0) > 0
        assert p["outcomes"]["to_server"].get("rejected_icmp", 0) > 0
        assert p["outcomes"]["from_intruder"].get("rejected_icmp", 0) > 0  # its default-deny landed
        # nothing can admit the pod before its IP update reached the server's node (delivery 0.05 s)
        first_ok_ns = p["ready_ns"] + p["reach_s"] * 1e9
        assert first_ok_ns >= p["ip_emitted_ns"] + 0.05e9 - 1e6
        assert p["ip_emitted_ns"] >= p["ready_ns"] and p["reach_s"] < 2.0 and 0.0 <= p["fail_open_s"] < 2.0
    assert all(s["failed"] == 0 and s["n"] > 0 for s in r["syncs"].values())
    assert any(e["kind"] == ch.POLICY for e in r["played"]) and any(e["kind"] == ch.RELABEL for e in r["played"])
    v = validate(r, load_cost_model(default_baseline()))  # the sim replays what was played
    assert v["calibrated"]["reach"]["n"] == r["reach"]["n"]


def test_churn_interrupted_leaves_nothing(netpol_kernel_guard):
    run_id = uuid.uuid4().hex[:6]
    seen = []

    def interrupt(t: float, horizon: float, kind: str) -> None:
        seen.append(kind)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_churn(SPEC, ChurnRunConfig(nodes=4, pods_per_node=2, policies=2, probe_s=2.0), interrupt, run_id=run_id)
    assert len(seen) == 4
    assert _netns_with(run_id) == []

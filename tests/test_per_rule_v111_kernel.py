"""kube-router v1.1.1's call-by-call sync in the kernel: same verdicts as the save/restore sync.

A conformance case with four steps (so every later sync creates new chains and cleans up the
previous sync's) runs with ``per-rule``/v1.1.1 and with ``restore``/v1.2.1 (the next release, the
same v1.2 layout programmed through iptables-restore) on both backends: every cell must match the
expected table and the two observed tables must be equal step by step. On nft the v1.1.1 cleanup
aborts at ClearChain (go-iptables v0.4.1 expects exit status 4 there): the test asserts that, and
that the stale chains it leaves change no verdict.
"""

from __future__ import annotations

import os

import pytest

from harness.conformance.case import load_case
from harness.conformance.runner import RunOptions, run_case
from harness.errors import EnvironmentProblem

CASE = os.path.join(os.path.dirname(__file__), "..", "cases", "conformance", "38-deny-all-then-allow.yaml")


def _run(backend: str, profile: str, strategy: str):
    try:
        result = run_case(load_case(CASE), RunOptions(backend=backend, profile=profile, strategy=strategy))
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    assert result.error is None, result.failure_summary()
    assert result.mismatch_count == 0, result.failure_summary()
    return result


def _table(step) -> list[str]:
    return step.observed.render().splitlines()


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_v111_per_rule_programs_the_verdicts_of_v121_restore(backend):
    old = _run(backend, "v1.1.1", "per-rule")
    new = _run(backend, "v1.2.1", "restore")
    assert len(old.steps) == len(new.steps) == 4
    for a, b in zip(old.steps, new.steps, strict=True):
        assert _table(a) == _table(b), f"step {a.index}"
    syncs = [s for step in old.steps for s in step.syncs]
    assert syncs and all(s.timings["strategy"] == "per-rule" and s.timings["execs"] > 20 for s in syncs)
    steps = {e["step"] for s in syncs for e in s.timings["exec_log"]}
    assert {"ensureTopLevelChains", "syncPodFirewallChains", "cleanupStaleRules"} <= steps
    errors = [s.timings["sync_error"] for s in syncs if s.timings["sync_error"]]
    if backend == "nft":
        assert errors and all("ClearChain" in e for e in errors)
    else:
        assert errors == []

"""A bench's namespaces are under its process's run record: ``gc`` removes them after the bench
is SIGKILLed (no teardown runs then), and a bench that exits normally leaves no record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from harness.kernel import netns
from harness.lab import state

pytestmark = [pytest.mark.kernel]

CHILD = """
import sys, time
from harness.bench.common import fresh_ns, run_id
with fresh_ns(f"nph-{run_id()}-sw-1") as ns:
    print(ns, flush=True)
    if sys.argv[1] == "hang":
        time.sleep(60)
"""


def _child(mode: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()  # type: ignore[union-attr]
    assert name.startswith("nph-"), name
    return proc, name


@pytest.fixture(autouse=True)
def _root():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")


def test_gc_removes_a_sigkilled_bench_namespace():
    proc, name = _child("hang")
    try:
        assert netns.exists(name)
        rid = name.split("-")[1]
        assert os.path.exists(os.path.join(state.STATE_ROOT, rid, "state.json"))
        assert rid in state.gc().live  # never a live run's
        assert netns.exists(name)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    report = state.gc()
    assert rid in report.removed and not netns.exists(name)
    assert not os.path.exists(os.path.join(state.STATE_ROOT, rid))


def test_a_bench_that_exits_leaves_no_record_and_no_namespace():
    proc, name = _child("exit")
    assert proc.wait(30) == 0
    rid = name.split("-")[1]
    deadline = time.monotonic() + 5
    while os.path.exists(os.path.join(state.STATE_ROOT, rid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(os.path.join(state.STATE_ROOT, rid)) and not netns.exists(name)

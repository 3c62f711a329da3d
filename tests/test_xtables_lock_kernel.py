"""Kernel test: every simulated node takes its own xtables lock on iptables-legacy.

iptables-legacy flocks one lock file per call (default /run/xtables.lock, host-wide); a real
node has its own. The apply path sets XTABLES_LOCKFILE per namespace (backends.exec_env). With
one node's lock held, the other node's iptables-legacy call must go through at once and the
held node's must time out on its own lock. The host's /run/xtables.lock is never touched.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid

import pytest

from harness.engines.kube_router.apply.strategies import _Tools
from harness.errors import EnvironmentProblem
from harness.kernel import netns
from harness.kernel.backends import BACKENDS, exec_env, forget, require_tools

pytestmark = pytest.mark.kernel


@pytest.fixture
def two_nodes():
    try:
        require_tools("legacy")
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    run = uuid.uuid4().hex[:8]
    names = [f"nph-{run}-lock-a", f"nph-{run}-lock-b"]
    try:
        for n in names:
            netns.create(n)
        yield names
    finally:
        for n in names:
            netns.delete(n)
            forget(n)


def _list(tools: _Tools):
    """One ``iptables-legacy -w 1 -S`` (waits at most 1 s for the lock); (exit code, seconds)."""
    t0 = time.monotonic()
    proc = tools.run([tools.b.iptables, "-w", "1", "-t", "filter", "-S"], check=False)
    return proc.returncode, time.monotonic() - t0, proc.stderr


def test_exec_env_names_one_lock_file_per_namespace():
    a, b = exec_env("legacy", "nph-x-node-a"), exec_env("legacy", "nph-x-node-b")
    assert a["XTABLES_LOCKFILE"] == netns.path("nph-x-node-a") != b["XTABLES_LOCKFILE"]
    assert exec_env("nft", "nph-x-node-a") is None  # iptables-nft takes no xtables lock


def test_two_nodes_iptables_legacy_do_not_share_a_lock(two_nodes):
    a, b = two_nodes
    ta, tb = _Tools(a, BACKENDS["legacy"]), _Tools(b, BACKENDS["legacy"])
    fd = os.open(exec_env("legacy", a)["XTABLES_LOCKFILE"], os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # node a's lock, as a long iptables-legacy-restore would
        rc_b, secs_b, _ = _list(tb)
        rc_a, secs_a, err_a = _list(ta)
    finally:
        os.close(fd)
    assert rc_b == 0 and secs_b < 0.9, f"node b waited {secs_b:.2f} s (exit {rc_b}): it shares node a's lock"
    assert rc_a == 4 and secs_a >= 0.9 and "xtables lock" in err_a, (rc_a, secs_a, err_a)
    assert _list(ta)[0] == 0  # released: node a goes through again

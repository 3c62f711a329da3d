"""The non-root path, run as a real other user (``nobody``, through runuser): kernel commands exit 4 with a hint,
kernel tests skip with the reason. Needs root to switch users, and a venv other users can run
(``scripts/bootstrap.sh`` builds it on such an interpreter; see README)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.lab import state

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# runuser, not setpriv: setpriv here could exec a binary under a 0700 directory that runuser (a
# real login context) cannot, which hid exactly the problem this file is about.
NOBODY = ["runuser", "-u", "nobody", "--", "env", "-i", "PATH=/usr/bin:/bin", "LANG=C.UTF-8"]


def _as_nobody(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, *argv], cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module", autouse=True)
def _can_switch_users() -> None:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to run commands as another user")


def _venv_problem() -> str | None:
    probe = _as_nobody([str(BIN / "python"), "-c", "import harness"], Path("/"))
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["?"])[-1][:200]


def test_the_venv_is_usable_by_other_users():
    """scripts/bootstrap.sh builds the venv on an interpreter others can run (a pyenv in root's
    0700 home made the whole non-root path unreachable)."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no system python3 to build a shared venv on (see README: non-root)")
    assert _venv_problem() is None, f"user nobody cannot run {BIN / 'python'}: {_venv_problem()}"


@pytest.fixture()
def usable_venv() -> None:
    problem = _venv_problem()
    if problem:
        pytest.skip(f"this venv cannot be run by other users ({problem}): rebuild it with scripts/bootstrap.sh")


def test_check_exits_4_with_hints(usable_venv):
    r = _as_nobody([str(BIN / "netpol-harness"), "check"], Path("/"))
    assert r.returncode == 4, r.stdout + r.stderr
    assert "run as root" in r.stdout and "problem(s)" in r.stdout


def test_up_exits_4_with_one_line(usable_venv):
    r = _as_nobody([str(BIN / "netpol-harness"), "up", "default"], Path("/"))
    assert r.returncode == 4, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "run as root" in r.stderr, r.stderr


def test_gc_with_leftovers_exits_4_with_a_hint(usable_venv):
    """A leftover of a dead run (root-owned): non-root gc says what it cannot remove, no traceback."""
    rid = secrets.token_hex(3)
    ns = state.netns_prefix(rid) + "u"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    os.makedirs(os.path.join(state.STATE_ROOT, rid))
    record = {"run_id": rid, "owner_pid": 2**22 + 1, "owner_start": 1, "kept": False, "namespaces": [ns]}
    with open(os.path.join(state.STATE_ROOT, rid, "state.json"), "w") as f:
        json.dump(record, f)
    try:
        r = _as_nobody([str(BIN / "netpol-harness"), "gc"], Path("/"))
        assert r.returncode == 4, r.stdout + r.stderr
        assert r.stderr.count("\n") == 1 and "Permission denied" in r.stderr and "run as root" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        state.remove_run(state.load(rid))
    assert not os.path.exists(os.path.join(state.STATE_ROOT, rid))


def test_kernel_tests_skip_with_the_reason(usable_venv):
    r = _as_nobody([str(BIN / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
                    str(REPO / "tests" / "test_lab_kernel.py")], Path("/"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "passed" not in r.stdout.splitlines()[-1] and "skipped" in r.stdout.splitlines()[-1]
    assert "kernel part unavailable: root: euid 65534 (run as root" in r.stdout

"""SIGTERM, SIGINT and SIGHUP tear a run down like Ctrl-C (harness.signals), at any moment.

Each test starts a real entry point as a subprocess in a session of its own, waits for a
moment of its life (its run record appearing = the lab is being built; the lab up, or a case
or test under way = mid-run), sends one signal to the main process only (as ``kill`` or
``timeout`` do; a terminal's Ctrl-C would reach the whole group), and then checks what is
left: no namespace with the run's prefix, no run record in /run/netpol-harness, no process
of the session (echo servers and other helpers), and the exit code 128 + signal number.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.kernel import netns
from harness.lab import state

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
NPH = str(Path(sys.executable).with_name("netpol-harness"))
CASES = REPO / "cases" / "conformance"
START_TIMEOUT = 120.0  # s until the awaited moment: generous, the machine is shared
EXIT_TIMEOUT = 120.0  # s for the teardown after the signal

SLOW_KERNEL_TEST = '''
import time

import pytest


@pytest.mark.kernel
def test_waits_in_a_lab(lab):
    print("LAB-UP", lab.run_id, flush=True)
    time.sleep(300)
'''


class Run:
    """A subprocess whose stdout is collected by a thread (so it never blocks on a full pipe)."""

    def __init__(self, argv: list[str], cwd: Path):
        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.out: list[str] = []
        self.err = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)

    def run_id(self) -> str | None:
        """The id of the run record this process owns, once it exists."""
        for rid in _list(state.STATE_ROOT):
            try:
                rec = state.load(rid)
            except Exception:
                continue
            if rec.owner_pid == self.proc.pid:
                return rid
        return None

    def wait_for(self, what: str, cond) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            rid = self.run_id()
            if rid and cond(self, rid):
                return rid
            if self.proc.poll() is not None:
                pytest.fail(f"exited {self.proc.returncode} before {what}: {''.join(self.out)[-800:]}"
                            f"{self.proc.stderr.read()[-800:] if self.proc.stderr else ''}")
            time.sleep(0.01)
        self.proc.kill()
        pytest.fail(f"{what} did not happen within {START_TIMEOUT:.0f} s")

    def finish(self) -> int:
        try:
            self.err = self.proc.communicate(timeout=EXIT_TIMEOUT)[1]
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            pytest.fail(f"no exit within {EXIT_TIMEOUT:.0f} s of the signal")
        return self.proc.returncode


def _list(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _session_processes(sid: int) -> list[str]:
    """Live processes of session ``sid`` (the harness and everything it started)."""
    found = []
    for pid in _list("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields[3]: session id; Z: a zombie
            found.append(f"{pid} {cmd[:120]}")
    return found


def _assert_clean(run: Run, rid: str, sig: int) -> None:
    rc = run.finish()
    leftovers = netns.list_names(state.netns_prefix(rid))
    record = os.path.exists(os.path.join(state.STATE_ROOT, rid))
    procs = _session_processes(run.proc.pid)
    if leftovers or record or procs:  # clean up for the next tests before failing
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.proc.pid, signal.SIGKILL)
        state.delete_namespaces(rid)
        shutil.rmtree(os.path.join(state.STATE_ROOT, rid), ignore_errors=True)
    assert not leftovers, f"namespaces left: {leftovers}"
    assert not record, f"run record {rid} left in {state.STATE_ROOT}"
    assert not procs, f"processes left: {procs}"
    assert rc == 128 + sig, f"exit {rc}, expected {128 + sig}; stderr: {run.err[-600:]}"


def _namespaces_exist(run: Run, rid: str) -> bool:
    return bool(netns.list_names(state.netns_prefix(rid)))


def _printed(text: str, count: int = 1):
    return lambda run, rid: sum(text in line for line in run.out) >= count


SIGNALS = [signal.SIGTERM, signal.SIGINT]


# -- netpol-harness up ------------------------------------------------------------------------
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_up_signalled_during_the_build(tmp_path, sig):
    run = Run([NPH, "up", "default"], tmp_path)
    rid = run.wait_for("the build", _namespaces_exist)
    os.kill(run.proc.pid, sig)
    _assert_clean(run, rid, sig)


@pytest.mark.parametrize("sig", [*SIGNALS, signal.SIGHUP], ids=lambda s: s.name)
def test_up_signalled_while_up(tmp_path, sig):
    run = Run([NPH, "up", "default"], tmp_path)
    rid = run.wait_for("the lab up", _printed("press Ctrl-C"))
    os.kill(run.proc.pid, sig)
    _assert_clean(run, rid, sig)


def test_a_second_signal_does_not_abort_the_teardown(tmp_path):
    run = Run([NPH, "up", "default"], tmp_path)
    rid = run.wait_for("the lab up", _printed("press Ctrl-C"))
    os.kill(run.proc.pid, signal.SIGTERM)
    for _ in range(20):  # a CI runner repeating its SIGTERM, or an impatient Ctrl-C
        time.sleep(0.005)
        if run.proc.poll() is not None:
            break
        os.kill(run.proc.pid, signal.SIGINT)
    _assert_clean(run, rid, signal.SIGTERM)


# -- netpol-harness conformance --------------------------------------------------------------
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_conformance_signalled_during_the_build(tmp_path, sig):
    run = Run([NPH, "conformance", "-q", str(CASES)], tmp_path)
    rid = run.wait_for("the first lab's build", _namespaces_exist)
    os.kill(run.proc.pid, sig)
    _assert_clean(run, rid, sig)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_conformance_signalled_mid_run(tmp_path, sig):
    run = Run([NPH, "conformance", "-q", str(CASES)], tmp_path)
    # The third case under way: earlier labs came and went, this one is up and probing.
    rid = run.wait_for("the third case", lambda r, rid: _printed("=== ", 3)(r, rid) and _namespaces_exist(r, rid))
    time.sleep(0.2)
    os.kill(run.proc.pid, sig)
    _assert_clean(run, rid, sig)


# -- a pytest run of a kernel test -----------------------------------------------------------
@pytest.mark.parametrize("sig, moment", [(signal.SIGTERM, "build"), (signal.SIGTERM, "test"),
                                         (signal.SIGINT, "test")], ids=["SIGTERM-build", "SIGTERM-test", "SIGINT-test"])
def test_pytest_signalled(tmp_path, sig, moment):
    (tmp_path / "test_slow_kernel.py").write_text(SLOW_KERNEL_TEST)
    run = Run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", "test_slow_kernel.py"], tmp_path)
    cond = _namespaces_exist if moment == "build" else _printed("LAB-UP")
    rid = run.wait_for(f"the lab fixture's {moment}", cond)
    os.kill(run.proc.pid, sig)
    _assert_clean(run, rid, sig)

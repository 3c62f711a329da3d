"""Shared kernel helpers of the bench suites: fresh ``nph-`` namespaces, timed tool runs, progress."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from harness.errors import KernelError
from harness.kernel import netns
from harness.kernel.backends import forget

log = logging.getLogger(__name__)


_record: Any = None  # this process's run record (harness.lab.state.RunState), made on first use
_record_lock = threading.Lock()


def _bench_run() -> str:
    """The run id of this process's bench record: a ``lab.state`` run owned by this process, so
    ``gc`` removes every ``nph-<run>-...`` namespace a bench made once the process is gone
    (SIGKILL included: a bench has no teardown then). Removed at a normal exit."""
    global _record
    with _record_lock:
        if _record is None:
            from harness.lab import state

            _record = state.new_run()
            atexit.register(_drop_record, _record)
        return _record.run_id


def _drop_record(record: Any) -> None:
    from harness.lab import state

    if record.owner_pid == os.getpid():  # not in a forked child that inherited the handler
        state.remove_run(record)


def run_id() -> str:
    """A fresh id for a bench's namespace names (``nph-<id>-...``): ``<run>-<4 hex>``, where
    ``<run>`` is this process's run record (``_bench_run``) and the suffix keeps calls apart."""
    return f"{_bench_run()}-{uuid.uuid4().hex[:4]}"


@contextlib.contextmanager
def fresh_ns(name: str) -> Iterator[str]:
    """Create namespace ``name`` (must start with ``nph-``) for the block, delete it on every exit."""
    if not name.startswith("nph-"):
        raise ValueError(f"bench namespaces start with nph-: {name}")
    netns.create(name)
    try:
        yield name
    finally:
        try:
            netns.delete(name)
        finally:
            forget(name)


def timed_run(argv: Sequence[str], input: str | None = None) -> int:
    """Run one tool to completion and return its wall time in ns; KernelError on failure.
    See ``timed_output``."""
    return timed_output(argv, input)[0]


def timed_output(argv: Sequence[str], input: str | None = None) -> tuple[int, str]:
    """Run one tool to completion: (wall time in ns, stdout); KernelError on failure.

    Call from a thread inside the target namespace (``netns.call_in``): the child inherits the
    thread's namespace and Python can vfork, so the time is the tool's, not a pre-exec setns."""
    t0 = time.perf_counter_ns()
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=900)
    dt = time.perf_counter_ns() - t0
    if proc.returncode != 0:
        first = next((ln for ln in proc.stderr.splitlines() if ln.strip()), f"exit code {proc.returncode}")
        raise KernelError(f"{argv[0]}: {first}")
    return dt, proc.stdout


def progress(msg: str, enabled: bool = True) -> None:
    """One progress line on stderr (long sweeps), with the 1-minute load average."""
    if enabled:
        print(f"# [{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)

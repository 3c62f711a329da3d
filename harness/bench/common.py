"""Shared kernel helpers of the bench suites: fresh ``nph-`` namespaces, timed tool runs, progress."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence

from harness.errors import KernelError
from harness.kernel import netns
from harness.kernel.backends import forget

log = logging.getLogger(__name__)


def run_id() -> str:
    """A fresh random id for namespace names (``nph-<id>-...``)."""
    return uuid.uuid4().hex[:8]


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

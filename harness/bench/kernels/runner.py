"""Thin runner: one boot as a process group, killed whole at its timeout (no qemu left behind)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from harness.bench.kernels.vm import panic_line


def run_boot(argv: list[str], log_path: Path, timeout_s: float) -> tuple[bool, str]:
    """Run ``argv`` (a ``vng_argv``) in its own session with console output to ``log_path``;
    return (timed out, console log). At the timeout or a guest panic on the console the whole group (vng and its qemu) is killed
    and reaped before returning."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        timed_out = False
        deadline = time.monotonic() + timeout_s
        try:
            while proc.poll() is None:
                # a guest that panicked early spins forever: stop at its panic, not at the timeout
                if panic_line(log_path.read_text(encoding="utf-8", errors="replace")):
                    break
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
                try:
                    proc.wait(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    pass
        finally:
            # qemu may outlive vng (or the reverse): kill the session's group either way.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return timed_out, log_path.read_text(encoding="utf-8", errors="replace")

"""Thin runner: one boot as a process group, killed whole at its timeout (no qemu left behind)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def run_boot(argv: list[str], log_path: Path, timeout_s: float) -> tuple[bool, str]:
    """Run ``argv`` (a ``vng_argv``) in its own session with console output to ``log_path``;
    return (timed out, console log). At the timeout the whole group (vng and its qemu) is killed
    and reaped before returning."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # qemu may outlive vng (or the reverse): kill the session's group either way.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return timed_out, log_path.read_text(encoding="utf-8", errors="replace")

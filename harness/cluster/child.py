"""The lifecycle bits every server the lab starts as a child shares (dnsmasq, MariaDB): stop it
politely, then for good; read the last lines of its log for a one-line error."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen | None, grace_s: float) -> None:
    """SIGTERM ``proc`` if it runs, SIGKILL after ``grace_s`` seconds; reaped either way."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def log_tail(path: str, lines: int = 3, missing: str = "(no log)") -> str:
    """The last ``lines`` lines of the file at ``path`` joined by `` | ``, or ``missing``."""
    try:
        with open(path) as f:
            return " | ".join(ln.strip() for ln in f.readlines()[-lines:])
    except OSError:
        return missing

"""Run records of the kernel matrix, for ``gc``: each run's scratch directory (the guests' shared
``--rwdir`` and console logs) lives under ``CACHE/runs/<id>/`` with an ``owner`` file (pid and
process start time, so a reused pid is not taken for the owner). qemu's command line names that
directory (9p share), which is how gc finds a dead run's qemu."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from harness.bench.kernels.fetch import CACHE


def _start_time(pid: int) -> str:
    try:
        # field 22 (starttime), after the parenthesised comm which may contain spaces
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def new_run(run_id: str, cache: Path = CACHE) -> Path:
    """Create ``runs/<id>/`` owned by this process (0700) and return it."""
    d = cache / "runs" / run_id
    d.mkdir(parents=True, mode=0o700)
    (d / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    return d


def _alive(run: Path) -> bool:
    try:
        pid, start = (run / "owner").read_text().split()
    except (OSError, ValueError):
        return False
    return _start_time(int(pid)) == start


def qemu_pids(run: Path) -> list[int]:
    """pids of processes whose command line names ``run`` (its qemu, virtiofsd/vng helpers)."""
    needle = str(run).encode()
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                if needle in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def gc(cache: Path = CACHE) -> tuple[int, int]:
    """Kill the qemu processes of dead kernel-matrix runs and remove their scratch directories;
    return (processes killed, runs removed). Live runs are left alone."""
    killed = removed = 0
    runs = cache / "runs"
    if not runs.is_dir():
        return 0, 0
    for run in sorted(runs.iterdir()):
        if _alive(run):
            continue
        for pid in qemu_pids(run):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        shutil.rmtree(run, ignore_errors=True)
        removed += 1
    return killed, removed

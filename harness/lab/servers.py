"""The lab's echo servers: as few ``harness.lab.echo_server`` processes as the descriptor limit
allows (one per ~19,000 listening sockets with the usual 20,000 limit), never one per pod."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from harness.errors import KernelError
from harness.lab import state

# Room left in each server for accepted connections and the process's own files.
FD_RESERVE = 1000


def capacity() -> int:
    """Listening sockets one server process may hold: its hard RLIMIT_NOFILE minus a reserve
    (the server lifts its soft limit to the hard one; raising the hard one needs
    CAP_SYS_RESOURCE, which containers often lack)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    return max(256, hard - FD_RESERVE)


@dataclass
class _Proc:
    popen: subprocess.Popen
    start: int | None
    sockets: int = 0
    keys: set[str] = field(default_factory=set)


class EchoServers:
    """Start, feed and stop the echo-server processes of one lab run."""

    def __init__(self, run_id: str, log_path: str):
        self.run_id = run_id
        self.log_path = log_path
        self.procs: list[_Proc] = []
        self.capacity = capacity()
        self._lock = threading.Lock()

    def pids(self) -> list[list[int | None]]:
        """[[pid, start time], ...] for the run record (gc verifies both before killing)."""
        return [[p.popen.pid, p.start] for p in self.procs]

    def _spawn(self) -> _Proc:
        env = dict(os.environ)
        src_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(x for x in (src_root, env.get("PYTHONPATH")) if x)
        with open(self.log_path, "ab") as errlog:
            # Own session: a Ctrl-C meant for the owner does not hit it, and a kept lab's server
            # outlives the owner's terminal.
            popen = subprocess.Popen([sys.executable, "-m", state.SERVER_MODULE, "--run-id", self.run_id],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, env=env,
                                     start_new_session=True, close_fds=True)
        p = _Proc(popen, state.process_start_time(popen.pid))
        self.procs.append(p)
        return p

    def _command(self, p: _Proc, msg: dict[str, Any]) -> str:
        try:
            assert p.popen.stdin is not None and p.popen.stdout is not None
            p.popen.stdin.write(json.dumps(msg).encode() + b"\n")
            p.popen.stdin.flush()
            reply = p.popen.stdout.readline().decode().strip()
        except (OSError, ValueError) as e:
            raise KernelError(f"echo server {p.popen.pid} of lab {self.run_id}: {e}") from None
        if not reply:
            raise KernelError(f"echo server {p.popen.pid} of lab {self.run_id} exited (see {self.log_path})")
        if not reply.startswith("ok"):
            raise KernelError(f"echo server {p.popen.pid} of lab {self.run_id}: {reply}")
        return reply

    def add(self, pods: list[dict[str, Any]]) -> None:
        """Open listeners for ``pods`` ([{"key", "netns", "listeners"}]), spawning another
        process when the current one is full; returns once all are listening."""
        with self._lock:
            batches: dict[int, list[dict[str, Any]]] = {}
            for pod in pods:
                n = len(pod["listeners"])
                if not self.procs or self.procs[-1].sockets + n > self.capacity:
                    self._spawn()
                i = len(self.procs) - 1
                self.procs[i].sockets += n
                self.procs[i].keys.add(pod["key"])
                batches.setdefault(i, []).append(pod)
            # Send every batch first, then collect the replies: the processes work in parallel.
            for i, batch in batches.items():
                p = self.procs[i]
                try:
                    assert p.popen.stdin is not None
                    p.popen.stdin.write(json.dumps({"op": "add", "pods": batch}).encode() + b"\n")
                    p.popen.stdin.flush()
                except OSError as e:
                    raise KernelError(f"echo server {p.popen.pid} of lab {self.run_id}: {e}") from None
            for i in batches:
                p = self.procs[i]
                assert p.popen.stdout is not None
                reply = p.popen.stdout.readline().decode().strip()
                if not reply.startswith("ok"):
                    raise KernelError(f"echo server {p.popen.pid} of lab {self.run_id}: "
                                      f"{reply or 'exited (see ' + self.log_path + ')'}")

    def remove(self, key: str) -> None:
        """Close the listeners (and connections) of one pod."""
        with self._lock:
            for p in self.procs:
                if key in p.keys:
                    reply = self._command(p, {"op": "remove", "keys": [key]})
                    p.keys.discard(key)
                    with contextlib.suppress(ValueError, IndexError):
                        p.sockets -= int(reply.split()[1])

    def detach(self) -> None:
        """Let the servers outlive this process (kept labs)."""
        with self._lock:
            for p in self.procs:
                self._command(p, {"op": "detach"})
                with contextlib.suppress(OSError):
                    p.popen.stdin.close()  # type: ignore[union-attr]

    def stop(self) -> None:
        """Close every server's stdin (they exit on EOF), wait, kill stragglers."""
        with self._lock:
            procs, self.procs = self.procs, []
        for p in procs:
            with contextlib.suppress(OSError, ValueError):
                p.popen.stdin.close()  # type: ignore[union-attr]
        for p in procs:
            try:
                p.popen.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(timeout=3)
            with contextlib.suppress(OSError, ValueError):
                p.popen.stdout.close()  # type: ignore[union-attr]

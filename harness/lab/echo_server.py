"""One echo-server process per lab: TCP and UDP echo listeners inside every pod's namespace.

Run as ``python -m harness.lab.echo_server --run-id RID``. A socket keeps the namespace it was
created in, so this single-threaded process ``setns``es into each pod namespace only to create
its listening sockets, and then serves all of them with one epoll loop: thousands of pods cost
one process, not one each.

Control protocol: one JSON object per line on stdin, one reply line on stdout (``ok ...`` or
``error ...``):
  {"op": "add", "pods": [{"key": "ns/name", "netns": "...", "listeners": [[ip, port, "TCP"], ...]}]}
  {"op": "remove", "keys": ["ns/name", ...]}
  {"op": "detach"}   keep serving after stdin closes (kept labs outlive the process that built them)
  {"op": "quit"}
Without ``detach``, end of stdin means the owner is gone: the server exits, so a crashed owner
never leaves it behind. SCTP listeners are skipped: the kernel under test has no SCTP sockets
in the lab's scope (and kube-router only matches SCTP by port).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import selectors
import signal
import socket
import sys
from typing import Any

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
NETNS_DIR = "/run/netns"


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _v6only(s: socket.socket) -> None:
    """An IPv6 listener takes IPv6 only, so it never competes with the pod's IPv4 one on the port."""
    if s.family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


class EchoServer:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.listeners: dict[str, list[socket.socket]] = {}
        self.conns: dict[socket.socket, str] = {}
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.detached = False
        self.running = True
        self._inbuf = b""

    # -- control --------------------------------------------------------------------------------
    def add(self, pods: list[dict[str, Any]]) -> int:
        n = 0
        for pod in pods:
            socks: list[socket.socket] = []
            fd = os.open(os.path.join(NETNS_DIR, pod["netns"]), os.O_RDONLY)
            try:
                _setns(fd)
                for ip, port, proto in pod["listeners"]:
                    family = socket.AF_INET6 if ":" in ip else socket.AF_INET  # dual-stack pods: both
                    if proto == "TCP":
                        s = socket.socket(family, socket.SOCK_STREAM)
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        _v6only(s)
                        s.bind((ip, port))
                        s.listen(512)
                    elif proto == "UDP":
                        s = socket.socket(family, socket.SOCK_DGRAM)
                        _v6only(s)
                        s.bind((ip, port))
                    else:  # SCTP: skipped on purpose (module docstring)
                        continue
                    s.setblocking(False)
                    socks.append(s)
            except OSError:
                for s in socks:
                    s.close()
                raise
            finally:
                _setns(self.home)
                os.close(fd)
            for s in socks:
                self.sel.register(s, selectors.EVENT_READ, ("listen", pod["key"]))
            self.listeners.setdefault(pod["key"], []).extend(socks)
            n += len(socks)
        return n

    def remove(self, keys: list[str]) -> int:
        n = 0
        for key in keys:
            for s in self.listeners.pop(key, []):
                self.sel.unregister(s)
                s.close()
                n += 1
            for c in [c for c, k in self.conns.items() if k == key]:
                self._close(c)
        return n

    def command(self, line: bytes) -> str:
        try:
            msg = json.loads(line)
            op = msg["op"]
            if op == "add":
                return f"ok {self.add(msg['pods'])}"
            if op == "remove":
                return f"ok {self.remove(msg['keys'])}"
            if op == "detach":
                self.detached = True
                return "ok"
            if op == "quit":
                self.running = False
                return "ok"
            return f"error unknown op {op!r}"
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"error {type(e).__name__}: {e}"

    def _reply(self, text: str) -> None:
        try:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except OSError:  # owner gone
            if not self.detached:
                self.running = False

    # -- serving --------------------------------------------------------------------------------
    def _close(self, c: socket.socket) -> None:
        self.conns.pop(c, None)
        try:
            self.sel.unregister(c)
        except (KeyError, ValueError):
            pass
        c.close()

    def serve(self) -> None:
        stdin = sys.stdin.buffer.raw  # type: ignore[attr-defined]
        os.set_blocking(stdin.fileno(), False)
        self.sel.register(stdin, selectors.EVENT_READ, ("control", None))
        while self.running:
            for key, _ in self.sel.select():
                kind, owner = key.data
                s = key.fileobj
                try:
                    if kind == "control":
                        self._on_control(stdin)
                    elif kind == "listen":
                        if s.type == socket.SOCK_STREAM:  # type: ignore[union-attr]
                            conn, _ = s.accept()  # type: ignore[union-attr]
                            conn.setblocking(False)
                            self.conns[conn] = owner
                            self.sel.register(conn, selectors.EVENT_READ, ("conn", owner))
                        else:
                            data, peer = s.recvfrom(65535)  # type: ignore[union-attr]
                            s.sendto(data, peer)  # type: ignore[union-attr]
                    else:
                        data = s.recv(65536)  # type: ignore[union-attr]
                        if data:
                            s.send(data)  # type: ignore[union-attr]
                        else:
                            self._close(s)  # type: ignore[arg-type]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    if kind == "conn":
                        self._close(s)  # type: ignore[arg-type]

    def _on_control(self, stdin: Any) -> None:
        chunk = stdin.read(1 << 20)
        if chunk is None:
            return
        if not chunk:  # owner closed our stdin
            self.sel.unregister(stdin)
            if not self.detached:
                self.running = False
            return
        self._inbuf += chunk
        while b"\n" in self._inbuf:
            line, self._inbuf = self._inbuf.split(b"\n", 1)
            if line.strip():
                self._reply(self.command(line))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.lab.echo_server")
    ap.add_argument("--run-id", required=True, help="the lab run this server belongs to (for gc)")
    ap.parse_args(argv)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C of the owner's terminal: the owner decides
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Thousands of pods x ports: lift the descriptor limit as far as root may.
    try:
        with open("/proc/sys/fs/nr_open") as f:
            nr_open = int(f.read())
        resource.setrlimit(resource.RLIMIT_NOFILE, (nr_open, nr_open))
    except (OSError, ValueError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    EchoServer().serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

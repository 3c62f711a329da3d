"""Network-namespace primitives, without forking: the thin kernel layer every lab part uses.

Linux keeps the network namespace per thread, so a namespace is created by a worker thread
that ``unshare(CLONE_NEWNET)``s, bind-mounts ``/proc/thread-self/ns/net`` onto
``/run/netns/<name>`` (the place ``ip netns`` uses) and switches back. Sockets remember the
namespace they were created in, so a netlink socket opened inside a namespace keeps talking
to it from any thread: ``ipr(name)`` gives a pyroute2 ``IPRoute`` built on such a socket.

pyroute2 0.9 opens one socket *per thread* unless given ``use_socket``; never use a plain
``IPRoute()`` inside a lab namespace from another thread: it would talk to the root namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from pyroute2 import IPRoute

from harness.errors import KernelError

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_PRIVATE = 1 << 18
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0

T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)
_rundir_lock = threading.Lock()
_rundir_ready = False


def path(name: str) -> str:
    """The bind-mount path of a named namespace."""
    return os.path.join(NETNS_DIR, name)


def _check(ret: int, what: str, name: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise KernelError(f"{what} {name}: {os.strerror(err)}")


def _setns(fd: int, name: str) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns", name)


def _prepare_rundir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so mounts are seen everywhere."""
    global _rundir_ready
    with _rundir_lock:
        if _rundir_ready:
            return
        os.makedirs(NETNS_DIR, exist_ok=True)
        if _libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None) != 0:
            _check(_libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", MS_BIND | MS_REC, None),
                   "bind-mount", NETNS_DIR)
            _check(_libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None),
                   "make-shared", NETNS_DIR)
        _rundir_ready = True


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Switch the *calling thread* into namespace ``name`` for the block, then back.

    Only for threads the harness owns (see ``call_in``); never wrap code that may hand work to
    other threads."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path(name), os.O_RDONLY)
        try:
            _setns(target, name)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home, "(home namespace)")
    finally:
        os.close(home)


def call_in(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in a short-lived thread inside namespace ``name``; return its
    result or re-raise its exception. The caller's own namespace is never touched."""
    result: list[Any] = []
    error: list[BaseException] = []

    def worker() -> None:
        try:
            with entered(name):
                result.append(fn(*args, **kwargs))
        except BaseException as e:  # re-raised in the caller
            error.append(e)

    t = threading.Thread(target=worker, name=f"netns:{name}")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def create(name: str) -> None:
    """Create the named namespace (no fork: ~0.5 ms). Raises KernelError if it exists."""
    create_many([name])


def create_many(names: Sequence[str], setup: Callable[[str], None] | None = None) -> None:
    """Create several namespaces from one worker thread (amortizes the thread start).

    ``setup(name)``, if given, runs in that worker while it is still inside the new namespace
    (sysctls, sockets, links: no extra setns per namespace). If it raises, that namespace is
    removed again and the error propagates; namespaces created before it stay."""
    _prepare_rundir()

    def worker() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            for name in names:
                p = path(name)
                try:
                    os.close(os.open(p, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
                except FileExistsError:
                    raise KernelError(f"network namespace {name} already exists") from None
                try:
                    _check(_libc.unshare(CLONE_NEWNET), "unshare", name)
                    _check(_libc.mount(b"/proc/thread-self/ns/net", p.encode(), b"none", MS_BIND, None),
                           "bind-mount", name)
                except BaseException:
                    os.unlink(p)
                    raise
                else:
                    if setup is not None:
                        try:
                            setup(name)
                        except BaseException:
                            _libc.umount2(p.encode(), MNT_DETACH)
                            os.unlink(p)
                            raise
                finally:
                    _setns(home, "(home namespace)")
        finally:
            os.close(home)

    err: list[BaseException] = []

    def guarded() -> None:
        try:
            worker()
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=guarded, name="netns:create")
    t.start()
    # A signal (KeyboardInterrupt in the main thread) must not return before the worker is
    # done: a namespace it created after we returned would escape the caller's teardown.
    interrupted: BaseException | None = None
    while t.is_alive():
        try:
            t.join()
        except BaseException as e:
            interrupted = interrupted or e
    if interrupted is not None:
        raise interrupted
    if err:
        raise err[0]


def delete(name: str) -> None:
    """Remove a namespace's name; the kernel frees it once no process or socket holds it."""
    p = path(name)
    _libc.umount2(p.encode(), MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(p)


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def list_names(prefix: str = "") -> list[str]:
    """Named namespaces whose name starts with ``prefix``."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def netlink_socket(name: str, proto: int = NETLINK_ROUTE) -> socket.socket:
    """A netlink socket bound to namespace ``name`` (usable from any thread)."""
    return call_in(name, socket.socket, socket.AF_NETLINK, socket.SOCK_DGRAM, proto)


def ipr(name: str) -> IPRoute:
    """A pyroute2 ``IPRoute`` that talks to namespace ``name`` from any thread; close it after use."""
    return IPRoute(use_socket=netlink_socket(name))


def _preexec_setns(name: str) -> Callable[[], None]:
    fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)

    def enter() -> None:  # runs in the child between fork and exec: only async-signal-safe calls
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            os._exit(127)

    enter.fd = fd  # type: ignore[attr-defined]
    return enter


def popen(name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """Start ``argv`` inside namespace ``name`` (like ``ip netns exec``, without the extra exec)."""
    enter = _preexec_setns(name)
    try:
        return subprocess.Popen(list(argv), preexec_fn=enter, **kwargs)
    finally:
        os.close(enter.fd)  # type: ignore[attr-defined]


def _preexec_setns_binds(name: str, binds: Sequence[tuple[str, str]]) -> Callable[[], None]:
    fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    pairs = [(src.encode(), dst.encode()) for src, dst in binds]

    def enter() -> None:  # between fork and exec: a private mount namespace, the binds, then the netns
        if _libc.unshare(CLONE_NEWNS) != 0:
            os._exit(126)
        # private first: the binds must not propagate back into the host's mount namespace
        if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            os._exit(126)
        for src, dst in pairs:
            if _libc.mount(src, dst, None, MS_BIND, None) != 0:
                os._exit(126)
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            os._exit(127)

    enter.fd = fd  # type: ignore[attr-defined]
    return enter


def popen_with_files(name: str, argv: Sequence[str], binds: Sequence[tuple[str, str]], **kwargs: Any,
                     ) -> subprocess.Popen:
    """Start ``argv`` inside namespace ``name`` in a mount namespace of its own where each
    ``(src, dst)`` of ``binds`` is bind-mounted over ``dst`` (e.g. a pod's resolv.conf over
    ``/etc/resolv.conf``): what a container runtime gives a pod, without touching the host's
    files. Exit code 126: the mount namespace or a bind failed; 127: the setns failed."""
    enter = _preexec_setns_binds(name, binds)
    try:
        return subprocess.Popen(list(argv), preexec_fn=enter, **kwargs)
    finally:
        os.close(enter.fd)  # type: ignore[attr-defined]


def run(name: str, argv: Sequence[str], *, check: bool = True, input: str | bytes | None = None,
        timeout: float | None = 120, text: bool = True) -> subprocess.CompletedProcess:
    """Run ``argv`` inside namespace ``name`` and wait; with ``check``, a non-zero exit raises
    KernelError carrying the program's own first line of stderr."""
    enter = _preexec_setns(name)
    try:
        proc = subprocess.run(list(argv), preexec_fn=enter, input=input, capture_output=True,
                              timeout=timeout, text=text)
    finally:
        os.close(enter.fd)  # type: ignore[attr-defined]
    if check and proc.returncode != 0:
        err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
        first = next((ln for ln in err.splitlines() if ln.strip()), f"exit code {proc.returncode}")
        raise KernelError(f"{argv[0]} in {name}: {first}")
    return proc

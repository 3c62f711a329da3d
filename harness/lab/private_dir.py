"""Root-owned private directories that other local users cannot pre-create, replace or redirect.

A cache shared by runs (the MariaDB template datadir) must not sit at a fixed path a local user
can create first: root would trust whatever is there, or follow a symlink planted in its place.
``private_dir(path)`` walks ``path`` from ``/`` one component at a time with
``O_NOFOLLOW | O_DIRECTORY`` (a symlink anywhere is refused, and each check is made on the
opened directory itself, not on a name that could be swapped afterwards), creates missing
components as root ``0700``, and refuses any component not owned by root or writable by group
or others (a sticky, root-owned ancestor such as ``/tmp`` is accepted: nobody else can rename
root's entries in it). Once every component passes, nobody but root can change what the path
names, so plain path operations below it are safe.
"""

from __future__ import annotations

import contextlib
import os
import stat

from harness.errors import HarnessError

MODE = 0o700


def _check(fd: int, shown: str, *, own: bool) -> None:
    st = os.fstat(fd)
    if st.st_uid != 0:
        raise HarnessError(f"{shown}: owned by uid {st.st_uid}, not root: refusing to use it "
                           "(remove it, or choose another directory)")
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and (own or not st.st_mode & stat.S_ISVTX):
        raise HarnessError(f"{shown}: mode {stat.S_IMODE(st.st_mode):04o} is writable by group or others: "
                           "refusing to use it (chmod go-w, or remove it)")


def private_dir(path: str, *, create: bool = True) -> str:
    """``path`` (absolute) verified as a root-owned directory chain; missing components are
    created ``0700`` (with ``create``). Returns ``path``; HarnessError naming the offending
    component (a symlink, not a directory, a foreign owner, group/world-writable) otherwise.
    An ancestor may be world-writable if it is sticky (``/tmp``); ``path`` itself never."""
    if not os.path.isabs(path):
        raise HarnessError(f"{path}: a private directory needs an absolute path")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise HarnessError(f"{path}: no '.' or '..' in a private directory's path")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        _check(fd, "/", own=False)
        shown = ""
        for i, name in enumerate(parts):
            shown += "/" + name
            last = i == len(parts) - 1
            try:
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise HarnessError(f"{shown}: does not exist") from None
                with contextlib.suppress(FileExistsError):  # a concurrent run made it: checked below
                    os.mkdir(name, MODE, dir_fd=fd)
                nfd = _open_existing(name, fd, shown)
            except OSError as e:
                raise HarnessError(f"{shown}: {_why(name, fd, e)}: refusing to use it") from None
            os.close(fd)
            fd = nfd
            _check(fd, shown, own=last)
        return path
    finally:
        os.close(fd)


def _open_existing(name: str, parent: int, shown: str) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError as e:
        raise HarnessError(f"{shown}: {_why(name, parent, e)}: refusing to use it") from None


def _why(name: str, parent: int, e: OSError) -> str:
    try:
        st = os.lstat(name, dir_fd=parent)
    except OSError:
        return e.strerror or str(e)
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    return e.strerror or str(e)


def regular_file_in(directory: str, name: str) -> bool:
    """True if ``directory/name`` is a regular file (not a symlink) owned by root; ``directory``
    must have passed ``private_dir``."""
    try:
        st = os.lstat(os.path.join(directory, name))
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == 0

"""Run records under /run/netpol-harness/<run_id>/ and the garbage collector that reads them.

Every lab writes its record *before* it creates its first namespace, so any ``nph-<run_id>-``
namespace of a crashed run can be traced to a record whose owner process is dead. The record
says who owns the run (pid + process start time, so a recycled pid is not mistaken for the
owner), whether it was kept on purpose (``up --keep``), every namespace, each pod's namespace
and address, the echo server's pid, and whatever else a component started for the run:
processes and files recorded by owner (``own_process``/``own_path``, e.g. owner ``mariadb``),
which ``remove_run`` stops and removes without knowing what they are. ``netpol-harness down``,
``exec`` and ``gc`` work from any process through it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.kernel import netns

log = logging.getLogger(__name__)

STATE_ROOT = "/run/netpol-harness"
PREFIX = "nph-"
RUN_ID_RE = re.compile(r"^[0-9a-f]{6}$")
# Namespaces of this module's naming scheme: nph-<6 hex>-<kind letter>[-...]
NETNS_RE = re.compile(r"^nph-([0-9a-f]{6})-[a-z](-.*)?$")
SERVER_MODULE = "harness.lab.echo_server"
JOURNAL = "pods.jsonl"
# save() and journal() are called from several threads (pods added while a component records itself)
_write_lock = threading.RLock()


def check_run_id(run_id: object, what: str = "run id") -> str:
    """``run_id`` if it is a run id (6 hex digits), else HarnessError: every path built from a
    run id goes through here, so ``../../x`` never names a directory outside STATE_ROOT."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        shown = repr(run_id)[:40]
        raise HarnessError(f"{what}: {shown} is not a run id (6 hex digits, e.g. 3fa9c1)")
    return run_id


def netns_prefix(run_id: str) -> str:
    """Every namespace of run ``run_id`` starts with this."""
    return f"{PREFIX}{run_id}-"


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/pid/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int | None, start_time: int | None) -> bool:
    """True if ``pid`` runs and is the same process (same start time) as recorded."""
    if not pid:
        return False
    st = process_start_time(pid)
    if st is None:
        return False
    if _is_zombie(pid):
        return False
    return start_time is None or st == start_time


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _environ(pid: int) -> list[str]:
    """``NAME=value`` entries of the environment ``pid`` was exec'd with (empty if unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


@dataclass
class RunState:
    """What is on disk for one run (``state.json``)."""

    run_id: str
    owner_pid: int
    owner_start: int | None
    kept: bool = False
    created: float = field(default_factory=time.time)
    cluster_name: str = "cluster"
    topology: str | None = None
    namespaces: list[str] = field(default_factory=list)
    servers: list[list[int | None]] = field(default_factory=list)  # [[pid, start time], ...]
    # name -> {"netns", "node_ip", "pod_cidr", "kind"}
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # ns/name -> {"netns", "ip", "node", "kind"}
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    # what components started for the run, by owner:
    # {"owner", "kind": "process", "pid", "start", "marker"} | {"owner", "kind": "path", "path"}
    owned: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dir(self) -> str:
        return os.path.join(STATE_ROOT, self.run_id)

    def owner_alive(self) -> bool:
        return process_alive(self.owner_pid, self.owner_start)

    def own_process(self, owner: str, pid: int, start_time: int | None, *, marker: str,
                    marker_in: str = "cmdline") -> None:
        """Record process ``pid`` as ``owner``'s (saved at once). ``start_time`` (clock ticks,
        ``process_start_time``) and ``marker`` (a string its command line contains, e.g. its
        private directory; with ``marker_in="environ"`` an entry of the environment it was
        exec'd with, for a user's program whose command line the harness does not choose) let
        ``gc`` tell it from a process that got the same pid later."""
        if not marker:
            raise HarnessError(f"run {self.run_id}: {owner}: an owned process needs a cmdline marker")
        if marker_in not in ("cmdline", "environ"):
            raise HarnessError(f"run {self.run_id}: {owner}: marker_in must be cmdline or environ")
        entry: dict[str, Any] = {"owner": owner, "kind": "process", "pid": pid, "start": start_time, "marker": marker}
        if marker_in != "cmdline":
            entry["marker_in"] = marker_in
        with _write_lock:
            self.owned.append(entry)
            self.save()

    def own_path(self, owner: str, path: str) -> None:
        """Record file or directory ``path`` as ``owner``'s (saved at once); ``gc`` removes it.
        Its last component must name the run (``...-<run_id>-...``) or it must lie in the run's
        directory: a record never claims anyone else's files."""
        if not _path_of_run(path, self.run_id, self.dir):
            raise HarnessError(f"run {self.run_id}: {owner}: {path}: an owned path must be absolute and "
                               f"name the run ('-{self.run_id}-' in its last component) or lie in {self.dir}")
        with _write_lock:
            self.owned.append({"owner": owner, "kind": "path", "path": path})
            self.save()

    def disown(self, owner: str, *, pid: int | None = None, path: str | None = None) -> None:
        """Forget ``owner``'s process ``pid`` and/or path ``path`` (it cleaned up itself)."""
        with _write_lock:
            keep = [o for o in self.owned if not (o["owner"] == owner and (
                (pid is not None and o.get("pid") == pid) or (path is not None and o.get("path") == path)))]
            if len(keep) != len(self.owned):
                self.owned = keep
                if os.path.isdir(self.dir):
                    self.save()

    def save(self) -> None:
        """Write atomically (readers in other processes never see half a file); the pod journal
        is folded in."""
        with _write_lock:
            self._save()

    def _save(self) -> None:
        tmp = os.path.join(self.dir, "state.json.tmp")
        with open(tmp, "w") as f:
            # Not dataclasses.asdict: its deep copy costs ~0.3 s for a 10,000-pod record.
            json.dump({k: getattr(self, k) for k in self.__dataclass_fields__}, f, separators=(",", ":"))
        os.replace(tmp, os.path.join(self.dir, "state.json"))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, JOURNAL))

    def journal(self, key: str, info: dict[str, Any] | None) -> None:
        """Record one pod added (``info``) or removed (None) at run time: an O(1) append, so a
        CNI ADD in a 10,000-pod lab does not rewrite the whole record."""
        with _write_lock:
            if info is None:
                self.pods.pop(key, None)
            else:
                self.pods[key] = info
                if info.get("netns") and info["netns"] not in self.namespaces:
                    self.namespaces.append(info["netns"])
            with open(os.path.join(self.dir, JOURNAL), "a") as f:
                f.write(json.dumps([key, info]) + "\n")


def _path_of_run(path: str, run_id: str, run_dir: str) -> bool:
    if not isinstance(path, str) or not os.path.isabs(path) or ".." in path.split("/"):
        return False
    norm = os.path.normpath(path)
    return f"-{run_id}-" in os.path.basename(norm) or norm.startswith(run_dir.rstrip("/") + "/")


def new_run(*, kept: bool = False, run_id: str | None = None) -> RunState:
    """Reserve a fresh run id (mkdir is the atomic claim) and write its first record."""
    if run_id is not None:
        check_run_id(run_id)
    os.makedirs(STATE_ROOT, exist_ok=True)
    for _ in range(100):
        rid = run_id or secrets.token_hex(3)
        try:
            os.mkdir(os.path.join(STATE_ROOT, rid))
        except FileExistsError:
            if run_id:
                raise HarnessError(f"run {run_id} already exists in {STATE_ROOT}") from None
            continue
        if netns.list_names(netns_prefix(rid)):  # an orphan of a crashed, unrecorded run
            os.rmdir(os.path.join(STATE_ROOT, rid))
            if run_id:
                raise HarnessError(f"namespaces {netns_prefix(rid)}* already exist") from None
            continue
        st = RunState(run_id=rid, owner_pid=os.getpid(), owner_start=process_start_time(os.getpid()), kept=kept)
        st.save()
        return st
    raise HarnessError("could not find a free run id")


def load(run_id: str) -> RunState:
    """The record of ``run_id``; HarnessError if there is none, or if ``run_id`` or the record's
    own ``run_id`` is not a run id (a crafted record must not steer ``remove_run``'s rmtree)."""
    p = os.path.join(STATE_ROOT, check_run_id(run_id), "state.json")
    try:
        with open(p) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise HarnessError(f"no lab run {run_id!r} (see `netpol-harness gc` / `up --keep`)") from None
    except json.JSONDecodeError as e:
        raise HarnessError(f"{p}: unreadable run record: {e}") from None
    if not isinstance(data, dict) or data.get("run_id") != run_id:
        raise HarnessError(f"{p}: not the record of run {run_id} (its run_id differs)")
    known = set(RunState.__dataclass_fields__)
    st = RunState(**{k: v for k, v in data.items() if k in known})
    with contextlib.suppress(FileNotFoundError):
        with open(os.path.join(STATE_ROOT, run_id, JOURNAL)) as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    key, info = json.loads(line)
                    if info is None:
                        st.pods.pop(key, None)
                    else:
                        st.pods[key] = info
                        if info.get("netns") and info["netns"] not in st.namespaces:
                            st.namespaces.append(info["netns"])
    return st


def list_runs() -> list[RunState]:
    """Every readable run record (directories without a record yet are skipped)."""
    out = []
    try:
        names = sorted(os.listdir(STATE_ROOT))
    except FileNotFoundError:
        return []
    for rid in names:
        with contextlib.suppress(HarnessError, OSError):
            out.append(load(rid))
    return out


def stop_server(pid: int | None, start: int | None, run_id: str, timeout: float = 2.0) -> bool:
    """SIGTERM (then SIGKILL) the run's echo server, after checking that ``pid`` really is that
    server (same start time, cmdline naming the module and the run id). True if one was stopped."""
    if not pid or not process_alive(pid, start):
        return False
    argv = _cmdline(pid)
    if not any(SERVER_MODULE in a for a in argv) or run_id not in argv:
        log.warning("pid %s is not the echo server of run %s (%s): not killed", pid, run_id, " ".join(argv))
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid, start):
            break
        time.sleep(0.01)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Reap it if it is our child (a lab torn down by the process that started it).
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return True


def delete_namespaces(run_id: str, recorded: list[str] | None = None) -> int:
    """Delete every namespace of the run (the recorded ones and any with its prefix); return
    how many were deleted."""
    prefix = netns_prefix(run_id)
    names = [n for n in dict.fromkeys(recorded or []) if n.startswith(prefix)]  # never anyone else's
    names += [n for n in netns.list_names(prefix) if n not in set(names)]
    for n in names:  # in the recorded order: nodes and underlay first, then the pods
        netns.delete(n)
    return len(names)


def stop_owned_process(entry: dict[str, Any], run_id: str, timeout: float = 10.0) -> bool:
    """SIGTERM (SIGKILL after ``timeout``) a process recorded with ``own_process``, after checking
    it is still that process: same start time and its command line containing the recorded
    marker (a recycled pid is left alone). True if one was stopped."""
    pid, start, marker = entry.get("pid"), entry.get("start"), entry.get("marker")
    if not isinstance(pid, int) or pid <= 1 or not marker or not process_alive(pid, start):
        return False
    argv = _cmdline(pid)
    if entry.get("marker_in") == "environ":
        found = marker in _environ(pid)  # a whole NAME=value entry: no substring of another
    else:
        found = any(marker in a for a in argv)
    if not found:
        log.warning("pid %s is not %s's process of run %s (%s): not killed", pid, entry.get("owner"), run_id,
                    " ".join(argv))
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(pid, start):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return True


def remove_owned(st: RunState) -> tuple[int, int]:
    """Stop every process and remove every path the run's record lists as owned (processes
    first: they may hold the files). Returns (processes stopped, paths removed)."""
    stopped = removed = 0
    for entry in [o for o in st.owned if o.get("kind") == "process"]:
        stopped += stop_owned_process(entry, st.run_id)
    for entry in [o for o in st.owned if o.get("kind") == "path"]:
        path = entry.get("path")
        if not _path_of_run(path, st.run_id, st.dir):  # a crafted record claims no one else's files
            log.warning("run %s: owned path %r does not belong to the run: left alone", st.run_id, path)
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        removed += not os.path.lexists(path)
    return stopped, removed


def remove_run(st: RunState) -> int:
    """Tear down a run from its record: echo server, owned processes and paths, namespaces,
    record. Returns namespaces deleted."""
    for pid, start in st.servers:
        stop_server(pid, start, st.run_id)
    remove_owned(st)
    n = delete_namespaces(st.run_id, st.namespaces)
    shutil.rmtree(st.dir, ignore_errors=True)
    return n


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)  # run ids
    namespaces: int = 0
    live: list[str] = field(default_factory=list)  # runs left alone: owner alive
    kept: list[str] = field(default_factory=list)  # runs left alone: kept (use --all)
    orphans: list[str] = field(default_factory=list)  # orphan namespaces removed
    processes: int = 0  # owned processes stopped (e.g. a MariaDB server of a crashed run)


def gc(*, include_kept: bool = False, orphans: bool = False) -> GcReport:
    """Remove runs whose owner process is dead (and, with ``include_kept``, kept runs whose owner
    has exited). A run whose owner is alive is never touched. With ``orphans``, also delete
    ``nph-<6 hex>-*`` namespaces that no record claims."""
    rep = GcReport()
    for st in list_runs():
        if st.owner_alive():
            rep.live.append(st.run_id)
            continue
        if st.kept and not include_kept:
            rep.kept.append(st.run_id)
            continue
        rep.processes += remove_owned(st)[0]
        rep.namespaces += remove_run(st)
        rep.removed.append(st.run_id)
    # Run directories without a record (a crash between mkdir and the first save) are stale if old.
    with contextlib.suppress(FileNotFoundError):
        for rid in os.listdir(STATE_ROOT):
            d = os.path.join(STATE_ROOT, rid)
            if not os.path.exists(os.path.join(d, "state.json")) and time.time() - os.path.getmtime(d) > 60:
                rep.namespaces += delete_namespaces(rid) if RUN_ID_RE.match(rid) else 0
                shutil.rmtree(d, ignore_errors=True)
                rep.removed.append(rid)
    if orphans:
        known = set()
        with contextlib.suppress(FileNotFoundError):
            known = set(os.listdir(STATE_ROOT))
        for name in netns.list_names(PREFIX):
            m = NETNS_RE.match(name)
            if m and m.group(1) not in known:
                netns.delete(name)
                rep.orphans.append(name)
    return rep

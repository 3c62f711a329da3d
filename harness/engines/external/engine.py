"""External engine: a user's own program is a node's policy engine.

The program runs inside the node's namespace (``harness.kernel.netns.popen``), so any
``iptables``/``ipset``/``nft`` it runs, or netlink socket it opens, programs that node. Protocol,
one JSON object per line:

harness -> program (stdin)
  ``{"type": "snapshot", "node": "node-a", "seq": N, "cluster": {...}, "config": {...}}`` first:
  the cluster as the node sees it (``events.cluster_to_dict``: nodes, namespaces, pods,
  policies as NetworkPolicy manifests) and the run's config (engine, profile, strategy, backend,
  default_deny, reject_with). A later snapshot replaces the whole view (the conformance runner
  sends one per step and waits for the sync that reports its ``seq``);
  then one ``{"type": "event", "seq": N, "kind": "pod-added", "key": "ns/name", "emitted_ns": ...,
  "pod": {...} | "policy": {manifest} | "labels": {...}}`` per event, at its delivery time
  (``kind``: pod-added, pod-updated, pod-deleted, namespace-added, namespace-updated,
  policy-added, policy-updated, policy-deleted), and ``{"type": "resync", "reason": ...}`` when
  a sync is asked for without an event. stdin closes when the run ends: exit then.

program -> harness (stdout), needed for lag measurement, cni-wait and conformance
  ``{"type": "sync", "through_seq": N, "start_ns": ..., "end_ns": ..., "rules_ns"?: ...,
  "sets_ns"?: ..., "render_ns"?: ..., "sync_version"?: ..., "timings"?: {"ipset_restore_time": ns,
  ...}, "error"?: "..."}`` after each sync: the rules for every event up to ``through_seq`` are in
  force (times are CLOCK_REALTIME ns, ``time.time_ns()``, non-negative integers). Other JSON
  objects are logged. Anything else (not JSON, not an object, NaN/Infinity, a field of the wrong
  type, a line over ``protocol.MAX_LINE`` bytes) is a malformed line: counted, the first one
  logged and reported in the node's errors with an excerpt, and the reader goes on.
  stderr goes to the harness log.

The program gets a minimal environment, not the harness's: ``PATH`` (the harness's interpreter
directory first, so ``python3`` is the one that can import ``harness``), ``PYTHONPATH`` (the
repository), ``LANG=C.UTF-8`` and ``NPH_NODE``, ``NPH_NETNS``, ``NPH_ENGINE``, ``NPH_BACKEND``,
``NPH_PROFILE``, ``NPH_STRATEGY``.

``examples/external_controller.py`` is a complete example.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from typing import Any

from harness.controller import events as ev
from harness.controller.timeline import SyncRecord, Timeline
from harness.engines.base import BeforeApply, NotProgrammed, Programmed
from harness.engines.config import EnforcementConfig, check_common, parse_command
from harness.engines.external.protocol import MAX_LINE, BadLine, excerpt, parse_line
from harness.errors import ConfigError
from harness.kernel import netns
from harness.model.cluster import Cluster

log = logging.getLogger(__name__)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROGRAM_TIMEOUT_S = 60.0  # how long ``program`` waits for the sync report of its snapshot


def child_environment(node: str, netns_name: str, config: EnforcementConfig,
                      parent: dict[str, str] | None = None) -> dict[str, str]:
    """The program's whole environment (see the module docstring); nothing else is inherited."""
    parent = os.environ if parent is None else parent
    path = os.pathsep.join(dict.fromkeys([os.path.dirname(sys.executable), parent.get("PATH") or DEFAULT_PATH]))
    return {"PATH": path, "PYTHONPATH": _REPO_ROOT, "LANG": "C.UTF-8",
            "NPH_NODE": node, "NPH_NETNS": netns_name, "NPH_ENGINE": config.engine,
            "NPH_BACKEND": config.backend, "NPH_PROFILE": config.profile, "NPH_STRATEGY": config.strategy}


class ExternalNode:
    """One node's external program (see the module docstring). Asynchronous: it records its
    own syncs in the timeline as the program reports them."""

    reports_syncs = True
    strategy = "external"

    def __init__(self, node: str, netns_name: str, config: EnforcementConfig, timeline: Timeline,
                 argv: list[str] | tuple[str, ...] | None = None):
        self.node, self.netns, self.config, self.timeline = node, netns_name, config, timeline
        argv = argv if argv is not None else config.external_cmd
        if not argv or not all(isinstance(a, str) and a for a in argv):
            raise ConfigError(None, f"external.{node}", "must be a non-empty command (list of strings)")
        self.argv = list(argv)
        self.errors: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.bad_lines = 0  # malformed stdout lines (protocol.parse_line raised BadLine)
        self.first_bad: str | None = None
        self._seq = 0  # the last seq the program was sent (events or snapshots)
        self._write_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, view: Cluster) -> None:
        """Start the program in the node's namespace and send it the snapshot of ``view``."""
        env = child_environment(self.node, self.netns, self.config)
        try:
            self.proc = netns.popen(self.netns, self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, bufsize=1, env=env, close_fds=True)
        except OSError as e:
            raise ConfigError(None, f"external.{self.node}", f"cannot start {self.argv[0]!r}: {e}") from None
        self._send_snapshot(view, self._seq)
        for fn, what in ((self._read_stdout, "stdout"), (self._read_stderr, "stderr")):
            t = threading.Thread(target=fn, name=f"ext-{self.node}-{what}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Close stdin (the program's cue to exit), wait, kill if it does not."""
        proc = self.proc
        if proc is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.returncode not in (0, None) and proc.returncode > 0:
                self.errors.append(f"external controller {self.argv[0]} on {self.node} exited {proc.returncode}")
        for t in self._threads:
            t.join(timeout)
        if self.bad_lines > 1:
            self.errors.append(f"external controller {self.node}: {self.bad_lines} malformed stdout lines in all")

    # -- harness -> program ----------------------------------------------------------------------
    def _write(self, line: str) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None:
            return
        with self._write_lock:
            try:
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError) as e:
                msg = f"external controller {self.argv[0]} on {self.node} stopped reading: {e}"
                if msg not in self.errors:
                    self.errors.append(msg)
                    log.warning(msg)

    def _send_snapshot(self, view: Cluster, seq: int) -> None:
        cfg = self.config
        snap = {"type": "snapshot", "node": self.node, "seq": seq, "cluster": ev.cluster_to_dict(view),
                "config": {"engine": cfg.engine, "profile": cfg.profile, "strategy": cfg.strategy,
                           "backend": cfg.backend, "default_deny": cfg.default_deny, "reject_with": cfg.reject_with}}
        self._write(json.dumps(snap, separators=(",", ":")))

    def wants_sync(self, event: ev.ClusterEvent, before: Cluster) -> bool:
        return False  # the program decides itself (it gets every event)

    def deliver(self, event: ev.ClusterEvent) -> None:
        """The program decides itself what to do with every event, so each one is sent."""
        self._seq = max(self._seq, event.seq)
        self._write(event.to_json())

    def request_sync(self, reason: str) -> None:
        self._write(json.dumps({"type": "resync", "reason": reason}))

    def sync_version(self, start_ns: int) -> int:
        return start_ns  # the program chooses its own; it reports it in the sync line

    def program(self, view: Cluster, *, sync_version: int, full: bool = False,
                before_apply: BeforeApply | None = None, timeout: float = PROGRAM_TIMEOUT_S) -> Programmed:
        """Hand the program the whole ``view`` (a snapshot with a new seq) and wait for the sync
        that reports it; NotProgrammed on timeout, an exit or a sync reporting an error. For
        callers that deliver no events (the conformance runner)."""
        self._seq += 1
        seq = self._seq
        self._send_snapshot(view, seq)

        def reported() -> SyncRecord | tuple[str, int] | None:
            rec = next((s for s in reversed(self.timeline.node_syncs(self.node, done_only=True))
                        if s.through_seq >= seq), None)
            return rec or self._exited()

        rec = self.timeline.wait_for(reported, timeout)
        if not isinstance(rec, SyncRecord):
            raise NotProgrammed(self._no_sync_message(rec, timeout, f"the sync of snapshot #{seq}"))
        if rec.error:
            raise NotProgrammed(f"external controller on {self.node}: sync failed: {rec.error}")
        timings = {**rec.timings, "start_ns": rec.start_ns, "sets_ns": rec.sets_ns, "rules_ns": rec.rules_ns,
                   "end_ns": rec.end_ns}
        timings.setdefault("total", max(rec.end_ns - rec.start_ns - rec.render_ns, 0))
        return Programmed(rec.sync_version, self.strategy, rec.render_ns, timings)

    # -- program -> harness ----------------------------------------------------------------------
    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        out, number = self.proc.stdout, 0
        while True:
            line = out.readline(MAX_LINE + 1)  # bounded: an endless line is read in pieces
            if not line:
                break
            number += 1
            if len(line) > MAX_LINE and not line.endswith("\n"):
                head = line
                while line and not line.endswith("\n"):  # drop the rest of the oversize line
                    line = out.readline(MAX_LINE + 1)
                self._bad(number, BadLine(f"line longer than {MAX_LINE} bytes"), head)
                continue
            line = line.strip()
            if not line:
                continue
            try:
                sync = parse_line(line)
            except BadLine as e:
                self._bad(number, e, line)
                continue
            if sync is None:
                log.info("external controller %s: %s", self.node, excerpt(line))
                continue
            rec = self.timeline.sync_started(self.node, sync.sync_version or sync.start_ns, sync.start_ns,
                                             sync.through_seq, [sync.reason], self.strategy)
            self.timeline.sync_finished(rec, end_ns=sync.end_ns, sets_ns=sync.sets_ns, rules_ns=sync.rules_ns,
                                        render_ns=sync.render_ns, timings=sync.timings, error=sync.error)
        self.timeline.touch()  # EOF: wake waiters (the program exited)

    def _bad(self, number: int, problem: BadLine, line: str) -> None:
        self.bad_lines += 1
        if self.first_bad is None:  # logged and reported once; the count says how many followed
            self.first_bad = f"line {number}: {problem}: {excerpt(line)}"
            msg = f"external controller {self.node}: malformed stdout {self.first_bad}"
            log.warning(msg)
            self.errors.append(msg)
        self.timeline.touch()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while True:
            line = self.proc.stderr.readline(MAX_LINE + 1)
            if not line:
                break
            if line.strip():
                log.info("external controller %s (stderr): %s", self.node, excerpt(line.rstrip()))

    # -- waiting ---------------------------------------------------------------------------------
    def _exited(self) -> tuple[str, int] | None:
        proc = self.proc
        return ("exited", proc.returncode) if proc is not None and proc.poll() is not None else None

    def _no_sync_message(self, got: Any, timeout: float, what: str) -> str:
        head = f"external controller {self.argv[0]} on {self.node}"
        bad = (f"; {self.bad_lines} malformed stdout line(s), first {self.first_bad}" if self.bad_lines else "")
        if isinstance(got, tuple):
            return f"{head} exited ({got[1]}) before reporting {what}{bad}"
        if self.bad_lines:
            return f"{head}: no valid sync line ({what}) within {timeout:g} s{bad}"
        return (f"{head}: no sync line ({what}) within {timeout:g} s (it must print {{\"type\": \"sync\", ...}} "
                "after programming)")

    def wait_initial(self, timeout: float) -> SyncRecord:
        """The first sync the program reported; NotProgrammed (saying what went wrong) otherwise."""
        rec = self.timeline.wait_for(
            lambda: next(iter(self.timeline.node_syncs(self.node, done_only=True)), None) or self._exited(),
            timeout)
        if not isinstance(rec, SyncRecord):
            raise NotProgrammed(self._no_sync_message(rec, timeout, "its first sync"))
        return rec


class ExternalEngine:
    """The external engine (``name = "external"``): ``config.external_cmd`` runs on every node."""

    name = "external"

    def validate(self, config: EnforcementConfig, source: str | None = None) -> None:
        check_common(config, source)
        parse_command(config.external_cmd, source)
        if config.external_cmd is None:
            raise ConfigError(source, "external_cmd", "the external engine needs a command (--external-cmd)")

    def require_tools(self, config: EnforcementConfig) -> None:
        return None  # the program brings its own; a failed start is reported as such

    def node(self, node: str, netns_name: str, config: EnforcementConfig, timeline: Timeline, *,
             argv: list[str] | None = None) -> ExternalNode:
        return ExternalNode(node, netns_name, config, timeline, argv)

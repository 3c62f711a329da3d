"""External controller hook: a user's own program is a node's controller.

The program runs inside the node's namespace (``harness.kernel.netns.popen``), so any
``iptables``/``ipset``/``nft`` it runs, or netlink socket it opens, programs that node. Protocol,
one JSON object per line:

harness -> program (stdin)
  ``{"type": "snapshot", "node": "node-a", "seq": 0, "cluster": {...}, "config": {...}}`` first:
  the cluster as the node sees it at start (``events.cluster_to_dict``: nodes, namespaces, pods,
  policies as NetworkPolicy manifests) and the run's config (profile, backend, default_deny,
  reject_with);
  then one ``{"type": "event", "seq": N, "kind": "pod-added", "key": "ns/name", "emitted_ns": ...,
  "pod": {...} | "policy": {manifest} | "labels": {...}}`` per event, at its delivery time
  (``kind``: pod-added, pod-updated, pod-deleted, namespace-added, namespace-updated,
  policy-added, policy-updated, policy-deleted), and ``{"type": "resync", "reason": ...}`` when
  a sync is asked for without an event. stdin closes when the run ends: exit then.

program -> harness (stdout), optional but needed for lag measurement and cni-wait
  ``{"type": "sync", "through_seq": N, "start_ns": ..., "end_ns": ..., "rules_ns"?: ...,
  "sets_ns"?: ..., "sync_version"?: ..., "timings"?: {"ipset_restore_time": ns, ...}}`` after
  each sync: the rules for every event up to ``through_seq`` are in force (times are
  CLOCK_REALTIME ns, ``time.time_ns()``). A sync for the snapshot reports ``through_seq`` 0.
  Any other line is logged. stderr goes to the harness log.

``examples/external_controller.py`` is a complete example.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import threading
from typing import Any

from harness.controller import events as ev
from harness.controller.loop import ControllerConfig, NodeController, NotProgrammed
from harness.controller.timeline import Timeline
from harness.errors import ConfigError
from harness.kernel import netns
from harness.model.cluster import Cluster

log = logging.getLogger(__name__)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ExternalNodeController(NodeController):
    """A node controller whose syncs are done by an external program (see the module docstring).
    Delivery (delays, order, the node's view) works as for the built-in controller."""

    kind = "external"

    def __init__(self, node: str, netns_name: str, view: Cluster, config: ControllerConfig, timeline: Timeline,
                 argv: list[str]):
        super().__init__(node, netns_name, view, config, timeline)
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ConfigError(None, f"external.{node}", "must be a non-empty command (list of strings)")
        self.argv = list(argv)
        self.proc: subprocess.Popen | None = None
        self._write_lock = threading.Lock()

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(x for x in (_REPO_ROOT, env.get("PYTHONPATH")) if x)
        env.update({"NPH_NODE": self.node, "NPH_NETNS": self.netns, "NPH_BACKEND": self.config.backend,
                    "NPH_PROFILE": self.config.profile})
        try:
            self.proc = netns.popen(self.netns, self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, bufsize=1, env=env, close_fds=True)
        except OSError as e:
            raise ConfigError(None, f"external.{self.node}", f"cannot start {self.argv[0]!r}: {e}") from None
        with self._view_lock:
            snap = {"type": "snapshot", "node": self.node, "seq": self.last_delivered_seq,
                    "cluster": ev.cluster_to_dict(self.view),
                    "config": {"profile": self.config.profile, "backend": self.config.backend,
                               "default_deny": self.config.default_deny, "reject_with": self.config.reject_with}}
        self._write(json.dumps(snap, separators=(",", ":")))
        self._spawn(self._delivery_loop, "deliver")
        self._spawn(self._read_stdout, "stdout")
        self._spawn(self._read_stderr, "stderr")

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

    def _on_delivered(self, event: ev.ClusterEvent, requested: bool) -> None:
        # the program decides itself what to do with every event, so each one is sent
        self._write(event.to_json())

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                log.info("external controller %s: %s", self.node, line)
                continue
            if isinstance(msg, dict) and msg.get("type") == "sync":
                self._record_sync(msg)
            else:
                log.info("external controller %s: %s", self.node, line)
        self.timeline.touch()  # EOF: wake waiters (the program exited)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.strip():
                log.info("external controller %s (stderr): %s", self.node, line.rstrip())

    def _record_sync(self, msg: dict[str, Any]) -> None:
        try:
            start = int(msg["start_ns"])
            end = int(msg["end_ns"])
            through = int(msg["through_seq"])
        except (KeyError, TypeError, ValueError) as e:
            self.errors.append(f"external controller {self.node}: bad sync line ({e}): {msg}")
            return
        timings = {k: int(v) for k, v in (msg.get("timings") or {}).items() if isinstance(v, int | float)}
        rec = self.timeline.sync_started(self.node, int(msg.get("sync_version") or start), start, through,
                                         [str(msg.get("reason", "external"))], "external")
        self.timeline.sync_finished(rec, end_ns=end, sets_ns=int(msg.get("sets_ns") or 0),
                                    rules_ns=int(msg.get("rules_ns") or 0), render_ns=int(msg.get("render_ns") or 0),
                                    timings=timings, error=msg.get("error"))

    def idle(self) -> bool:
        with self._queue_cond:
            return not self._queue and self._in_flight == 0

    def request_sync(self, reason: str = "manual", seq: int = 0) -> bool:
        self._write(json.dumps({"type": "resync", "reason": reason}))
        return True

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._queue_cond:
            self._queue_cond.notify_all()
        proc = self.proc
        if proc is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()  # type: ignore[union-attr]  # EOF: the program's cue to exit
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.returncode not in (0, None) and not self._stopping_killed(proc):
                self.errors.append(f"external controller {self.argv[0]} on {self.node} exited {proc.returncode}")
        for t in self._threads:
            t.join(timeout)

    @staticmethod
    def _stopping_killed(proc: subprocess.Popen) -> bool:
        return proc.returncode is not None and proc.returncode < 0

    def wait_initial(self, timeout: float):
        rec = self.timeline.wait_for(
            lambda: next(iter(self.timeline.node_syncs(self.node, done_only=True)), None)
            or (("exited", self.proc.returncode) if self.proc and self.proc.poll() is not None else None),
            timeout)
        if isinstance(rec, tuple):
            raise NotProgrammed(f"external controller {self.argv[0]} on {self.node} exited ({rec[1]}) "
                                "before reporting its first sync")
        if rec is None:
            raise NotProgrammed(f"external controller {self.argv[0]} on {self.node}: no sync line within "
                                f"{timeout:g} s (it must print {{\"type\": \"sync\", ...}} after programming)")
        return rec


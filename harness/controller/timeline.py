"""What the controllers did, when: events (emitted, delivered per node), sync requests, syncs
and their phases, all CLOCK_REALTIME ns. Thread-safe and queryable; pure (no kernel).

The questions scenarios ask:

    tl.sync_including("node-a", ev.seq)     # first finished sync on node-a whose view held event ev
    tl.programmed_ns("node-a", ev.seq)      # when that sync's rules were in force
    tl.first_sync_started_after("node-a", t)
    tl.lag_ns(ev.seq, "node-a")             # programmed - emitted

A sync "includes" an event when the event had been delivered to (applied to the view of) that
node before the sync took its snapshot: ``through_seq >= seq`` (delivery is in order per node).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from harness.controller.channel import SyncRequest

T = TypeVar("T")


@dataclass
class EventRecord:
    """One emitted event and, per node, when it was delivered and whether it requested a sync."""

    seq: int
    kind: str
    key: str
    emitted_ns: int
    delivered_ns: dict[str, int] = field(default_factory=dict)
    requested_sync: dict[str, bool] = field(default_factory=dict)


@dataclass
class Phase:
    """One timed part of a sync: ``name`` (render, top_level_time, iptables_save_time,
    ipset_save_time, ipset_restore_time, iptables_restore_time, stale_cleanup_time), start/end ns.
    Apply phases are laid out back to back from the apply's start by their measured durations
    (perf_counter), so their edges are accurate to the few µs between tool calls."""

    name: str
    start_ns: int
    end_ns: int


@dataclass
class SyncRecord:
    """One sync of one node. ``through_seq``: the last event applied to the node's view when the
    sync took its snapshot. ``sets_ns``/``rules_ns``: when the ipsets / the chains were in force
    (right after the tool returned). ``reasons``: the requests this sync answered. ``timings``:
    the apply's ``SyncTimings.as_dict()`` (or what an external controller reported)."""

    node: str
    index: int
    sync_version: int
    start_ns: int
    through_seq: int
    reasons: list[str] = field(default_factory=list)
    strategy: str = ""
    end_ns: int = 0
    sets_ns: int = 0
    rules_ns: int = 0
    render_ns: int = 0
    timings: dict[str, Any] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.end_ns > 0

    @property
    def ok(self) -> bool:
        return self.done and self.error is None

    @property
    def in_force_ns(self) -> int:
        """When this sync's rules were in force: ``rules_ns``, or ``end_ns`` if not reported."""
        return self.rules_ns or self.end_ns

    @property
    def apply_start_ns(self) -> int:
        """When the apply began: the earliest moment the kernel may show this sync's changes
        (together with ``in_force_ns`` it brackets the switch-over)."""
        return int(self.timings.get("start_ns") or 0) or self.start_ns + self.render_ns

    @property
    def total_ns(self) -> int:
        return self.end_ns - self.start_ns if self.done else 0


class Timeline:
    """The record of a controller run; every method is thread-safe. ``wait_for`` blocks until a
    query over the timeline returns something (used by cni-wait)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.events: dict[int, EventRecord] = {}
        self.requests: list[SyncRequest] = []
        self.syncs: list[SyncRecord] = []
        self._next_seq = 1

    # -- recording ---------------------------------------------------------------------------
    def new_event(self, kind: str, key: str, emitted_ns: int | None = None) -> EventRecord:
        with self._cond:
            rec = EventRecord(self._next_seq, kind, key, emitted_ns if emitted_ns is not None else time.time_ns())
            self._next_seq += 1
            self.events[rec.seq] = rec
            self._cond.notify_all()
            return rec

    def delivered(self, seq: int, node: str, t_ns: int, requested: bool) -> None:
        with self._cond:
            rec = self.events[seq]
            rec.delivered_ns[node] = t_ns
            rec.requested_sync[node] = requested
            self._cond.notify_all()

    def request(self, req: SyncRequest) -> None:
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()

    def sync_started(self, node: str, sync_version: int, start_ns: int, through_seq: int,
                     reasons: list[str], strategy: str) -> SyncRecord:
        with self._cond:
            index = sum(1 for s in self.syncs if s.node == node)
            rec = SyncRecord(node, index, sync_version, start_ns, through_seq, list(reasons), strategy)
            self.syncs.append(rec)
            self._cond.notify_all()
            return rec

    def sync_finished(self, rec: SyncRecord, *, end_ns: int, sets_ns: int = 0, rules_ns: int = 0,
                      render_ns: int = 0, timings: dict[str, Any] | None = None,
                      phases: list[Phase] | None = None, error: str | None = None) -> None:
        with self._cond:
            rec.end_ns, rec.sets_ns, rec.rules_ns, rec.render_ns = end_ns, sets_ns, rules_ns, render_ns
            rec.timings = dict(timings or {})
            rec.phases = list(phases or [])
            rec.error = error
            self._cond.notify_all()

    def touch(self) -> None:
        """Wake every ``wait_for`` to re-check (something outside the timeline changed)."""
        with self._cond:
            self._cond.notify_all()

    # -- queries -------------------------------------------------------------------------------
    def event(self, seq: int) -> EventRecord:
        with self._cond:
            return self.events[seq]

    def node_syncs(self, node: str, *, done_only: bool = False) -> list[SyncRecord]:
        """The node's syncs in start order."""
        with self._cond:
            return [s for s in self.syncs if s.node == node and (s.done or not done_only)]

    def syncs_after(self, node: str, t_ns: int) -> list[SyncRecord]:
        """The node's syncs that started at or after ``t_ns``."""
        return [s for s in self.node_syncs(node) if s.start_ns >= t_ns]

    def first_sync_started_after(self, node: str, t_ns: int) -> SyncRecord | None:
        """The first sync of ``node`` that started at or after ``t_ns`` (finished or not)."""
        after = self.syncs_after(node, t_ns)
        return after[0] if after else None

    def first_sync_after_delivery(self, node: str, seq: int) -> SyncRecord | None:
        """The first sync of ``node`` that started after event ``seq`` was delivered there
        (its ``end_ns`` is 0 while it runs); None if not delivered or no such sync yet."""
        t = self.events[seq].delivered_ns.get(node)
        return None if t is None else self.first_sync_started_after(node, t)

    def sync_including(self, node: str, seq: int) -> SyncRecord | None:
        """The first successfully finished sync of ``node`` whose view included event ``seq``."""
        for s in self.node_syncs(node, done_only=True):
            if s.ok and s.through_seq >= seq:
                return s
        return None

    def programmed_ns(self, node: str, seq: int) -> int | None:
        """When the rules of the first sync of ``node`` that included event ``seq`` were in force."""
        s = self.sync_including(node, seq)
        return s.in_force_ns if s else None

    def lag_ns(self, seq: int, node: str) -> int | None:
        """Enforcement lag of event ``seq`` on ``node``: rules in force − event emitted."""
        t = self.programmed_ns(node, seq)
        return None if t is None else t - self.events[seq].emitted_ns

    def delivery_lag_ns(self, seq: int, node: str) -> int | None:
        rec = self.events[seq]
        t = rec.delivered_ns.get(node)
        return None if t is None else t - rec.emitted_ns

    def last_event_for(self, key: str, kinds: tuple[str, ...] = ()) -> EventRecord | None:
        """The latest event about ``key`` (of one of ``kinds`` if given)."""
        with self._cond:
            for seq in sorted(self.events, reverse=True):
                rec = self.events[seq]
                if rec.key == key and (not kinds or rec.kind in kinds):
                    return rec
        return None

    def wait_for(self, query: Callable[[], T | None], timeout: float) -> T | None:
        """Re-run ``query`` whenever the timeline changes until it returns non-None or ``timeout``
        seconds pass; returns its last result."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = query()
                if got is not None:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    # -- export --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready data: ``{"events": [...], "requests": [...], "syncs": [...]}``."""
        with self._cond:
            return {"events": [asdict(e) for e in sorted(self.events.values(), key=lambda e: e.seq)],
                    "requests": [asdict(r) for r in self.requests],
                    "syncs": [asdict(s) for s in self.syncs]}

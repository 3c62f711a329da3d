"""The reproduced controller's 1-slot sync request channel, in Python. Pure (threading only).

Its source (v2.10.0 pkg/controllers/netpol/network_policy_controller.go):
``fullSyncRequestChan = make(chan struct{}, 1)``; ``RequestFullSync`` does a
non-blocking send (``select { case ch <- struct{}{}: ... default: "already pending" }``), and the
sync loop receives from it. So a request made while a sync runs fills the one slot; every
further request before the loop takes the slot is dropped: a burst during one sync collapses
into exactly one follow-up sync.

Here the slot keeps the list of requests it stands for (the first one ``queued``, the rest
``collapsed``), so the timeline can tell which events a sync answered.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class SyncRequest:
    """One call of RequestFullSync: ``reason`` (``event``, ``periodic``, ``initial``, ``manual``),
    the event ``seq`` that caused it (0 if none), when (CLOCK_REALTIME ns) and whether it took the
    empty slot (``queued``) or found it full (collapsed)."""

    node: str
    reason: str
    t_ns: int
    seq: int = 0
    queued: bool = True


class SyncChannel:
    """A 1-slot channel of sync requests; ``request`` never blocks, ``take`` waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._slot: list[SyncRequest] | None = None
        self._closed = False
        self._busy = False  # requests taken and not yet answered (``done``)

    def request(self, req: SyncRequest) -> bool:
        """Offer a request; True if it filled the empty slot, False if one was already pending
        (the request is then collapsed into the pending one). Sets ``req.queued`` accordingly."""
        with self._cond:
            if self._slot is None:
                self._slot = [req]
                req.queued = True
                self._cond.notify_all()
            else:
                self._slot.append(req)
                req.queued = False
            return req.queued

    def take(self, timeout: float | None = None) -> list[SyncRequest] | None:
        """Wait up to ``timeout`` seconds (None: forever) for the slot to fill and empty it;
        returns the requests it held (first = the one that filled it), or None on timeout or
        after ``close``."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while self._slot is None and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            if self._closed:
                return None
            out, self._slot = self._slot, None
            self._busy = True
            return out

    def done(self) -> None:
        """The requests last taken have been answered (the sync finished)."""
        with self._cond:
            self._busy = False

    @property
    def pending(self) -> bool:
        """A request waits in the slot, or the last taken ones are still being answered."""
        with self._cond:
            return self._slot is not None or self._busy

    def close(self) -> None:
        """Wake every waiter; ``take`` returns None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

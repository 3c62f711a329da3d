"""When has a controller we cannot ask finished programming a node? Watch the node's kernel.

A real controller sends the harness no sync records, so the callers that must know when a
change is in force before they look (the conformance runner probes once per step) wait for the
node's netfilter state to *settle*: its fingerprint (``nft -s list ruleset`` — stateless, so
packet counters do not count as changes; iptables-nft lives there too — plus
``iptables-legacy-save`` and ``ipset save``, all inside the node's namespace) changed after the
change was published and then stayed the same for ``stable_s`` (or twice the time its changes
were spread over, when that is longer). When nothing changes within
``quiet_s`` the controller had nothing to do (or ignores the change) and the wait ends too.
Lag is never measured this way: probes measure it (first success, CL2-style).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.kernel import netns

FINGERPRINT_TOOLS = (["nft", "-s", "list", "ruleset"], ["iptables-legacy-save", "-t", "filter"], ["ipset", "save"])
POLL_S = 0.05
STABLE_S = 0.3  # a sync of the default topology takes ~50-100 ms; two events a few ms apart fit
QUIET_S = 3.0  # kube-router ignores some changes (a pod without IP): no change at all is an answer


def fingerprint(netns_name: str) -> str:
    """A digest of the node's netfilter and ipset state (counters excluded)."""
    h = hashlib.sha256()
    for argv in FINGERPRINT_TOOLS:
        try:
            proc = netns.run(netns_name, argv, check=False, timeout=30)
        except OSError:  # a tool this machine lacks contributes nothing
            continue
        # iptables-legacy-save's header and footer carry the time of the save
        lines = [ln for ln in proc.stdout.splitlines() if not ln.startswith("#")]
        h.update(("\n".join(lines) + f"\n--{argv[0]} {proc.returncode}\n").encode())
    return h.hexdigest()


@dataclass
class Settled:
    """How a wait ended: ``changed`` (the state moved after ``since``), ``at_ns`` (CLOCK_REALTIME
    of the last change seen, or of the end of a quiet wait) and the final ``digest``."""

    changed: bool
    at_ns: int
    digest: str


def wait_settled(netns_name: str, baseline: str, *, stable_s: float = STABLE_S, quiet_s: float = QUIET_S,
                 timeout: float = 60.0, alive: Callable[[], bool] | None = None) -> Settled:
    """Poll the node's fingerprint until it differs from ``baseline`` and then holds for
    ``stable_s``; or until ``quiet_s`` passed with no change at all; or ``timeout`` (the last
    state counts). ``alive`` (the controller process still runs) ends the wait early when False."""
    start = time.monotonic()
    last, last_change, last_change_ns = baseline, None, time.time_ns()
    first_change = None
    while True:
        now = time.monotonic()
        cur = fingerprint(netns_name)
        if cur != last:
            last, last_change, last_change_ns = cur, time.monotonic(), time.time_ns()
            first_change = first_change if first_change is not None else last_change
        # a sync whose steps are spread out (top-level chains first, the restores later, on a
        # loaded machine) must not look finished in one of its gaps: wait twice the span seen
        if last_change is not None and first_change is not None and \
                time.monotonic() - last_change >= max(stable_s, 2 * (last_change - first_change)):
            return Settled(True, last_change_ns, last)
        if last_change is None and now - start >= quiet_s:
            return Settled(False, time.time_ns(), last)
        if now - start >= timeout or (alive is not None and not alive()):
            return Settled(last_change is not None, last_change_ns, last)
        time.sleep(POLL_S)

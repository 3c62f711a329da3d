"""``incremental``: the what-if apply strategy — program only what changed since the last sync.

kube-router renders and restores *everything* on every sync, and names every pod and policy
chain after the sync version, so each sync replaces every chain of the filter table. This
strategy keeps what the node last programmed in memory and, on the next sync:

- renders with the **same sync version** as the first (full) sync, so unchanged chains keep
  their names and can simply be left alone;
- ``ipset restore -exist`` of the changed sets only (TMP set + swap per the profile, or flush and
  refill in place for v1.2), new sets created the same way;
- one ``iptables-restore --noflush`` holding only the changed chains: declaring an existing chain
  (``:NAME - [0:0]``) flushes it inside the restore's transaction, and its new rules follow, so
  the replacement is atomic (legacy: one table replace; nft: one netlink batch) — no packet sees a
  half-written chain, which is why a new name (a new sync version) buys nothing; chains no longer
  wanted are deleted (``-X``) in the same transaction, after the chains that jumped to them;
- stale sets destroyed afterwards (one ``ipset restore`` of ``destroy`` lines), by kube-router's
  rule (``restore_text.stale_policy_sets``: KUBE-SRC-/KUBE-DST- sets only).

The sync version therefore stays stable for the controller's life: chain names only change
when a pod or policy appears or disappears. The first sync, a change of the built-in jumps, and
every periodic resync (which exists to repair drift) are full ``restore`` syncs with the stable
version. ``plan_incremental`` and ``noflush_restore_text`` are pure.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field

from harness.engines.kube_router.apply import (
    SyncTimings,
    apply,
    get_backend,
    ipset_restore_text,
    require_tools,
)
from harness.engines.kube_router.apply.exec_sequence import IPSetHandler
from harness.engines.kube_router.apply.restore_text import stale_policy_sets
from harness.engines.kube_router.render.ruleset import Chain, IPSetSpec, Ruleset
from harness.errors import ConfigError, KernelError
from harness.kernel import netns
from harness.kernel.backends import IPSET, Backend, exec_env

log = logging.getLogger(__name__)


@dataclass
class IncrementalPlan:
    """What differs between two rulesets of one node: sets to (re)program, sets to destroy,
    chains to (re)write, chains to delete; ``full`` if only a full restore will do (``why``)."""

    sets_changed: list[IPSetSpec] = field(default_factory=list)
    sets_removed: list[str] = field(default_factory=list)
    chains_changed: list[Chain] = field(default_factory=list)
    chains_removed: list[str] = field(default_factory=list)
    full: bool = False
    why: str = ""

    @property
    def empty(self) -> bool:
        return not (self.full or self.sets_changed or self.sets_removed or self.chains_changed
                    or self.chains_removed)

    def summary(self) -> str:
        if self.full:
            return f"full ({self.why})"
        return (f"{len(self.sets_changed)} sets changed, {len(self.sets_removed)} removed, "
                f"{len(self.chains_changed)} chains changed, {len(self.chains_removed)} removed")


def plan_incremental(old: Ruleset | None, new: Ruleset) -> IncrementalPlan:
    """The difference from ``old`` (what is programmed) to ``new``. Chains keep ``new``'s
    dependency order, so a chain is written after the chains it jumps to."""
    if old is None:
        return IncrementalPlan(full=True, why="first sync")
    if old.builtin_jumps != new.builtin_jumps:
        return IncrementalPlan(full=True, why="built-in jumps changed")
    if old.swap_sets != new.swap_sets or old.profile != new.profile:
        return IncrementalPlan(full=True, why="profile changed")
    old_sets = {s.name: s for s in old.sets}
    plan = IncrementalPlan()
    for s in new.sets:
        o = old_sets.get(s.name)
        if o is None or o.type != s.type or o.options != s.options or o.entries != s.entries:
            plan.sets_changed.append(s)
    # the sets kube-router's cleanupStaleIPSets would destroy (KUBE-SRC-/KUBE-DST- only): a
    # kube-router-local-pods set the new ruleset no longer lists stays, as with kube-router
    plan.sets_removed = stale_policy_sets(new, old_sets)
    old_chains = {c.name: c.rules for c in old.chains}
    plan.chains_changed = [c for c in new.chains if old_chains.get(c.name) != c.rules]
    new_chain_names = {c.name for c in new.chains}
    plan.chains_removed = [c.name for c in old.chains if c.name not in new_chain_names]
    return plan


def noflush_restore_text(plan: IncrementalPlan) -> str:
    """Input for ``iptables-restore --noflush``: the changed chains declared (created or
    flushed) and refilled, then the removed chains flushed and deleted. Empty if no chain changed."""
    if not plan.chains_changed and not plan.chains_removed:
        return ""
    out = ["*filter"]
    out += [f":{c.name} - [0:0]" for c in plan.chains_changed]
    # a removed chain is flushed first: it may jump to another removed chain
    out += [f":{name} - [0:0]" for name in plan.chains_removed]
    for c in plan.chains_changed:
        out += [f"-A {c.name} {rule}" for rule in c.rules]
    out += [f"-X {name}" for name in plan.chains_removed]
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def _sets_ruleset(base: Ruleset, sets: list[IPSetSpec]) -> Ruleset:
    return Ruleset(node=base.node, profile=base.profile, sync_version=base.sync_version, sets=list(sets),
                   swap_sets=base.swap_sets)


def destroy_text(names: list[str]) -> str:
    return "".join(f"destroy {n}\n" for n in names)


class IncrementalApplier:
    """Keeps what one node namespace holds and applies only the difference (see the module
    docstring). ``sync_version(start_ns)`` gives the version to render with: the first sync's
    start time, forever."""

    strategy = "incremental"

    def __init__(self, netns_name: str, backend: str | Backend = "nft"):
        self.netns = netns_name
        self.backend = get_backend(backend)
        self.current: Ruleset | None = None
        self.stable_version: int | None = None
        self.last_plan: IncrementalPlan | None = None
        self.ipset_handler = IPSetHandler()  # the full syncs' handler, as kube-router keeps one

    def sync_version(self, start_ns: int) -> int:
        if self.stable_version is None:
            self.stable_version = start_ns
        return self.stable_version

    def apply(self, ruleset: Ruleset, *, full: bool = False) -> SyncTimings:
        """Program ``ruleset``: incrementally against the last one, or a full ``restore`` when
        ``full`` or the plan needs it. Returns the timings (strategy ``incremental`` or
        ``restore``)."""
        if ruleset.ipv6 is not None:
            raise ConfigError(None, "strategy", "the incremental strategy programs IPv4 only; "
                              "use restore or per-rule with a dual-stack topology")
        plan = plan_incremental(self.current, ruleset)
        if full and not plan.full:
            plan = IncrementalPlan(full=True, why="full resync requested")
        self.last_plan = plan
        if plan.full:
            t = apply(ruleset, self.netns, backend=self.backend, strategy="restore", ipset_handler=self.ipset_handler)
        else:
            require_tools(self.backend)
            t = netns.call_in(self.netns, self._apply_in_ns, ruleset, plan)
        self.current = ruleset
        log.debug("incremental sync on %s: %s in %.1f ms", self.netns, plan.summary(), t.total / 1e6)
        return t

    def _run(self, argv: list[str], text: str, t: SyncTimings) -> None:
        # we run in a thread inside the namespace: plain subprocess (vfork), as harness.engines.kube_router.apply does
        t.execs += 1
        proc = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=600,
                              env=exec_env(self.backend, self.netns))  # legacy: the node's own xtables lock
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if ln.strip()), f"exit code {proc.returncode}")
            raise KernelError(f"{argv[0]} in {self.netns}: {first}")

    def _apply_in_ns(self, ruleset: Ruleset, plan: IncrementalPlan) -> SyncTimings:
        assert threading.current_thread() is not threading.main_thread()
        b = self.backend
        t = SyncTimings(strategy=self.strategy, backend=b.name, netns=self.netns, sync_version=ruleset.sync_version,
                        rules=sum(len(c.rules) for c in plan.chains_changed), sets=len(plan.sets_changed),
                        set_entries=sum(len(s.entries) for s in plan.sets_changed))
        t0 = time.perf_counter_ns()
        t.start_ns = time.time_ns()
        if plan.sets_changed:
            known = {s.name for s in self.current.sets} if self.current else set()
            text = ipset_restore_text(_sets_ruleset(ruleset, plan.sets_changed), known)
            s0 = time.perf_counter_ns()
            self._run([IPSET, "restore", "-exist"], text, t)
            t.ipset_restore_time = time.perf_counter_ns() - s0
        t.sets_ns = time.time_ns()
        text = noflush_restore_text(plan)
        if text:
            s0 = time.perf_counter_ns()
            self._run([*b.restore_argv(), "--noflush"], text, t)
            t.iptables_restore_time = time.perf_counter_ns() - s0
        t.rules_ns = time.time_ns()
        if plan.sets_removed:
            s0 = time.perf_counter_ns()
            self._run([IPSET, "restore", "-exist"], destroy_text(plan.sets_removed), t)
            t.stale_cleanup_time = time.perf_counter_ns() - s0
        t.stale_sets = list(plan.sets_removed)
        t.stale_chains = list(plan.chains_removed)
        t.total = time.perf_counter_ns() - t0
        t.end_ns = time.time_ns()
        return t

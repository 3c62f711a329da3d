"""Apply a Ruleset to a node namespace, timed per phase: the ``restore``, ``per-rule`` and ``netlink``
strategies.

Every strategy programs the same end state (checked by the kernel tests with ``inspect``):
the ruleset's sets and owned chains, the controller's jumps at the top of INPUT/FORWARD/OUTPUT,
every rule and chain of other owners untouched, stale chains and sets of older syncs gone.

- ``restore`` is kube-router's full sync (v1.2+) with every process the source at the profile's
  tag spawns (``exec_sequence``): top-level chains, jumps, allow rules and helper chains ensured
  with individual go-iptables calls (``-S``/``-C``/``-N``/``-I``/``-D``), ``iptables-save -t
  filter``, ``ipset save`` + one ``ipset restore -exist``, ``iptables -S`` (cleanupStaleRules),
  one ``iptables-restore`` of the whole filter table, ``ipset save`` again and one
  ``ipset destroy`` per stale set.
- ``per-rule`` is kube-router before 1.2. With a v1.1.x profile (``v1.1.1``) it is v1.1.1's sync
  call for call (``per_rule``: every go-iptables ``-C``/``-N``/``-I``/``-A``/``-S``/``-D``/``-F``/``-X``
  and ipset ``list``/``create``/``add``/``swap``/``destroy`` with its argv, the stale cleanup
  included). With a later profile, whose rules v1.1.x never wrote, it stays a generic model: one
  ``ipset`` exec per set operation and entry, one ``iptables`` exec per chain and rule,
  make-before-break (new rules added before old ones are deleted).
- ``netlink``: sets over netlink (batched, see ``harness.kernel.ipset_netlink``), chains through
  one ``iptables-restore``.

Durations are measured with the monotonic ``perf_counter_ns``; event timestamps are
``time.time_ns()`` (CLOCK_REALTIME, the clock of kernel packet timestamps), taken right after the
tool that changed kernel state returned.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from harness.engines.kube_router.apply.exec_sequence import IPSetHandler, exec_summary, full_policy_sync
from harness.engines.kube_router.apply.per_rule import v111_sync
from harness.engines.kube_router.apply.restore_text import (
    FILTER_BUILTINS,
    entry_key,
    filter_restore_text,
    ipset_ops,
    jump_target,
    parse_ipset_save,
    parse_iptables_save,
    stale_policy_sets,
    stale_sets,
)
from harness.engines.kube_router.render.ruleset import Ruleset
from harness.errors import ConfigError, EnvironmentProblem, KernelError
from harness.kernel import ipset_netlink, netns
from harness.kernel.backends import IPSET, Backend, check_not_mixed, exec_env, get_backend, require_tools

log = logging.getLogger(__name__)

# our phase name -> kube-router's Prometheus metric (v4 family)
METRIC_NAMES = {
    "iptables_save_time": "controller_iptables_v4_save_time",
    "ipset_restore_time": "controller_policy_ipset_v4_restore_time",
    "iptables_restore_time": "controller_iptables_v4_restore_time",
    "total": "controller_iptables_sync_time",
}


@dataclass
class SyncTimings:
    """One sync's cost. Durations in ns: ``top_level_time`` (individual calls ensuring the
    top-level chains and jumps), ``iptables_save_time``, ``ipset_save_time`` (reading existing
    sets), ``ipset_restore_time`` (programming sets), ``iptables_restore_time`` (programming
    chains), ``stale_cleanup_time`` (removing stale sets; in ``per-rule`` also stale chains),
    ``total``; ``restore`` only: ``local_pods_ipset_time`` (v2.10 default deny's own save+restore of
    kube-router-local-pods), ``list_chains_time`` (cleanupStaleRules' ``iptables -S``).
    Counts: ``rules``, ``sets``, ``set_entries`` programmed, ``execs`` (processes
    spawned), ``netlink_requests``. ``exec_log`` (``restore``): every process as
    ``{"step", "argv", "returncode", "duration_ns"}``, step = the kube-router function (also
    ``per-rule`` with a v1.1.x profile); ``sync_error``: an error the sync logged and survived. Timestamps (``time.time_ns()``): ``start_ns``, ``sets_ns``
    (sets programmed), ``rules_ns`` (chains in force), ``end_ns``."""

    strategy: str
    backend: str
    netns: str
    sync_version: int
    top_level_time: int = 0
    iptables_save_time: int = 0
    ipset_save_time: int = 0
    ipset_restore_time: int = 0
    iptables_restore_time: int = 0
    stale_cleanup_time: int = 0
    local_pods_ipset_time: int = 0
    list_chains_time: int = 0
    relist_time: int = 0
    total: int = 0
    rules: int = 0
    sets: int = 0
    set_entries: int = 0
    execs: int = 0
    netlink_requests: int = 0
    stale_sets: list[str] = field(default_factory=list)
    stale_chains: list[str] = field(default_factory=list)
    exec_log: list[dict] = field(default_factory=list)
    start_ns: int = 0
    sets_ns: int = 0
    rules_ns: int = 0
    end_ns: int = 0
    # an error kube-router logs and carries on after (v1.1.1 cleanupStaleRules on iptables-nft)
    sync_error: str = ""
    # dual-stack syncs only: each family's phases and counts (merge_family_timings)
    families: dict[str, dict[str, int]] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Durations in seconds under kube-router's metric names (dual-stack: the v4 names from the
        IPv4 half, the v6 names from the IPv6 half, the sync time of both)."""
        if not self.families:
            return {metric: getattr(self, ours) / 1e9 for ours, metric in METRIC_NAMES.items()}
        out = {}
        for ours, metric in METRIC_NAMES.items():
            if ours == "total":
                out[metric] = self.total / 1e9
                continue
            out[metric] = self.families["IPv4"][ours] / 1e9
            out[metric.replace("_v4_", "_v6_")] = self.families["IPv6"][ours] / 1e9
        return out

    def as_dict(self) -> dict:
        return asdict(self)


def _thread_in(netns_name: str) -> bool:
    """True if the calling thread already lives in namespace ``netns_name``."""
    try:
        return os.stat("/proc/thread-self/ns/net").st_ino == os.stat(netns.path(netns_name)).st_ino
    except OSError:
        return False


class _Tools:
    """Runs the backend's tools in one namespace and counts the processes spawned.

    Called from a thread already inside the namespace (``apply`` runs strategies through
    ``netns.call_in``), a tool is spawned with a plain ``subprocess.run``: the child inherits the
    thread's namespace and Python can use vfork (~1.5 ms per iptables call instead of ~4 ms with a
    pre-exec setns), so exec-heavy strategies measure the tools, not the harness. From any other
    thread it falls back to ``netns.run``."""

    def __init__(self, netns_name: str, backend: Backend):
        self.ns = netns_name
        self.b = backend
        self.execs = 0
        self._thread = threading.get_ident() if _thread_in(netns_name) else None
        self.env = exec_env(backend, netns_name)  # iptables-legacy: this node's own xtables lock

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True):
        self.execs += 1
        if self._thread != threading.get_ident():
            child = netns.popen(self.ns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env)
            out, err = child.communicate(input, timeout=600)
            proc = subprocess.CompletedProcess(list(argv), child.returncode, out, err)
        else:
            proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=600,
                                  env=self.env)
        if check and proc.returncode != 0:
            self.fail(argv, proc)
        return proc

    def fail(self, argv: Sequence[str], proc: subprocess.CompletedProcess) -> None:
        """Raise for a failed tool: EnvironmentProblem (with a hint) or KernelError, one line."""
        first = next((ln for ln in proc.stderr.splitlines() if ln.strip()), f"exit code {proc.returncode}")
        hint = _module_hint(argv[0], proc.stderr)
        if hint:
            raise EnvironmentProblem(f"{argv[0]} in {self.ns}: {first}", hint)
        raise KernelError(f"{argv[0]} in {self.ns}: {first}")

    def iptables(self, *args: str, check: bool = True):
        return self.run(self.b.iptables_argv(*args), check=check)

    def ipset(self, *args: str, check: bool = True):
        return self.run([IPSET, *args], check=check)

    def save_filter(self) -> str:
        return self.run(self.b.save_argv()).stdout

    def ipset_save(self) -> str:
        return self.run([IPSET, "save"]).stdout


def _module_hint(tool: str, stderr: str) -> str | None:
    """An install/modprobe hint when a tool failed because the kernel lacks a feature."""
    text = stderr.lower()
    if "insmod" in text or "table does not exist" in text or "protocol not supported" in text:
        if "legacy" in tool:
            return "the kernel lacks x_tables for iptables-legacy: modprobe ip_tables iptable_filter"
        return "the kernel lacks nf_tables for iptables-nft: modprobe nf_tables"
    if tool == IPSET and ("cannot open session" in text or "set type is not supported" in text
                          or "kernel support protocol" in text):
        return "the kernel lacks ipset: modprobe ip_set ip_set_hash_ip ip_set_hash_net"
    if "couldn't load match" in text or "couldn't load target" in text or ("extension" in text and "not" in text):
        return "an iptables match/target module is missing: check the kernel config (xt_set, xt_physdev, ...)"
    return None


class _Clock:
    def __init__(self, timings: SyncTimings):
        self.t = timings
        self.t0 = time.perf_counter_ns()
        self.t.start_ns = time.time_ns()

    def phase(self, name: str, fn: Callable, *args, **kwargs):
        start = time.perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            setattr(self.t, name, getattr(self.t, name) + time.perf_counter_ns() - start)

    def finish(self) -> None:
        self.t.total = time.perf_counter_ns() - self.t0
        self.t.end_ns = time.time_ns()


def _argv(rule_args: str) -> list[str]:
    return shlex.split(rule_args)


def _new_timings(strategy: str, ruleset: Ruleset, netns_name: str, backend: Backend) -> SyncTimings:
    return SyncTimings(strategy=strategy, backend=backend.name, netns=netns_name,
                       sync_version=ruleset.sync_version, rules=ruleset.rule_count,
                       sets=len(ruleset.sets), set_entries=ruleset.set_entry_count)


# ---------------------------------------------------------------------------------------------
# restore (kube-router v1.2+)


def apply_restore(ruleset: Ruleset, netns_name: str, backend: str | Backend = "nft",
                  relist: Callable[[], Ruleset] | None = None,
                  ipset_handler: IPSetHandler | None = None) -> SyncTimings:
    """kube-router's full sync, exec for exec as the source at ``ruleset.profile``'s tag runs it
    (``exec_sequence.full_policy_sync``; ``relist``: its second pod listing; ``ipset_handler``: the
    node's ipset handler kept across syncs, None for a fresh controller); ``exec_log`` lists
    every process with its step."""
    b = get_backend(backend)
    tools = _Tools(netns_name, b)
    t = _new_timings("restore", ruleset, netns_name, b)
    clock = _Clock(t)
    log_ = full_policy_sync(tools, ruleset, b, t, clock.phase, relist, ipset_handler)
    t.exec_log = exec_summary(log_)
    t.execs = tools.execs
    clock.finish()
    return t


def _stale_chains(ruleset: Ruleset, saved_filter: str) -> list[str]:
    wanted = {c.name for c in ruleset.chains}
    saved = parse_iptables_save(saved_filter)
    return [c for c in saved.chains
            if c.startswith(ruleset.owned_chain_prefixes) and c not in wanted]


# ---------------------------------------------------------------------------------------------
# per-rule (kube-router before 1.2)


def _per_rule_ipsets(tools: _Tools, ruleset: Ruleset, existing: dict) -> None:
    for op in ipset_ops(ruleset, existing):
        tools.ipset("-exist", op.verb, *op.args)


def _per_rule_chains(tools: _Tools, ruleset: Ruleset, saved_filter: str) -> list[str]:
    """Program the owned chains one exec at a time; return the stale chains still to remove."""
    saved = parse_iptables_save(saved_filter)
    prefixes = ruleset.owned_chain_prefixes
    wanted = {c.name for c in ruleset.chains}
    present = set(saved.chains)
    for chain in ruleset.chains:
        if chain.name not in present:
            tools.iptables("-N", chain.name)
    for chain in ruleset.chains:
        old = len(saved.rules.get(chain.name, []))
        for args in chain.rules:
            tools.iptables("-A", chain.name, *_argv(args))
        for _ in range(old):  # the old rules are still first: delete them from the top
            tools.iptables("-D", chain.name, "1")
    for builtin in FILTER_BUILTINS:
        jumps = [args for b, args in ruleset.builtin_jumps if b == builtin]
        rules = saved.rules.get(builtin, [])
        old_positions = [i + 1 for i, args in enumerate(rules)
                         if (jump_target(args) or "").startswith(prefixes)]
        for pos, args in enumerate(jumps, start=1):
            tools.iptables("-I", builtin, str(pos), *_argv(args))
        for pos in reversed(old_positions):
            tools.iptables("-D", builtin, str(pos + len(jumps)))
    stale = [c for c in saved.chains if c.startswith(prefixes) and c not in wanted]
    stale_set = set(stale)
    for chain in saved.chains:
        if chain in FILTER_BUILTINS or chain.startswith(prefixes):
            continue
        refs = [i + 1 for i, args in enumerate(saved.rules.get(chain, [])) if jump_target(args) in stale_set]
        for pos in reversed(refs):
            tools.iptables("-D", chain, str(pos))
    return stale


def apply_per_rule(ruleset: Ruleset, netns_name: str, backend: str | Backend = "nft") -> SyncTimings:
    """v1.1.1's sync call for call when ``ruleset.calls`` holds it (a v1.1.x profile), else one
    exec per set operation, entry, chain and rule: see the module docstring."""
    b = get_backend(backend)
    tools = _Tools(netns_name, b)
    t = _new_timings("per-rule", ruleset, netns_name, b)
    clock = _Clock(t)
    if ruleset.calls:
        t.exec_log = exec_summary(v111_sync(tools, ruleset, b, t, clock.phase))
        t.execs = tools.execs
        clock.finish()
        return t
    saved = clock.phase("iptables_save_time", tools.save_filter)
    existing = parse_ipset_save(clock.phase("ipset_save_time", tools.ipset_save))
    clock.phase("ipset_restore_time", _per_rule_ipsets, tools, ruleset, existing)
    t.sets_ns = time.time_ns()
    stale_chains = clock.phase("iptables_restore_time", _per_rule_chains, tools, ruleset, saved)
    t.rules_ns = time.time_ns()

    def cleanup() -> list[str]:
        for chain in stale_chains:
            tools.iptables("-F", chain)
        for chain in stale_chains:
            tools.iptables("-X", chain)
        stale = stale_sets(ruleset, existing)
        for name in stale:
            tools.ipset("destroy", name)
        return stale

    t.stale_sets = clock.phase("stale_cleanup_time", cleanup)
    t.stale_chains = stale_chains
    t.execs = tools.execs
    clock.finish()
    return t


# ---------------------------------------------------------------------------------------------
# netlink


def apply_netlink(ruleset: Ruleset, netns_name: str, backend: str | Backend = "nft",
                  batch: int = ipset_netlink.DEFAULT_BATCH) -> SyncTimings:
    """Sets over netlink (``batch`` entries per message, many messages per datagram), chains by
    one iptables-restore."""
    b = get_backend(backend)
    tools = _Tools(netns_name, b)
    t = _new_timings("netlink", ruleset, netns_name, b)
    clock = _Clock(t)
    saved = clock.phase("iptables_save_time", tools.save_filter)
    names = clock.phase("ipset_save_time", ipset_netlink.list_set_names, netns_name)
    t.netlink_requests += 1
    ops = ipset_ops(ruleset, names)  # names only: sets are created with the rendered options
    stats = clock.phase("ipset_restore_time", ipset_netlink.apply_ops, netns_name, ops, batch)
    t.netlink_requests += stats.requests
    t.sets_ns = time.time_ns()
    clock.phase("iptables_restore_time", tools.run, b.restore_argv(), input=filter_restore_text(ruleset, saved))
    t.rules_ns = time.time_ns()
    stale = stale_policy_sets(ruleset, names)  # kube-router's cleanupStaleIPSets rule
    stats = clock.phase("stale_cleanup_time", ipset_netlink.destroy_sets, netns_name, stale)
    t.netlink_requests += stats.requests
    t.stale_sets = stale
    t.stale_chains = _stale_chains(ruleset, saved)
    t.execs = tools.execs
    clock.finish()
    return t


STRATEGIES: dict[str, Callable[..., SyncTimings]] = {
    "restore": apply_restore,
    "per-rule": apply_per_rule,
    "netlink": apply_netlink,
}


def apply(ruleset: Ruleset, netns_name: str, backend: str | Backend = "nft",
          strategy: str = "restore", relist: Callable[[], Ruleset] | None = None,
          ipset_handler: IPSetHandler | None = None) -> SyncTimings:
    """Program ``ruleset`` into namespace ``netns_name`` with ``strategy`` (restore | per-rule |
    netlink) and ``backend`` (nft | legacy); return the sync's timings. ``relist`` and
    ``ipset_handler`` (the node's ipset handler across syncs) are ``restore``'s. Raises EnvironmentProblem
    (tools missing, not root), ConfigError (unknown strategy/backend), KernelError (a tool failed,
    or the other backend already has rules in the namespace)."""
    b = require_tools(backend)
    if ruleset.ipv6 is not None:
        return _apply_dual_stack(ruleset, netns_name, b, strategy, relist, ipset_handler)
    try:
        fn = STRATEGIES[strategy]
    except KeyError:
        raise ConfigError(None, "strategy", f"unknown apply strategy {strategy!r} "
                          f"(choose {', '.join(STRATEGIES)})") from None
    check_not_mixed(netns_name, b)
    b = b.for_family(ruleset.family)  # an IPv6 ruleset goes through ip6tables (ipset is one tool)
    if strategy == "restore":  # only kube-router's own sync lists twice and keeps an ipset handler
        t = netns.call_in(netns_name, fn, ruleset, netns_name, b, relist, ipset_handler)
    else:
        t = netns.call_in(netns_name, fn, ruleset, netns_name, b)
    log.debug("%s/%s sync %d in %s: %.1f ms (%d execs)", strategy, b.name, ruleset.sync_version,
              netns_name, t.total / 1e6, t.execs)
    return t


def _apply_dual_stack(ruleset: Ruleset, netns_name: str, b: Backend, strategy: str,
                      relist: Callable[[], Ruleset] | None,
                      ipset_handler: IPSetHandler | None = None) -> SyncTimings:
    """A dual-stack sync: the IPv4 half, then the IPv6 half (ip6tables, inet6 sets), timings merged
    (``merge_family_timings``). kube-router interleaves the families step by step (save v4, save
    v6, ipsets v4, v6, restore v4, v6: v2.10.0:network_policy_controller.go fullPolicySync); here
    each family runs its whole sequence in turn: the same execs, but IPv4's rules land before
    IPv6's sets are written. Both halves share one second listing (``relist``). The node's ipset
    handler (``ipset_handler``) is the IPv4 one; the IPv6 half gets a fresh handler each sync, which
    only matters for v2.0.0-v2.1.1 (they restore what the handler kept; an assumption, not the source)."""
    if strategy == "netlink":
        raise ConfigError(None, "strategy", "the netlink strategy programs IPv4 sets only; "
                          "use restore or per-rule with a dual-stack topology")
    listed: list[Ruleset] = []

    def relist_v4() -> Ruleset:
        assert relist is not None
        listed.append(relist())
        return dataclasses.replace(listed[0], ipv6=None)

    def relist_v6() -> Ruleset:
        assert relist is not None
        again = listed[0] if listed else relist()
        assert again.ipv6 is not None
        return again.ipv6

    t4 = apply(dataclasses.replace(ruleset, ipv6=None), netns_name, b, strategy,
               relist_v4 if relist is not None else None, ipset_handler)
    assert ruleset.ipv6 is not None
    t6 = apply(ruleset.ipv6, netns_name, b, strategy, relist_v6 if relist is not None else None)
    return merge_family_timings(t4, t6)


# phases reported per family (SyncTimings.families) and summed in the merged timings
_PHASES = ("top_level_time", "iptables_save_time", "ipset_save_time", "ipset_restore_time", "iptables_restore_time",
           "stale_cleanup_time", "local_pods_ipset_time", "list_chains_time", "relist_time", "total")
_COUNTS = ("rules", "sets", "set_entries", "execs", "netlink_requests")


def merge_family_timings(t4: SyncTimings, t6: SyncTimings) -> SyncTimings:
    """One dual-stack sync's timings: phases and counts summed, lists joined, ``sets_ns``/``rules_ns``/
    ``end_ns`` of the IPv6 half (both families in force), and ``families`` holding each half's
    phases (``{"IPv4": {...}, "IPv6": {...}}``, ns) for kube-router's per-family metrics."""
    out = dataclasses.replace(t4)
    for name in _PHASES + _COUNTS:
        setattr(out, name, getattr(t4, name) + getattr(t6, name))
    out.stale_sets = t4.stale_sets + t6.stale_sets
    out.stale_chains = t4.stale_chains + t6.stale_chains
    out.exec_log = t4.exec_log + [{**e, "family": "IPv6"} for e in t6.exec_log]
    out.sets_ns, out.rules_ns, out.end_ns = t6.sets_ns, t6.rules_ns, t6.end_ns
    out.families = {"IPv4": {n: getattr(t4, n) for n in _PHASES + _COUNTS},
                    "IPv6": {n: getattr(t6, n) for n in _PHASES + _COUNTS}}
    return out


def inspect(netns_name: str, backend: str | Backend = "nft", family: str = "IPv4") -> dict:
    """Kernel state of a namespace for tests and reports: ``{"chains": {chain: [rule args as
    iptables-save prints them]}, "policies": {builtin: policy}, "sets": {name: sorted entries
    without "timeout 0" (``restore_text.entry_key``)}, "set_types": {name: type}}``."""
    b = get_backend(backend).for_family(family)  # sets: every family's (ipset save lists them all)
    table = parse_iptables_save(netns.run(netns_name, b.save_argv()).stdout)
    sets = parse_ipset_save(netns.run(netns_name, [IPSET, "save"]).stdout)
    return {
        "chains": {c: list(table.rules.get(c, [])) for c in table.chains},
        "policies": dict(table.policies),
        "sets": {name: sorted(entry_key(e) for e in s.entries) for name, s in sets.items()},
        "set_types": {name: s.type for name, s in sets.items()},
    }

"""kube-router's full sync as the source at each release tag executes it: every process, in order.

``full_policy_sync`` is the ``restore`` strategy. It follows fullPolicySync of the profile's tag
(pkg/controllers/netpol/network_policy_controller.go) and runs, in the node's namespace, each
process kube-router spawns per sync, timing each one:

1. ``ensureTopLevelChains``: per built-in chain, ``ChainExists`` (``-S <chain> 1``, v1.3.2+) or a
   blind ``NewChain`` (``-N``, exit 1 when present: v1.2.1..v1.3.1), then ``ensureRuleAtPosition``
   of the jump: ``Exists`` (``-C``) and, when it exists, ``List`` (``-S <builtin>``) to find its
   position (``-I`` + ``-D`` to move it); the same for each KUBE-ROUTER-INPUT allow rule (cluster IP
   range, TCP/UDP(/SCTP v2.8+) node ports) at positions 1, 2, ...; v1.3.0 also AppendUniques the
   explicit ACCEPT to each top-level chain (``-C`` per chain).
2. ``ensureDefaultNetworkPolicyChain`` (v1.3+): chain check, AppendUnique (``-C``) of the mark rule.
3. ``ensureCommonPolicyChain`` (v2.6+): chain check, AppendUnique of each of its 5 rules.
4. ``ensureDefaultTailChainExists`` (v2.10): with ``--netpol-default-deny`` an ``ipset save``
   (ensureLocalPodsIPSetExists), then ChainExists + ``List`` (drift check) of KUBE-NWPLCY-TAIL, or
   NewChain + Append of its rules when it is missing (what Run()'s ensureDefaultTailChain does).
5. ``iptables-save -t filter``.
6. syncNetworkPolicyChains: ``ipset save`` (not in v2.0.0..v2.4.1), ``ipset restore -exist`` of
   what the ipset handler holds (``IPSetHandler``): v1.x, v2.5.0, v2.6.0 every set of the host
   (saved options verbatim until v1.5.1's initval scrub); v2.0.0..v2.1.1 the sets the handler kept
   from the previous sync's cleanupStaleIPSets save (the handler lives as long as the controller)
   plus the sync's own; v2.1.2..v2.4.1 (handler reset per sync) and v2.6.1+ (RestoreSets) the
   policy sets only.
7. populateProtectedPodsIPSet (v2.10 default deny): ``ipset save`` + ``ipset restore -exist`` of
   kube-router-local-pods alone.
8. cleanupStaleRules: ``ListChains`` (``-S``).
9. ``iptables-restore [--wait] -T filter`` (``--wait`` from v1.3.0).
10. cleanupStaleIPSets: ``ipset save``, one ``ipset destroy`` per stale set.

v1.x also runs ``iptables --version`` in each ``iptables.New()`` on the sync path (2 per sync in
v1.2.x, 3 in v1.3.x..v1.6.x; go-iptables v0.5.0/v0.6.0 iptables.go New). go-iptables' argv is
``<iptables> -t filter <op> ... --wait`` (v0.5.0..v0.8.0 iptables.go runWithOutput appends
``--wait``; kube-router builds its handlers with no timeout, so no seconds follow it).

Assumptions (where the source leaves it open or the lab differs): Go map order decides in which
order kube-router visits INPUT/FORWARD/OUTPUT (``defaultChains``) and, in v1.2.x, the sets; we use
INPUT, FORWARD, OUTPUT and sorted set names. The binary is the backend's (``iptables-nft`` /
``iptables-legacy``), where kube-router runs ``iptables`` from PATH. IPv4 only (no ip6tables pass).
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.engines.kube_router.apply.restore_text import (
    SavedSet,
    filter_restore_text,
    ipset_restore_text,
    jump_target,
    parse_ipset_save,
    stale_policy_sets,
)
from harness.engines.kube_router.render import naming as nm
from harness.engines.kube_router.render.profiles import Profile, get_profile
from harness.engines.kube_router.render.ruleset import Ruleset
from harness.kernel.backends import IPSET, Backend

# addUUIDForRuleSpec appends " - <16 base32 chars>" to the comment (ensureTopLevelChains)
_UUID = re.compile(r" - ([A-Z2-7]{16})\b")
MARK_ACCEPT_ARGS = ("-m", "mark", "--mark", "0x20000/0x20000", "-j", "ACCEPT")


@dataclass
class ExecRecord:
    """One process of a sync: ``step`` is the kube-router function that spawned it."""

    step: str
    argv: list[str]
    returncode: int
    duration_ns: int
    input_lines: int = 0  # lines fed on stdin (restores)


@dataclass
class IPSetHandler:
    """What kube-router's ipset handler (pkg/utils/ipset.go ``IPSet.sets``) still holds after a
    sync: v2.0.0..v2.1.1 build it once (NewIPTablesHandlers) and restore it whole at the next sync
    without saving first. ``sets`` is the last cleanupStaleIPSets ``ipset save`` minus the sets it
    destroyed (Set.Destroy deletes them from the map); empty before the first sync. One per node,
    kept by the caller for the controller's life."""

    sets: dict[str, SavedSet] = field(default_factory=dict)


class SyncExecs:
    """Spawns a sync's processes through ``tools`` (``strategies._Tools``: already in the node's
    namespace) and records each one with the current ``step``."""

    def __init__(self, tools: Any):
        self.tools = tools
        self.step = ""
        self.log: list[ExecRecord] = []

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True):
        """Run ``argv``; raise KernelError on a non-zero exit when ``check``."""
        t0 = time.perf_counter_ns()
        proc = self.tools.run(argv, input=input, check=False)
        self.log.append(ExecRecord(self.step, list(argv), proc.returncode, time.perf_counter_ns() - t0,
                                   input.count("\n") if input else 0))
        if check and proc.returncode != 0:
            self.tools.fail(argv, proc)  # raises with the tool's first line (and an install hint)
        return proc


class GoIPTables:
    """go-iptables' ``IPTables`` on the filter table, call for call (v0.5.0..v0.8.0 iptables.go)."""

    def __init__(self, execs: SyncExecs, binary: str):
        self.x = execs
        self.binary = binary

    def _run(self, *args: str, check: bool = True):
        return self.x.run([self.binary, "-t", "filter", *args, "--wait"], check=check)

    def version(self) -> None:
        """``New()``: getIptablesVersionString runs ``<path> --version`` (no --wait)."""
        self.x.run([self.binary, "--version"])

    def chain_exists(self, chain: str) -> bool:
        """``ChainExists``: ``-S <chain> 1`` (exit 1: no such chain)."""
        return self._run("-S", chain, "1", check=False).returncode == 0

    def new_chain(self, chain: str, *, exist_ok: bool = False) -> None:
        """``NewChain`` (``-N``); v1.2.1..v1.3.1 call it every sync and ignore exit status 1."""
        proc = self._run("-N", chain, check=not exist_ok)
        if exist_ok and proc.returncode not in (0, 1):
            self._run("-N", chain)

    def exists(self, chain: str, spec: Sequence[str]) -> bool:
        """``Exists``: ``-C <chain> <spec>``."""
        return self._run("-C", chain, *spec, check=False).returncode == 0

    def insert(self, chain: str, pos: int, spec: Sequence[str]) -> None:
        self._run("-I", chain, str(pos), *spec)

    def append(self, chain: str, spec: Sequence[str]) -> None:
        self._run("-A", chain, *spec)

    def append_unique(self, chain: str, spec: Sequence[str]) -> None:
        """``AppendUnique``: ``Exists``, then ``Append`` when missing."""
        if not self.exists(chain, spec):
            self.append(chain, spec)

    def delete(self, chain: str, *spec: str) -> None:
        self._run("-D", chain, *spec)

    def list(self, chain: str) -> list[str]:
        """``List``: ``-S <chain>``, one line per rule (the ``-N``/``-P`` line first)."""
        return self._run("-S", chain).stdout.splitlines()

    def list_chains(self) -> list[str]:
        """``ListChains``: ``-S`` of the whole table, names from the ``-P``/``-N`` lines."""
        return [ln.split()[1] for ln in self._run("-S").stdout.splitlines()
                if ln.startswith(("-P ", "-N ")) and len(ln.split()) > 1]


def _argv(rule_args: str) -> list[str]:
    return shlex.split(rule_args)


def ensure_rule_at_position(ipt: GoIPTables, chain: str, spec: list[str], position: int) -> None:
    """ensureTopLevelChains' ensureRuleAtPosition (v1.2.1..v2.10.0:network_policy_controller.go):
    ``-C``; missing: ``-I <pos>``; present: ``-S <chain>``, find it by its uuid (quotes stripped,
    ``-P``/``-N`` lines offset), and if it is elsewhere ``-I <pos>`` + ``-D <old+1>``."""
    if not ipt.exists(chain, spec):
        ipt.insert(chain, position, spec)
        return
    comment = spec[spec.index("--comment") + 1] if "--comment" in spec else ""
    found = _UUID.search(comment)
    uuid = found.group(1) if found else comment
    rule_no = offset = 0
    for i, line in enumerate(ipt.list(chain)):
        line = line.replace('"', "", 2)
        if line.startswith(("-P", "-N")):
            offset += 1
            continue
        if uuid in line:
            rule_no = i + 1 - offset
            break
    if rule_no != position:
        ipt.insert(chain, position, spec)
        ipt.delete(chain, str(rule_no + 1))


def _ensure_chain(ipt: GoIPTables, prof: Profile, chain: str) -> None:
    if prof.chain_exists_check:
        if not ipt.chain_exists(chain):
            ipt.new_chain(chain)
    else:
        ipt.new_chain(chain, exist_ok=True)


def _has_chain(ruleset: Ruleset, name: str) -> bool:
    return any(c.name == name for c in ruleset.chains)


def ensure_before_save(x: SyncExecs, ipt: GoIPTables, ruleset: Ruleset, prof: Profile) -> None:
    """Steps 1-4 of the module docstring: what kube-router runs before ``iptables-save``."""
    x.step = "ensureTopLevelChains"
    if prof.version_execs_per_sync:
        ipt.version()
    for builtin, args in ruleset.builtin_jumps:
        target = jump_target(args)
        if target:
            _ensure_chain(ipt, prof, target)
        ensure_rule_at_position(ipt, builtin, _argv(args), 1)
    for pos, args in enumerate(ruleset.input_whitelist, start=1):
        ensure_rule_at_position(ipt, nm.INPUT_CHAIN, _argv(args), pos)
    if prof.explicit_accept_by_command:
        accept = ["-m", "comment", "--comment", prof.explicit_accept_comment, *MARK_ACCEPT_ARGS]
        for chain in nm.TOP_LEVEL.values():
            ipt.append_unique(chain, accept)
    if _has_chain(ruleset, nm.DEFAULT_CHAIN):
        x.step = "ensureDefaultNetworkPolicyChain"
        if prof.version_execs_per_sync >= 3:
            ipt.version()
        _ensure_chain(ipt, prof, nm.DEFAULT_CHAIN)
        for args in ruleset.chain(nm.DEFAULT_CHAIN).rules:
            ipt.append_unique(nm.DEFAULT_CHAIN, _argv(args))
    if _has_chain(ruleset, nm.COMMON_CHAIN):
        x.step = "ensureCommonPolicyChain"
        _ensure_chain(ipt, prof, nm.COMMON_CHAIN)
        for args in ruleset.chain(nm.COMMON_CHAIN).rules:
            ipt.append_unique(nm.COMMON_CHAIN, _argv(args))
    if _has_chain(ruleset, nm.TAIL_CHAIN):
        x.step = "ensureDefaultTailChainExists"
        if _local_pods_set(ruleset) is not None:  # ensureLocalPodsIPSetExists
            if nm.local_pods_set(ruleset.family) not in parse_ipset_save(x.run([IPSET, "save"]).stdout):
                spec = _local_pods_set(ruleset)
                x.run([IPSET, "create", "-exist", spec.name, spec.type, *spec.options.split()])
        if ipt.chain_exists(nm.TAIL_CHAIN):
            ipt.list(nm.TAIL_CHAIN)  # the rule-count drift check
        else:
            ipt.new_chain(nm.TAIL_CHAIN)
            for args in ruleset.chain(nm.TAIL_CHAIN).rules:
                ipt.append(nm.TAIL_CHAIN, _argv(args))


def _local_pods_set(ruleset: Ruleset):
    return next((s for s in ruleset.sets if s.name == nm.local_pods_set(ruleset.family)), None)


def restore_argv(backend: Backend, prof: Profile) -> list[str]:
    """pkg/utils/iptables.go Restore: ``iptables-restore --wait -T filter`` (v1.3.0+, when
    ``--help`` mentions wait) or ``iptables-restore -T filter`` (v1.2.x)."""
    return [backend.restore, *(["--wait"] if prof.restore_wait else []), "-T", "filter"]


def full_policy_sync(tools: Any, ruleset: Ruleset, backend: Backend, t: Any,
                     phase: Callable[..., Any], relist: Callable[[], Ruleset] | None = None,
                     handler: IPSetHandler | None = None) -> list[ExecRecord]:
    """Run kube-router's full sync of ``ruleset.profile`` (module docstring), filling the
    timings ``t`` (``strategies.SyncTimings``) through ``phase(field, fn, *args)``; returns the
    processes run, in order. ``relist``: called after the policy sets are restored, where
    syncPodFirewallChains lists the local pods again (v2.10.0:network_policy_controller.go
    fullPolicySync -> pod.go); the ruleset it returns (same policies, pod chains from the second
    listing) gives the pod chains, the top-level jumps and kube-router-local-pods (lister skew).
    ``handler``: the node's ``IPSetHandler`` across syncs (None: a controller's first sync); updated
    at the end."""
    prof = get_profile(ruleset.profile)
    x = SyncExecs(tools)
    ipt = GoIPTables(x, backend.iptables)
    phase("top_level_time", ensure_before_save, x, ipt, ruleset, prof)
    x.step = "SaveInto"
    saved = phase("iptables_save_time", lambda: x.run(backend.save_argv()).stdout)
    x.step = "syncNetworkPolicyChains"
    if handler is None:
        handler = IPSetHandler()
    if prof.ipset_save_before_restore:
        host = parse_ipset_save(phase("ipset_save_time", lambda: x.run([IPSET, "save"]).stdout))
    else:
        # v2.0.0..v2.4.1:policy.go syncNetworkPolicyChains runs no ipset.Save(): the handler knows what
        # the last cleanup saved (v2.0.0..v2.1.1) or nothing (v2.1.2..v2.4.1: NewIPSet per sync), so
        # sets it does not know are created with RefreshSet's options
        host = dict(handler.sets) if prof.restore_host_sets else {}
    local = _local_pods_set(ruleset)
    policy = ruleset if local is None else _without_set(ruleset, local.name)
    text = ipset_restore_text(policy, host, host_sets=host if prof.restore_host_sets else None,
                              scrub=prof.scrub_initval)
    phase("ipset_restore_time", x.run, [IPSET, "restore", "-exist"], input=text)
    t.sets_ns = time.time_ns()
    if relist is not None:
        x.step = "syncPodFirewallChains"
        ruleset = phase("relist_time", relist)
        local = _local_pods_set(ruleset)
    if local is not None:
        x.step = "populateProtectedPodsIPSet"

        def refresh_local_pods() -> None:
            saved_sets = parse_ipset_save(x.run([IPSET, "save"]).stdout)
            only = _only_set(ruleset, local.name)
            x.run([IPSET, "restore", "-exist"], input=ipset_restore_text(only, saved_sets))
        phase("local_pods_ipset_time", refresh_local_pods)
    x.step = "cleanupStaleRules"

    def list_chains() -> list[str]:
        if prof.version_execs_per_sync:
            ipt.version()
        return ipt.list_chains()
    chains = phase("list_chains_time", list_chains)
    wanted = {c.name for c in ruleset.chains}
    t.stale_chains = [c for c in chains if c.startswith(ruleset.owned_chain_prefixes) and c not in wanted]
    x.step = "Restore"
    phase("iptables_restore_time", x.run, restore_argv(backend, prof), input=filter_restore_text(ruleset, saved))
    t.rules_ns = time.time_ns()
    x.step = "cleanupStaleIPSets"

    def cleanup() -> list[str]:
        # cleanupStaleIPSets (v1.2.1..v2.11.1): Save() into the handler, destroy the stale
        # KUBE-SRC-/KUBE-DST- sets (each Destroy also drops it from the handler's map); per family:
        # the IPv6 handler's names carry "inet6:" (v2.10.0:pkg/utils/ipset.go IPSetName)
        saved_sets = parse_ipset_save(x.run([IPSET, "save"]).stdout)
        stale = stale_policy_sets(ruleset, saved_sets)
        for name in stale:
            x.run([IPSET, "destroy", name])
            saved_sets.pop(name, None)
        handler.sets = saved_sets
        return stale
    t.stale_sets = phase("stale_cleanup_time", cleanup)
    return x.log


def _without_set(ruleset: Ruleset, name: str) -> Ruleset:
    out = Ruleset(**{**_fields(ruleset)})
    out.sets = [s for s in ruleset.sets if s.name != name]
    return out


def _only_set(ruleset: Ruleset, name: str) -> Ruleset:
    out = Ruleset(**{**_fields(ruleset)})
    out.sets = [s for s in ruleset.sets if s.name == name]
    return out


def _fields(ruleset: Ruleset) -> dict:
    return {f: getattr(ruleset, f) for f in ruleset.__dataclass_fields__}


def exec_summary(log: Sequence[ExecRecord]) -> list[dict]:
    """The exec log as plain dicts (for SyncTimings/JSON)."""
    return [asdict(r) for r in log]

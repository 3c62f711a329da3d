"""kube-router v1.1.1's full sync, call for call: the ``per-rule`` strategy for ``Profile.per_call_sync``.

v1.1.1 is the last release before the save/restore sync (v1.2.0). Its fullPolicySync
(v1.1.1:pkg/controllers/netpol/network_policy_controller.go) programs the node with one process
per go-iptables (v0.4.1, pinned by v1.1.1:go.mod) and ipset (v1.1.1:pkg/utils/ipset.go) call, each
of which the harness runs in the node's namespace and records with its step:

1. ``ensureTopLevelChains``: ``iptables --version`` (go-iptables v0.4.1 iptables.go New), per
   built-in chain a blind ``-N KUBE-ROUTER-*`` (exit 1 tolerated) and ensureRuleAtPosition of its jump
   (``-C``; present: ``-S <builtin>``, move with ``-I``/``-D``), the KUBE-ROUTER-INPUT allow rules at
   positions 1-3 (``exec_sequence.ensure_before_save``, shared with v1.2.x: the function is identical).
2. ``syncNetworkPolicyChains``: ``--version``; per policy ``-N`` its chain, then per set
   ``Create`` (``ipset list <set>``; missing: ``ipset create -exist <set> <type> timeout 0``) and
   ``Refresh`` (the same for ``<set>-`` / ``<set>-temp``, ``ipset add -exist`` per entry, ``ipset swap``,
   ``ipset destroy`` of the temporary set); processIngressRules/processEgressRules each run
   ``--version`` and AppendUnique (``-C``, then ``-A``) the MARK and RETURN rule of every peer/port.
3. ``syncPodFirewallChains``: ``--version``; per pod a policy selects: ``-N``, ``-C`` + ``-I 1`` of
   every pod-chain rule and inbound jump, ``-C`` + AppendUnique of the outbound jumps, AppendUnique
   of the drop rules (the calls are recorded by the renderer: ``Ruleset.calls``).
4. ``cleanupStaleRules``: ``--version``, ``ipset save``, ListChains (``-S``); per stale pod chain
   ``-S`` of each KUBE-ROUTER chain and ``-D <n>`` of every reference; ClearChain (``-N``, then
   ``-F`` when it exists) and ``-X`` per stale pod chain; per stale policy chain ``-S`` of every
   active pod chain (``-D`` of a reference), ClearChain and ``-X``; ``ipset destroy`` per stale
   KUBE-SRC-/KUBE-DST- set.

Every go-iptables call is ``<iptables> -t filter <args> --wait`` (v0.4.1 runWithOutput: ``--wait``
when the version is >= 1.4.20). go-iptables v0.4.1 ClearChain takes exit status 4 as "chain exists"
in nf_tables mode (parsed from ``--version``), a workaround for iptables-nft < 1.8.1: iptables-nft
1.8.9 answers 1, so on the nft backend ClearChain fails and cleanupStaleRules aborts the sync's
cleanup at the first stale pod chain ("Aborting sync. Failed to cleanup stale iptables rules"): the
chains of older syncs stay (unreferenced) and stale sets are never destroyed. Reproduced as is;
``SyncTimings.sync_error`` names it.

Phases: ``top_level_time`` (1), ``ipset_restore_time`` (2: policy chains and their sets, interleaved
as in the source; ``sets_ns`` at its end), ``iptables_restore_time`` (3; ``rules_ns`` at its end),
``stale_cleanup_time`` (4).

Assumptions: Go map order (built-in chains, pods, active pod chains) as INPUT/FORWARD/OUTPUT and
sorted names; the controller process started on a node without KUBE- sets, so every set's options
are those of its first Create; ``iptables`` is the backend's binary.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from collections.abc import Callable
from typing import Any

from harness.engines.kube_router.apply.exec_sequence import GoIPTables, SyncExecs, ensure_before_save
from harness.engines.kube_router.apply.restore_text import parse_ipset_save
from harness.engines.kube_router.render import naming as nm
from harness.engines.kube_router.render.profiles import get_profile
from harness.engines.kube_router.render.ruleset import Call, Ruleset
from harness.errors import KernelError
from harness.kernel.backends import IPSET, Backend

log = logging.getLogger(__name__)

STALE_SET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-")  # v1.1.1 kubeSourceIPSetPrefix, kubeDestinationIPSetPrefix
_MODE = re.compile(r"v[0-9]+\.[0-9]+\.[0-9]+(?:\s+\((\w+))?")  # go-iptables v0.4.1 extractIptablesVersion


class GoIPTablesV041(GoIPTables):
    """go-iptables v0.4.1 (v0.4.1:iptables/iptables.go): ``New`` keeps the mode for ClearChain."""

    mode = "legacy"

    def version(self) -> None:
        """``New()``: ``<iptables> --version``; the mode (``nf_tables``/``legacy``) is kept."""
        out = self.x.run([self.binary, "--version"]).stdout
        m = _MODE.search(out or "")
        self.mode = (m.group(1) if m and m.group(1) else "legacy")

    def clear_chain(self, chain: str) -> None:
        """``ClearChain``: ``-N``; exit status 1 (legacy) or 4 (nf_tables) means it exists: ``-F``.
        Any other status raises, as go-iptables returns the error."""
        proc = self._run("-N", chain, check=False)
        if proc.returncode == 0:
            return
        if proc.returncode == (4 if self.mode == "nf_tables" else 1):
            self._run("-F", chain)
            return
        raise _CallFailed(f"ClearChain {chain}: -N exit status {proc.returncode} "
                          f"(go-iptables v0.4.1 expects {4 if self.mode == 'nf_tables' else 1} in {self.mode} mode)")

    def delete_chain(self, chain: str) -> None:
        """``DeleteChain``: ``-X``."""
        self._run("-X", chain)


class _CallFailed(Exception):
    """A go-iptables call returned an error kube-router aborts the step on."""


class IPSetV111:
    """v1.1.1:pkg/utils/ipset.go, the calls a sync makes (``ipset`` from PATH, no ``-exist`` on
    swap/destroy/list)."""

    def __init__(self, x: SyncExecs):
        self.x = x

    def is_active(self, name: str) -> bool:
        """``IsActive``: ``ipset list <name>``; "name does not exist" in the error means False."""
        proc = self.x.run([IPSET, "list", name], check=False)
        if proc.returncode == 0:
            return True
        if "name does not exist" in (proc.stderr or ""):
            return False
        raise KernelError(f"ipset list {name}: {(proc.stderr or '').strip()}")

    def create(self, name: str, options: str) -> None:
        """``Create``: ``ipset list``, then ``ipset create -exist <name> <options>`` when missing."""
        if not self.is_active(name):
            self.x.run([IPSET, "create", "-exist", name, *options.split()])

    def refresh(self, name: str, options: str, entries: tuple[str, ...], tmp_suffix: str) -> None:
        """``Refresh`` / ``RefreshWithBuiltinOptions``: fill ``<name><suffix>``, swap it in, destroy it."""
        tmp = name + tmp_suffix
        self.create(tmp, options)  # Parent.Add(newSet) -> Create (the temporary set holds no entries yet)
        for entry in entries:
            self.x.run([IPSET, "add", "-exist", tmp, *entry.split()])
        self.x.run([IPSET, "swap", name, tmp])
        self.x.run([IPSET, "destroy", tmp])

    def save(self) -> str:
        return self.x.run([IPSET, "save"]).stdout

    def destroy(self, name: str) -> None:
        self.x.run([IPSET, "destroy", name])


def _spec(rule: str) -> list[str]:
    return shlex.split(rule)


def run_call(ipt: GoIPTablesV041, ipset: IPSetV111, call: Call) -> None:
    """Execute one recorded call (``Call.op``) as v1.1.1 does."""
    if call.op == "version":
        ipt.version()
    elif call.op == "new_chain":
        ipt.new_chain(call.chain, exist_ok=True)  # err.ExitStatus() != 1 is fatal, 1 is ignored
    elif call.op == "set":
        ipset.create(call.set_name, call.set_options)
        ipset.refresh(call.set_name, call.set_options, call.entries, call.tmp_suffix)
    elif call.op == "append_unique":
        ipt.append_unique(call.chain, _spec(call.rule))
    elif call.op == "insert_if_missing":
        if not ipt.exists(call.chain, _spec(call.rule)):
            ipt.insert(call.chain, 1, _spec(call.rule))
    elif call.op == "exists_append_unique":
        if not ipt.exists(call.chain, _spec(call.rule)):
            ipt.append_unique(call.chain, _spec(call.rule))
    else:
        raise ValueError(f"unknown v1.1.1 call {call.op!r}")


def _active(ruleset: Ruleset) -> tuple[set[str], set[str], set[str]]:
    """activePolicyChains, activePodFwChains, activePolicyIPSets of the sync."""
    chains = {c.name for c in ruleset.chains}
    policy = {c for c in chains if c.startswith(nm.POLICY_CHAIN_PREFIX)}
    pods = {c for c in chains if c.startswith(nm.POD_FW_PREFIX)}
    return policy, pods, {s.name for s in ruleset.sets}


def cleanup_stale_rules(ipt: GoIPTablesV041, ipset: IPSetV111, ruleset: Ruleset, t: Any) -> None:
    """v1.1.1:network_policy_controller.go ``cleanupStaleRules`` (module docstring, step 4)."""
    active_policy, active_pods, active_sets = _active(ruleset)
    ipt.version()
    saved_sets = parse_ipset_save(ipset.save())  # ipsets.Save() of a fresh handler
    chains = ipt.list_chains()
    stale_policy = [c for c in chains if c.startswith(nm.POLICY_CHAIN_PREFIX) and c not in active_policy]
    stale_pods = [c for c in chains if c.startswith(nm.POD_FW_PREFIX) and c not in active_pods]
    stale_sets = [n for n in saved_sets if n.startswith(STALE_SET_PREFIXES) and n not in active_sets]
    t.stale_chains = stale_pods + stale_policy
    for pod_chain in stale_pods:
        for top in (nm.INPUT_CHAIN, nm.FORWARD_CHAIN, nm.OUTPUT_CHAIN):
            deleted = 0
            for i, line in enumerate(ipt.list(top)):  # line 0 is "-N <chain>": i is the rule number
                if pod_chain in line:
                    ipt.delete(top, str(i - deleted))
                    deleted += 1
    for pod_chain in stale_pods:
        ipt.clear_chain(pod_chain)
        ipt.delete_chain(pod_chain)
    for policy_chain in stale_policy:
        for pod_chain in sorted(active_pods):  # range over a Go map: sorted (assumed)
            for i, line in enumerate(ipt.list(pod_chain)):
                if policy_chain in line:
                    ipt.delete(pod_chain, str(i))
                    break
        ipt.clear_chain(policy_chain)
        ipt.delete_chain(policy_chain)
    for name in stale_sets:
        ipset.destroy(name)
    t.stale_sets = stale_sets


def v111_sync(tools: Any, ruleset: Ruleset, backend: Backend, t: Any, phase: Callable[..., Any]) -> list:
    """Run v1.1.1's fullPolicySync for ``ruleset`` (rendered with a ``per_call_sync`` profile)
    through ``tools`` (``strategies._Tools``), filling the timings ``t``; returns the exec log."""
    prof = get_profile(ruleset.profile)
    x = SyncExecs(tools)
    ipt = GoIPTablesV041(x, backend.iptables)
    ipset = IPSetV111(x)
    phase("top_level_time", ensure_before_save, x, ipt, ruleset, prof)
    by_step: dict[str, list[Call]] = {}
    for call in ruleset.calls:
        key = "pods" if call.step == "syncPodFirewallChains" else "policies"
        by_step.setdefault(key, []).append(call)

    def run(calls: list[Call]) -> None:
        for call in calls:
            x.step = call.step
            run_call(ipt, ipset, call)
    phase("ipset_restore_time", run, by_step.get("policies", []))
    t.sets_ns = time.time_ns()
    phase("iptables_restore_time", run, by_step.get("pods", []))
    t.rules_ns = time.time_ns()
    x.step = "cleanupStaleRules"
    try:
        phase("stale_cleanup_time", cleanup_stale_rules, ipt, ipset, ruleset, t)
    except _CallFailed as e:
        # kube-router logs "Aborting sync. Failed to cleanup stale iptables rules" and carries on
        t.sync_error = f"cleanupStaleRules: {e}"
        log.info("v1.1.1 sync in %s: %s", tools.ns, t.sync_error)
    return x.log

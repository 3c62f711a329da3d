"""Apply a rendered nftables sync (``render.nftables.NftSync``) to a node namespace with the execs
kube-router v2.11.1's nftables controller makes through knftables v0.0.22, timed per phase.

What knftables runs (v0.0.22:nftables.go; kube-router calls ``knftables.New(family, table)``
with no options, v2.11.1:npc_nftables.go initTable):
- once, at ``New()``: ``nft --version`` (rejects nft < 1.0.1) and ``nft --check -f -`` of
  ``add table ip <table> { comment "test" ; }`` (object comments supported?);
- per ``Run(tx)``: one ``nft -f -`` with the transaction's text on stdin (one kernel
  transaction: all or nothing);
- per ``List(ctx, "chains"|"sets")``: ``nft --json --terse list table ip <table>`` (knftables
  lists the whole table and picks the objects; UseNetlink is not set).

Once per node engine, before its first sync, the startup of the controller: New(), initTable,
ensureTopLevelChains (Run(), create-only), ensureDefaultNetworkPolicyChain and
ensureCommonPolicyChain (Run() calls them before the sync loop). Not reproduced: the iptables
controller's Cleanup() that NewNetworkPolicyController runs first when the nftables backend is
chosen (v2.11.1:network_policy_controller.go), a one-time cost outside any sync.

Per sync (fullPolicySync, v2.11.1:npc_nftables.go), in order, each a ``nft -f -``:
ensureDefaultNetworkPolicyChain, ensureCommonPolicyChain, ensureDefaultTailChain, one per policy
(syncNetworkPolicyChains: a failing one is recorded and its target pods fail closed: the pod chain
keeps the direction covered but omits the jump), one per local pod (syncPodFirewallChains: any
failure aborts the sync before the top level is touched), populateProtectedPodsIPSet (default deny
only), syncTopLevelChainsAtomic, then gcPodFwChainsNft (list, one flush transaction, one delete per
stale chain) and gcPolicyObjectsNft (list chains, flush + deletes; list sets, one delete per stale
set). GC failures are logged by the source and retried next sync; here they land in ``errors``.

Timings (ns, ``time.perf_counter_ns``): ``static_chains_time`` (the three ensure* transactions),
``policy_chains_sync_time`` (the policy transactions: kube-router observes
controller_policy_chains_sync_time around syncNetworkPolicyChains), ``pod_chains_time``,
``top_level_sync_time`` (the atomic top-level transaction, plus populateProtectedPodsIPSet),
``stale_cleanup_time`` (both GCs, listings included), ``list_time`` (the listings alone),
``pod_relist_time`` (lister skew: the second pod listing, inside ``pod_chains_time``),
``startup_time`` (first sync only, not in ``total``), ``total`` (controller_iptables_sync_time:
the nftables controller observes the same metric around fullPolicySync). Moments
(``time.time_ns()``): ``start_ns``, ``sets_ns`` (the last policy transaction returned: named sets
are shared by all versions, so new set contents are in force from then on), ``rules_ns`` (the
top-level switch returned: traffic runs through this sync's chains), ``end_ns``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from harness.engines.kube_router.render import nftables as nr
from harness.errors import EnvironmentProblem, HarnessError, KernelError
from harness.kernel import netns
from harness.model.cluster import Cluster

NFT = "nft"
LIST_ARGV = (NFT, "--json", "--terse", "list", "table", nr.FAMILY, nr.TABLE)

# our phase -> kube-router's Prometheus metric (v2.11.1:npc_nftables.go fullPolicySync,
# syncNetworkPolicyChains); the other phases have no metric in the source
METRIC_NAMES = {"policy_chains_sync_time": "controller_policy_chains_sync_time", "total": "controller_iptables_sync_time"}


def require_tools() -> None:
    """EnvironmentProblem with an install hint when ``nft`` is missing."""
    if shutil.which(NFT) is None:
        raise EnvironmentProblem("nft not found", "install the Debian package nftables (scripts/bootstrap.sh)")


@dataclass
class NftSyncTimings:
    """One sync's cost on the nftables datapath (see the module docstring for the phases)."""

    strategy: str
    backend: str
    netns: str
    sync_version: int
    startup_time: int = 0
    static_chains_time: int = 0
    policy_chains_sync_time: int = 0
    pod_chains_time: int = 0
    top_level_sync_time: int = 0
    stale_cleanup_time: int = 0
    list_time: int = 0
    pod_relist_time: int = 0
    total: int = 0
    rules: int = 0
    sets: int = 0
    set_entries: int = 0
    execs: int = 0
    transactions: int = 0
    failed_policy_chains: list[str] = field(default_factory=list)
    stale_chains: list[str] = field(default_factory=list)
    stale_sets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    exec_log: list[dict] = field(default_factory=list)
    start_ns: int = 0
    sets_ns: int = 0
    rules_ns: int = 0
    end_ns: int = 0

    def metrics(self) -> dict[str, float]:
        """Durations in seconds under kube-router's metric names."""
        return {metric: getattr(self, ours) / 1e9 for ours, metric in METRIC_NAMES.items()}

    def as_dict(self) -> dict:
        return asdict(self)


class _Nft:
    """Runs ``nft`` from a thread inside the node's namespace (``netns.call_in``; the child
    inherits it, as the iptables strategies do) and logs every exec."""

    def __init__(self, t: NftSyncTimings):
        self.t = t

    def run(self, step: str, argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        t0 = time.perf_counter_ns()
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=600)
        self.t.execs += 1
        self.t.exec_log.append({"step": step, "argv": list(argv), "returncode": proc.returncode,
                                "duration_ns": time.perf_counter_ns() - t0})
        return proc

    def tx(self, tx: nr.Tx) -> str | None:
        """knftables Run(): one ``nft -f -``; the first stderr line when it failed."""
        self.t.transactions += 1
        proc = self.run(tx.step, [NFT, "-f", "-"], tx.text)
        if proc.returncode == 0:
            return None
        return next((ln for ln in proc.stderr.splitlines() if ln.strip()), f"exit code {proc.returncode}")

    def list_names(self, step: str) -> tuple[list[str], list[str]]:
        """knftables List(): the table's chain and set names (one listing per call)."""
        t0 = time.perf_counter_ns()
        proc = self.run(step, LIST_ARGV)
        self.t.list_time += time.perf_counter_ns() - t0
        if proc.returncode != 0:
            raise KernelError(f"nft list table in {self.t.netns}: {proc.stderr.strip()[:200]}")
        chains, sets = [], []
        for obj in json.loads(proc.stdout).get("nftables", []):
            if "chain" in obj:
                chains.append(obj["chain"]["name"])
            elif "set" in obj:
                sets.append(obj["set"]["name"])
        return chains, sets


def _startup(nft: _Nft, sync: nr.NftSync) -> None:
    """knftables.New + initTable + the controller's Run() prelude (see the module docstring)."""
    proc = nft.run("knftables.New", [NFT, "--version"])
    if proc.returncode != 0:
        raise EnvironmentProblem(f"nft --version in {nft.t.netns}: {proc.stderr.strip()[:200]}",
                                 "install the Debian package nftables")
    check = f'add table {nr.FAMILY} {nr.TABLE} {{ comment "test" ; }}\n'
    if nft.run("knftables.New", [NFT, "--check", "-f", "-"], check).returncode != 0:
        raise EnvironmentProblem(f"nft --check in {nft.t.netns} failed", "the kernel needs nf_tables")
    for tx in sync.startup + [nr.ensure_default_chain(), nr.ensure_common_chain()]:
        err = nft.tx(tx)
        if err is not None:
            raise KernelError(f"nft in {nft.t.netns}: {tx.step}: {err}")


def _apply_in_ns(sync: nr.NftSync, t: NftSyncTimings, started: bool, relist: Callable[[], Cluster] | None) -> None:
    nft = _Nft(t)
    if not started:
        s0 = time.perf_counter_ns()
        _startup(nft, sync)
        t.startup_time = time.perf_counter_ns() - s0
        t.execs = 0  # the sync's own execs only (the startup ones stay in exec_log)
    t0 = time.perf_counter_ns()
    t.start_ns = time.time_ns()
    txs = sync.transactions
    static = [x for x in txs if x.step in ("ensureDefaultNetworkPolicyChain", "ensureCommonPolicyChain",
                                           "ensureDefaultTailChain")]
    for tx in static:
        err = nft.tx(tx)
        if err is not None:  # the source logs these and goes on
            t.errors.append(f"{tx.step}: {err}")
    t.static_chains_time = time.perf_counter_ns() - t0
    p0 = time.perf_counter_ns()
    failed: set[str] = set()
    for tx, chain in zip(sync.step("syncNetworkPolicyChains"), sync.policy_chain_order, strict=True):
        err = nft.tx(tx)
        if err is not None:
            failed.add(chain)
            t.errors.append(f"syncNetworkPolicyChains {chain}: {err} (its target pods fail closed)")
    t.sets_ns = time.time_ns()
    t.policy_chains_sync_time = time.perf_counter_ns() - p0
    t.failed_policy_chains = sorted(failed)
    q0 = time.perf_counter_ns()
    if failed or relist is not None:
        # syncPodFirewallChains lists the local pods again (getLocalPods) and reads the failed chains
        r = time.perf_counter_ns()
        view = relist() if relist is not None else None
        t.pod_relist_time = time.perf_counter_ns() - r
        nr.with_pod_phase(sync, nr.pod_phase(sync, view if view is not None else sync.pods_view, failed))
    pod_txs = sync.step("syncPodFirewallChains")
    pod_errors = [f"{tx.step}: {err}" for tx in pod_txs if (err := nft.tx(tx)) is not None]
    t.pod_chains_time = time.perf_counter_ns() - q0
    if pod_errors:  # "Aborting sync. Failed to sync pod firewall chains"
        t.errors += pod_errors
        t.total = time.perf_counter_ns() - t0
        t.end_ns = time.time_ns()
        return
    r0 = time.perf_counter_ns()
    for tx in sync.step("populateProtectedPodsIPSet") + sync.step("syncTopLevelChainsAtomic"):
        err = nft.tx(tx)
        if err is not None:
            if tx.step == "syncTopLevelChainsAtomic":
                raise KernelError(f"nft in {t.netns}: syncTopLevelChainsAtomic: {err}")
            t.errors.append(f"{tx.step}: {err}")
    t.rules_ns = time.time_ns()
    t.top_level_sync_time = time.perf_counter_ns() - r0
    g0 = time.perf_counter_ns()
    # gcPodFwChainsNft lists the chains, then gcPolicyObjectsNft lists chains and sets again
    chains, _ = nft.list_names("gcPodFwChainsNft")
    pod_gc, _ = nr.gc_plan(sync, chains, [])
    _run_gc(nft, pod_gc, t)
    chains, _ = nft.list_names("gcPolicyObjectsNft")
    _, pol_chain_gc = nr.gc_plan(sync, chains, [])
    _run_gc(nft, pol_chain_gc, t)
    _, sets = nft.list_names("gcPolicyObjectsNft")
    _, set_gc = nr.gc_plan(sync, [], sets)
    _run_gc(nft, set_gc, t)
    t.stale_cleanup_time = time.perf_counter_ns() - g0
    t.total = time.perf_counter_ns() - t0
    t.end_ns = time.time_ns()


def _run_gc(nft: _Nft, txs: list[nr.Tx], t: NftSyncTimings) -> None:
    for tx in txs:
        for line in tx.lines:
            if line.startswith("delete chain"):
                t.stale_chains.append(line.split()[-1])
            elif line.startswith("delete set"):
                t.stale_sets.append(line.split()[-1])
        err = nft.tx(tx)
        if err is not None:  # "will retry next sync"
            t.errors.append(f"{tx.step}: {err}")


class NftablesApplier:
    """One node's nftables datapath: ``apply(sync)`` runs the sync's execs in the namespace
    (the controller's startup first, once). The table lives in the node's namespace, so deleting
    the namespace (lab teardown, ``gc``) removes it."""

    strategy = "nftables"

    def __init__(self, netns_name: str):
        self.netns = netns_name
        self.started = False

    def sync_version(self, start_ns: int) -> int:
        return start_ns

    def apply(self, sync: nr.NftSync, *, full: bool = False,
              relist: Callable[[], Cluster] | None = None) -> NftSyncTimings:
        """Program ``sync``; its timings. ``relist``: the second pod listing syncPodFirewallChains
        makes (called after the policy transactions; lister skew). KernelError when the namespace
        is gone or the top-level switch failed (the source aborts the sync there too)."""
        require_tools()
        t = NftSyncTimings(strategy="nftables", backend="nftables", netns=self.netns, sync_version=sync.sync_version,
                           rules=sync.rule_count, sets=len(sync.set_entries), set_entries=sync.set_entry_count)
        try:
            netns.call_in(self.netns, _apply_in_ns, sync, t, self.started, relist)
        except HarnessError:
            raise
        except (OSError, subprocess.SubprocessError) as e:
            raise KernelError(f"nft in {self.netns}: {e}") from None
        self.started = True
        return t


def list_table(netns_name: str) -> str:
    """``nft list table ip kube-router-filter-ipv4`` in the namespace (for tests and people)."""
    return netns.run(netns_name, [NFT, "list", "table", nr.FAMILY, nr.TABLE]).stdout

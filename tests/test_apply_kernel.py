"""Kernel tests of apply: each strategy x backend programs a kube-router-shaped ruleset into a
fresh namespace, re-syncs with a new sync version, and the kernel state read back with
iptables-save / ipset save must equal what was rendered."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from harness.engines.kube_router.apply import apply, inspect
from harness.engines.kube_router.apply.restore_text import entry_key
from harness.engines.kube_router.apply.synthetic import kube_router_ruleset
from harness.engines.kube_router.render.ruleset import Ruleset
from harness.errors import EnvironmentProblem, KernelError
from harness.kernel import netns
from harness.kernel.backends import BACKENDS, forget, require_tools

pytestmark = pytest.mark.kernel

STRATEGIES = ("restore", "per-rule", "netlink")
FOREIGN_RULES = ["-d 198.51.100.0/24 -j DROP"]
FOREIGN_JUMP = "-s 192.0.2.1/32 -j FOREIGN"


def _root_state() -> dict[str, str]:
    """Read-only snapshot of the root namespace's netfilter state."""
    out = {}
    for name, argv in (("nft", ["iptables-nft-save"]), ("legacy", ["iptables-legacy-save"]),
                       ("ipset", ["ipset", "list", "-n"])):
        proc = subprocess.run(argv, capture_output=True, text=True)
        out[name] = "\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith("#"))
    return out


@pytest.fixture(params=sorted(BACKENDS))
def backend(request) -> str:
    try:
        require_tools(request.param)
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    return request.param


@pytest.fixture
def node_ns():
    name = f"nph-{uuid.uuid4().hex[:8]}-apply"
    try:
        netns.create(name)
    except (OSError, KernelError) as e:
        pytest.skip(f"cannot create a network namespace: {e}")
    yield name
    netns.delete(name)
    forget(name)


def _add_foreign(ns: str, backend: str) -> None:
    b = BACKENDS[backend]
    netns.run(ns, b.iptables_argv("-N", "FOREIGN"))
    for rule in FOREIGN_RULES:
        netns.run(ns, b.iptables_argv("-A", "FOREIGN", *rule.split()))
    netns.run(ns, b.iptables_argv("-A", "FORWARD", *FOREIGN_JUMP.split()))
    netns.run(ns, ["ipset", "create", "someone-elses-set", "hash:ip"])


def assert_state_is(state: dict, rs: Ruleset) -> None:
    """The namespace holds exactly the ruleset (plus the foreign chain, rule and set)."""
    jumps = {b: [args for bb, args in rs.builtin_jumps if bb == b] for b in ("INPUT", "FORWARD", "OUTPUT")}
    assert state["chains"]["INPUT"] == jumps["INPUT"]
    assert state["chains"]["OUTPUT"] == jumps["OUTPUT"]
    assert state["chains"]["FORWARD"] == jumps["FORWARD"] + [FOREIGN_JUMP]  # ours first, theirs kept
    assert state["chains"]["FOREIGN"] == FOREIGN_RULES
    owned = {c: r for c, r in state["chains"].items() if c.startswith(rs.owned_chain_prefixes)}
    assert owned == {c.name: c.rules for c in rs.chains}
    assert state["sets"] == {**{s.name: sorted(map(entry_key, s.entries)) for s in rs.sets}, "someone-elses-set": []}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sync_and_resync_program_exactly_the_ruleset(node_ns, backend, strategy):
    before = _root_state()
    _add_foreign(node_ns, backend)
    first = kube_router_ruleset(sync_version=1, local_pods=3, policies=3, peers=4)
    t1 = apply(first, node_ns, backend, strategy)
    assert_state_is(inspect(node_ns, backend), first)
    assert t1.rules == first.rule_count and t1.set_entries == first.set_entry_count
    assert t1.start_ns <= t1.sets_ns <= t1.rules_ns <= t1.end_ns
    assert t1.total >= t1.iptables_save_time + t1.ipset_restore_time + t1.iptables_restore_time
    assert t1.stale_sets == [] and t1.stale_chains == []

    # new sync version: every pod/policy chain renamed; one policy and one pod fewer; peers changed
    second = kube_router_ruleset(sync_version=2, local_pods=2, policies=2, peers=6)
    t2 = apply(second, node_ns, backend, strategy)
    state = inspect(node_ns, backend)
    assert_state_is(state, second)
    old = {c.name for c in first.chains} - {c.name for c in second.chains}
    assert old and not old & set(state["chains"])
    assert sorted(t2.stale_chains) == sorted(old)
    assert t2.stale_sets == sorted({s.name for s in first.sets} - {s.name for s in second.sets})
    assert not any(n.startswith("TMP-") for n in state["sets"])
    if strategy == "per-rule":
        assert t2.execs > second.rule_count + second.set_entry_count  # one exec per rule and entry
    elif strategy == "restore":
        assert t2.execs < 30
    else:
        assert t2.execs == 2 and t2.netlink_requests > 0
    assert _root_state() == before


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("swap", [False, True], ids=["v1.2-flush", "v1.3-swap"])
def test_set_updates_with_and_without_swap(node_ns, strategy, swap):
    backend = "nft"
    first = kube_router_ruleset(sync_version=1, local_pods=1, policies=1, peers=5, swap_sets=swap)
    apply(first, node_ns, backend, strategy)
    second = kube_router_ruleset(sync_version=2, local_pods=1, policies=1, peers=2, swap_sets=swap)
    # shift the peers: members of the old set that are not in the new one must disappear
    second.sets[1].entries = ["10.244.99.1 timeout 0", "10.244.99.2 timeout 0"]
    apply(second, node_ns, backend, strategy)
    state = inspect(node_ns, backend)
    assert state["sets"] == {s.name: sorted(map(entry_key, s.entries)) for s in second.sets}
    assert not any(n.startswith("TMP-") for n in state["sets"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ipblock_nomatch_and_sctp_rules(node_ns, backend, strategy):
    rs = kube_router_ruleset(sync_version=7, local_pods=1, policies=1, peers=1, ipblock=True, sctp=True)
    apply(rs, node_ns, backend, strategy)
    blk = next(s.name for s in rs.sets if s.type == "hash:net")

    def member(ip: str) -> bool:
        return netns.run(node_ns, ["ipset", "test", blk, ip], check=False).returncode == 0

    assert member("172.16.5.5") and member("172.31.255.1")
    assert not member("172.17.5.5")  # the except, added nomatch
    assert not member("10.0.0.1")
    sctp = [r for rules in inspect(node_ns, backend)["chains"].values() for r in rules if r.startswith("-p sctp")]
    assert len(sctp) == 2 and all("-m sctp --dport 80" in r for r in sctp)


def test_backends_are_never_mixed_in_one_namespace(node_ns):
    for b in BACKENDS:
        try:
            require_tools(b)
        except EnvironmentProblem as e:
            pytest.skip(str(e))
    rs = kube_router_ruleset(sync_version=1, local_pods=1, policies=1, peers=1)
    apply(rs, node_ns, "nft", "restore")
    with pytest.raises(KernelError, match="never mix backends"):
        apply(rs, node_ns, "legacy", "restore")
    legacy = inspect(node_ns, "legacy")["chains"]  # (-t filter makes the legacy table appear, empty)
    assert set(legacy) <= {"INPUT", "FORWARD", "OUTPUT"} and not any(legacy.values())


def test_ipset_netlink_runs_many_windows_and_names_the_refused_operation(node_ns):
    from harness.kernel import ipset_netlink
    from harness.kernel.ipset_ops import IPSetOp

    before = _root_state()
    entries = [f"10.{i >> 8}.{i & 255}.1" for i in range(3000)]
    ops = [IPSetOp("create", ["NPH-A", "hash:ip", "family", "inet", "hashsize", "1024", "maxelem", "65536",
                              "timeout", "0"]),
           IPSetOp("create", ["NPH-B", "hash:net", "family", "inet"]),
           *(IPSetOp("add", ["NPH-A", e, "timeout", "0"]) for e in entries),
           IPSetOp("add", ["NPH-B", "172.16.0.0/12"]), IPSetOp("add", ["NPH-B", "172.17.0.0/16", "nomatch"])]
    stats = ipset_netlink.apply_ops(node_ns, ops, batch=16)  # 188 add messages: three ack windows
    assert stats.entries == 3002 and stats.requests == 2 + 188 + 1
    assert sorted(ipset_netlink.list_set_names(node_ns)) == ["NPH-A", "NPH-B"]
    members = netns.run(node_ns, ["ipset", "list", "NPH-A"]).stdout
    assert sum(1 for ln in members.splitlines() if ln.startswith("10.")) == 3000 and "timeout 0" in members
    assert netns.run(node_ns, ["ipset", "test", "NPH-B", "172.17.1.1"], check=False).returncode != 0
    assert netns.run(node_ns, ["ipset", "test", "NPH-B", "172.18.1.1"], check=False).returncode == 0
    with pytest.raises(KernelError, match=rf"^ipset swap NPH-A NPH-NONE in {node_ns}: the second set does not exist"):
        ipset_netlink.apply_ops(node_ns, [IPSetOp("swap", ["NPH-A", "NPH-NONE"])])
    with pytest.raises(KernelError, match=rf"^ipset add NPH-B \(1 entries from 10.9.9.9 timeout 5\) in {node_ns}: "
                                          "timeout cannot be used"):
        ipset_netlink.apply_ops(node_ns, [IPSetOp("add", ["NPH-B", "10.9.9.9", "timeout", "5"])])
    ipset_netlink.destroy_sets(node_ns, ["NPH-A", "NPH-B"])
    assert ipset_netlink.list_set_names(node_ns) == []
    assert _root_state() == before


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reapplying_the_same_sync_version_is_idempotent(node_ns, strategy):
    rs = kube_router_ruleset(sync_version=5, local_pods=2, policies=2, peers=3)
    apply(rs, node_ns, "nft", strategy)
    once = inspect(node_ns, "nft")
    t = apply(rs, node_ns, "nft", strategy)
    assert inspect(node_ns, "nft") == once
    assert t.stale_chains == [] and t.stale_sets == []

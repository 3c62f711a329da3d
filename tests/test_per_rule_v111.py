"""kube-router v1.1.1's call-by-call sync (``per-rule`` with profile v1.1.1), pure.

A small in-memory stand-in for iptables/ipset answers the calls (``-C`` by rule equality, ``-S``
as iptables prints it, ``ipset list`` of a missing set with ipset's error text), so the whole argv
sequence of two syncs of the example cluster is pinned in a golden and its branches (``-C`` hit or
miss, ClearChain's exit status) are exercised without root. The kernel test
(tests/test_per_rule_v111_kernel.py) runs the same code against the real tools.

Source read for every call: v1.1.1:pkg/controllers/netpol/network_policy_controller.go
(fullPolicySync, ensureTopLevelChains, syncNetworkPolicyChains, processIngressRules,
processEgressRules, appendRuleToPolicyChain, syncPodFirewallChains, cleanupStaleRules),
v1.1.1:pkg/utils/ipset.go (Create, IsActive, Refresh, RefreshWithBuiltinOptions, Swap, Destroy,
Save), go-iptables v0.4.1:iptables/iptables.go (New, Exists, Insert, Append, AppendUnique, Delete,
List, ListChains, NewChain, ClearChain, DeleteChain, runWithOutput).
Regenerate the golden after a deliberate change with ``NPH_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from harness.engines.kube_router.apply.per_rule import v111_sync
from harness.engines.kube_router.apply.strategies import SyncTimings
from harness.engines.kube_router.render import naming as nm
from harness.engines.kube_router.render.kube_router import render_node
from harness.engines.kube_router.render.synthetic import example_cluster
from harness.errors import ConfigError, KernelError
from harness.kernel.backends import get_backend

GOLDEN = Path(__file__).parent / "golden" / "per_rule" / "v1.1.1_example_node-a.txt"
V1, V2 = 1700000000000000000, 1700000000000000001
BUILTINS = ("INPUT", "FORWARD", "OUTPUT")


class FakeKernel:
    """iptables (filter table) and ipset as far as v1.1.1's calls use them; ``tools`` protocol of
    ``strategies._Tools`` (run/fail/ns/execs)."""

    def __init__(self, mode: str = "legacy"):
        self.mode = mode
        self.chains: dict[str, list[tuple[str, ...]]] = {b: [] for b in BUILTINS}
        self.sets: dict[str, list[str]] = {}
        self.ns = "fake"
        self.execs = 0

    def fail(self, argv, proc):
        raise KernelError(f"{argv[0]}: {proc.stderr.strip() or proc.returncode}")

    def run(self, argv, *, input=None, check=True):
        self.execs += 1
        rc, out, err = (self._ipset(argv[1:]) if argv[0] == "ipset" else self._iptables(argv[1:]))
        return subprocess.CompletedProcess(list(argv), rc, out, err)

    def _line(self, chain: str, spec: tuple[str, ...]) -> str:
        return " ".join(["-A", chain, *(shlex.quote(a) if " " in a else a for a in spec)])

    def _iptables(self, args):
        if args == ["--version"]:
            return 0, f"iptables v1.8.9 ({self.mode})\n", ""
        assert args[:2] == ["-t", "filter"] and args[-1] == "--wait", args
        op, rest = args[2], args[3:-1]
        if op == "-N":
            if rest[0] in self.chains:
                return 1, "", "iptables: Chain already exists.\n"
            self.chains[rest[0]] = []
            return 0, "", ""
        if op == "-S":
            names = [rest[0]] if rest else list(self.chains)
            lines = [f"-P {c} ACCEPT" if c in BUILTINS else f"-N {c}" for c in names]
            lines += [self._line(c, r) for c in names for r in self.chains[c]]
            return 0, "\n".join(lines) + "\n", ""
        chain = rest[0]
        if chain not in self.chains:
            return 1, "", "iptables: No chain/target/match by that name.\n"
        rules = self.chains[chain]
        if op == "-C":
            return (0 if tuple(rest[1:]) in rules else 1), "", ""
        if op == "-I":
            rules.insert(int(rest[1]) - 1, tuple(rest[2:]))
        elif op == "-A":
            rules.append(tuple(rest[1:]))
        elif op == "-D":
            del rules[int(rest[1]) - 1]
        elif op == "-F":
            rules.clear()
        elif op == "-X":
            del self.chains[chain]
        else:
            raise AssertionError(f"unexpected iptables call {args}")
        return 0, "", ""

    def _ipset(self, args):
        op, rest = args[0], [a for a in args[1:] if a != "-exist"]
        missing = (1, "", "ipset v7.17: The set with the given name does not exist\n")
        if op == "list":
            return (0, "", "") if rest[0] in self.sets else missing
        if op == "create":
            self.sets.setdefault(rest[0], [])
        elif op == "add":
            self.sets[rest[0]].append(" ".join(rest[1:]))
        elif op == "swap":
            a, b = rest
            self.sets[a], self.sets[b] = self.sets[b], self.sets[a]
        elif op == "destroy":
            if rest[0] not in self.sets:
                return missing
            del self.sets[rest[0]]
        elif op == "save":
            return 0, "".join(f"create {n} hash:ip family inet hashsize 1024 maxelem 65536 timeout 0\n"
                              + "".join(f"add {n} {e}\n" for e in es) for n, es in self.sets.items()), ""
        else:
            raise AssertionError(f"unexpected ipset call {args}")
        return 0, "", ""


def _sync(kernel: FakeKernel, version: int, backend: str = "legacy", cluster=None):
    rs = render_node(cluster or example_cluster(), "node-a", profile="v1.1.1", sync_version=version)
    t = SyncTimings("per-rule", backend, "fake", version)
    log = v111_sync(kernel, rs, get_backend(backend), t, lambda _name, fn, *a: fn(*a))
    return rs, t, log


def _golden_text(logs) -> str:
    out = []
    for n, log in enumerate(logs, start=1):
        out.append(f"# sync {n}")
        out += [f"{r.step}: {shlex.join(r.argv)}  -> {r.returncode}" for r in log]
    return "\n".join(out) + "\n"


def test_golden_argv_sequence_of_two_syncs():
    kernel = FakeKernel()
    _, _, first = _sync(kernel, V1)
    _, t2, second = _sync(kernel, V2)
    text = _golden_text([first, second])
    if os.environ.get("NPH_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text.splitlines() == GOLDEN.read_text().splitlines()
    # the bench's budget estimate (apply.commands.estimated_execs) is within 20% of the real count
    from harness.engines.kube_router.apply.commands import estimated_execs

    rs2 = render_node(example_cluster(), "node-a", profile="v1.1.1", sync_version=V2)
    assert abs(estimated_execs(rs2) - len(second)) <= 0.2 * len(second)
    # the second sync's cleanup removed the first sync's chains and left nothing stale
    assert t2.sync_error == "" and len(t2.stale_chains) == 5
    assert not [c for c in kernel.chains if str(V1) in c]


def test_calls_leave_the_chains_the_renderer_derived():
    # the renderer simulates the calls' -C semantics; the calls' real effect must agree
    kernel = FakeKernel()
    _sync(kernel, V1)
    rs, _, _ = _sync(kernel, V2)
    for chain in rs.chains:
        assert [shlex.join(r) for r in kernel.chains[chain.name]] == [
            shlex.join(shlex.split(r)) for r in chain.rules], chain.name
    assert {n: sorted(e) for n, e in kernel.sets.items()} == {s.name: sorted(s.entries) for s in rs.sets}


def test_every_iptables_call_is_go_iptables_argv():
    _, _, log = _sync(FakeKernel(), V1)
    ipt = [r.argv for r in log if r.argv[0] != "ipset"]
    assert all(a[1:] == ["--version"] or (a[1:3] == ["-t", "filter"] and a[-1] == "--wait") for a in ipt)
    # iptables.New() in ensureTopLevelChains, syncNetworkPolicyChains, processIngress/EgressRules
    # per policy with rules (allow-http: ingress, egress-b: egress, deny-all: none), syncPodFirewallChains,
    # cleanupStaleRules
    assert sum(a[1:] == ["--version"] for a in ipt) == 6
    steps = {r.step for r in log}
    assert steps == {"ensureTopLevelChains", "syncNetworkPolicyChains", "processIngressRules",
                     "processEgressRules", "syncPodFirewallChains", "cleanupStaleRules"}


def test_sets_are_refreshed_through_a_temporary_set_and_swap():
    _, _, log = _sync(FakeKernel(), V1)
    ipset = [r.argv[1:] for r in log if r.argv[0] == "ipset"]
    name = nm.policy_dst_set("x", "allow-http")
    i = ipset.index(["list", name])
    assert ipset[i:i + 8] == [
        ["list", name], ["create", "-exist", name, "hash:ip", "timeout", "0"],
        ["list", name + "-"], ["create", "-exist", name + "-", "hash:ip", "timeout", "0"],
        ["add", "-exist", name + "-", "10.244.0.2"], ["swap", name, name + "-"], ["destroy", name + "-"],
        ["list", nm.ingress_pod_set("x", "allow-http", 0)]]
    # ipBlocks: RefreshWithBuiltinOptions, "<set>-temp", entries with timeout 0 (evalIPBlockPeer)
    assert any(a[0] == "add" and a[2].endswith("-temp") and a[4:6] == ["timeout", "0"] for a in ipset)


def test_v111_rules_differ_from_v121():
    # v1.1.1 appendRuleToPolicyChain: a second comment on the MARK and the RETURN rule
    old = render_node(example_cluster(), "node-a", profile="v1.1.1", sync_version=V1)
    new = render_node(example_cluster(), "node-a", profile="v1.2.1", sync_version=V1)
    policy = nm.policy_chain("x", "allow-http", V1)
    assert '-m comment --comment "rule to mark traffic matching a network policy"' in old.chain(policy).rules[0]
    assert "rule to mark traffic" not in new.chain(policy).rules[0]
    # Exists checks: a pod an ingress and an egress policy select holds each rule once (v1.2.1 twice)
    for chain in old.chains:
        if chain.name.startswith(nm.POD_FW_PREFIX):
            assert len(chain.rules) == len(set(chain.rules)), chain.name
    assert any(len(c.rules) != len(set(c.rules)) for c in new.chains if c.name.startswith(nm.POD_FW_PREFIX))
    # Refresh drops its extraOptions: pod entries carry no "timeout 0"
    pods = [e for s in old.sets if s.type == "hash:ip" for e in s.entries]
    assert pods and all(" " not in e for e in pods)


def test_nf_tables_mode_aborts_the_stale_cleanup_at_clear_chain():
    # go-iptables v0.4.1 ClearChain: "chain exists" is exit status 4 in nf_tables mode; iptables-nft
    # 1.8.9 answers 1, so the first stale pod chain fails and cleanupStaleRules returns
    kernel = FakeKernel(mode="nf_tables")
    _sync(kernel, V1, "nft")
    _, t, log = _sync(kernel, V2, "nft")
    assert t.sync_error.startswith("cleanupStaleRules: ClearChain KUBE-POD-FW-")
    assert log[-1].argv[3:5] == ["-N", t.stale_chains[0]] and log[-1].returncode == 1
    assert [c for c in kernel.chains if c.startswith(nm.POD_FW_PREFIX)].__len__() == 4  # 2 stale stay


def test_restore_strategy_refuses_v111():
    from harness.engines.config import EnforcementConfig
    from harness.engines.kube_router.engine import KubeRouterEngine

    with pytest.raises(ConfigError, match="use strategy per-rule"):
        KubeRouterEngine().validate(EnforcementConfig(profile="v1.1.1", strategy="restore"))
    KubeRouterEngine().validate(EnforcementConfig(profile="v1.1.1", strategy="per-rule"))

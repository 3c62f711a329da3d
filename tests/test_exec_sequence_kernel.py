"""Kernel tests of kube-router's full-sync exec sequence per tag (``apply.exec_sequence``): a
steady-state re-sync spawns exactly the processes the source at that tag spawns, in order.

Each expected list is read off the tag's fullPolicySync
(pkg/controllers/netpol/network_policy_controller.go, policy.go, pkg/utils/ipset.go,
pkg/utils/iptables.go) and go-iptables' argv (``-t filter <op> ... --wait``); the sequence the
harness ran before (built-in jumps and DEFAULT only: 16 execs for v2.10.0) fails each one.
"""

from __future__ import annotations

import uuid

import pytest

from harness.engines.kube_router.apply import apply
from harness.engines.kube_router.render.kube_router import render_node
from harness.engines.kube_router.render.synthetic import synthetic_cluster
from harness.errors import EnvironmentProblem, KernelError
from harness.kernel import netns
from harness.kernel.backends import forget, require_tools

pytestmark = pytest.mark.kernel

V1, V2 = 1_700_000_000_000_000_001, 1_700_000_000_000_000_002
CLUSTER = synthetic_cluster(2, 3, 2, seed=1)
TOP = "ensureTopLevelChains"
BUILTINS = (("INPUT", "KUBE-ROUTER-INPUT"), ("FORWARD", "KUBE-ROUTER-FORWARD"), ("OUTPUT", "KUBE-ROUTER-OUTPUT"))


@pytest.fixture
def node_ns():
    try:
        require_tools("nft")
        require_tools("legacy")
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    name = f"nph-{uuid.uuid4().hex[:8]}-execs"
    try:
        netns.create(name)
    except (OSError, KernelError) as e:
        pytest.skip(f"cannot create a network namespace: {e}")
    yield name
    netns.delete(name)
    forget(name)


def _sync(ns: str, profile: str, version: int, backend: str = "nft", default_deny: bool = False):
    rs = render_node(CLUSTER, "node-000", profile=profile, sync_version=version, default_deny=default_deny)
    return apply(rs, ns, backend, "restore")


def _resync(ns: str, profile: str, backend: str = "nft", default_deny: bool = False):
    _sync(ns, profile, V1, backend, default_deny)
    return _sync(ns, profile, V2, backend, default_deny)


def short(argv: list[str]) -> str:
    """An exec in a few words: ``-C INPUT``, ``-S KUBE-ROUTER-INPUT 1``, ``-S`` (whole table),
    ``--version``, ``iptables-save``, ``iptables-restore --wait -T filter``, ``ipset save``."""
    tool, args = argv[0], argv[1:]
    if args[:2] == ["-t", "filter"] and not tool.endswith(("-save", "-restore")):
        assert args[-1] == "--wait"  # go-iptables appends it (runWithOutput)
        op = args[2:-1]
        if op[0] in ("-C", "-A", "-I", "-D"):
            return " ".join(op[:3] if op[0] == "-I" else op[:2])
        return " ".join(op)
    if tool.startswith("iptables") and tool.endswith("-save"):
        return "iptables-save " + " ".join(args)
    if tool.startswith("iptables") and tool.endswith("-restore"):
        return "iptables-restore " + " ".join(args)
    if tool == "ipset":
        return "ipset " + " ".join(args[:2] if args[0] == "destroy" else args)
    return " ".join(args)


def steps(t) -> list[tuple[str, str]]:
    return [(r["step"], short(r["argv"])) for r in t.exec_log]


def _at_position(chain: str) -> list[tuple[str, str]]:
    """ensureRuleAtPosition of a rule already in place: Exists (-C), then List (-S chain)."""
    return [(TOP, f"-C {chain}"), (TOP, f"-S {chain}")]


@pytest.mark.parametrize("tag", ["v2.10.0", "v2.11.1"])
def test_v2_10_0_resync_spawns_the_source_sequence(node_ns, tag):
    # v2.11.1:npc_iptables.go fullPolicySync runs the v2.10.0 sequence (its ensureExplicitAccept
    # writes into the restore buffer, no exec)
    t = _resync(node_ns, tag)
    expected = []
    for builtin, custom in BUILTINS:  # ChainExists, then the jump at position 1
        expected += [(TOP, f"-S {custom} 1")] + _at_position(builtin)
    expected += _at_position("KUBE-ROUTER-INPUT") * 4  # cluster IP range, TCP, UDP, SCTP node ports
    expected += [("ensureDefaultNetworkPolicyChain", "-S KUBE-NWPLCY-DEFAULT 1"),
                 ("ensureDefaultNetworkPolicyChain", "-C KUBE-NWPLCY-DEFAULT")]
    expected += [("ensureCommonPolicyChain", "-S KUBE-NWPLCY-COMMON 1")]
    expected += [("ensureCommonPolicyChain", "-C KUBE-NWPLCY-COMMON")] * 5  # INVALID, ESTABLISHED, 3 ICMP
    expected += [("ensureDefaultTailChainExists", "-S KUBE-NWPLCY-TAIL 1"),
                 ("ensureDefaultTailChainExists", "-S KUBE-NWPLCY-TAIL")]  # the drift check
    expected += [("SaveInto", "iptables-save -t filter"),
                 ("syncNetworkPolicyChains", "ipset save"), ("syncNetworkPolicyChains", "ipset restore -exist"),
                 ("cleanupStaleRules", "-S"),
                 ("Restore", "iptables-restore --wait -T filter"),
                 ("cleanupStaleIPSets", "ipset save")]
    assert steps(t) == expected
    assert t.execs == len(expected) == 33
    assert all(r["returncode"] == 0 for r in t.exec_log)


def test_v2_10_0_default_deny_refreshes_local_pods_in_its_own_save_and_restore(node_ns):
    t = _resync(node_ns, "v2.10.0", default_deny=True)
    got = steps(t)
    # ensureLocalPodsIPSetExists' save comes first in ensureDefaultTailChainExists
    assert ("ensureDefaultTailChainExists", "ipset save") in got
    assert got[got.index(("Restore", "iptables-restore --wait -T filter")) - 3:
               got.index(("Restore", "iptables-restore --wait -T filter")) - 1] == [
        ("populateProtectedPodsIPSet", "ipset save"), ("populateProtectedPodsIPSet", "ipset restore -exist")]
    policy_restore = next(r for r in t.exec_log if r["step"] == "syncNetworkPolicyChains" and "restore" in r["argv"])
    local_restore = next(r for r in t.exec_log if r["step"] == "populateProtectedPodsIPSet" and "restore" in r["argv"])
    local_pods = sum(1 for p in CLUSTER.pods.values() if p.node == "node-000" and p.ip is not None)
    # TMP create + flush, the entries, create, swap, flush, destroy
    assert local_restore["input_lines"] == local_pods + 6
    assert policy_restore["input_lines"] > 0


def test_v1_2_1_news_chains_blindly_runs_version_and_restores_without_wait(node_ns):
    t = _resync(node_ns, "v1.2.1", backend="legacy")
    expected = [(TOP, "--version")]
    for builtin, custom in BUILTINS:
        expected += [(TOP, f"-N {custom}")] + _at_position(builtin)
    expected += _at_position("KUBE-ROUTER-INPUT") * 3  # cluster IP, TCP, UDP node ports (no SCTP)
    expected += [("SaveInto", "iptables-save -t filter"),
                 ("syncNetworkPolicyChains", "ipset save"), ("syncNetworkPolicyChains", "ipset restore -exist"),
                 ("cleanupStaleRules", "--version"), ("cleanupStaleRules", "-S"),
                 ("Restore", "iptables-restore -T filter"),
                 ("cleanupStaleIPSets", "ipset save")]
    assert steps(t) == expected
    # NewChain on an existing chain: exit status 1, ignored (v1.2.1 ensureTopLevelChains)
    assert [r["returncode"] for r in t.exec_log if r["argv"][3:4] == ["-N"]] == [1, 1, 1]


def test_v1_3_0_moves_the_input_allow_rules_back_on_every_sync(node_ns):
    """v1.3.0 inserts pod jumps at position 1 (#1136): each sync finds the cluster IP / node port
    RETURNs below them and moves each back (-I + -D); v1.3.1 (#1144) does not."""
    t = _resync(node_ns, "v1.3.0", backend="legacy")
    moves = [s for s in steps(t) if s[1].startswith(("-I KUBE-ROUTER-INPUT", "-D KUBE-ROUTER-INPUT"))]
    assert moves == [(TOP, "-I KUBE-ROUTER-INPUT 1"), (TOP, "-D KUBE-ROUTER-INPUT"),
                     (TOP, "-I KUBE-ROUTER-INPUT 2"), (TOP, "-D KUBE-ROUTER-INPUT"),
                     (TOP, "-I KUBE-ROUTER-INPUT 3"), (TOP, "-D KUBE-ROUTER-INPUT")]
    # ensureTopLevelChains AppendUniques the explicit ACCEPT with the iptables command
    assert [s for s in steps(t) if s[1].startswith("-C KUBE-ROUTER-")][-3:] == [
        (TOP, "-C KUBE-ROUTER-INPUT"), (TOP, "-C KUBE-ROUTER-FORWARD"), (TOP, "-C KUBE-ROUTER-OUTPUT")]
    netns.delete(node_ns)
    netns.create(node_ns)
    forget(node_ns)
    t = _resync(node_ns, "v1.3.1", backend="legacy")
    assert not [s for s in steps(t) if s[1].startswith(("-I ", "-D "))]
    assert [s for s in steps(t) if s[1] == "--version"] == [
        (TOP, "--version"), ("ensureDefaultNetworkPolicyChain", "--version"), ("cleanupStaleRules", "--version")]


def test_v1_restores_every_host_set_and_v2_6_only_its_own(node_ns):
    netns.run(node_ns, ["ipset", "create", "someone-elses-set", "hash:ip"])
    for i in range(50):
        netns.run(node_ns, ["ipset", "add", "someone-elses-set", f"192.0.2.{i + 1}"])

    def policy_restore_lines(profile: str) -> int:
        t = _resync(node_ns, profile)
        return next(r["input_lines"] for r in t.exec_log
                    if r["step"] == "syncNetworkPolicyChains" and "restore" in r["argv"])
    v1 = policy_restore_lines("v1.3.2")
    v2 = policy_restore_lines("v2.6.3")
    # v1.x: the foreign set's 50 entries + its own TMP (initval kept: options unique) create, flush,
    # create, swap, flush and destroy lines; the set itself is left as it was
    assert v1 - v2 >= 50 + 6
    listed = netns.run(node_ns, ["ipset", "list", "someone-elses-set"]).stdout
    assert "Number of entries: 50" in listed


def test_phases_hold_their_execs(node_ns):
    t = _resync(node_ns, "v2.10.0")
    by_step: dict[str, int] = {}
    for r in t.exec_log:
        by_step[r["step"]] = by_step.get(r["step"], 0) + r["duration_ns"]
    before_save = sum(v for k, v in by_step.items() if k.startswith("ensure"))
    assert 0 < before_save <= t.top_level_time
    assert 0 < by_step["Restore"] <= t.iptables_restore_time
    assert 0 < by_step["cleanupStaleRules"] <= t.list_chains_time
    assert sum(by_step.values()) <= t.total


def test_a_set_past_maxelem_aborts_the_whole_sync(node_ns):
    """kube-router creates its sets without hashsize/maxelem (``hash:ip timeout 0``:
    v2.10.0:pkg/controllers/netpol/policy.go, utils.OptionTimeout), so the kernel's default
    maxelem 65536 applies: a set with more members (a selector matching more pods, e.g.
    ``namespaceSelector: {}`` on 100 nodes x 656 pods) fails ``ipset restore``, and fullPolicySync
    aborts before iptables-restore ("Aborting sync. Failed to sync network policy chains"): the
    node keeps the previous sync's chains and sets, for every policy, until the set shrinks.
    The kernel's limit is not exact (hash sets count elements per region while resizing): on this
    host 65537 members passed 4 of 5 restores, 65600 failed 5 of 5; the test uses 65600."""
    from harness.engines.kube_router.apply import inspect
    from harness.engines.kube_router.render.ruleset import IPSetSpec

    first = _sync(node_ns, "v2.10.0", V1)
    assert first.execs
    before = inspect(node_ns, "nft")["chains"]
    rs = render_node(CLUSTER, "node-000", profile="v2.10.0", sync_version=V2)
    big = next(s for s in rs.sets if s.type == "hash:ip")
    rs.sets[rs.sets.index(big)] = IPSetSpec(big.name, big.type, [
        f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256} timeout 0" for i in range(65600)], options=big.options)
    assert "maxelem" not in big.options
    with pytest.raises(KernelError, match="Hash is full"):
        apply(rs, node_ns, "nft", "restore")
    assert inspect(node_ns, "nft")["chains"] == before  # iptables-restore never ran
    del next(s for s in rs.sets if s.name == big.name).entries[65536:]  # 65536 fit
    apply(rs, node_ns, "nft", "restore")


def test_lister_skew_in_the_kernel_a_pod_of_the_second_listing_is_unfiltered(node_ns):
    """The engine's ``program(relist_view=)``: policies (and their sets) from the listing at the
    sync's start, local pods from the second listing syncPodFirewallChains makes after the sets
    are restored. A pod that arrived in between is in kube-router-local-pods (default deny) and
    has a pod chain, but no policy set holds it and its chain jumps to DEFAULT only."""
    import copy
    import ipaddress

    from harness.engines.config import EnforcementConfig
    from harness.engines.kube_router.apply import inspect
    from harness.engines.kube_router.engine import KubeRouterNode
    from harness.engines.kube_router.render import naming as nm

    first = copy.deepcopy(CLUSTER)
    second = copy.deepcopy(first)
    one = render_node(first, "node-000", profile="v2.10.0", sync_version=V1)

    def policy_jumps(rules):
        return [r.rsplit("-j ", 1)[1] for r in rules if "-j KUBE-NWPLCY-" in r
                and r.rsplit("-j ", 1)[1] not in (nm.DEFAULT_CHAIN, nm.COMMON_CHAIN)]
    # a pod like one a policy selects: with one listing its twin's chain jumps to that policy
    template = next(p for p in first.pods.values() if p.node == "node-000" and p.ip is not None
                    and policy_jumps(one.chain(nm.pod_chain(p.namespace, p.name, str(V1))).rules))
    new = copy.deepcopy(template)
    new.name, new.ip = "arrived", ipaddress.IPv4Address(int(template.ip) + 100)
    second.pods[new.key] = new
    listed = []

    def relist_view():
        listed.append(True)
        return second
    node = KubeRouterNode("node-000", node_ns, EnforcementConfig(profile="v2.10.0", strategy="restore",
                                                                 backend="nft", default_deny=True))
    done = node.program(first, sync_version=V1, relist_view=relist_view)
    assert listed and done.timings["relist_time"] > 0
    steps_ = [r["step"] for r in done.timings["exec_log"]]
    assert steps_.index("syncNetworkPolicyChains") < steps_.index("populateProtectedPodsIPSet")
    state = inspect(node_ns, "nft")
    chain = nm.pod_chain(new.namespace, new.name, str(V1))
    assert chain in state["chains"]
    assert str(new.ip) in state["sets"][nm.LOCAL_PODS_SET]
    assert not any(str(new.ip) in entries for name, entries in state["sets"].items() if name != nm.LOCAL_PODS_SET)
    assert nm.DEFAULT_CHAIN in " ".join(state["chains"][chain]) and not policy_jumps(state["chains"][chain])
    assert policy_jumps(render_node(second, "node-000", profile="v2.10.0", sync_version=V1).chain(chain).rules)


def test_v2_0_restores_the_host_sets_its_handler_kept_v2_1_2_only_its_own(node_ns):
    # v2.0.0: no ipset save before the restore; the handler built once holds what the previous
    # cleanupStaleIPSets saved, so from the second sync on a foreign set is restored too.
    # v2.1.2: the handler is reset every sync (NewIPSet): never the foreign set.
    from harness.engines.kube_router.apply.exec_sequence import IPSetHandler

    netns.run(node_ns, ["ipset", "create", "someone-elses-set", "hash:ip"])
    for i in range(50):
        netns.run(node_ns, ["ipset", "add", "someone-elses-set", f"192.0.2.{i + 1}"])

    def policy_execs(profile: str, version: int, handler):
        rs = render_node(CLUSTER, "node-000", profile=profile, sync_version=version)
        t = apply(rs, node_ns, "nft", "restore", ipset_handler=handler)
        return [r for r in t.exec_log if r["step"] == "syncNetworkPolicyChains"]

    h20 = IPSetHandler()
    first = policy_execs("v2.0.0", V1, h20)
    second = policy_execs("v2.0.0", V2, h20)
    assert [short(r["argv"]) for r in second] == ["ipset restore -exist"]  # no ipset save
    assert second[0]["input_lines"] - first[0]["input_lines"] >= 50
    assert "someone-elses-set" in h20.sets
    h212 = IPSetHandler()
    policy_execs("v2.1.2", V1, h212)
    again = policy_execs("v2.1.2", V2, h212)
    assert again[0]["input_lines"] == first[0]["input_lines"]
    assert "Number of entries: 50" in netns.run(node_ns, ["ipset", "list", "someone-elses-set"]).stdout


@pytest.mark.parametrize("strategy", ["restore", "netlink"])
def test_stale_cleanup_leaves_non_policy_kube_router_sets(node_ns, strategy):
    # cleanupStaleIPSets (v1.2.1..v2.11.1) destroys KUBE-SRC-/KUBE-DST- sets only: a
    # kube-router-local-pods left by a default-deny run, and another controller's kube-router- set, stay
    netns.run(node_ns, ["ipset", "create", "kube-router-pod-subnets", "hash:net"])
    _sync(node_ns, "v2.10.0", V1, default_deny=True)
    rs = render_node(CLUSTER, "node-000", profile="v2.10.0", sync_version=V2)
    t = apply(rs, node_ns, "nft", strategy)
    names = set(netns.run(node_ns, ["ipset", "list", "-n"]).stdout.split())
    assert {"kube-router-local-pods", "kube-router-pod-subnets"} <= names
    assert not any(n.startswith("kube-router-") for n in t.stale_sets)


@pytest.mark.parametrize("tag, icmp", [("v2.0.0", 0), ("v2.2.0", 3)])
def test_v2_0_to_v2_5_sequence_has_no_common_chain_and_no_policy_ipset_save(node_ns, tag, icmp):
    # v2.0.0..v2.5.0:network_policy_controller.go fullPolicySync: no ensureCommonPolicyChain (v2.6.0),
    # no TAIL (v2.10.0); v2.2.0+ AppendUniques the 3 ICMP rules into KUBE-NWPLCY-DEFAULT before the
    # mark; policy.go syncNetworkPolicyChains runs no ipset save before the restore until v2.5.0
    t = _resync(node_ns, tag)
    expected = []
    for builtin, custom in BUILTINS:
        expected += [(TOP, f"-S {custom} 1")] + _at_position(builtin)
    expected += _at_position("KUBE-ROUTER-INPUT") * 3  # cluster IP range, TCP, UDP node ports
    expected += [("ensureDefaultNetworkPolicyChain", "-S KUBE-NWPLCY-DEFAULT 1")]
    expected += [("ensureDefaultNetworkPolicyChain", "-C KUBE-NWPLCY-DEFAULT")] * (icmp + 1)
    expected += [("SaveInto", "iptables-save -t filter"),
                 ("syncNetworkPolicyChains", "ipset restore -exist"),
                 ("cleanupStaleRules", "-S"),
                 ("Restore", "iptables-restore --wait -T filter"),
                 ("cleanupStaleIPSets", "ipset save")]
    assert steps(t) == expected
    assert all(r["returncode"] == 0 for r in t.exec_log)

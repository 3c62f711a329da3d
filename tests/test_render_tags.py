"""One test per departure of the old profiles from kube-router at its release tags.

Each test pins what the source at the tag writes (cited next to it) and failed on the
rendering before the profiles were tagged. Sources: cloudnativelabs/kube-router,
pkg/controllers/netpol unless said otherwise.
"""

from __future__ import annotations

import ipaddress

import pytest

from harness.engines.kube_router.render import naming as nm
from harness.engines.kube_router.render.kube_router import render_node
from harness.engines.kube_router.render.profiles import ALIASES, PROFILES, get_profile
from harness.engines.kube_router.render.synthetic import example_cluster
from harness.errors import ConfigError
from harness.model.cluster import Namespace, Pod

V = 1700000000000000000


def _cluster_with_unselected_pod():
    """The example cluster plus z/free on node-a, which no policy selects."""
    c = example_cluster()
    c.namespaces["z"] = Namespace("z", {})
    c.pods["z/free"] = Pod("z", "free", "node-a", {"app": "free"}, ipaddress.IPv4Address("10.244.0.9"))
    return c


def _names(rs):
    return [c.name for c in rs.chains]


# -- aliases --------------------------------------------------------------------------------
def test_old_names_are_aliases_of_the_nearest_tag():
    assert ALIASES == {"v1.2": "v1.2.1", "v1.3": "v1.3.1", "v2.6": "v2.6.3", "v2.10": "v2.10.0",
                       "v2.11": "v2.11.1"}
    for alias, tag in ALIASES.items():
        assert get_profile(alias) is PROFILES[tag]
        assert render_node(example_cluster(), "node-a", profile=alias, sync_version=V).profile == tag
    with pytest.raises(ConfigError, match="v1.2.1"):
        get_profile("v1.4")


# -- v1.2 layout (v1.2.1:pod.go syncPodFirewallChains) -----------------------------------------
@pytest.mark.parametrize("tag", ["v1.2.1", "v1.2.2"])
def test_v12_only_pods_a_policy_selects_get_a_chain(tag):
    # getIngressNetworkPolicyEnabledPods/getEgressNetworkPolicyEnabledPods: z/free has no chain
    # and no jump, its traffic passes the filter table (the chain's default ACCEPT)
    rs = render_node(_cluster_with_unselected_pod(), "node-a", profile=tag, sync_version=V)
    free = nm.pod_chain("z", "free", V)
    assert free not in _names(rs)
    assert not any("10.244.0.9" in r for c in rs.chains for r in c.rules)
    assert nm.pod_chain("x", "a", V) in _names(rs) and nm.pod_chain("x", "b", V) in _names(rs)
    # the v1.3 layout gives it a chain with the DEFAULT jumps
    v13 = render_node(_cluster_with_unselected_pod(), "node-a", profile="v1.3.1", sync_version=V)
    assert free in _names(v13)


def test_v12_has_no_default_chain_no_accept_mark_no_explicit_accept():
    rs = render_node(example_cluster(), "node-a", profile="v1.2.1", sync_version=V)
    assert nm.DEFAULT_CHAIN not in _names(rs)
    assert not any("0x20000" in r for c in rs.chains for r in c.rules)
    assert not any("explicitly ACCEPT" in r for c in rs.chains for r in c.rules)


def test_v12_pod_chain_of_a_pod_both_passes_select():
    # x/b: deny-all (Ingress) and egress-b (Egress). Ingress pass: -I 1 of the jumps to every
    # policy selecting it (no -d/-s), local accept, stateful; -A drop rules. Egress pass: -I 1
    # of the jumps again and the stateful accept; drop rules already written (buffer check).
    rs = render_node(example_cluster(), "node-a", profile="v1.2.1", sync_version=V)
    deny_all, egress_b = nm.policy_chain("x", "deny-all", V), nm.policy_chain("x", "egress-b", V)
    stateful = '-m comment --comment "rule for stateful firewall for pod" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT'
    local = ("-m comment --comment \"rule to permit the traffic traffic to pods when source is the pod's local node\""
             " -m addrtype --src-type LOCAL -d 10.244.0.3 -j ACCEPT")
    j_deny = f'-m comment --comment "run through nw policy deny-all" -j {deny_all}'
    j_eg = f'-m comment --comment "run through nw policy egress-b" -j {egress_b}'
    assert rs.chain(nm.pod_chain("x", "b", V)).rules == [
        stateful, j_eg, j_deny, stateful, local, j_eg, j_deny,
        '-m comment --comment "rule to log dropped traffic POD name:b namespace: x" -m mark ! --mark 0x10000/0x10000'
        " -j NFLOG --nflog-group 100 -m limit --limit 10/minute --limit-burst 10",
        '-m comment --comment "rule to REJECT traffic destined for POD name:b namespace: x"'
        " -m mark ! --mark 0x10000/0x10000 -j REJECT",
        "-j MARK --set-mark 0/0x10000",
    ]


def test_v12_inbound_jumps_inserted_at_1_outbound_appended():
    rs = render_node(example_cluster(), "node-a", profile="v1.2.1", sync_version=V)
    fa, fb = nm.pod_chain("x", "a", V), nm.pod_chain("x", "b", V)
    fwd = rs.chain(nm.FORWARD_CHAIN).rules
    # inserts, last written first: b's egress physdev -s, b's inbound physdev -d and -d, a's ...
    assert [r.split(" -j ")[-1] + (" physdev" if "physdev" in r else "") + (" -s" if " -s " in r else " -d")
            for r in fwd] == [f"{fb} physdev -s", f"{fb} physdev -d", f"{fb} -d", f"{fa} physdev -d", f"{fa} -d",
                              f"{fb} -s"]
    inp = rs.chain(nm.INPUT_CHAIN).rules
    assert "cluster IP" in inp[0] and inp[-1].endswith(f"-s 10.244.0.3 -j {fb}")
    # v1.3.1 appends inbound jumps in pod order (interceptPodInboundTraffic: -A)
    v13 = render_node(example_cluster(), "node-a", profile="v1.3.1", sync_version=V).chain(nm.FORWARD_CHAIN).rules
    assert v13[0].endswith(f"-d 10.244.0.2 -j {fa}")


def test_flush_refill_is_v121_only():
    # v1.2.2:pkg/utils/ipset.go buildIPSetRestore: TMP sets + swap
    assert render_node(example_cluster(), "node-a", profile="v1.2.1", sync_version=V).swap_sets is False
    assert render_node(example_cluster(), "node-a", profile="v1.2.2", sync_version=V).swap_sets is True


# -- v1.3.2 (pod.go setupPodNetpolRules, #709) -----------------------------------------------
def test_v132_drops_ctstate_invalid_in_every_pod_chain_v131_does_not():
    invalid = '-m comment --comment "rule to drop invalid state for pod" -m conntrack --ctstate INVALID -j DROP'
    new = render_node(_cluster_with_unselected_pod(), "node-a", profile="v1.3.2", sync_version=V)
    old = render_node(_cluster_with_unselected_pod(), "node-a", profile="v1.3.1", sync_version=V)
    for ns, pod in (("x", "a"), ("x", "b"), ("z", "free")):
        rules = new.chain(nm.pod_chain(ns, pod, V)).rules
        # -I 1 after the local accept, before the stateful accept: second in the chain
        assert rules[0].endswith("RELATED,ESTABLISHED -j ACCEPT") and rules[1] == invalid
        assert invalid not in old.chain(nm.pod_chain(ns, pod, V)).rules


# -- text ------------------------------------------------------------------------------------
def test_default_chain_comment_double_space_in_v1_single_in_v2():
    # v1.3.1:pod.go "run through default egress network policy  chain"; v2.6.3:pod.go single space
    v1 = render_node(example_cluster(), "node-a", profile="v1.3.2", sync_version=V)
    v2 = render_node(example_cluster(), "node-a", profile="v2.6.3", sync_version=V)
    assert any('"run through default egress network policy  chain"' in r
               for r in v1.chain(nm.pod_chain("x", "a", V)).rules)
    assert any('"run through default egress network policy chain"' in r
               for r in v2.chain(nm.pod_chain("x", "a", V)).rules)


@pytest.mark.parametrize("tag", ["v2.6.3", "v2.10.0"])
def test_common_chain_comments_carry_literal_quotes_and_jump_comment(tag):
    # network_policy_controller.go ensureCommonPolicyChain: the comment strings include the quote
    # characters and go through the iptables command, so iptables-save prints them escaped;
    # the ICMP comments (utils.CommonICMPRules) have none. pod.go: "common bi-directional ..."
    rs = render_node(example_cluster(), "node-a", profile=tag, sync_version=V)
    common = rs.chain(nm.COMMON_CHAIN).rules
    assert common[0] == ('-m comment --comment "\\"rule to drop invalid state for pod\\"" '
                         "-m conntrack --ctstate INVALID -j DROP")
    assert common[1].startswith('-m comment --comment "\\"rule for stateful firewall for pod\\"" ')
    assert common[2].startswith('-m comment --comment "allow icmp echo requests" ')
    assert rs.chain(nm.pod_chain("x", "a", V)).rules[0] == (
        '-m comment --comment "common bi-directional traffic policy rules" -j KUBE-NWPLCY-COMMON')


# v1.1.x's Refresh drops the entries' options (tests/test_per_rule_v111.py)
@pytest.mark.parametrize("tag", sorted(t for t in PROFILES if not PROFILES[t].per_call_sync))
def test_set_entries_carry_timeout_0_and_new_sets_the_refresh_set_options(tag):
    # policy.go: every entry is []string{ip, utils.OptionTimeout, "0"} (+ utils.OptionNoMatch);
    # pkg/utils/ipset.go RefreshSet: a new set's options are [setType, "timeout", "0"]
    rs = render_node(example_cluster(), "node-a", profile=tag, sync_version=V)
    assert all(s.options == "timeout 0" for s in rs.sets)
    entries = [e for s in rs.sets for e in s.entries]
    assert entries and all(e.split(" ", 1)[1] in ("timeout 0", "timeout 0 nomatch") for e in entries)
    assert "10.244.0.0/16 timeout 0 nomatch" in entries


def test_v150_shortened_the_explicit_accept_comment():
    # v1.5.0:network_policy_controller.go ensureExplicitAccept
    new = render_node(example_cluster(), "node-a", profile="v1.5.0", sync_version=V).chain(nm.FORWARD_CHAIN).rules
    old = render_node(example_cluster(), "node-a", profile="v1.3.2", sync_version=V).chain(nm.FORWARD_CHAIN).rules
    assert new[-1] == ('-m comment --comment "explicitly ACCEPT traffic that complies with network policies" '
                       "-m mark --mark 0x20000/0x20000 -j ACCEPT")
    assert old[-1].startswith('-m comment --comment "rule to explicitly ACCEPT traffic that comply to')


def test_sctp_node_ports_from_v280():
    # v2.8.0:network_policy_controller.go ensureTopLevelChains: whitelistSCTPNodeports
    def sctp(tag):
        rules = render_node(example_cluster(), "node-a", profile=tag, sync_version=V).chain(nm.INPUT_CHAIN).rules
        return any("allow LOCAL SCTP traffic to node ports" in r for r in rules)
    assert (sctp("v2.6.3"), sctp("v2.8.0"), sctp("v2.10.0")) == (False, True, True)


def test_v130_inserts_pod_jumps_above_the_input_whitelist():
    # v1.3.0:pod.go interceptPodOutboundTraffic "-I KUBE-ROUTER-INPUT 1": the pod jumps land above
    # the cluster IP / node port RETURNs that ensureTopLevelChains keeps at 1..3 (#1136); v1.3.1
    # appends them (#1144). The explicit ACCEPT (AppendUnique before the save) stays last.
    fb = nm.pod_chain("x", "b", V)
    old = render_node(example_cluster(), "node-a", profile="v1.3.0", sync_version=V).chain(nm.INPUT_CHAIN).rules
    new = render_node(example_cluster(), "node-a", profile="v1.3.1", sync_version=V).chain(nm.INPUT_CHAIN).rules
    assert old[0].endswith(f"-s 10.244.0.3 -j {fb}") and "cluster IP" in old[2]
    assert "cluster IP" in new[0] and new[-2].endswith(f"-s 10.244.0.3 -j {fb}")
    assert old[-1].endswith("-m mark --mark 0x20000/0x20000 -j ACCEPT")


# -- v1.4.0 .. v2.11.1 -----------------------------------------------------------------------
def _pod_rules(tag: str, ns: str = "x", pod: str = "a", cluster=None) -> list[str]:
    rs = render_node(cluster or example_cluster(), "node-a", profile=tag, sync_version=V)
    return rs.chain(nm.pod_chain(ns, pod, V)).rules


def _local_accept(tag: str) -> str:
    return next(r for r in _pod_rules(tag) if "--src-type LOCAL" in r).split('"')[1]


def test_local_accept_comment_lost_its_doubled_traffic_in_v140_and_got_it_back_in_v200():
    # v1.3.2/v2.0.0:pod.go "rule to permit the traffic traffic to pods ..."; v1.4.0..v1.6.1 "the traffic to pods"
    doubled = "rule to permit the traffic traffic to pods when source is the pod's local node"
    single = "rule to permit the traffic to pods when source is the pod's local node"
    assert [_local_accept(t) for t in ("v1.3.2", "v1.4.0", "v1.5.0", "v1.5.1", "v2.0.0", "v2.10.0")] == [
        doubled, single, single, single, doubled, doubled]


def test_v200_is_dual_stack_named_single_spaced_with_inline_stateful_rules():
    # v2.0.0:policy.go networkPolicyChainName/policy*IPSetName hash the family; pod.go: single-spaced
    # default comments, INVALID + stateful still -I 1 per pod chain (no KUBE-NWPLCY-COMMON until v2.6.0);
    # network_policy_controller.go ensureExplicitAccept: the v1.3.1 comment again
    v2 = render_node(example_cluster(), "node-a", profile="v2.0.0", sync_version=V)
    v15 = render_node(example_cluster(), "node-a", profile="v1.5.1", sync_version=V)
    assert nm.policy_chain("x", "deny-all", V, "IPv4") in _names(v2)
    assert nm.policy_chain("x", "deny-all", V) in _names(v15)
    assert nm.COMMON_CHAIN not in _names(v2)
    rules = v2.chain(nm.pod_chain("x", "a", V)).rules
    assert rules[0].endswith("--ctstate RELATED,ESTABLISHED -j ACCEPT") and rules[1].endswith("--ctstate INVALID -j DROP")
    assert any('"run through default egress network policy chain"' in r for r in rules)
    assert v2.chain(nm.FORWARD_CHAIN).rules[-1].startswith(
        '-m comment --comment "rule to explicitly ACCEPT traffic that comply to network policies"')
    assert v15.chain(nm.FORWARD_CHAIN).rules[-1].startswith('-m comment --comment "explicitly ACCEPT traffic that')


def test_v220_accepts_basic_icmp_in_the_default_chain_until_v260_moves_it_to_common():
    # v2.2.0..v2.5.0:network_policy_controller.go ensureDefaultNetworkPolicyChain: CommonICMPRules before the mark
    def default(tag):
        return render_node(example_cluster(), "node-a", profile=tag, sync_version=V).chain(nm.DEFAULT_CHAIN).rules
    icmp = ['-m comment --comment "allow icmp echo requests" -p icmp --icmp-type echo-request -j ACCEPT',
            '-m comment --comment "allow icmp destination unreachable messages" -p icmp '
            '--icmp-type destination-unreachable -j ACCEPT',
            '-m comment --comment "allow icmp time exceeded messages" -p icmp --icmp-type time-exceeded -j ACCEPT']
    assert default("v2.2.0")[:3] == icmp and default("v2.5.0")[:3] == icmp
    assert default("v2.2.0")[3].startswith("-j MARK") and len(default("v2.2.0")) == 4
    assert len(default("v2.1.2")) == 1 and len(default("v2.6.0")) == 1


def test_v260_jumps_to_common_where_v250_inlines_the_stateful_rules():
    # v2.6.0:pod.go setupPodNetpolRules "common bi-directional traffic policy rules"
    assert _pod_rules("v2.6.0")[0] == (
        '-m comment --comment "common bi-directional traffic policy rules" -j KUBE-NWPLCY-COMMON')
    assert "KUBE-NWPLCY-COMMON" not in " ".join(_pod_rules("v2.5.0"))
    assert nm.COMMON_CHAIN in _names(render_node(example_cluster(), "node-a", profile="v2.6.0", sync_version=V))


def test_v2111_short_comments_from_comments_go():
    # v2.11.1:pod.go + comments.go idComment "<ns>/<name> <kind>"; the fixed pod-chain texts shortened
    rules = _pod_rules("v2.11.1")
    comments = [r.split('"')[1] for r in rules if "--comment" in r]
    assert comments == ["common netpol rules", "from local node", "default egress", "x/deny-all policy",
                        "x/allow-http policy", "x/a log-drop", "x/a reject", "set netpol-ok mark"]
    old = [r.split('"')[1] for r in _pod_rules("v2.10.0") if "--comment" in r]
    assert old[0] == "common bi-directional traffic policy rules" and old[-1].startswith("set mark to ACCEPT")
    rs = render_node(example_cluster(), "node-a", profile="v2.11.1", sync_version=V)
    fwd = rs.chain(nm.FORWARD_CHAIN).rules
    assert fwd[0] == f'-m comment --comment "x/a in" -d 10.244.0.2 -j {nm.pod_chain("x", "a", V)}'
    assert any('"x/a out" -s 10.244.0.2' in r for r in fwd)
    # v2.11.1:policy.go polRuleComment(policy, cmtIngressPods+cmtNamedPort) / cmtEgressCIDR / cmtEgressPods
    allow_http = rs.chain(nm.policy_chain("x", "allow-http", V, "IPv4")).rules
    assert allow_http[0].startswith('-m comment --comment "x/allow-http ingress pods np" ')
    egress = [r.split('"')[1] for r in rs.chain(nm.policy_chain("x", "egress-b", V, "IPv4")).rules]
    assert egress == ["x/egress-b egress cidr"] * 2 + ["x/egress-b egress pods"] * 2


def test_v2111_appends_the_explicit_accept_after_the_tail_jump_again():
    # v2.11.1:npc_iptables.go fullPolicySync: ensureTailChainPosition, then ensureExplicitAccept (frozen text);
    # v2.10.0 has the TAIL jump alone
    new = render_node(example_cluster(), "node-a", profile="v2.11.1", sync_version=V)
    old = render_node(example_cluster(), "node-a", profile="v2.10.0", sync_version=V)
    for chain in (nm.INPUT_CHAIN, nm.FORWARD_CHAIN, nm.OUTPUT_CHAIN):
        assert new.chain(chain).rules[-2].endswith("-j KUBE-NWPLCY-TAIL")
        assert new.chain(chain).rules[-1] == (
            '-m comment --comment "rule to explicitly ACCEPT traffic that comply to network policies" '
            "-m mark --mark 0x20000/0x20000 -j ACCEPT")
        assert old.chain(chain).rules[-1].endswith("-j KUBE-NWPLCY-TAIL")


def test_v2111_tail_chain_comments():
    # v2.11.1:npc_iptables.go populateDefaultTailChain, appendIPSetGatedRejects, appendCIDRRejects
    rs = render_node(example_cluster(), "node-a", profile="v2.11.1", sync_version=V, default_deny=True)
    comments = [r.split('"')[1] for r in rs.chain(nm.TAIL_CHAIN).rules]
    assert comments == ["reject unprogrammed local pod (default-deny)"] * 2 + ["accept netpol-ok"] + [
        "reject pre-netpol (default-deny)"] * 2
    old = render_node(example_cluster(), "node-a", profile="v2.10.0", sync_version=V, default_deny=True)
    assert [r.split('"')[1] for r in old.chain(nm.TAIL_CHAIN).rules][2].startswith("rule to explicitly ACCEPT")


def test_v2111_comments_are_clamped_to_120_bytes():
    # v2.11.1:comments.go clampComment (maxCommentLen 120), identity first so only the kind is cut
    from harness.engines.kube_router.render.kube_router import id_comment

    long_ns = "n" * 63
    assert id_comment(long_ns, "p" * 63, "log-drop") == (long_ns + "/" + "p" * 63 + " log-drop")[:120]
    assert len(id_comment(long_ns, "p" * 63, "log-drop")) == 120
    assert id_comment("x", "a\tb", "in") == "x/ab in"  # sanitizeForComment drops control characters


def test_v2111_is_what_the_nftables_backend_reads():
    # v2.11.0+ has --use-nftables-for-netpol (npc_nftables.go); the iptables profiles before it do not
    assert get_profile("v2.11.1").nftables_netpol and get_profile("v2.11").name == "v2.11.1"
    assert not any(p.nftables_netpol for n, p in PROFILES.items() if n != "v2.11.1")


@pytest.mark.parametrize("tag", sorted(PROFILES))
def test_render_cli_accepts_every_tag(tag, capsys):
    import argparse

    from harness.engines.kube_router.render import commands

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    commands.register(sub, argparse.ArgumentParser().add_subparsers())
    args = parser.parse_args(["render", "example", "--node", "node-a", "--profile", tag, "--sync-version", "5"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith(f"# kube-router {tag} ruleset for node node-a")

"""kube-router v2.11's nftables network policy backend (``--use-nftables-for-netpol``) for one
node, as pure data: the knftables transactions one full sync runs, as the text knftables hands
``nft -f -``.

Sources (cloudnativelabs/kube-router v2.11.1, sigs.k8s.io/knftables v0.0.22 per its go.mod):
- ``v2.11.1:pkg/controllers/netpol/npc_nftables.go``: every chain, rule, set and comment below
  (the function named next to each);
- ``v2.11.1:pkg/controllers/netpol/comments.go``: the short ``"<ns>/<name> <kind>"`` comments
  (``idComment``, ``clampComment``: 120 bytes);
- ``v2.11.1:pkg/utils/iptables.go`` CommonICMPRules (the ICMP types of KUBE-NWPLCY-COMMON);
- ``v0.0.22:objects.go`` (``writeOperation`` of Table, Chain, Rule, Set, Element): the exact text
  of each operation; ``v0.0.22:util.go`` Concat (rule words joined by one space);
  ``v0.0.22:types.go`` (``ip`` family, ``filter`` priority = 0, written as ``priority 0``).

One table per family, ``kube-router-filter-ipv4`` (family ``ip``; IPv4 only here). Unlike the
iptables backend there is no iptables-save/restore of a whole table: each step is its own small
transaction (one ``nft -f -`` each): the DEFAULT, COMMON and TAIL chains are re-created and flushed
every sync, then one transaction per policy (its chain and named sets, flushed and refilled), one
per local pod (its chain), the kube-router-local-pods set (default deny only), one transaction that
flushes and rebuilds the three top-level base chains with every pod jump (the atomic switch to the
new sync version's chains), and last the deletes of stale chains and sets (``gc_plan``).

Where the source iterates a Go map (the three top-level chains ``chainToHook``, ``defaultChains``,
local pods, target pod IPs, named-port resolutions) its order is random; here it is fixed: INPUT,
FORWARD, OUTPUT; pods and policies by ``namespace/name``; addresses ascending. Policy semantics
(which pods a policy targets, its peers, named ports) come from the iptables renderer's
``_build_policy_info`` (buildNetworkPoliciesInfo is shared by both backends in v2.11.1:
policy.go), so both datapaths judge a cluster the same way.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from harness.engines.kube_router.render import naming as nm
from harness.engines.kube_router.render.kube_router import (
    DEFAULT_NODE_PORT_RANGE,
    DEFAULT_SERVICE_RANGE,
    ClusterIndex,
    _build_policy_info,
    _PolicyInfo,
    netpol_actionable,
)
from harness.engines.kube_router.render.profiles import Profile, get_profile
from harness.errors import ConfigError
from harness.model.cluster import Cluster, Pod

# Names under which the nftables datapath is valid: v2.11.0 added --use-nftables-for-netpol
# (v2.11.0:pkg/options/options.go). The renderer reproduces v2.11.1.
NFT_PROFILES = ("v2.11.1", "v2.11.0", "v2.11")
# The iptables profile whose policy semantics (isNetPolActionable, endPort) v2.11.1 shares, used
# until a v2.11.x iptables profile exists in profiles.py (assumed: buildNetworkPoliciesInfo and the
# event handlers are unchanged between v2.10.0 and v2.11.1 as far as the harness models them).
SEMANTICS_PROFILE = "v2.10.0"

FAMILY = "ip"  # knftables.IPv4Family (v0.0.22:types.go)
TABLE = "kube-router-filter-ipv4"  # npc_nftables.go ipv4Table
HASH_FAMILY = "IPv4"  # string(v1core.IPv4Protocol), hashed into policy chain and set names
# npc_nftables.go nftMarkAcceptRule
MARK_ACCEPT_RULE = "meta mark and 0x20000 == 0x20000 counter accept"
MAX_COMMENT = 120  # comments.go maxCommentLen
# npc_nftables.go chainToHook (a Go map; fixed order here)
TOP_LEVEL_HOOKS = ((nm.INPUT_CHAIN, "input"), (nm.FORWARD_CHAIN, "forward"), (nm.OUTPUT_CHAIN, "output"))
# utils.CommonICMPRules(IPv4) (v2.11.1:pkg/utils/iptables.go): NftablesProto, NftablesICMPType
COMMON_ICMP = (("icmp", "echo-request"), ("icmp", "destination-unreachable"), ("icmp", "time-exceeded"))


def semantics_profile(name: str) -> Profile:
    """The iptables profile whose policy semantics the nftables render of ``name`` uses: the
    profile itself once profiles.py has it, else ``SEMANTICS_PROFILE``."""
    try:
        return get_profile(name)
    except ConfigError:
        if name in NFT_PROFILES:
            return get_profile(SEMANTICS_PROFILE)
        raise


def go_quote(s: str) -> str:
    """Go's ``%q`` for the printable text comments carry (sanitizeForComment removed control
    characters): double quotes, ``\\`` and ``"`` escaped."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def clamp_comment(s: str) -> str:
    """comments.go clampComment: control characters dropped, at most 120 bytes."""
    s = "".join(ch for ch in s if ch.isprintable())
    b = s.encode()
    return b[:MAX_COMMENT].decode(errors="ignore") if len(b) > MAX_COMMENT else s


def id_comment(namespace: str, name: str, kind: str) -> str:
    """comments.go idComment: ``"<namespace>/<name> <kind>"``, clamped."""
    return clamp_comment(f"{namespace}/{name} {kind}")


class Tx:
    """One knftables Transaction on the ``ip kube-router-filter-ipv4`` table: each method
    appends the line knftables' ``writeOperation`` writes (v0.0.22:objects.go)."""

    def __init__(self, step: str):
        self.step = step  # the kube-router function that runs it
        self.lines: list[str] = []

    def _p(self, verb: str, kind: str, rest: str) -> None:
        self.lines.append(f"{verb} {kind} {FAMILY} {TABLE} {rest}".rstrip())

    def add_table(self, comment: str) -> None:
        self.lines.append(f"add table {FAMILY} {TABLE} {{ comment {go_quote(comment)} ; }}")

    def delete_table(self) -> None:
        self.lines.append(f"delete table {FAMILY} {TABLE}")

    def add_chain(self, name: str, comment: str | None = None, hook: str | None = None) -> None:
        body = []
        if hook is not None:  # Type filter, Priority filter -> ParsePriority = 0
            body.append(f" type filter hook {hook} priority 0 ;")
        if comment is not None:
            body.append(f" comment {go_quote(comment)} ;")
        self._p("add", "chain", name + (" {" + "".join(body) + " }" if body else ""))

    def flush_chain(self, name: str) -> None:
        self._p("flush", "chain", name)

    def delete_chain(self, name: str) -> None:
        self._p("delete", "chain", name)

    def add_rule(self, chain: str, rule: str, comment: str | None = None) -> None:
        self._p("add", "rule", f"{chain} {rule}" + (f" comment {go_quote(comment)}" if comment is not None else ""))

    def add_set(self, name: str, type_: str, comment: str, interval: bool = False) -> None:
        flags = " flags interval ;" if interval else ""
        self._p("add", "set", f"{name} {{ type {type_} ;{flags} comment {go_quote(comment)} ; }}")

    def flush_set(self, name: str) -> None:
        self._p("flush", "set", name)

    def delete_set(self, name: str) -> None:
        self._p("delete", "set", name)

    def add_element(self, set_name: str, key: str) -> None:
        self._p("add", "element", f"{set_name} {{ {key} }}")

    @property
    def text(self) -> str:
        """What knftables writes to ``nft -f -`` (populateCommandBuf)."""
        return "".join(line + "\n" for line in self.lines)

    @property
    def rules(self) -> int:
        return sum(1 for line in self.lines if line.startswith("add rule "))


@dataclass
class NftSync:
    """One node's full sync on the nftables datapath: the transactions in the order
    fullPolicySync runs them (``startup``: those Run() and NewKnftablesInterfaces run once before
    the first sync), and what the stale-object GC keeps (``active_chains``, ``active_sets``)."""

    node: str
    profile: str
    sync_version: int
    transactions: list[Tx] = field(default_factory=list)
    startup: list[Tx] = field(default_factory=list)
    active_pod_chains: set[str] = field(default_factory=set)
    active_policy_chains: set[str] = field(default_factory=set)
    active_sets: set[str] = field(default_factory=set)
    set_entries: dict[str, list[str]] = field(default_factory=dict)  # set -> elements (last write wins)
    policy_chain_order: list[str] = field(default_factory=list)  # chain of each policy transaction
    # (pod, [(policy info, policy chain)]) per local pod of the pod phase
    pod_inputs: list[tuple[Pod, list[tuple[_PolicyInfo, str]]]] = field(default_factory=list)
    # what ``pod_phase`` needs to render the pod phase again (fail closed, a second pod listing)
    infos: list[_PolicyInfo] = field(default_factory=list)
    target_ips: list[set[str]] = field(default_factory=list)
    default_deny: bool = False
    service_ranges: list[str] = field(default_factory=list)
    node_port_range: str = DEFAULT_NODE_PORT_RANGE
    pods_view: Cluster | None = None  # the listing the pod phase was rendered from

    @property
    def rule_count(self) -> int:
        return sum(t.rules for t in self.transactions)

    @property
    def sets(self) -> list[str]:
        return sorted(self.set_entries)

    @property
    def set_entry_count(self) -> int:
        return sum(len(v) for v in self.set_entries.values())

    def step(self, name: str) -> list[Tx]:
        """The transactions of the kube-router function ``name``."""
        return [t for t in self.transactions if t.step == name]


# ------------------------------------------------------------------------------------------
# Startup and static chains
# ------------------------------------------------------------------------------------------
def init_table() -> Tx:
    """npc_nftables.go initTable: the table with its comment (NewKnftablesInterfaces, at start)."""
    tx = Tx("initTable")
    tx.add_table("rules for " + TABLE)
    return tx


def _top_level_chains(tx: Tx) -> None:
    for chain, hook in TOP_LEVEL_HOOKS:
        tx.add_chain(chain, f"top level {chain} chain for kube-router", hook)


def ensure_top_level_chains() -> Tx:
    """npc_nftables.go ensureTopLevelChains: the base chains, created without flushing (Run, once)."""
    tx = Tx("ensureTopLevelChains")
    _top_level_chains(tx)
    return tx


def ensure_default_chain() -> Tx:
    """npc_nftables.go ensureDefaultNetworkPolicyChain: KUBE-NWPLCY-DEFAULT marks 0x10000."""
    tx = Tx("ensureDefaultNetworkPolicyChain")
    tx.add_chain(nm.DEFAULT_CHAIN, nm.DEFAULT_CHAIN + " chain for kube-router")
    tx.flush_chain(nm.DEFAULT_CHAIN)
    # Concat("counter", "meta mark", "set mark", "or", "0x10000")
    tx.add_rule(nm.DEFAULT_CHAIN, "counter meta mark set mark or 0x10000", "mark netpol match")
    return tx


def ensure_common_chain() -> Tx:
    """npc_nftables.go ensureCommonPolicyChain: INVALID drop, established accept, basic ICMP."""
    tx = Tx("ensureCommonPolicyChain")
    tx.add_chain(nm.COMMON_CHAIN, nm.COMMON_CHAIN + " chain for kube-router")
    tx.flush_chain(nm.COMMON_CHAIN)
    tx.add_rule(nm.COMMON_CHAIN, "ct state invalid counter drop", "drop invalid state")
    tx.add_rule(nm.COMMON_CHAIN, "ct state established,related counter accept", "accept established/related")
    for proto, icmp_type in COMMON_ICMP:
        tx.add_rule(nm.COMMON_CHAIN, f"{proto} type {icmp_type} counter accept", f"allow icmp {icmp_type} messages")
    return tx


def ensure_tail_chain(default_deny: bool, pod_cidrs: list[str]) -> Tx:
    """npc_nftables.go ensureDefaultTailChain + populateDefaultTailChain: KUBE-NWPLCY-TAIL (flushed,
    refilled) and the kube-router-local-pods set (added, never flushed here)."""
    tx = Tx("ensureDefaultTailChain")
    tx.add_chain(nm.TAIL_CHAIN, nm.TAIL_CHAIN + " chain for kube-router")
    tx.flush_chain(nm.TAIL_CHAIN)
    tx.add_set(nm.LOCAL_PODS_SET, "ipv4_addr", "programmed local pod IPs")
    if default_deny:
        for cidr in pod_cidrs:
            for d in ("saddr", "daddr"):
                tx.add_rule(nm.TAIL_CHAIN, f"ip {d} {cidr} ip {d} != @{nm.LOCAL_PODS_SET} counter reject",
                            "reject unprogrammed local pod (default-deny)")
    tx.add_rule(nm.TAIL_CHAIN, MARK_ACCEPT_RULE, "accept netpol-ok")
    if default_deny:
        for cidr in pod_cidrs:
            for d in ("saddr", "daddr"):
                tx.add_rule(nm.TAIL_CHAIN, f"ip {d} {cidr} counter reject", "reject pre-netpol (default-deny)")
    return tx


# ------------------------------------------------------------------------------------------
# Policy chains: syncNetworkPolicyChains, one transaction per policy
# ------------------------------------------------------------------------------------------
def _h(*parts: str) -> str:
    return nm.kr_hash("".join(parts))


def ipblock_chain(namespace: str, policy: str, rule: int, direction: str) -> str:
    """nftIndexed{Source,Destination}IPBlockChainName: the per-rule except sub-chain (no version)."""
    return nm.POLICY_CHAIN_PREFIX + _h(namespace, policy, f"{direction}rule", str(rule), HASH_FAMILY, "ipblockchain")


def ipblock_except_set(namespace: str, policy: str, rule: int, direction: str) -> str:
    """nftIndexed{Source,Destination}IPBlockExceptSetName."""
    prefix = nm.SRC_SET_PREFIX if direction == "ingress" else nm.DST_SET_PREFIX
    return prefix + _h(namespace, policy, f"{direction}rule", str(rule), HASH_FAMILY, "ipblockexcept")


def policy_rule(src_set: str, dst_set: str, protocol: str, port: str, end_port: str) -> str:
    """npc_nftables.go appendRuleToPolicyChainNft: the match words, ``counter``, mark 0x10000 and
    return (one rule where iptables has MARK + RETURN). No protocol with a port means TCP; a
    protocol without a port is ``meta l4proto <p>``."""
    parts: list[str] = []
    if src_set:
        parts += ["ip saddr", "@" + src_set]
    if dst_set:
        parts += ["ip daddr", "@" + dst_set]
    proto = protocol.lower()
    if not proto and port:
        proto = "tcp"
    if proto:
        parts += [proto] if port else ["meta l4proto", proto]
    if port:
        parts += ["dport", f"{port}-{end_port}" if end_port else port]
    parts += ["counter", "meta mark set meta mark or 0x10000", "return"]
    return " ".join(parts)


class _PolicyTx:
    """The builder of one policy's transaction (syncNetworkPolicyChains' per-policy body)."""

    def __init__(self, index: ClusterIndex, info: _PolicyInfo, version: str, out: NftSync):
        self.index, self.info, self.out = index, info, out
        pol = info.policy
        self.ns, self.name = pol.namespace, pol.name
        self.chain = nm.policy_chain(self.ns, self.name, version, HASH_FAMILY)
        self.tx = Tx("syncNetworkPolicyChains")

    def rule(self, chain: str, kind: str, src: str, dst: str, proto: str, port: str, end: str) -> None:
        self.tx.add_rule(chain, policy_rule(src, dst, proto, port, end), id_comment(self.ns, self.name, kind))

    def ip_set(self, name: str, entries: list[str]) -> None:
        """nftAddOrReplaceIPSet: declare, flush, one element per entry."""
        self.out.active_sets.add(name)
        self.tx.add_set(name, "ipv4_addr", "netpol set")
        self.tx.flush_set(name)
        for e in entries:
            self.tx.add_element(name, e)
        self.out.set_entries[name] = list(entries)

    def pod_set(self, name: str, idxs) -> None:
        self.ip_set(name, self.index.entries(tuple(idxs)))

    def ipblock_set(self, name: str, except_name: str, entries: list[str]) -> bool:
        """nftAddOrReplaceIPBlockSet: an interval set of the CIDRs; the ``nomatch`` ones go into a
        second interval set (created only when there are some). True when it was."""
        self.out.active_sets.add(name)
        self.tx.add_set(name, "ipv4_addr", "netpol ipblock set", interval=True)
        self.tx.flush_set(name)
        include, excepts = [], []
        for e in entries:
            words = e.split()
            (excepts if words[-1] == "nomatch" else include).append(words[0])
        for cidr in include:
            self.tx.add_element(name, cidr)
        self.out.set_entries[name] = include
        if not excepts:
            return False
        self.tx.add_set(except_name, "ipv4_addr", "netpol ipblock except set", interval=True)
        self.tx.flush_set(except_name)
        for cidr in excepts:
            self.tx.add_element(except_name, cidr)
        self.out.set_entries[except_name] = excepts
        return True

    def except_chain(self, rule_idx: int, direction: str, except_set: str) -> str:
        """The ipBlock except sub-chain and the policy chain's jump into it."""
        sub = ipblock_chain(self.ns, self.name, rule_idx, direction)
        self.out.active_sets.add(except_set)
        self.out.active_policy_chains.add(sub)
        self.tx.add_chain(sub)
        self.tx.flush_chain(sub)
        d = "saddr" if direction == "ingress" else "daddr"
        self.tx.add_rule(sub, f"ip {d} @{except_set} counter return",
                         id_comment(self.ns, self.name, "except-src" if direction == "ingress" else "except-dst"))
        self.tx.add_rule(self.chain, f"counter jump {sub}", id_comment(self.ns, self.name, "ipblock"))
        return sub

    def pod_match(self, rule_idx: int, pod_set: str, counter_set: str, r, np_set_fn, ingress: bool) -> None:
        """nftAddPodMatchRules."""
        src, dst = (pod_set, counter_set) if ingress else (counter_set, pod_set)
        kind = "ingress pods" if ingress else "egress pods"
        for proto, port, end in r.ports:
            self.rule(self.chain, kind, src, dst, proto, port, end)
        for ep_i, ep in enumerate(r.named):
            np_set = np_set_fn(self.ns, self.name, rule_idx, ep_i, HASH_FAMILY)
            self.pod_set(np_set, ep.pods)
            self.rule(self.chain, kind + " np", src, np_set, ep.protocol, ep.port, "")
        if not r.ports and not r.named:
            self.rule(self.chain, kind, src, dst, "", "", "")

    def ingress(self, target_dst: str) -> None:
        """processIngressRulesNft."""
        ns, name = self.ns, self.name
        for i, r in enumerate(self.info.ingress):
            if r.pods:
                src = nm.ingress_pod_set(ns, name, i, HASH_FAMILY)
                self.pod_set(src, r.pods)
                self.pod_match(i, src, target_dst, r, nm.ingress_named_port_set, True)
            if r.match_all_peers and not r.match_all_ports:
                for proto, port, end in r.ports:
                    self.rule(self.chain, "ingress any", "", target_dst, proto, port, end)
                for ep_i, ep in enumerate(r.named):
                    np_set = nm.ingress_named_port_set(ns, name, i, ep_i, HASH_FAMILY)
                    self.pod_set(np_set, ep.pods)
                    self.rule(self.chain, "ingress any np", "", np_set, ep.protocol, ep.port, "")
            if r.match_all_peers and r.match_all_ports:
                self.rule(self.chain, "ingress any", "", target_dst, "", "", "")
            if r.ip_blocks:
                blk = nm.ingress_ipblock_set(ns, name, i, HASH_FAMILY)
                exc = ipblock_except_set(ns, name, i, "ingress")
                chain = self.chain
                if self.ipblock_set(blk, exc, r.ip_blocks):
                    chain = self.except_chain(i, "ingress", exc)
                if not r.match_all_ports:
                    for proto, port, end in r.ports:
                        self.rule(chain, "ingress cidr", blk, target_dst, proto, port, end)
                    for ep_i, ep in enumerate(r.named):
                        np_set = nm.ingress_named_port_set(ns, name, i, ep_i, HASH_FAMILY)
                        self.pod_set(np_set, ep.pods)
                        self.rule(chain, "ingress cidr np", blk, np_set, ep.protocol, ep.port, "")
                else:
                    self.rule(chain, "ingress cidr", blk, target_dst, "", "", "")

    def egress(self, target_src: str) -> None:
        """processEgressRulesNft."""
        ns, name = self.ns, self.name
        for i, r in enumerate(self.info.egress):
            if r.pods:
                dst = nm.egress_pod_set(ns, name, i, HASH_FAMILY)
                self.pod_set(dst, r.pods)
                self.pod_match(i, dst, target_src, r, nm.egress_named_port_set, False)
            if r.match_all_peers and not r.match_all_ports:
                for proto, port, end in r.ports:
                    self.rule(self.chain, "egress any", target_src, "", proto, port, end)
                for ep in r.named:  # all destinations: the resolved port number alone, no set
                    self.rule(self.chain, "egress any np", target_src, "", ep.protocol, ep.port, "")
            if r.match_all_peers and r.match_all_ports:
                self.rule(self.chain, "egress any", target_src, "", "", "", "")
            if r.ip_blocks:
                blk = nm.egress_ipblock_set(ns, name, i, HASH_FAMILY)
                exc = ipblock_except_set(ns, name, i, "egress")
                chain = self.chain
                if self.ipblock_set(blk, exc, r.ip_blocks):
                    chain = self.except_chain(i, "egress", exc)
                if not r.match_all_ports:
                    for proto, port, end in r.ports:
                        self.rule(chain, "egress cidr", target_src, blk, proto, port, end)
                else:
                    self.rule(chain, "egress cidr", target_src, blk, "", "", "")


def policy_transaction(index: ClusterIndex, info: _PolicyInfo, version: str, out: NftSync,
                       *, target_sets: bool = True) -> Tx:
    """syncNetworkPolicyChains' transaction of one policy: its chain (comment ``netpol ns/name``),
    the target set(s) and the rules of its ingress and egress sections. ``target_sets=False``
    reproduces kube-router's own unit test (npc_nftables_test.go TestNetworkPolicyBuilderNft),
    which hands the rule processors an empty target set name."""
    b = _PolicyTx(index, info, version, out)
    pol = info.policy
    out.active_policy_chains.add(b.chain)
    b.tx.add_chain(b.chain, clamp_comment(f"netpol {pol.namespace}/{pol.name}"))
    b.tx.flush_chain(b.chain)
    if info.policy_type in ("both", "ingress"):
        target_dst = ""
        if target_sets:
            target_dst = nm.policy_dst_set(pol.namespace, pol.name, HASH_FAMILY)
            b.pod_set(target_dst, info.targets)
        b.ingress(target_dst)
    if info.policy_type in ("both", "egress"):
        target_src = ""
        if target_sets:
            target_src = nm.policy_src_set(pol.namespace, pol.name, HASH_FAMILY)
            b.pod_set(target_src, info.targets)
        b.egress(target_src)
    return b.tx


# ------------------------------------------------------------------------------------------
# Pod chains and the top-level chains
# ------------------------------------------------------------------------------------------
def pod_transaction(pod: Pod, mine: list[tuple[_PolicyInfo, str]], version: str,
                    failed: set[str] | frozenset[str] = frozenset()) -> Tx:
    """syncPodFirewallChains' transaction of one local pod: COMMON jump, local-node accept, a jump
    per selecting policy (``-d``/``-s`` for ingress/egress-only ones), DEFAULT jumps for an
    uncovered direction (egress first), NFLOG + REJECT of what no policy marked, mark juggling.
    A policy chain in ``failed`` (its transaction failed this sync) still covers its direction
    but gets no jump: the pod fails closed for it."""
    ip = str(pod.ip)
    chain = nm.pod_chain(pod.namespace, pod.name, version)
    tx = Tx("syncPodFirewallChains")
    tx.add_chain(chain, clamp_comment(f"podfw {pod.namespace}/{pod.name}"))
    tx.flush_chain(chain)
    tx.add_rule(chain, f"counter jump {nm.COMMON_CHAIN}", "common netpol rules")
    tx.add_rule(chain, f"fib saddr type local ip daddr {ip} counter accept", "from local node")
    has_in = has_eg = False
    for info, pchain in mine:
        comment = id_comment(info.policy.namespace, info.policy.name, "policy")
        if info.policy_type == "both":
            has_in = has_eg = True
            match = ""
        elif info.policy_type == "ingress":
            has_in = True
            match = f"ip daddr {ip} "
        else:
            has_eg = True
            match = f"ip saddr {ip} "
        if pchain not in failed:
            tx.add_rule(chain, f"{match}counter jump {pchain}", comment)
    if not has_eg:
        tx.add_rule(chain, f"ip saddr {ip} counter jump {nm.DEFAULT_CHAIN}", "default egress")
    if not has_in:
        tx.add_rule(chain, f"ip daddr {ip} counter jump {nm.DEFAULT_CHAIN}", "default ingress")
    tx.add_rule(chain, "meta mark and 0x10000 == 0x0 limit rate 10/minute burst 10 packets log group 100",
                id_comment(pod.namespace, pod.name, "log-drop"))
    tx.add_rule(chain, "meta mark and 0x10000 == 0x0 counter reject", id_comment(pod.namespace, pod.name, "reject"))
    tx.add_rule(chain, "meta mark set meta mark and 0xfffeffff", "clear netpol mark")
    tx.add_rule(chain, "meta mark set meta mark or 0x20000", "set netpol-ok mark")
    return tx


def populate_protected(ips: list[str]) -> Tx:
    """npc_nftables.go populateProtectedPodsIPSet (default deny only): flush + refill in one tx."""
    tx = Tx("populateProtectedPodsIPSet")
    tx.flush_set(nm.LOCAL_PODS_SET)
    for ip in ips:
        tx.add_element(nm.LOCAL_PODS_SET, ip)
    return tx


def top_level_transaction(jumps: list[tuple[Pod, str]], *, service_ranges: list[str],
                          node_port_range: str = DEFAULT_NODE_PORT_RANGE,
                          external_ranges: list[str] = (), lb_ranges: list[str] = ()) -> Tx:
    """npc_nftables.go syncTopLevelChainsAtomic: the three base chains added and flushed, the
    KUBE-ROUTER-INPUT exemptions (cluster IP, node ports per protocol, external and LB IP ranges),
    per pod a ``daddr`` jump in FORWARD and OUTPUT and a ``saddr`` jump in all three, then the
    TAIL jump and the 0x20000 accept in each, in one transaction."""
    tx = Tx("syncTopLevelChainsAtomic")
    for chain, hook in TOP_LEVEL_HOOKS:
        tx.add_chain(chain, f"top level {chain} chain for kube-router", hook)
        tx.flush_chain(chain)
    for r in service_ranges:
        tx.add_rule(nm.INPUT_CHAIN, f"ip daddr {r} counter return", "allow cluster IP range")
    ports = node_port_range.replace(":", "-")  # nftablesNodePortRange
    for proto in ("tcp", "udp", "sctp"):
        tx.add_rule(nm.INPUT_CHAIN, f"meta l4proto {proto} fib daddr type local {proto} dport {ports} counter return",
                    f"allow {proto} nodeport")
    for r in external_ranges:
        tx.add_rule(nm.INPUT_CHAIN, f"ip daddr {r} counter return", "allow traffic to External IP range")
    for r in lb_ranges:
        tx.add_rule(nm.INPUT_CHAIN, f"ip daddr {r} counter return", "allow LB IP range")
    for pod, chain in jumps:
        ip = str(pod.ip)
        into = id_comment(pod.namespace, pod.name, "in")
        out = id_comment(pod.namespace, pod.name, "out")
        tx.add_rule(nm.FORWARD_CHAIN, f"ip daddr {ip} counter jump {chain}", into)
        tx.add_rule(nm.OUTPUT_CHAIN, f"ip daddr {ip} counter jump {chain}", into)
        for top, _hook in TOP_LEVEL_HOOKS:  # defaultChains (a Go map)
            tx.add_rule(top, f"ip saddr {ip} counter jump {chain}", out)
    for top, _hook in TOP_LEVEL_HOOKS:
        tx.add_rule(top, f"counter jump {nm.TAIL_CHAIN}", "netpol accept/reject")
    for top, _hook in TOP_LEVEL_HOOKS:
        tx.add_rule(top, MARK_ACCEPT_RULE, "accept netpol-ok")
    return tx


# ------------------------------------------------------------------------------------------
# The whole sync
# ------------------------------------------------------------------------------------------
def render_sync(cluster: Cluster, node_name: str, *, profile: str = "v2.11.1", sync_version: int,
                default_deny: bool = False, service_cluster_ip_range: str = DEFAULT_SERVICE_RANGE,
                node_port_range: str = DEFAULT_NODE_PORT_RANGE, index: ClusterIndex | None = None) -> NftSync:
    """Every transaction fullPolicySync (v2.11.1:npc_nftables.go) runs on ``node_name`` for the sync
    with ``sync_version``, up to (not including) the stale-object GC, which depends on what the
    kernel holds (``gc_plan``). ``startup`` holds initTable and ensureTopLevelChains (once per
    process, before the first sync)."""
    if profile not in NFT_PROFILES:
        raise ConfigError(None, "profile", f"the nftables datapath needs profile v2.11.1 (--use-nftables-for-netpol "
                          f"arrives in v2.11.0), not {profile}")
    if node_name not in cluster.nodes:
        raise ConfigError(cluster.source, "node", f"unknown node {node_name!r}")
    prof = semantics_profile(profile)
    if index is None or index.cluster is not cluster:
        index = ClusterIndex(cluster, prof)
    version = str(sync_version)
    out = NftSync(node_name, profile, int(sync_version), startup=[init_table(), ensure_top_level_chains()])
    pod_cidr = str(cluster.nodes[node_name].pod_cidr)
    out.transactions += [ensure_default_chain(), ensure_common_chain(), ensure_tail_chain(default_deny, [pod_cidr])]

    policies = sorted(cluster.policies.values(), key=lambda p: (p.namespace, p.name))
    infos = [_build_policy_info(index, p, prof) for p in policies]
    chains = [nm.policy_chain(i.policy.namespace, i.policy.name, version, HASH_FAMILY) for i in infos]
    out.transactions += [policy_transaction(index, info, version, out) for info in infos]
    out.policy_chain_order = chains

    out.target_ips = [{index.ips[t] for t in info.targets} for info in infos]
    out.infos = infos
    out.default_deny, out.service_ranges, out.node_port_range = default_deny, [service_cluster_ip_range], node_port_range
    out.pods_view = cluster
    out.transactions += pod_phase(out, cluster)
    return out


def pod_phase(sync: NftSync, pods_view: Cluster, failed: set[str] | frozenset[str] = frozenset()) -> list[Tx]:
    """The transactions after the policies: one per local pod of ``pods_view`` (syncPodFirewallChains,
    which lists the local pods itself: getLocalPods), kube-router-local-pods (default deny) and the
    atomic top level, with the policy targets of the sync's own listing (``policy.targetPods[pod.ip]``:
    a pod only ``pods_view`` knows gets DEFAULT jumps). Pod chains jump to no chain in ``failed``
    (fail closed). Resets the sync's pod chains and pod inputs (the GC keeps what this returns)."""
    prof = semantics_profile(sync.profile)
    version = str(sync.sync_version)
    local = sorted((p for p in pods_view.pods.values() if p.node == sync.node and netpol_actionable(p, prof)),
                   key=lambda p: (p.namespace, p.name))
    sync.active_pod_chains, sync.pod_inputs, sync.pods_view = set(), [], pods_view
    txs: list[Tx] = []
    jumps: list[tuple[Pod, str]] = []
    for pod in local:
        ip = str(pod.ip)
        mine = [(info, c) for info, c, ips in zip(sync.infos, sync.policy_chain_order, sync.target_ips, strict=True)
                if ip in ips]
        chain = nm.pod_chain(pod.namespace, pod.name, version)
        sync.active_pod_chains.add(chain)
        txs.append(pod_transaction(pod, mine, version, failed))
        sync.pod_inputs.append((pod, mine))
        jumps.append((pod, chain))
    if sync.default_deny:
        ips = sorted((str(p.ip) for p in local), key=ipaddress.IPv4Address)
        txs.append(populate_protected(ips))
        sync.set_entries[nm.LOCAL_PODS_SET] = ips
    txs.append(top_level_transaction(jumps, service_ranges=sync.service_ranges, node_port_range=sync.node_port_range))
    return txs


def with_pod_phase(sync: NftSync, txs: list[Tx]) -> None:
    """Replace the sync's pod-phase transactions (``pod_phase``'s steps) by ``txs``."""
    keep = [t for t in sync.transactions if t.step not in POD_PHASE_STEPS]
    sync.transactions = keep + txs


POD_PHASE_STEPS = ("syncPodFirewallChains", "populateProtectedPodsIPSet", "syncTopLevelChainsAtomic")


def gc_plan(sync: NftSync, chains: list[str], sets: list[str]) -> tuple[list[Tx], list[Tx]]:
    """What gcPodFwChainsNft and gcPolicyObjectsNft (v2.11.1:npc_nftables.go, via gcStaleChainsNft)
    run against a table listing ``chains``/``sets``: per group one transaction flushing every
    stale chain, then one delete transaction per chain; one delete per stale set. Returns
    (pod-fw transactions, policy transactions)."""
    def chains_gc(stale: list[str], step: str) -> list[Tx]:
        if not stale:
            return []
        flush = Tx(step)
        for c in stale:
            flush.flush_chain(c)
        out = [flush]
        for c in stale:
            d = Tx(step)
            d.delete_chain(c)
            out.append(d)
        return out

    helpers = {nm.DEFAULT_CHAIN, nm.COMMON_CHAIN, nm.TAIL_CHAIN}
    stale_pods = [c for c in chains if c.startswith(nm.POD_FW_PREFIX) and c not in sync.active_pod_chains]
    stale_pol = [c for c in chains if c.startswith(nm.POLICY_CHAIN_PREFIX) and c not in helpers
                 and c not in sync.active_policy_chains]
    pol_txs = chains_gc(stale_pol, "gcPolicyObjectsNft")
    for s in sets:
        if (s.startswith(nm.SRC_SET_PREFIX) or s.startswith(nm.DST_SET_PREFIX)) and s not in sync.active_sets:
            d = Tx("gcPolicyObjectsNft")
            d.delete_set(s)
            pol_txs.append(d)
    return chains_gc(stale_pods, "gcPodFwChainsNft"), pol_txs


def cleanup() -> Tx:
    """npc_nftables.go Cleanup: delete the table (what the iptables controller runs at its start)."""
    tx = Tx("Cleanup")
    tx.delete_table()
    return tx


def dump(sync: NftSync) -> str:
    """The sync's transactions as one text (each headed by the kube-router function that runs it),
    startup first: for goldens and people. Each block is one ``nft -f -`` input."""
    out = [f"# kube-router {sync.profile} nftables datapath, node {sync.node}, sync version {sync.sync_version}",
           f"# {len(sync.transactions)} transactions, {sync.rule_count} rules, {len(sync.set_entries)} sets, "
           f"{sync.set_entry_count} elements"]
    for label, txs in (("startup", sync.startup), ("sync", sync.transactions)):
        for tx in txs:
            out.append(f"# --- {label}: {tx.step}")
            out.extend(tx.lines)
    return "\n".join(out) + "\n"

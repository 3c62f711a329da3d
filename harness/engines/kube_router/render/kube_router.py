"""kube-router's network policy layout for one node, as pure data (a ``Ruleset``).

Reproduces what kube-router's iptables network policy controller programs in a full sync
(cloudnativelabs/kube-router, pkg/controllers/netpol: network_policy_controller.go,
policy.go, pod.go, utils.go; pkg/utils/iptables.go): the top-level chains and their jumps,
one ``KUBE-POD-FW-`` chain per local pod, one ``KUBE-NWPLCY-`` chain per policy of the
*whole* cluster (kube-router syncs every policy's chain and sets on every node), the helper
chains, and the ipsets with the addresses of every matching pod of the cluster.

Rules are the argument strings kube-router writes after ``-A <chain>`` into its
iptables-restore text (comments quoted as kube-router quotes them). Each chain holds its
*final* order: kube-router writes many rules with ``-I <chain> 1``, which reverses them.

Where kube-router iterates a Go map (listers, named-port resolutions) its order is random;
here it is fixed: pods by ``namespace/name``, policies by ``namespace/name``, set entries by
address, named-port resolutions by port number. Everything else follows the source.

Provenance of the text (see ``profiles.py`` for what differs per profile):
- comments are the long ones (``"rule to ACCEPT traffic from source pods ..."``) up to v2.10.0;
  v2.11.0 (comments.go) shortened the pod, jump and policy-rule ones to ``"<ns>/<name> <kind>"``
  (``id_comment``) and froze the top-level/helper ones (rule identity for AppendUnique);
- ``COMMON_JUMP_COMMENT``, the KUBE-NWPLCY-COMMON rules and ``COMMON_ICMP_RULES`` follow
  v2.6.3/v2.10.0 pod.go, network_policy_controller.go (ensureCommonPolicyChain) and
  pkg/utils/iptables.go (CommonICMPRules);
- set entries carry ``timeout 0`` (``add S 10.0.0.1 timeout 0``, ``... timeout 0 nomatch``) and a set
  the sync creates has the options ``timeout 0`` after its type, as kube-router writes them
  (policy.go, pkg/utils/ipset.go RefreshSet, at every tag reproduced).
"""

from __future__ import annotations

import ipaddress
import logging
import unicodedata
from dataclasses import dataclass, field

from harness.engines.kube_router.render import naming as nm
from harness.engines.kube_router.render.profiles import Profile, get_profile
from harness.engines.kube_router.render.ruleset import Call, Chain, IPSetSpec, Ruleset
from harness.errors import ConfigError
from harness.model.cluster import Cluster, Pod
from harness.model.dualstack import family_view
from harness.model.policy import LabelSelector, NetworkPolicy, PolicyPeer, PolicyPort

log = logging.getLogger(__name__)

MARK_OK = "0x10000/0x10000"  # a policy (or the default chain) accepted the packet
MARK_ACCEPT = "0x20000/0x20000"  # the pod chain passed the packet: accept at the top level
NFLOG_ARGS = "-j NFLOG --nflog-group 100 -m limit --limit 10/minute --limit-burst 10"

# kube-router's defaults for --service-cluster-ip-range and --service-node-port-range.
DEFAULT_SERVICE_RANGE = "10.96.0.0/12"
DEFAULT_NODE_PORT_RANGE = "30000:32767"

# utils.CommonICMPRules(IPv4), the ICMP accepts of KUBE-NWPLCY-COMMON (v2.6.3:pkg/utils/iptables.go
# CommonICMPRules; v2.10.0 moved the comments to constants with the same text). Added with the
# iptables command and a comment without quote characters.
COMMON_ICMP_RULES = (
    ("echo-request", "allow icmp echo requests"),
    ("destination-unreachable", "allow icmp destination unreachable messages"),
    ("time-exceeded", "allow icmp time exceeded messages"),
)
# Comment of the pod chain's jump to KUBE-NWPLCY-COMMON (v2.6.3:pkg/controllers/netpol/pod.go and
# v2.10.0:pod.go setupPodNetpolRules).
# CommonICMPRules(IPv6) (v2.10.0:pkg/utils/iptables.go): the same three as ipv6-icmp/--icmpv6-type, then
# neighbour discovery and echo replies ("without them pods will not communicate properly over IPv6").
COMMON_ICMP6_RULES = COMMON_ICMP_RULES + (
    ("neighbor-solicitation", "allow icmp neighbor solicitation messages"),
    ("neighbor-advertisement", "allow icmp neighbor advertisement messages"),
    ("echo-reply", "allow icmp echo reply messages"),
)
COMMON_JUMP_COMMENT = "common bi-directional traffic policy rules"
# ensureCommonPolicyChain (v2.6.3, v2.10.0:network_policy_controller.go) hands the iptables command
# comments that already carry quote characters (``"\"rule to drop invalid state for pod\""``), so the
# kernel stores them quoted and iptables-save prints them escaped; reproduced in restore form.
COMMON_INVALID_COMMENT = '"rule to drop invalid state for pod"'
COMMON_STATEFUL_COMMENT = '"rule for stateful firewall for pod"'
# populateDefaultTailChain (v2.10.0:network_policy_controller.go): the accept keeps the old
# explicit-ACCEPT text; the --netpol-default-deny REJECTs (appendIPSetGatedRejects, appendCIDRRejects).
TAIL_ACCEPT_COMMENT = "rule to explicitly ACCEPT traffic that comply to network policies"
TAIL_GATED_COMMENT = ("REJECT traffic to/from local pods without a programmed firewall chain "
                      "(--netpol-default-deny is enabled)")
TAIL_PRE_NETPOL_COMMENT = "REJECT traffic before NetPol is applied (--netpol-default-deny is enabled)"

# What kube-router appends to every set entry it writes (policy.go: utils.OptionTimeout, "0") and the
# options after the type of a set it creates (pkg/utils/ipset.go RefreshSet).
ENTRY_OPTIONS = "timeout 0"
NEW_SET_OPTIONS = "timeout 0"

REJECT_WITH = (None, "icmp-port-unreachable", "tcp-reset")


def _q(comment: str) -> str:
    """A comment as kube-router writes it into restore text: always double-quoted."""
    return f'"{comment}"'


def _q_quoted(comment: str) -> str:
    """A comment that itself contains quote characters, in restore form (as iptables-save prints
    it: the inner quotes escaped)."""
    return '"' + comment.replace('\\', '\\\\').replace('"', '\\"') + '"'


# v2.11.0+:pkg/controllers/netpol/comments.go maxCommentLen (nftables' 128-byte limit, shared by
# the iptables path) and the kind tags idComment appends.
MAX_COMMENT_LEN = 120
# v2.11.1:pkg/controllers/netpol/npc_iptables.go populateDefaultTailChain, appendIPSetGatedRejects,
# appendCIDRRejects
TAIL_ACCEPT_COMMENT_V211 = "accept netpol-ok"
TAIL_GATED_COMMENT_V211 = "reject unprogrammed local pod (default-deny)"
TAIL_PRE_NETPOL_COMMENT_V211 = "reject pre-netpol (default-deny)"


def id_comment(namespace: str, name: str, kind: str) -> str:
    """v2.11.0+ comments.go ``idComment``: ``"<namespace>/<name> <kind>"`` without control
    characters (sanitizeForComment), cut at ``MAX_COMMENT_LEN`` bytes (clampComment)."""
    s = "".join(ch for ch in f"{namespace}/{name} {kind}" if unicodedata.category(ch) != "Cc")  # unicode.IsControl
    return s.encode()[:MAX_COMMENT_LEN].decode(errors="ignore")


# ------------------------------------------------------------------------------------------
# Cluster index: label -> pods, computed once per render so selectors never scan all pods.
# ------------------------------------------------------------------------------------------
# isFinished (v2.10.0:pkg/controllers/netpol/utils.go): api.PodFailed, api.PodSucceeded, PodCompleted
FINISHED_PHASES = frozenset({"Failed", "Succeeded", "Completed"})


def netpol_actionable(pod: Pod | None, profile: str | Profile = "v2.10.0") -> bool:
    """Whether kube-router (``profile``) programs ``pod``: isNetPolActionable (v1.2.3+: a PodIP,
    not finished, not hostNetwork; v2.10.0:pkg/controllers/netpol/utils.go, used by
    syncPodFirewallChains and buildNetworkPoliciesInfo); before v1.2.3 only ``PodIP != ""``
    (v1.2.2:pkg/controllers/netpol/pod.go, policy.go)."""
    if pod is None or pod.ip is None:
        return False
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    if not prof.netpol_actionable:
        return True
    return pod.phase not in FINISHED_PHASES and not pod.host_network


class ClusterIndex:
    """Pods that kube-router acts on (``netpol_actionable`` under ``profile``), indexed by
    namespace and label.

    Pod indices follow address order, so a sorted tuple of indices is a sorted address list."""

    def __init__(self, cluster: Cluster, profile: str | Profile = "v2.10.0"):
        prof = profile if isinstance(profile, Profile) else get_profile(profile)
        self.actionable_only = prof.netpol_actionable
        pods = [p for p in cluster.pods.values() if netpol_actionable(p, prof)]
        pods.sort(key=lambda p: int(p.ip))  # type: ignore[arg-type]
        self.cluster = cluster
        self.pods: list[Pod] = pods
        self.ips: list[str] = [str(p.ip) for p in pods]
        self.by_ns: dict[str, list[int]] = {}
        self.by_label: dict[tuple[str, str, str], list[int]] = {}
        for i, p in enumerate(pods):
            self.by_ns.setdefault(p.namespace, []).append(i)
            for k, v in p.labels.items():
                self.by_label.setdefault((p.namespace, k, v), []).append(i)
        names = set(cluster.namespaces) | set(self.by_ns)
        self.namespaces = sorted(names)
        self._pod_cache: dict[tuple[str, LabelSelector], tuple[int, ...]] = {}
        self._ns_cache: dict[LabelSelector, tuple[str, ...]] = {}
        self.named_port_cache: dict[tuple[int, ...], dict] = {}  # filled by _named_ports_of

    def select_pods(self, namespace: str, selector: LabelSelector) -> tuple[int, ...]:
        """Indices of the pods of ``namespace`` the selector matches (ascending)."""
        key = (namespace, selector)
        hit = self._pod_cache.get(key)
        if hit is not None:
            return hit
        if selector.match_labels:
            lists = [self.by_label.get((namespace, k, v), ()) for k, v in selector.match_labels]
            candidates = min(lists, key=len)
        else:
            candidates = self.by_ns.get(namespace, ())
        if selector.match_expressions or len(selector.match_labels) > 1:
            pods = self.pods
            out = tuple(i for i in candidates if selector.matches(pods[i].labels))
        else:
            out = tuple(candidates)
        self._pod_cache[key] = out
        return out

    def select_namespaces(self, selector: LabelSelector) -> tuple[str, ...]:
        """Names of the namespaces whose labels the selector matches."""
        hit = self._ns_cache.get(selector)
        if hit is None:
            hit = tuple(n for n in self.namespaces if selector.matches(self.cluster.namespace_labels(n)))
            self._ns_cache[selector] = hit
        return hit

    def peer_pods(self, policy: NetworkPolicy, peer: PolicyPeer) -> tuple[int, ...]:
        """kube-router's ``evalPodPeer``: pods a from/to peer selects (none for an ipBlock)."""
        if peer.namespace_selector is not None:
            sel = peer.pod_selector or LabelSelector()
            out: list[int] = []
            for ns in self.select_namespaces(peer.namespace_selector):
                out.extend(self.select_pods(ns, sel))
            return tuple(out)
        if peer.pod_selector is not None:
            return self.select_pods(policy.namespace, peer.pod_selector)
        return ()

    def entries(self, idxs: tuple[int, ...] | list[int]) -> list[str]:
        """Sorted, de-duplicated addresses of the given pods."""
        ips = self.ips
        return [ips[i] for i in sorted(set(idxs))]


# ------------------------------------------------------------------------------------------
# Policy info: kube-router's buildNetworkPoliciesInfo for one policy.
# ------------------------------------------------------------------------------------------
@dataclass
class _NamedEndpoint:
    protocol: str
    port: str
    pods: list[int]


@dataclass
class _Rule:
    match_all_peers: bool
    match_all_ports: bool
    pods: list[int] = field(default_factory=list)
    ip_blocks: list[str] = field(default_factory=list)
    ports: list[tuple[str, str, str]] = field(default_factory=list)  # (protocol, port, endport)
    named: list[_NamedEndpoint] = field(default_factory=list)


# name -> protocol -> port -> endpoint
_NamedPorts = dict[str, dict[str, dict[int, _NamedEndpoint]]]


def _grab_named_ports(pod: Pod, idx: int, table: _NamedPorts) -> None:
    """kube-router's ``grabNamedPortFromPod``: every container port, named or not."""
    for cp in pod.ports:
        by_port = table.setdefault(cp.name or "", {}).setdefault(cp.protocol, {})
        ep = by_port.get(cp.port)
        if ep is None:
            by_port[cp.port] = _NamedEndpoint(cp.protocol, str(cp.port), [idx])
        else:
            ep.pods.append(idx)


def _ip_block_entries(peer: PolicyPeer, family: str = "IPv4") -> list[str]:
    """kube-router's ``evalIPBlockPeer``: cidr, then excepts as ``nomatch``; ``/0`` split in two /1
    (IPv6: ``::/0`` becomes ``2000::/3`` + ``fd00::/8``). Only blocks of ``family`` count: the
    source keeps one entry list per family (v2.10.0:pkg/controllers/netpol/policy.go evalIPBlockPeer)."""
    if peer.pod_selector is not None or peer.namespace_selector is not None or peer.ip_block is None:
        return []
    if peer.ip_block.cidr.version != (6 if family == "IPv6" else 4):
        return []
    out: list[str] = []
    zero = ("2000::/3", "fd00::/8") if family == "IPv6" else ("0.0.0.0/1", "128.0.0.0/1")

    def add(net: ipaddress.IPv4Network | ipaddress.IPv6Network, suffix: str) -> None:
        if net.prefixlen == 0:
            out.extend([f"{zero[0]}{suffix}", f"{zero[1]}{suffix}"])
        else:
            out.append(f"{net}{suffix}")

    # every entry carries "timeout 0" (v1.2.1..v2.10.0:policy.go evalIPBlockPeer: utils.OptionTimeout, "0")
    add(peer.ip_block.cidr, " timeout 0")
    for e in peer.ip_block.except_:
        add(e, " timeout 0 nomatch")
    return out


def _ports(ports: tuple[PolicyPort, ...], named: _NamedPorts, profile: Profile
           ) -> tuple[list[tuple[str, str, str]], list[_NamedEndpoint]]:
    """kube-router's ``processNetworkPolicyPorts``: numeric ports and resolved named ports."""
    numeric: list[tuple[str, str, str]] = []
    resolved: list[_NamedEndpoint] = []
    for p in ports:
        if p.port is None:
            numeric.append((p.protocol, "", ""))
        elif isinstance(p.port, int):
            end = ""
            if profile.end_port and p.end_port is not None and p.end_port >= p.port:
                end = str(p.end_port)
            numeric.append((p.protocol, str(p.port), end))
        else:
            by_port = named.get(p.port, {}).get(p.protocol)
            if by_port:
                resolved.extend(by_port[k] for k in sorted(by_port))
    return numeric, resolved


@dataclass
class _PolicyInfo:
    policy: NetworkPolicy
    policy_type: str  # "ingress", "egress", "both"
    targets: tuple[int, ...]
    ingress: list[_Rule]
    egress: list[_Rule]


def _policy_type(policy: NetworkPolicy) -> str:
    ing, eg = policy.affects_ingress, policy.affects_egress
    if ing and eg:
        return "both"
    if eg:
        return "egress"
    return "ingress"  # kube-router's default when policyTypes lists neither


def _named_ports_of(index: ClusterIndex, idxs: tuple[int, ...]) -> _NamedPorts:
    """``grabNamedPortFromPod`` over ``idxs`` in order, cached per pod group: kube-router does it
    for every selected pod, but only a named-port lookup reads the result, so it is built lazily."""
    cache = index.named_port_cache
    table = cache.get(idxs)
    if table is None:
        table = {}
        for i in idxs:
            _grab_named_ports(index.pods[i], i, table)
        cache[idxs] = table
    return table


def _has_named(ports: tuple[PolicyPort, ...]) -> bool:
    return any(isinstance(p.port, str) for p in ports)


def _build_policy_info(index: ClusterIndex, policy: NetworkPolicy, profile: Profile,
                       family: str = "IPv4") -> _PolicyInfo:
    targets = index.select_pods(policy.namespace, policy.pod_selector)
    ingress_named: _NamedPorts = {}
    if any(_has_named(spec.ports) for spec in policy.ingress):
        ingress_named = _named_ports_of(index, targets)

    ingress: list[_Rule] = []
    for spec in policy.ingress:
        rule = _Rule(match_all_peers=not spec.peers, match_all_ports=not spec.ports)
        for peer in spec.peers:
            rule.pods.extend(index.peer_pods(policy, peer))
            rule.ip_blocks.extend(_ip_block_entries(peer, family))
        if spec.ports:
            rule.ports, rule.named = _ports(spec.ports, ingress_named, profile)
        ingress.append(rule)

    egress: list[_Rule] = []
    for spec in policy.egress:
        rule = _Rule(match_all_peers=not spec.peers, match_all_ports=not spec.ports)
        for peer in spec.peers:
            rule.pods.extend(index.peer_pods(policy, peer))
            rule.ip_blocks.extend(_ip_block_entries(peer, family))
        egress_named: _NamedPorts = {}
        if _has_named(spec.ports):
            # from the peer pods; with no peers ("all destinations, some named port") from every
            # pod of the policy's namespace, as kube-router does
            group = tuple(rule.pods) if spec.peers else index.select_pods(policy.namespace, LabelSelector())
            egress_named = _named_ports_of(index, group)
        if spec.ports:
            rule.ports, rule.named = _ports(spec.ports, egress_named, profile)
        egress.append(rule)
    return _PolicyInfo(policy, _policy_type(policy), targets, ingress, egress)


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------
class _Builder:
    def __init__(self, index: ClusterIndex, profile: Profile, sync_version: int, family: str = "IPv4"):
        self.index = index
        self.profile = profile
        self.version = str(sync_version)
        # the hashed family string: "" before v2, else the family rendered
        self.family = "IPv6" if family == "IPv6" else profile.family
        # RefreshSet adds "family inet6" to a new set of the IPv6 handler (v2.10.0:pkg/utils/ipset.go)
        self.new_set_options = NEW_SET_OPTIONS + (" family inet6" if family == "IPv6" else "")
        self.sets: dict[str, IPSetSpec] = {}
        self._entry_cache: dict[tuple[int, ...], list[str]] = {}
        # v1.1.x (Profile.per_call_sync): every call of syncNetworkPolicyChains, in source order
        self.calls: list[Call] | None = [] if profile.per_call_sync else None
        self._chain = ""
        self._step = ""

    def _call(self, op: str, **kw: object) -> None:
        if self.calls is not None:
            self.calls.append(Call(op, self._step, **kw))  # type: ignore[arg-type]

    def _refresh(self, name: str, set_type: str, entries: list[str], tmp_suffix: str = "-") -> None:
        """kube-router's ``IPSet.RefreshSet``: a set already known keeps its options (type) and
        only gets the new entries; a new one is created with ``set_type``. v1.1.x: the call is
        recorded (v1.1.1:pkg/utils/ipset.go Create + Refresh, tmp ``<name>-``; RefreshWithBuiltinOptions,
        tmp ``<name>-temp``), options as the first Create gave them (``ipSetHandler.Sets`` keeps them)."""
        known = self.sets.get(name)
        self._call("set", set_name=name, set_options=f"{known.type if known else set_type} {NEW_SET_OPTIONS}",
                   entries=tuple(entries), tmp_suffix=tmp_suffix)
        if known is not None:
            known.entries = entries
        else:
            # RefreshSet gives a new set the options [setType, "timeout", "0"] (v1.2.1..v2.10.0:
            # pkg/utils/ipset.go); a set that exists keeps what ipset save prints (restore_text)
            self.sets[name] = IPSetSpec(name, set_type, entries, options=self.new_set_options)

    def set_pods(self, name: str, idxs: tuple[int, ...] | list[int]) -> None:
        """A hash:ip set of the given pods' addresses."""
        key = tuple(idxs)
        entries = self._entry_cache.get(key)
        if entries is None:
            if self.calls is not None:
                # v1.1.1:pkg/utils/ipset.go Refresh adds each entry alone: its extraOptions
                # ("timeout", "0") are never used
                entries = list(self.index.entries(key))
            else:
                entries = [f"{ip} {ENTRY_OPTIONS}" for ip in self.index.entries(key)]
            self._entry_cache[key] = entries
        self._refresh(name, "hash:ip", list(entries))

    def set_nets(self, name: str, entries: list[str]) -> None:
        """A hash:net set (ipBlocks); exact duplicates dropped, order kept."""
        self._refresh(name, "hash:net", list(dict.fromkeys(entries)), tmp_suffix="-temp")

    # -- policy chains (policy.go: syncNetworkPolicyChains, processIngress/EgressRules) --------
    def _rule(self, rules: list[str], comment: str, src: str, dst: str, proto: str, port: str, end: str) -> None:
        """kube-router's appendRuleToPolicyChain: a MARK rule and a RETURN-when-marked rule (v1.1.x:
        each AppendUnique'd, with its own second comment: v1.1.1:network_policy_controller.go)."""
        args = ["-m comment --comment " + _q(comment)]
        if src:
            args.append(f"-m set --match-set {src} src")
        if dst:
            args.append(f"-m set --match-set {dst} dst")
        if proto:
            args.append(f"-p {proto}")
        if port:
            args.append(f"--dport {port}:{end}" if end else f"--dport {port}")
        base = " ".join(args)
        if self.calls is not None:
            mark = (f"{base} -j MARK -m comment --comment {_q('rule to mark traffic matching a network policy')} "
                    f"--set-xmark {MARK_OK}")
            ret = (f"{base} -m comment --comment {_q('rule to RETURN traffic matching a network policy')} "
                   f"-m mark --mark {MARK_OK} -j RETURN")
            for r in (mark, ret):
                rules.append(r)
                self._call("append_unique", chain=self._chain, rule=r)
            return
        rules.append(f"{base} -j MARK --set-xmark {MARK_OK}")
        rules.append(f"{base} -m mark --mark {MARK_OK} -j RETURN")

    def policy_chain(self, info: _PolicyInfo) -> Chain:
        pol = info.policy
        ns, name, fam = pol.namespace, pol.name, self.family
        chain = Chain(nm.policy_chain(ns, name, self.version, fam))
        rules = chain.rules
        self._chain, self._step = chain.name, "syncNetworkPolicyChains"
        self._call("new_chain", chain=chain.name)
        if info.policy_type in ("both", "ingress"):
            target_dst = nm.policy_dst_set(ns, name, fam)
            self._step = "syncNetworkPolicyChains"
            self.set_pods(target_dst, info.targets)
            # processIngressRules returns before iptables.New() when ingressRules is nil (assumed:
            # a policy without ingress rules; the model does not keep nil apart from empty)
            self._step = "processIngressRules"
            if info.ingress:
                self._call("version")
            self._ingress(info, target_dst, rules)
        if info.policy_type in ("both", "egress"):
            target_src = nm.policy_src_set(ns, name, fam)
            self._step = "syncNetworkPolicyChains"
            self.set_pods(target_src, info.targets)
            self._step = "processEgressRules"
            if info.egress:
                self._call("version")
            self._egress(info, target_src, rules)
        return chain

    def _comments(self, pol: NetworkPolicy, direction: str, long: tuple[str, str, str]) -> tuple[str, ...]:
        """The comments of a policy chain's rules: pods, all, ipBlock, then the same three for a
        named port. Before v2.11 the long texts (v2.10.0:policy.go processIngressRules/
        processEgressRules); v2.11.0+ ``polRuleComment`` (comments.go: cmtIngressPods ... + cmtNamedPort)."""
        if not self.profile.short_comments:
            return (*long, *long)
        kinds = [f"{direction} pods", f"{direction} any", f"{direction} cidr"]
        return tuple(id_comment(pol.namespace, pol.name, k) for k in kinds + [k + " np" for k in kinds])

    def _ingress(self, info: _PolicyInfo, target_dst: str, rules: list[str]) -> None:
        pol = info.policy
        ns, name, fam = pol.namespace, pol.name, self.family
        c_pods, c_all, c_blk, n_pods, n_all, n_blk = self._comments(pol, "ingress", (
            f"rule to ACCEPT traffic from source pods to dest pods selected by policy name {name} namespace {ns}",
            f"rule to ACCEPT traffic from all sources to dest pods selected by policy name: {name} namespace {ns}",
            f"rule to ACCEPT traffic from specified ipBlocks to dest pods selected by policy name: "
            f"{name} namespace {ns}"))
        for i, r in enumerate(info.ingress):
            if r.pods:
                src = nm.ingress_pod_set(ns, name, i, fam)
                self.set_pods(src, r.pods)
                for proto, port, end in r.ports:
                    self._rule(rules, c_pods, src, target_dst, proto, port, end)
                for ep_i, ep in enumerate(r.named):
                    np_set = nm.ingress_named_port_set(ns, name, i, ep_i, fam)
                    self.set_pods(np_set, ep.pods)
                    self._rule(rules, n_pods, src, np_set, ep.protocol, ep.port, "")
                if not r.ports and not r.named:
                    self._rule(rules, c_pods, src, target_dst, "", "", "")
            if r.match_all_peers and not r.match_all_ports:
                for proto, port, end in r.ports:
                    self._rule(rules, c_all, "", target_dst, proto, port, end)
                for ep_i, ep in enumerate(r.named):
                    np_set = nm.ingress_named_port_set(ns, name, i, ep_i, fam)
                    self.set_pods(np_set, ep.pods)
                    self._rule(rules, n_all, "", np_set, ep.protocol, ep.port, "")
            if r.match_all_peers and r.match_all_ports:
                self._rule(rules, c_all, "", target_dst, "", "", "")
            if r.ip_blocks:
                blk = nm.ingress_ipblock_set(ns, name, i, fam)
                self.set_nets(blk, r.ip_blocks)
                if not r.match_all_ports:
                    for proto, port, end in r.ports:
                        self._rule(rules, c_blk, blk, target_dst, proto, port, end)
                    for ep_i, ep in enumerate(r.named):
                        np_set = nm.ingress_named_port_set(ns, name, i, ep_i, fam)
                        # kube-router refreshes this named-port set with TypeHashNet here; RefreshSet
                        # keeps the type of a set made above (hash:ip), so only an ipBlock-only rule
                        # gets a hash:net named-port set. Reproduced as is. v1.1.1 Create + Refresh it
                        # as hash:ip (v1.1.1:network_policy_controller.go processIngressRules).
                        if self.calls is not None:
                            self.set_pods(np_set, ep.pods)
                        else:
                            self.set_nets(np_set, [f"{ip} {ENTRY_OPTIONS}" for ip in self.index.entries(ep.pods)])
                        self._rule(rules, n_blk, blk, np_set, ep.protocol, ep.port, "")
                else:
                    self._rule(rules, c_blk, blk, target_dst, "", "", "")

    def _egress(self, info: _PolicyInfo, target_src: str, rules: list[str]) -> None:
        pol = info.policy
        ns, name, fam = pol.namespace, pol.name, self.family
        c_pods, c_all, c_blk, n_pods, n_all, _ = self._comments(pol, "egress", (
            f"rule to ACCEPT traffic from source pods to dest pods selected by policy name {name} namespace {ns}",
            f"rule to ACCEPT traffic from source pods to all destinations selected by policy name: "
            f"{name} namespace {ns}",
            f"rule to ACCEPT traffic from source pods to specified ipBlocks selected by policy name: "
            f"{name} namespace {ns}"))
        for i, r in enumerate(info.egress):
            if r.pods:
                dst = nm.egress_pod_set(ns, name, i, fam)
                self.set_pods(dst, r.pods)
                for proto, port, end in r.ports:
                    self._rule(rules, c_pods, target_src, dst, proto, port, end)
                for ep_i, ep in enumerate(r.named):
                    np_set = nm.egress_named_port_set(ns, name, i, ep_i, fam)
                    self.set_pods(np_set, ep.pods)
                    self._rule(rules, n_pods, target_src, np_set, ep.protocol, ep.port, "")
                if not r.ports and not r.named:
                    self._rule(rules, c_pods, target_src, dst, "", "", "")
            if r.match_all_peers and not r.match_all_ports:
                for proto, port, end in r.ports:
                    self._rule(rules, c_all, target_src, "", proto, port, end)
                # all destinations: the resolved named port number alone, no set (v1.1.1's
                # processEgressRules has numeric ports only in this branch)
                for ep in r.named if self.calls is None else ():
                    self._rule(rules, n_all, target_src, "", ep.protocol, ep.port, "")
            if r.match_all_peers and r.match_all_ports:
                self._rule(rules, c_all, target_src, "", "", "", "")
            if r.ip_blocks:
                blk = nm.egress_ipblock_set(ns, name, i, fam)
                self.set_nets(blk, r.ip_blocks)
                if not r.match_all_ports:
                    for proto, port, end in r.ports:
                        self._rule(rules, c_blk, target_src, blk, proto, port, end)
                else:
                    self._rule(rules, c_blk, target_src, blk, "", "", "")


def _drop_unmarked_rules(pod: Pod, profile: Profile, reject_with: str | None, family: str = "IPv4") -> list[str]:
    """pod.go ``dropUnmarkedTrafficRules`` (v1.2.1..v2.10.0): NFLOG and REJECT what no policy
    marked, clear 0x10000; from v1.3.1 also set 0x20000 for the top-level accept."""
    if profile.short_comments:  # v2.11.0+:pod.go syncPodFirewallChains (cmtLogDrop, cmtReject)
        log_c = _q(id_comment(pod.namespace, pod.name, "log-drop"))
        rej_c = _q(id_comment(pod.namespace, pod.name, "reject"))
    else:
        log_c = _q(f"rule to log dropped traffic POD name:{pod.name} namespace: {pod.namespace}")
        rej_c = _q(f"rule to REJECT traffic destined for POD name:{pod.name} namespace: {pod.namespace}")
    rules = [f"-m comment --comment {log_c} -m mark ! --mark {MARK_OK} {NFLOG_ARGS}"]
    if reject_with == "tcp-reset":
        # Not kube-router: answer TCP with a reset instead of ICMP port-unreachable, to contrast.
        rules.append(f"-p tcp -m comment --comment {rej_c} -m mark ! --mark {MARK_OK} "
                     "-j REJECT --reject-with tcp-reset")
    if reject_with == "icmp-port-unreachable":
        icmp = "icmp6-port-unreachable" if family == "IPv6" else "icmp-port-unreachable"  # ip6tables' name
        rules.append(f"-m comment --comment {rej_c} -m mark ! --mark {MARK_OK} "
                     f"-j REJECT --reject-with {icmp}")
    else:
        rules.append(f"-m comment --comment {rej_c} -m mark ! --mark {MARK_OK} -j REJECT")
    rules.append("-j MARK --set-mark 0/0x10000")
    if profile.mark_accept:
        # v1.3.1:pod.go syncPodFirewallChains ("Mark will be checked to explicitly ACCEPT the traffic")
        # v2.11.0+:pod.go: "set netpol-ok mark"
        mark_c = ("set netpol-ok mark" if profile.short_comments
                  else "set mark to ACCEPT traffic that comply to network policies")
        rules.append(f"-m comment --comment {_q(mark_c)} -j MARK --set-mark {MARK_ACCEPT}")
    return rules


_STATEFUL_COMMENT = "rule for stateful firewall for pod"


def _pod_chain_rules(pod: Pod, chain: str, infos: list[_PolicyInfo], policy_chains: list[str],
                     profile: Profile, reject_with: str | None, family: str = "IPv4") -> list[str]:
    """pod.go ``syncPodFirewallChains``/``setupPodNetpolRules``/``dropUnmarkedTrafficRules``
    (v1.3.1, v1.3.2, v2.6.3, v2.10.0), the layout where every local pod has a chain.

    kube-router inserts the first group with ``-I <chain> 1`` in the order policy jumps, default
    ingress, default egress, local-source accept, [v1.3.2: INVALID drop,] stateful accept (v1.x)
    or COMMON jump (v2.6+); the chain therefore holds them reversed. The drop/mark rules are
    appended (``-A``)."""
    ip = str(pod.ip)
    inserted: list[str] = []  # in kube-router's write order
    has_in = has_eg = False
    short = profile.short_comments  # v2.11.0+:pod.go setupPodNetpolRules
    for info, pchain in zip(infos, policy_chains, strict=True):
        comment = _q(id_comment(info.policy.namespace, info.policy.name, "policy") if short
                     else f"run through nw policy {info.policy.name}")
        if info.policy_type == "both":
            has_in = has_eg = True
            inserted.append(f"-m comment --comment {comment} -j {pchain}")
        elif info.policy_type == "ingress":
            has_in = True
            inserted.append(f"-d {ip} -m comment --comment {comment} -j {pchain}")
        else:
            has_eg = True
            inserted.append(f"-s {ip} -m comment --comment {comment} -j {pchain}")
    sep = profile.default_chain_sep  # two spaces in v1.x, one from v2.0.0
    for missing, flag, direction in ((not has_in, "-d", "ingress"), (not has_eg, "-s", "egress")):
        if missing:
            text = f"default {direction}" if short else f"run through default {direction} network policy{sep}chain"
            inserted.append(f"{flag} {ip} -m comment --comment {_q(text)} -j {nm.DEFAULT_CHAIN}")
    local_c = "from local node" if short else profile.local_accept_comment
    inserted.append(f"-m comment --comment {_q(local_c)} -m addrtype --src-type LOCAL -d {ip} -j ACCEPT")
    if profile.common_chain:
        jump_c = "common netpol rules" if short else COMMON_JUMP_COMMENT
        inserted.append(f"-m comment --comment {_q(jump_c)} -j {nm.COMMON_CHAIN}")
    else:
        if profile.invalid_drop:
            # v1.3.2:pod.go setupPodNetpolRules (kube-router #709: NAT ignores INVALID packets)
            inserted.append(f"-m comment --comment {_q('rule to drop invalid state for pod')} "
                            "-m conntrack --ctstate INVALID -j DROP")
        inserted.append(f"-m comment --comment {_q(_STATEFUL_COMMENT)} "
                        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    return inserted[::-1] + _drop_unmarked_rules(pod, profile, reject_with, family)


class _ChainOps:
    """The final contents of chains written with a mix of ``-I <chain> 1`` and ``-A <chain>``
    lines, as iptables-restore applies them in order (the v1.2 layout inserts and appends
    into the same chains, pod after pod)."""

    def __init__(self) -> None:
        self.chains: dict[str, list[str]] = {}

    def insert(self, chain: str, rule: str) -> None:
        self.chains.setdefault(chain, []).insert(0, rule)

    def append(self, chain: str, rule: str) -> None:
        self.chains.setdefault(chain, []).append(rule)


def _v12_pod_chains(local: list[Pod], selecting: dict[str, list[int]], infos: list[_PolicyInfo],
                    policy_chains: list[str], version: str, profile: Profile, reject_with: str | None,
                    top: dict[str, list[str]]) -> list[Chain]:
    """v1.2.1 (= v1.2.2, v1.2.3) pkg/controllers/netpol/pod.go ``syncPodFirewallChains``.

    Two passes over the local pods: first those an ingress (or both) policy selects
    (``getIngressNetworkPolicyEnabledPods``), then those an egress (or both) policy selects
    (``getEgressNetworkPolicyEnabledPods``); a pod no policy selects gets no chain, so its
    traffic passes the filter table untouched. Each pass inserts at position 1 a jump to every
    policy that selects the pod — without ``-d``/``-s``, whatever the policy type — and the
    stateful accept (the ingress pass also the local-source accept), so a pod both passes
    select holds those rules twice. Inbound jumps are inserted at the top of
    KUBE-ROUTER-FORWARD/-OUTPUT, outbound ones appended (physdev ones inserted). The drop rules
    are written once per chain (the pass checks the buffer for the NFLOG rule). Pods are taken
    in ``namespace/name`` order (kube-router: a Go map)."""
    ops = _ChainOps()
    for c, rules in top.items():
        for r in rules:
            ops.append(c, r)
    order: list[str] = []
    dropped: set[str] = set()

    def pass_(direction: str) -> None:
        for pod in local:
            mine = selecting[pod.namespace + "/" + pod.name]
            if not any(infos[i].policy_type in ("both", direction) for i in mine):
                continue
            chain = nm.pod_chain(pod.namespace, pod.name, version)
            if chain not in ops.chains:
                order.append(chain)
                ops.chains[chain] = []
            ip = str(pod.ip)
            for i in mine:
                comment = _q(f"run through nw policy {infos[i].policy.name}")
                ops.insert(chain, f"-m comment --comment {comment} -j {policy_chains[i]}")
            if direction == "ingress":
                ops.insert(chain, f"-m comment --comment {_q(profile.local_accept_comment)} "
                                  f"-m addrtype --src-type LOCAL -d {ip} -j ACCEPT")
            ops.insert(chain, f"-m comment --comment {_q(_STATEFUL_COMMENT)} "
                              "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
            if direction == "ingress":
                to_c = _q(f"rule to jump traffic destined to POD name:{pod.name} namespace: {pod.namespace} "
                          f"to chain {chain}")
                ops.insert(nm.FORWARD_CHAIN, f"-m comment --comment {to_c} -d {ip} -j {chain}")
                ops.insert(nm.OUTPUT_CHAIN, f"-m comment --comment {to_c} -d {ip} -j {chain}")
                ops.insert(nm.FORWARD_CHAIN,
                           f"-m physdev --physdev-is-bridged -m comment --comment {to_c} -d {ip} -j {chain}")
            else:
                from_c = _q(f"rule to jump traffic from POD name:{pod.name} namespace: {pod.namespace} "
                            f"to chain {chain}")
                for c in (nm.INPUT_CHAIN, nm.FORWARD_CHAIN, nm.OUTPUT_CHAIN):
                    ops.append(c, f"-m comment --comment {from_c} -s {ip} -j {chain}")
                ops.insert(nm.FORWARD_CHAIN,
                           f"-m physdev --physdev-is-bridged -m comment --comment {from_c} -s {ip} -j {chain}")
            if chain not in dropped:
                dropped.add(chain)
                for r in _drop_unmarked_rules(pod, profile, reject_with):
                    ops.append(chain, r)

    pass_("ingress")
    pass_("egress")
    for c in top:
        top[c] = ops.chains.get(c, [])
    return [Chain(name, ops.chains[name]) for name in order]


class _CallOps(_ChainOps):
    """v1.1.x: chains as go-iptables calls leave them, each call recorded. ``-C`` makes every
    insert and append conditional, so a rule is never written twice into a chain."""

    def __init__(self, calls: list[Call], step: str) -> None:
        super().__init__()
        self.calls = calls
        self.step = step

    def new_chain(self, chain: str) -> None:
        self.calls.append(Call("new_chain", self.step, chain=chain))
        self.chains.setdefault(chain, [])

    def insert_if_missing(self, chain: str, rule: str) -> None:
        self.calls.append(Call("insert_if_missing", self.step, chain=chain, rule=rule))
        if rule not in self.chains.setdefault(chain, []):
            self.insert(chain, rule)

    def append_unique(self, chain: str, rule: str, *, checked: bool = False) -> None:
        self.calls.append(Call("exists_append_unique" if checked else "append_unique", self.step,
                               chain=chain, rule=rule))
        if rule not in self.chains.setdefault(chain, []):
            self.append(chain, rule)


_V111_LOCAL_ACCEPT_COMMENT = "rule to permit the traffic traffic to pods when source is the pod's local node"


def _v111_pod_chains(local: list[Pod], selecting: dict[str, list[int]], infos: list[_PolicyInfo],
                     policy_chains: list[str], version: str, profile: Profile, reject_with: str | None,
                     top: dict[str, list[str]], calls: list[Call]) -> list[Chain]:
    """v1.1.1:pkg/controllers/netpol/network_policy_controller.go ``syncPodFirewallChains``: the
    v1.2 layout (``_v12_pod_chains``) written call by call. Every pod-chain rule is inserted at 1
    after an Exists check (policy jumps, local-source accept, stateful accept) or AppendUnique'd
    (dropUnmarkedTrafficRules), so a pod both passes select holds each rule once; inbound jumps
    are Exists + ``-I 1`` in KUBE-ROUTER-FORWARD/-OUTPUT, outbound ones Exists + AppendUnique in
    KUBE-ROUTER-INPUT/-FORWARD/-OUTPUT, physdev ones Exists + ``-I 1``. Pods in ``namespace/name``
    order (kube-router: a Go map; assumed)."""
    ops = _CallOps(calls, "syncPodFirewallChains")
    calls.append(Call("version", "syncPodFirewallChains"))
    for c, rules in top.items():
        for r in rules:
            ops.append(c, r)
    order: list[str] = []

    def pass_(direction: str) -> None:
        for pod in local:
            mine = selecting[pod.namespace + "/" + pod.name]
            if not any(infos[i].policy_type in ("both", direction) for i in mine):
                continue
            chain = nm.pod_chain(pod.namespace, pod.name, version)
            if chain not in ops.chains:
                order.append(chain)
            ops.new_chain(chain)
            ip = str(pod.ip)
            for i in mine:
                comment = _q(f"run through nw policy {infos[i].policy.name}")
                ops.insert_if_missing(chain, f"-m comment --comment {comment} -j {policy_chains[i]}")
            if direction == "ingress":
                # v1.1.1:network_policy_controller.go:888 (the doubled "traffic" of v1.2.1..v1.3.x)
                ops.insert_if_missing(chain, f"-m comment --comment {_q(_V111_LOCAL_ACCEPT_COMMENT)} "
                                             f"-m addrtype --src-type LOCAL -d {ip} -j ACCEPT")
            ops.insert_if_missing(chain, f"-m comment --comment {_q(_STATEFUL_COMMENT)} "
                                         "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
            if direction == "ingress":
                to_c = _q(f"rule to jump traffic destined to POD name:{pod.name} namespace: {pod.namespace} "
                          f"to chain {chain}")
                ops.insert_if_missing(nm.FORWARD_CHAIN, f"-m comment --comment {to_c} -d {ip} -j {chain}")
                ops.insert_if_missing(nm.OUTPUT_CHAIN, f"-m comment --comment {to_c} -d {ip} -j {chain}")
                ops.insert_if_missing(nm.FORWARD_CHAIN,
                                      f"-m physdev --physdev-is-bridged -m comment --comment {to_c} -d {ip} -j {chain}")
            else:
                from_c = _q(f"rule to jump traffic from POD name:{pod.name} namespace: {pod.namespace} "
                            f"to chain {chain}")
                for c in (nm.INPUT_CHAIN, nm.FORWARD_CHAIN, nm.OUTPUT_CHAIN):
                    ops.append_unique(c, f"-m comment --comment {from_c} -s {ip} -j {chain}", checked=True)
                ops.insert_if_missing(nm.FORWARD_CHAIN,
                                      f"-m physdev --physdev-is-bridged -m comment --comment {from_c} -s {ip} -j {chain}")
            for r in _drop_unmarked_rules(pod, profile, reject_with):
                ops.append_unique(chain, r)

    pass_("ingress")
    pass_("egress")
    for c in top:
        top[c] = ops.chains.get(c, [])
    return [Chain(name, ops.chains[name]) for name in order]


def _uuid_comment_rule(chain: str, spec: list[str]) -> str:
    """A rule kube-router adds with the iptables command and ``addUUIDForRuleSpec``: the comment
    gets `` - <uuid>`` appended; returned in restore form (comment quoted)."""
    uuid = nm.rule_uuid(chain, spec)
    out = list(spec)
    for i, part in enumerate(out):
        if part == "--comment":
            out[i + 1] = _q(f"{out[i + 1]} - {uuid}")
            break
    return " ".join(out)


def _input_whitelist(profile: Profile, service_range: str, node_ports: str) -> list[str]:
    """ensureTopLevelChains: RETURN for service cluster IPs and local node ports, at the top of
    KUBE-ROUTER-INPUT (positions 1, 2, ...)."""
    rules = [_uuid_comment_rule(nm.INPUT_CHAIN, ["-m", "comment", "--comment", profile.cluster_ip_comment,
                                                 "-d", service_range, "-j", "RETURN"])]
    protos = ["tcp", "udp"] + (["sctp"] if profile.sctp_node_ports else [])
    for proto in protos:
        rules.append(_uuid_comment_rule(nm.INPUT_CHAIN, [
            "-p", proto, "-m", "comment", "--comment", f"allow LOCAL {proto.upper()} traffic to node ports",
            "-m", "addrtype", "--dst-type", "LOCAL", "-m", "multiport", "--dports", node_ports, "-j", "RETURN"]))
    return rules


def render_node(cluster: Cluster, node_name: str, *, profile: str = "v2.10", sync_version: int,
                default_deny: bool = False, reject_with: str | None = None,
                service_cluster_ip_range: str = DEFAULT_SERVICE_RANGE,
                node_port_range: str = DEFAULT_NODE_PORT_RANGE,
                index: ClusterIndex | None = None, pods_view: Cluster | None = None,
                family: str = "IPv4") -> Ruleset:
    """Everything kube-router (``profile``) programs on ``node_name`` in the full sync with
    ``sync_version`` (kube-router: the sync's start time in Unix ns).

    ``default_deny`` is ``--netpol-default-deny`` (v2.10 only). ``reject_with`` is NOT a
    kube-router option: None (kube-router: plain ``REJECT``, i.e. ICMP port-unreachable),
    ``"icmp-port-unreachable"`` (explicit) or ``"tcp-reset"`` (TCP answered with a reset, to
    contrast client behaviour). ``index`` lets a caller reuse a ``ClusterIndex`` of an unchanged
    cluster. Pods without an IP are ignored, as kube-router ignores pods that are not actionable.
    ``pods_view``: the second listing kube-router makes within one sync (syncPodFirewallChains
    lists the local pods again after buildNetworkPoliciesInfo's listing; v2.10.0:pod.go): local
    pods come from it, policy targets and peers from ``cluster``. A pod only in ``pods_view`` gets a
    pod chain with DEFAULT jumps, unfiltered, until the next sync (and, with default deny, is in
    kube-router-local-pods already); None: one listing (no skew).
    ``family``: ``IPv6`` renders the ip6tables half of a dual-stack node (v2.x profiles): the IPv6
    addresses of ``cluster`` (``harness.model.dualstack.family_view``), ``inet6:`` sets with
    ``family inet6``, ``"IPv6"`` hashed into the names, ICMPv6 in KUBE-NWPLCY-COMMON, the IPv6
    service range in KUBE-ROUTER-INPUT; kube-router runs each step once per family
    (v2.10.0:pkg/controllers/netpol/network_policy_controller.go fullPolicySync, policy.go, pod.go).
    """
    prof = get_profile(profile)
    if node_name not in cluster.nodes:
        raise ConfigError(cluster.source, "node", f"unknown node {node_name!r}")
    v6 = family == "IPv6"
    if v6:
        if not prof.family:
            # v1.x netpol has no IPv6 path (no ip6tables/IPv6Protocol in pkg/controllers/netpol up to v1.6.1)
            raise ConfigError(cluster.source, "ip_families", f"kube-router {prof.name} is IPv4-only "
                              "(dual-stack network policy arrived in v2.0.0): use a v2.x profile")
        if index is not None and index.cluster is cluster:
            index = None  # an index of the IPv4 view holds IPv4 addresses
        cluster = family_view(cluster, family)
        pods_view = family_view(pods_view, family) if pods_view is not None else None
        service_cluster_ip_range = str(cluster.service_cidr)
    elif family != "IPv4":
        raise ConfigError(cluster.source, "ip_families", f"unknown IP family {family!r} (IPv4 or IPv6)")
    if default_deny and not prof.tail_chain:
        raise ConfigError(None, "default_deny", f"--netpol-default-deny needs profile v2.10, not {prof.name}")
    if reject_with not in REJECT_WITH:
        raise ConfigError(None, "reject_with", f"{reject_with!r} is not one of icmp-port-unreachable, tcp-reset")
    if index is None or index.actionable_only != prof.netpol_actionable or index.cluster is not cluster:
        index = ClusterIndex(cluster, prof)
    b = _Builder(index, prof, sync_version, family)
    version = str(sync_version)

    policies = sorted(cluster.policies.values(), key=lambda p: (p.namespace, p.name))
    infos = [_build_policy_info(index, p, prof, family) for p in policies]
    if b.calls is not None:
        b.calls.append(Call("version", "syncNetworkPolicyChains"))  # v1.1.1: iptables.New()
    policy_chains = [b.policy_chain(info) for info in infos]

    # Per-pod membership: which policies select each local pod (targets are index tuples).
    # syncPodFirewallChains lists the local pods again (podLister.List(), v2.10.0:pod.go), later
    # than buildNetworkPoliciesInfo's listing: ``pods_view`` is that second listing (lister skew).
    local = sorted((p for p in (pods_view or cluster).pods.values()
                    if p.node == node_name and netpol_actionable(p, prof)),
                   key=lambda p: (p.namespace, p.name))
    selecting: dict[str, list[int]] = {str(p.ip): [] for p in local}
    for pi, info in enumerate(infos):
        for t in info.targets:
            if index.ips[t] in selecting:
                selecting[index.ips[t]].append(pi)

    top: dict[str, list[str]] = {c: [] for c in (nm.INPUT_CHAIN, nm.FORWARD_CHAIN, nm.OUTPUT_CHAIN)}
    whitelist = _input_whitelist(prof, service_cluster_ip_range, node_port_range)
    top[nm.INPUT_CHAIN].extend(whitelist)
    if prof.policy_pods_only and b.calls is not None:
        by_name = {p.namespace + "/" + p.name: selecting[str(p.ip)] for p in local}
        pod_chains = _v111_pod_chains(local, by_name, infos, [c.name for c in policy_chains], version, prof,
                                      reject_with, top, b.calls)
    elif prof.policy_pods_only:
        by_name = {p.namespace + "/" + p.name: selecting[str(p.ip)] for p in local}
        pod_chains = _v12_pod_chains(local, by_name, infos, [c.name for c in policy_chains], version, prof,
                                     reject_with, top)
    else:
        pod_chains = []

        def put(chain: str, rule: str) -> None:
            # v1.3.0 writes "-I <chain> 1" (above the saved whitelist), v1.3.1+ "-A <chain>"
            if prof.pod_jumps_inserted:
                top[chain].insert(0, rule)
            else:
                top[chain].append(rule)
        for pod in local:
            chain = nm.pod_chain(pod.namespace, pod.name, version)
            mine = selecting[str(pod.ip)]
            pod_chains.append(Chain(chain, _pod_chain_rules(
                pod, chain, [infos[i] for i in mine], [policy_chains[i].name for i in mine], prof, reject_with,
                family)))
            ip = str(pod.ip)
            if prof.short_comments:  # v2.11.0+:pod.go intercept*Traffic (cmtJumpIn, cmtJumpOut)
                to_c, from_c = _q(id_comment(pod.namespace, pod.name, "in")), _q(id_comment(pod.namespace, pod.name, "out"))
            else:
                to_c = _q(f"rule to jump traffic destined to POD name:{pod.name} namespace: {pod.namespace} "
                          f"to chain {chain}")
                from_c = _q(f"rule to jump traffic from POD name:{pod.name} namespace: {pod.namespace} "
                            f"to chain {chain}")
            # interceptPodInboundTraffic (v1.3.1+: appended; v1.3.0 inserted at 1, #1136)
            put(nm.FORWARD_CHAIN, f"-m comment --comment {to_c} -d {ip} -j {chain}")
            put(nm.OUTPUT_CHAIN, f"-m comment --comment {to_c} -d {ip} -j {chain}")
            put(nm.FORWARD_CHAIN, f"-m physdev --physdev-is-bridged -m comment --comment {to_c} -d {ip} -j {chain}")
            # interceptPodOutboundTraffic
            for c in (nm.INPUT_CHAIN, nm.FORWARD_CHAIN, nm.OUTPUT_CHAIN):
                put(c, f"-m comment --comment {from_c} -s {ip} -j {chain}")
            put(nm.FORWARD_CHAIN, f"-m physdev --physdev-is-bridged -m comment --comment {from_c} -s {ip} -j {chain}")

    helper_chains = []
    if not prof.policy_pods_only:
        # ensureDefaultNetworkPolicyChain (v1.3.1+:network_policy_controller.go), added with the
        # iptables command (comment unquoted in the Go string)
        default_rules = []
        if prof.default_chain_icmp:
            # v2.2.0..v2.5.0:network_policy_controller.go ensureDefaultNetworkPolicyChain: CommonICMPRules
            # AppendUnique'd before the mark (comments without quote characters)
            default_rules += [f"-m comment --comment {_q(c)} -p icmp --icmp-type {t} -j ACCEPT"
                              for t, c in COMMON_ICMP_RULES]
        default_rules.append(f"-j MARK -m comment --comment {_q('rule to mark traffic matching a network policy')} "
                             f"--set-xmark {MARK_OK}")
        helper_chains.append(Chain(nm.DEFAULT_CHAIN, default_rules))
    if prof.common_chain:
        # ensureCommonPolicyChain (v2.6.3, v2.10.0:network_policy_controller.go)
        common = [
            f"-m comment --comment {_q_quoted(COMMON_INVALID_COMMENT)} -m conntrack --ctstate INVALID -j DROP",
            f"-m comment --comment {_q_quoted(COMMON_STATEFUL_COMMENT)} "
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        ]
        if v6:
            common += [f"-m comment --comment {_q(c)} -p ipv6-icmp --icmpv6-type {t} -j ACCEPT"
                       for t, c in COMMON_ICMP6_RULES]
        else:
            common += [f"-m comment --comment {_q(c)} -p icmp --icmp-type {t} -j ACCEPT" for t, c in COMMON_ICMP_RULES]
        helper_chains.append(Chain(nm.COMMON_CHAIN, common))
    if prof.tail_chain:
        helper_chains.append(Chain(nm.TAIL_CHAIN, _tail_rules(cluster, node_name, default_deny, prof, family)))
        # ensureTailChainPosition (v2.10.0:network_policy_controller.go): AppendUnique, moved to the end
        tail_jump = (f"-m comment --comment "
                     f"{_q('rule to explicitly handle traffic for network policies ACCEPT/REJECT decision')} "
                     f"-j {nm.TAIL_CHAIN}")
    # ensureExplicitAccept (v1.3.1..v2.9.0:network_policy_controller.go; again from v2.11.0:npc_iptables.go
    # fullPolicySync, after ensureTailChainPosition): AppendUnique, moved to the end
    accept = f"-m comment --comment {_q(prof.explicit_accept_comment)} -m mark --mark {MARK_ACCEPT} -j ACCEPT"
    for rules in top.values():
        if prof.tail_chain:
            rules.append(tail_jump)
        if prof.explicit_accept:
            rules.append(accept)

    sets = list(b.sets.values())
    if default_deny:
        # v2.10.0:network_policy_controller.go ensureLocalPodsIPSetExists (Create hash:ip timeout 0) and
        # populateProtectedPodsIPSet (entries ip timeout 0)
        sets.append(IPSetSpec(nm.local_pods_set(family), "hash:ip",
                              [f"{ip} {ENTRY_OPTIONS}" for ip in sorted(selecting, key=ipaddress.ip_address)],
                              options=b.new_set_options))

    builtin = []
    for builtin_chain, custom in nm.TOP_LEVEL.items():
        builtin.append((builtin_chain, _uuid_comment_rule(
            builtin_chain, ["-m", "comment", "--comment", "kube-router netpol", "-j", custom])))

    # Dependency order (a chain after every chain it jumps to), so a per-rule apply can create
    # and fill chains in this order: helpers, policies, pods, then the top-level chains.
    chains = helper_chains + policy_chains + pod_chains + [Chain(name, rules) for name, rules in top.items()]
    ipv6 = None
    if not v6 and cluster.dual_stack:
        # the same sync's IPv6 half (one ipset/iptables handler per family, fullPolicySync)
        ipv6 = render_node(cluster, node_name, profile=prof.name, sync_version=sync_version,
                           default_deny=default_deny, reject_with=reject_with, node_port_range=node_port_range,
                           pods_view=pods_view, family="IPv6")
    return Ruleset(ipv6=ipv6, node=node_name, profile=prof.name, sync_version=int(sync_version), sets=sets,
                   chains=chains, builtin_jumps=builtin, input_whitelist=whitelist, swap_sets=prof.swap_sets,
                   calls=b.calls or [],
                   **({"family": family, "owned_set_prefixes": tuple(nm.set_name(p, family) for p in
                                                                       Ruleset.owned_set_prefixes)} if v6 else {}))


def _tail_rules(cluster: Cluster, node_name: str, default_deny: bool, profile: Profile,
                family: str = "IPv4") -> list[str]:
    """v2.10.0:network_policy_controller.go ``populateDefaultTailChain``: the accept-on-mark rule;
    with default deny, REJECTs for the node's pod CIDR around it (``appendIPSetGatedRejects``:
    gated on kube-router-local-pods, before; ``appendCIDRRejects``: unconditional, after). All
    added with the iptables command (comments unquoted in the Go strings)."""
    cidr = str(cluster.nodes[node_name].pod_cidr)
    local_set = nm.local_pods_set(family)
    short = profile.short_comments  # v2.11.1:npc_iptables.go: the short texts
    gated = _q(TAIL_GATED_COMMENT_V211 if short else TAIL_GATED_COMMENT)
    pre = _q(TAIL_PRE_NETPOL_COMMENT_V211 if short else TAIL_PRE_NETPOL_COMMENT)
    accept = _q(TAIL_ACCEPT_COMMENT_V211 if short else TAIL_ACCEPT_COMMENT)
    rules = []
    if default_deny:
        rules += [f"-s {cidr} -m comment --comment {gated} -m set ! --match-set {local_set} src -j REJECT",
                  f"-d {cidr} -m comment --comment {gated} -m set ! --match-set {local_set} dst -j REJECT"]
    rules.append(f"-m comment --comment {accept} -m mark --mark {MARK_ACCEPT} -j ACCEPT")
    if default_deny:
        rules += [f"-s {cidr} -m comment --comment {pre} -j REJECT",
                  f"-d {cidr} -m comment --comment {pre} -j REJECT"]
    return rules


def dump(ruleset: Ruleset) -> str:
    """A readable, deterministic text of a Ruleset: the ipsets (``create``/``add`` lines as in
    ``ipset save``) then the filter table in iptables-save form (builtin jumps first, as
    ``-I <chain> 1``-inserted rules). For goldens and people, not for ``*-restore``."""
    out = [f"# kube-router {ruleset.profile} ruleset for node {ruleset.node}, sync version {ruleset.sync_version}",
           f"# {len(ruleset.sets)} sets, {ruleset.set_entry_count} entries "
           f"({'TMP set + swap' if ruleset.swap_sets else 'flush + refill in place'}); "
           f"{len(ruleset.chains)} chains, {ruleset.rule_count} rules"]
    for s in ruleset.sets:
        out.append(f"create {s.name} {s.type} {s.options}")
        out.extend(f"add {s.name} {e}" for e in s.entries)
    out.append("*filter")
    out.extend(f":{c.name} - [0:0]" for c in ruleset.chains)
    out.extend(f"-I {b} 1 {rule}" for b, rule in ruleset.builtin_jumps)
    for c in ruleset.chains:
        out.extend(f"-A {c.name} {rule}" for rule in c.rules)
    out.append("COMMIT")
    text = "\n".join(out) + "\n"
    if ruleset.ipv6 is not None:
        text += "# IPv6 (ip6tables-restore, inet6 sets)\n" + dump(ruleset.ipv6)
    return text

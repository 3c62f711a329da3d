"""Hand-made kube-router-shaped rulesets for apply tests and the apply benchmark (pure).

They follow kube-router's layout (DESIGN.md) and are written in the canonical form
``iptables-save`` prints (``-d 10.244.1.2/32`` first, ``-p tcp`` before the matches, ``-m tcp``
spelled out, comments quoted), so kernel state read back with ``inspect`` compares equal to the
ruleset text. They do not come from the renderer: they exist so apply can be tested and measured
on its own, at any size.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass

from harness.engines.kube_router.render.ruleset import Chain, IPSetSpec, Ruleset

TOP_LEVEL = (("INPUT", "KUBE-ROUTER-INPUT"), ("FORWARD", "KUBE-ROUTER-FORWARD"), ("OUTPUT", "KUBE-ROUTER-OUTPUT"))
ACCEPT_MARKED = ('-m comment --comment "rule to explicitly ACCEPT traffic that comply to network policies" '
                 "-m mark --mark 0x20000/0x20000 -j ACCEPT")


def khash(*parts: object) -> str:
    """kube-router's name hash: first 16 base32 chars of sha256 over the joined parts."""
    return base64.b32encode(hashlib.sha256("".join(str(p) for p in parts).encode()).digest()).decode()[:16]


@dataclass(frozen=True)
class Scale:
    """Size of one node's sync: local pods, policies (cluster-wide: kube-router programs a chain
    and sets for every policy), peers per policy, ipBlock rules with ``nomatch`` excepts."""

    name: str
    local_pods: int
    policies: int
    peers: int
    ipblock: bool = True
    sctp: bool = True


SCALES = {
    "small": Scale("small", local_pods=10, policies=10, peers=20),
    "medium": Scale("medium", local_pods=50, policies=100, peers=50),
    "large": Scale("large", local_pods=50, policies=1000, peers=50),
}


def _pod_ip(i: int) -> str:
    return str(ipaddress.IPv4Address("10.244.1.2") + i)


def _peer_ip(i: int) -> str:
    return str(ipaddress.IPv4Address("10.244.16.2") + i)  # pods of other nodes


def kube_router_ruleset(node: str = "node1", sync_version: int = 1, local_pods: int = 2, policies: int = 1,
                        peers: int = 3, ipblock: bool = True, sctp: bool = True, swap_sets: bool = True,
                        profile: str = "v1.3") -> Ruleset:
    """A ruleset shaped like kube-router's for one node.

    Pod ``i`` of this node has IP 10.244.1.(2+i) and a ``KUBE-POD-FW-*`` chain reached from
    KUBE-ROUTER-INPUT/FORWARD/OUTPUT; policy ``p`` selects local pods ``p % local_pods`` (and the
    next one), has a ``KUBE-DST-*`` target set, a ``KUBE-SRC-*`` peer set of ``peers`` remote pod
    IPs allowed on TCP 80 (and SCTP 80 when ``sctp``), and, when ``ipblock``, a hash:net
    ``KUBE-SRC-*`` set 172.16.0.0/12 except 172.17.0.0/16 (``nomatch``) on TCP 443. Chain names
    include ``sync_version``; set names do not (sets are swapped, chains renamed)."""
    v = sync_version
    pods = [(f"pod-{i}", _pod_ip(i)) for i in range(local_pods)]
    sets: list[IPSetSpec] = []
    chains: list[Chain] = []
    pol_chains: list[Chain] = []
    pod_policies: dict[int, list[str]] = {i: [] for i in range(local_pods)}
    for p in range(policies):
        ns, name = f"ns-{p % 7}", f"policy-{p}"
        chain = f"KUBE-NWPLCY-{khash(ns, name, v)}"
        dst = f"KUBE-DST-{khash(ns, name, 'ingress')}"
        src = f"KUBE-SRC-{khash(ns, name, 0, 'ingress')}"
        targets = sorted({p % local_pods, (p + 1) % local_pods}) if local_pods else []
        for t in targets:
            pod_policies[t].append(chain)
        sets.append(IPSetSpec(dst, "hash:ip", [f"{pods[t][1]} timeout 0" for t in targets]))
        sets.append(IPSetSpec(src, "hash:ip", [f"{_peer_ip(p * 7 + k)} timeout 0" for k in range(peers)]))
        comment = f'"rule to ACCEPT traffic from source pods to dest pods selected by policy name {name} namespace {ns}"'
        rules = []
        for proto in ("tcp", "sctp") if sctp else ("tcp",):
            match = (f"-p {proto} -m comment --comment {comment} -m set --match-set {src} src "
                     f"-m set --match-set {dst} dst -m {proto} --dport 80")
            rules += [f"{match} -j MARK --set-xmark 0x10000/0x10000",
                      f"{match} -m mark --mark 0x10000/0x10000 -j RETURN"]
        if ipblock:
            blk = f"KUBE-SRC-{khash(ns, name, 1, 'ingress', 'ipblock')}"
            sets.append(IPSetSpec(blk, "hash:net", ["172.16.0.0/12 timeout 0", "172.17.0.0/16 timeout 0 nomatch"]))
            bcomment = f'"rule to ACCEPT traffic from specified ipBlocks to dest pods selected by policy name: {name} namespace {ns}"'
            match = (f"-p tcp -m comment --comment {bcomment} -m set --match-set {blk} src "
                     f"-m set --match-set {dst} dst -m tcp --dport 443")
            rules += [f"{match} -j MARK --set-xmark 0x10000/0x10000",
                      f"{match} -m mark --mark 0x10000/0x10000 -j RETURN"]
        pol_chains.append(Chain(chain, rules))

    top = {c: [] for _, c in TOP_LEVEL}
    top["KUBE-ROUTER-INPUT"].append(
        f'-d 10.96.0.0/12 -m comment --comment "allow traffic to primary/secondary cluster IP range - '
        f'{khash("KUBE-ROUTER-INPUT", "svc")}" -j RETURN')
    pod_chains: list[Chain] = []
    for i, (pod, ip) in enumerate(pods):
        ns = f"ns-{i % 7}"
        fw = f"KUBE-POD-FW-{khash(ns, pod, v)}"
        to = f'"rule to jump traffic destined to POD name:{pod} namespace: {ns} to chain {fw}"'
        frm = f'"rule to jump traffic from POD name:{pod} namespace: {ns} to chain {fw}"'
        top["KUBE-ROUTER-INPUT"].append(f"-s {ip}/32 -m comment --comment {frm} -j {fw}")
        top["KUBE-ROUTER-FORWARD"] += [
            f"-d {ip}/32 -m comment --comment {to} -j {fw}",
            f"-d {ip}/32 -m physdev --physdev-is-bridged -m comment --comment {to} -j {fw}",
            f"-s {ip}/32 -m comment --comment {frm} -j {fw}",
            f"-s {ip}/32 -m physdev --physdev-is-bridged -m comment --comment {frm} -j {fw}",
        ]
        top["KUBE-ROUTER-OUTPUT"] += [f"-d {ip}/32 -m comment --comment {to} -j {fw}",
                                      f"-s {ip}/32 -m comment --comment {frm} -j {fw}"]
        rules = [
            '-m comment --comment "rule for stateful firewall for pod" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
            '-m comment --comment "rule to drop invalid state for pod" -m conntrack --ctstate INVALID -j DROP',
            f'-d {ip}/32 -m addrtype --src-type LOCAL -m comment --comment "rule to permit the traffic to pods '
            f'when source is the pods local node" -j ACCEPT',
        ]
        if pod_policies[i]:
            rules += [f'-d {ip}/32 -m comment --comment "run through nw policy" -j {c}' for c in pod_policies[i]]
        else:
            rules.append(f'-d {ip}/32 -m comment --comment "run through default ingress network policy chain" '
                         "-j KUBE-NWPLCY-DEFAULT")
        rules += [
            f'-m comment --comment "rule to log dropped traffic POD name:{pod} namespace: {ns}" '
            "-m mark ! --mark 0x10000/0x10000 -m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100",
            f'-m comment --comment "rule to REJECT traffic destined for POD name:{pod} namespace: {ns}" '
            "-m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp-port-unreachable",
            "-j MARK --set-xmark 0x0/0x10000",
            '-m comment --comment "set mark to ACCEPT traffic that comply to network policies" '
            "-j MARK --set-xmark 0x20000/0x20000",
        ]
        pod_chains.append(Chain(fw, rules))
    for c in top:
        top[c].append(ACCEPT_MARKED)
    chains = [Chain(c, top[c]) for _, c in TOP_LEVEL]
    chains.append(Chain("KUBE-NWPLCY-DEFAULT", [
        '-m comment --comment "rule to mark traffic matching a network policy" -j MARK --set-xmark 0x10000/0x10000']))
    chains += pol_chains + pod_chains
    jumps = [(b, f'-m comment --comment "kube-router netpol - {khash(b, c)}" -j {c}') for b, c in TOP_LEVEL]
    return Ruleset(node=node, profile=profile, sync_version=v, sets=sets, chains=chains,
                   builtin_jumps=jumps, swap_sets=swap_sets)


def scaled_ruleset(scale: str | Scale, sync_version: int = 1, swap_sets: bool = True) -> Ruleset:
    """The ruleset of one of ``SCALES`` (small, medium, large)."""
    s = SCALES[scale] if isinstance(scale, str) else scale
    return kube_router_ruleset(sync_version=sync_version, local_pods=s.local_pods, policies=s.policies,
                               peers=s.peers, ipblock=s.ipblock, sctp=s.sctp, swap_sets=swap_sets)

"""kube-router's names for chains and ipsets, computed exactly as kube-router computes them.

Every name is a prefix plus the first 16 characters of ``base32.StdEncoding(sha256(s))`` over a
plain concatenation ``s`` of strings, without separators (so ``"a"+"bc"`` and ``"ab"+"c"`` collide,
as they do in kube-router). Sources (cloudnativelabs/kube-router, pkg/controllers/netpol):
``podFirewallChainName`` (pod.go), ``networkPolicyChainName`` and the ``policy*IPSetName``
functions (policy.go), ``addUUIDForRuleSpec`` in ``ensureTopLevelChains``.

``family`` is the string kube-router hashes for the IP family since dual-stack support (v2.0):
``"IPv4"`` (``api.IPv4Protocol``) or ``"IPv6"``. Profiles before v2 hash no family: pass ``""``.
Set names of the IPv6 family carry ipset's ``inet6:`` prefix (v2.10.0:pkg/controllers/netpol/
utils.go ipSetName -> pkg/utils/ipset.go IPSetName); chain names do not (one table per family).
"""

from __future__ import annotations

import base64
import hashlib

POD_FW_PREFIX = "KUBE-POD-FW-"
POLICY_CHAIN_PREFIX = "KUBE-NWPLCY-"
SRC_SET_PREFIX = "KUBE-SRC-"
DST_SET_PREFIX = "KUBE-DST-"

INPUT_CHAIN = "KUBE-ROUTER-INPUT"
FORWARD_CHAIN = "KUBE-ROUTER-FORWARD"
OUTPUT_CHAIN = "KUBE-ROUTER-OUTPUT"
DEFAULT_CHAIN = "KUBE-NWPLCY-DEFAULT"
COMMON_CHAIN = "KUBE-NWPLCY-COMMON"
TAIL_CHAIN = "KUBE-NWPLCY-TAIL"
LOCAL_PODS_SET = "kube-router-local-pods"

# kube-router's defaultChains map: built-in chain -> its top-level chain.
TOP_LEVEL = {"INPUT": INPUT_CHAIN, "FORWARD": FORWARD_CHAIN, "OUTPUT": OUTPUT_CHAIN}


IPV6_SET_PREFIX = "inet6:"  # pkg/utils/ipset.go IPv6SetPrefix


def set_name(name: str, family: str = "") -> str:
    """kube-router's ``IPSetName``: ``inet6:<name>`` for the IPv6 family, ``name`` otherwise."""
    return IPV6_SET_PREFIX + name if family == "IPv6" and not name.startswith(IPV6_SET_PREFIX) else name


def local_pods_set(family: str = "") -> str:
    """``kube-router-local-pods`` of ``family`` (v2.10.0 --netpol-default-deny; ipSetHandler.Name)."""
    return set_name(LOCAL_PODS_SET, family)


def kr_hash(s: str) -> str:
    """First 16 characters of base32 (RFC 4648 alphabet, padded) of sha256(s)."""
    return base64.b32encode(hashlib.sha256(s.encode()).digest()).decode("ascii")[:16]


def pod_chain(namespace: str, pod: str, sync_version: int | str) -> str:
    """``KUBE-POD-FW-`` chain of a local pod; renamed on every sync (the version is hashed)."""
    return POD_FW_PREFIX + kr_hash(namespace + pod + str(sync_version))


def policy_chain(namespace: str, policy: str, sync_version: int | str, family: str = "") -> str:
    """``KUBE-NWPLCY-`` chain of a policy; renamed on every sync."""
    return POLICY_CHAIN_PREFIX + kr_hash(namespace + policy + str(sync_version) + family)


def policy_src_set(namespace: str, policy: str, family: str = "") -> str:
    """Set of the pods the policy selects, matched as source (egress)."""
    return set_name(SRC_SET_PREFIX + kr_hash(namespace + policy + family), family)


def policy_dst_set(namespace: str, policy: str, family: str = "") -> str:
    """Set of the pods the policy selects, matched as destination (ingress)."""
    return set_name(DST_SET_PREFIX + kr_hash(namespace + policy + family), family)


def ingress_pod_set(namespace: str, policy: str, rule: int, family: str = "") -> str:
    """Peer pods of ingress rule ``rule`` (source match)."""
    return set_name(SRC_SET_PREFIX + kr_hash(namespace + policy + "ingressrule" + str(rule) + family + "pod"), family)


def egress_pod_set(namespace: str, policy: str, rule: int, family: str = "") -> str:
    """Peer pods of egress rule ``rule`` (destination match)."""
    return set_name(DST_SET_PREFIX + kr_hash(namespace + policy + "egressrule" + str(rule) + family + "pod"), family)


def ingress_ipblock_set(namespace: str, policy: str, rule: int, family: str = "") -> str:
    """ipBlocks of ingress rule ``rule`` (hash:net, source match)."""
    return set_name(SRC_SET_PREFIX + kr_hash(namespace + policy + "ingressrule" + str(rule) + family + "ipblock"),
                    family)


def egress_ipblock_set(namespace: str, policy: str, rule: int, family: str = "") -> str:
    """ipBlocks of egress rule ``rule`` (hash:net, destination match)."""
    return set_name(DST_SET_PREFIX + kr_hash(namespace + policy + "egressrule" + str(rule) + family + "ipblock"),
                    family)


def ingress_named_port_set(namespace: str, policy: str, rule: int, endpoint: int, family: str = "") -> str:
    """Pods serving the ``endpoint``-th resolution of a named port in ingress rule ``rule``."""
    return set_name(DST_SET_PREFIX + kr_hash(
        namespace + policy + "ingressrule" + str(rule) + str(endpoint) + family + "namedport"), family)


def egress_named_port_set(namespace: str, policy: str, rule: int, endpoint: int, family: str = "") -> str:
    """Pods serving the ``endpoint``-th resolution of a named port in egress rule ``rule``."""
    return set_name(DST_SET_PREFIX + kr_hash(
        namespace + policy + "egressrule" + str(rule) + str(endpoint) + family + "namedport"), family)


TMP_SET_PREFIX = "TMP-"


def tmp_set_name(options: str) -> str:
    """The temporary set kube-router's ``buildIPSetRestore`` (pkg/utils/ipset.go, v1.3+) fills and
    swaps for every set with these create options (e.g. ``"hash:ip timeout 0"``, what
    ``RefreshSet`` gives a new set, or the options ``ipset save`` printed for an existing one):
    ``TMP-`` + base32 of the first 10 bytes of sha1("tmp:" + options)."""
    return TMP_SET_PREFIX + base64.b32encode(hashlib.sha1(("tmp:" + options).encode()).digest()[:10]).decode()


def rule_uuid(chain: str, rulespec: list[str]) -> str:
    """kube-router's ``addUUIDForRuleSpec``: hash of the chain plus the rule's arguments joined
    without separators (before the UUID is appended to the comment)."""
    return kr_hash(chain + "".join(rulespec))

"""kube-router's names for chains and ipsets, computed exactly as kube-router computes them.

Every name is a prefix plus the first 16 characters of ``base32.StdEncoding(sha256(s))`` over a
plain concatenation ``s`` of strings, without separators (so ``"a"+"bc"`` and ``"ab"+"c"`` collide,
as they do in kube-router). Sources (cloudnativelabs/kube-router, pkg/controllers/netpol):
``podFirewallChainName`` (pod.go), ``networkPolicyChainName`` and the ``policy*IPSetName``
functions (policy.go), ``addUUIDForRuleSpec`` in ``ensureTopLevelChains``.

``family`` is the string kube-router hashes for the IP family since dual-stack support (v2.0):
``"IPv4"`` (``api.IPv4Protocol``). Profiles before v2 hash no family: pass ``""``.
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
    return SRC_SET_PREFIX + kr_hash(namespace + policy + family)


def policy_dst_set(namespace: str, policy: str, family: str = "") -> str:
    """Set of the pods the policy selects, matched as destination (ingress)."""
    return DST_SET_PREFIX + kr_hash(namespace + policy + family)


def ingress_pod_set(namespace: str, policy: str, rule: int, family: str = "") -> str:
    """Peer pods of ingress rule ``rule`` (source match)."""
    return SRC_SET_PREFIX + kr_hash(namespace + policy + "ingressrule" + str(rule) + family + "pod")


def egress_pod_set(namespace: str, policy: str, rule: int, family: str = "") -> str:
    """Peer pods of egress rule ``rule`` (destination match)."""
    return DST_SET_PREFIX + kr_hash(namespace + policy + "egressrule" + str(rule) + family + "pod")


def ingress_ipblock_set(namespace: str, policy: str, rule: int, family: str = "") -> str:
    """ipBlocks of ingress rule ``rule`` (hash:net, source match)."""
    return SRC_SET_PREFIX + kr_hash(namespace + policy + "ingressrule" + str(rule) + family + "ipblock")


def egress_ipblock_set(namespace: str, policy: str, rule: int, family: str = "") -> str:
    """ipBlocks of egress rule ``rule`` (hash:net, destination match)."""
    return DST_SET_PREFIX + kr_hash(namespace + policy + "egressrule" + str(rule) + family + "ipblock")


def ingress_named_port_set(namespace: str, policy: str, rule: int, endpoint: int, family: str = "") -> str:
    """Pods serving the ``endpoint``-th resolution of a named port in ingress rule ``rule``."""
    return DST_SET_PREFIX + kr_hash(
        namespace + policy + "ingressrule" + str(rule) + str(endpoint) + family + "namedport")


def egress_named_port_set(namespace: str, policy: str, rule: int, endpoint: int, family: str = "") -> str:
    """Pods serving the ``endpoint``-th resolution of a named port in egress rule ``rule``."""
    return DST_SET_PREFIX + kr_hash(
        namespace + policy + "egressrule" + str(rule) + str(endpoint) + family + "namedport")


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

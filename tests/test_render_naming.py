"""kube-router names: hashes checked against values computed outside Python.

Reference values: ``printf '%s' S | sha256sum | xxd -r -p | base32 -w0 | cut -c1-16`` (coreutils),
with S the exact concatenation kube-router hashes (policy.go, pod.go, ensureTopLevelChains)."""

from __future__ import annotations

from harness.engines.kube_router.render import naming as nm

V = 1700000000000000000


def test_kr_hash_matches_coreutils_base32_of_sha256():
    assert nm.kr_hash("xa1700000000000000000") == "PVP76UW3KYQOBOCP"
    assert nm.kr_hash("xegress-bgressrule") == "Y6RH2HUD6OMIV5QL"


def test_pod_chain_hashes_namespace_name_and_sync_version():
    assert nm.pod_chain("x", "a", V) == "KUBE-POD-FW-PVP76UW3KYQOBOCP"
    assert nm.pod_chain("x", "a", V + 1) != nm.pod_chain("x", "a", V)


def test_pod_chain_concatenates_without_separator_like_kube_router():
    # "a"+"bc" == "ab"+"c": kube-router's own test (pod_test.go) relies on this collision.
    assert nm.pod_chain("a", "bc", 1) == nm.pod_chain("ab", "c", 1)


def test_policy_chain_includes_version_and_family():
    assert nm.policy_chain("x", "allow-http", V, "IPv4") == "KUBE-NWPLCY-QO6TVVKJ2P2UCJM2"
    assert nm.policy_chain("x", "allow-http", V, "") != nm.policy_chain("x", "allow-http", V, "IPv4")


def test_policy_sets_do_not_include_the_version():
    assert nm.policy_dst_set("x", "allow-http", "IPv4") == "KUBE-DST-EUPDGZMSWNOGZX23"
    assert nm.policy_src_set("x", "allow-http", "IPv4") == "KUBE-SRC-EUPDGZMSWNOGZX23"


def test_indexed_sets():
    assert nm.ingress_pod_set("x", "allow-http", 0, "IPv4") == "KUBE-SRC-OO5PPF3I6MDC6ZH2"
    assert nm.ingress_named_port_set("x", "allow-http", 0, 0, "IPv4") == "KUBE-DST-4MQKVO72OC64E4AO"
    assert nm.egress_ipblock_set("x", "egress-b", 0, "IPv4") == "KUBE-DST-LPKSBJZAK7ZBZ7F7"


def test_rule_uuid_of_top_level_jump():
    spec = ["-m", "comment", "--comment", "kube-router netpol", "-j", "KUBE-ROUTER-INPUT"]
    assert nm.rule_uuid("INPUT", spec) == "4IA2OSFRMVNDXBVV"


def test_tmp_set_name_matches_coreutils_base32_of_sha1():
    # printf '%s' "tmp:hash:ip timeout 0" | sha1sum | cut -c1-20 | xxd -r -p | base32
    assert nm.tmp_set_name("hash:ip timeout 0") == "TMP-PRBJ7ASFQM5DJR3Q"

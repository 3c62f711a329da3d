"""Pure tests of what kube-router's sync feeds ``ipset restore`` per tag and of the restore argv
(``apply.restore_text`` host sets / initval, ``apply.exec_sequence.restore_argv``)."""

from __future__ import annotations

from harness.engines.kube_router.apply.exec_sequence import restore_argv
from harness.engines.kube_router.apply.restore_text import ipset_ops, parse_ipset_save
from harness.engines.kube_router.render.profiles import get_profile
from harness.engines.kube_router.render.ruleset import IPSetSpec, Ruleset
from harness.kernel.backends import get_backend

SAVED = """create KUBE-DST-AAAA hash:ip family inet hashsize 1024 maxelem 65536 timeout 0 bucketsize 12 initval 0x11
add KUBE-DST-AAAA 10.244.0.9 timeout 0
create kube-router-pod-subnets hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x22
add kube-router-pod-subnets 10.244.1.0/24
"""


def _ruleset() -> Ruleset:
    return Ruleset("n", "v1.3.1", 1, sets=[IPSetSpec("KUBE-DST-AAAA", "hash:ip", ["10.244.0.2 timeout 0"])])


def _lines(ops) -> list[str]:
    return [op.line() for op in ops]


def test_v1_restores_every_host_set_with_its_saved_entries():
    host = parse_ipset_save(SAVED)
    lines = _lines(ipset_ops(_ruleset(), host, host_sets=host, scrub=False))
    assert "add kube-router-pod-subnets 10.244.1.0/24" not in lines  # entries go to its TMP set
    assert any(ln.startswith("swap ") and ln.endswith(" kube-router-pod-subnets") for ln in lines)
    assert any(ln.endswith(" 10.244.1.0/24") for ln in lines)
    # initval kept (before v1.5.1): one TMP set per existing set
    assert sum(1 for ln in lines if ln.startswith("destroy TMP-")) == 2
    v2 = _lines(ipset_ops(_ruleset(), host))
    assert not any("kube-router-pod-subnets" in ln for ln in v2)  # v2.6+: RestoreSets(knownIPSets)


def test_initval_scrub_shares_tmp_sets_across_equal_options():
    saved = SAVED.replace("hash:net", "hash:ip").replace("initval 0x22", "timeout 0 initval 0x22").replace(
        "bucketsize 12 timeout 0", "timeout 0 bucketsize 12")
    host = parse_ipset_save(saved)
    scrubbed = _lines(ipset_ops(_ruleset(), host, host_sets=host, scrub=True))
    kept = _lines(ipset_ops(_ruleset(), host, host_sets=host, scrub=False))
    assert sum(ln.startswith("destroy TMP-") for ln in kept) == 2
    assert sum(ln.startswith("destroy TMP-") for ln in scrubbed) == 1
    assert not any("initval" in ln for ln in scrubbed)


def test_restore_argv_per_tag():
    nft = get_backend("nft")
    assert restore_argv(nft, get_profile("v1.2.1")) == [nft.restore, "-T", "filter"]
    assert restore_argv(nft, get_profile("v1.3.1")) == [nft.restore, "--wait", "-T", "filter"]
    assert restore_argv(nft, get_profile("v2.10.0")) == [nft.restore, "--wait", "-T", "filter"]


def test_profiles_carry_the_exec_differences():
    assert [get_profile(p).version_execs_per_sync for p in ("v1.2.2", "v1.3.0", "v1.5.0", "v2.6.3")] == [2, 3, 3, 0]
    assert not get_profile("v1.3.1").chain_exists_check and get_profile("v1.3.2").chain_exists_check
    assert get_profile("v1.3.0").explicit_accept_by_command and not get_profile("v1.3.1").explicit_accept_by_command
    assert get_profile("v1.5.0").restore_host_sets and not get_profile("v2.6.3").restore_host_sets

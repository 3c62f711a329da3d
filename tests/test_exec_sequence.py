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


# -- v2.0.0..v2.6.0: what the ipset handler restores (full_policy_sync with recorded tools) -------
class _RecordingTools:
    """Stands in for ``strategies._Tools`` in a pure test: every exec succeeds, ``ipset save``
    prints ``saved`` (what the namespace holds), and every argv + stdin is recorded."""

    def __init__(self, saved: str):
        self.saved = saved
        self.calls: list[tuple[list[str], str | None]] = []

    def run(self, argv, *, input=None, check=True):
        import subprocess
        self.calls.append((list(argv), input))
        out = self.saved if list(argv) == ["ipset", "save"] else ""
        return subprocess.CompletedProcess(list(argv), 0, out, "")

    def fail(self, argv, proc):  # pragma: no cover - every exec succeeds
        raise AssertionError(argv)


def _sync_execs(profile: str, handler=None, saved: str = SAVED):
    from harness.engines.kube_router.apply.exec_sequence import full_policy_sync
    from harness.engines.kube_router.apply.strategies import SyncTimings
    from harness.engines.kube_router.render.kube_router import render_node
    from harness.engines.kube_router.render.synthetic import example_cluster

    rs = render_node(example_cluster(), "node-a", profile=profile, sync_version=1)
    tools = _RecordingTools(saved)
    t = SyncTimings("restore", "nft", "n", 1)
    log = full_policy_sync(tools, rs, get_backend("nft"), t, lambda _f, fn, *a, **k: fn(*a, **k), None, handler)
    policy = [r for r in log if r.step == "syncNetworkPolicyChains"]
    restore_in = next(inp for argv, inp in tools.calls if argv[:2] == ["ipset", "restore"])
    return [r.argv for r in policy], restore_in


def test_v2_0_to_v2_4_run_no_ipset_save_before_the_restore():
    # v2.0.0..v2.4.1:policy.go syncNetworkPolicyChains has no ipset.Save(); v2.5.0 added it
    for tag in ("v2.0.0", "v2.1.2", "v2.2.0"):
        argvs, _ = _sync_execs(tag)
        assert argvs == [["ipset", "restore", "-exist"]], tag
    for tag in ("v1.5.1", "v2.5.0", "v2.6.0", "v2.6.3"):
        argvs, _ = _sync_execs(tag)
        assert argvs == [["ipset", "save"], ["ipset", "restore", "-exist"]], tag


def test_v2_0_restores_what_the_handler_kept_from_the_previous_cleanup():
    # v2.0.0: the handler is built once; cleanupStaleIPSets' Save() fills it, its Destroy()s empty it
    # of the stale sets, and the next sync restores the whole map without saving first
    from harness.engines.kube_router.apply.exec_sequence import IPSetHandler

    handler = IPSetHandler()
    _, first = _sync_execs("v2.0.0", handler)
    assert "kube-router-pod-subnets" not in first  # a fresh controller's handler knows no host set
    assert set(handler.sets) == {"kube-router-pod-subnets"}  # KUBE-DST-AAAA was stale: destroyed
    _, second = _sync_execs("v2.0.0", handler)
    assert "swap" in second and " kube-router-pod-subnets\n" in second and "10.244.1.0/24" in second
    # v2.1.2: a new handler per sync (NewIPSet), so never the host sets, however many syncs ran
    handler = IPSetHandler()
    _sync_execs("v2.1.2", handler)
    _, again = _sync_execs("v2.1.2", handler)
    assert "kube-router-pod-subnets" not in again


def test_v2_5_and_v2_6_0_restore_every_host_set_v2_6_1_only_the_known():
    # v2.5.0/v2.6.0: Save() then Restore() of everything; v2.6.1+: RestoreSets(knownIPSets)
    for tag, restored in (("v2.5.0", True), ("v2.6.0", True), ("v2.6.3", False)):
        _, text = _sync_execs(tag)
        assert ("kube-router-pod-subnets" in text) is restored, tag


def test_every_strategy_destroys_only_kube_src_dst_sets():
    # cleanupStaleIPSets (v1.2.1..v2.11.1): KUBE-SRC-/KUBE-DST- prefixes only
    from harness.engines.kube_router.apply.restore_text import stale_policy_sets

    rs = _ruleset()
    existing = {"KUBE-DST-AAAA": "", "KUBE-SRC-OLD": "", "KUBE-DST-OLD": "", "kube-router-local-pods": "",
                "kube-router-pod-subnets": "", "other": ""}
    assert stale_policy_sets(rs, existing) == ["KUBE-DST-OLD", "KUBE-SRC-OLD"]


def test_incremental_keeps_the_sets_kube_router_would_keep():
    # the incremental what-if follows cleanupStaleIPSets too: kube-router-local-pods is never destroyed
    from harness.engines.kube_router.incremental import plan_incremental
    from harness.engines.kube_router.render.kube_router import render_node
    from harness.engines.kube_router.render.synthetic import example_cluster

    c = example_cluster()
    old = render_node(c, "node-a", profile="v2.10.0", sync_version=1, default_deny=True)
    new = render_node(c, "node-a", profile="v2.10.0", sync_version=1)
    gone = {"KUBE-DST-GONE"}
    old.sets.append(IPSetSpec("KUBE-DST-GONE", "hash:ip", []))
    plan = plan_incremental(old, new)
    assert set(plan.sets_removed) == gone  # not kube-router-local-pods

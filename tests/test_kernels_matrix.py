"""Pure tests of the kernel matrix: suites, guest script, result collection, the cross-kernel
table and its ratios, run records and gc (no root, no VM)."""

import json
import subprocess
import sys
import time

import pytest

from harness.bench.kernels import matrix, runs
from harness.bench.kernels.fetch import fetch
from harness.bench.kernels.vm import parse_kernel
from harness.errors import ConfigError, HarnessError


def _baseline(median_us: float) -> dict:
    return {"schema": 1, "suite": "canaries", "machine": {}, "versions": {}, "params": {},
            "metrics": {"ipset_swap.ipset.per_op_us": {"unit": "us", "better": "lower",
                                                       "values": [median_us, median_us]}}}


def _kdir(root, name, mode, us=None, conf=None, error=""):
    d = root / name
    d.mkdir()
    (d / "kernel.json").write_text(json.dumps({"name": name, "release": name, "mode": mode, "cpus": 1,
                                               "error": error}))
    if us is not None:
        (d / "canaries.json").write_text(json.dumps(_baseline(us)))
        (d / "canaries.rc").write_text("0\n")
    for step, (rc, out) in (conf or {}).items():
        (d / f"{step}.rc").write_text(rc)
        (d / f"{step}.out").write_text(out)
    return d


STEPS = matrix.SUITES["canaries"] + matrix.SUITES["conformance"]


def test_unknown_suite_is_one_line():
    with pytest.raises(ConfigError, match=r"^--suite: 'big' is not one of canaries, "):
        matrix.suite_steps("big")


def test_guest_script_runs_every_step_into_the_shared_dir():
    s = matrix.guest_script(STEPS, "/v/nph", "/repo", "/rw", "modprobe -q ip_set;")
    assert s.startswith("modprobe -q ip_set; ") and "cd /repo || exit 1" in s
    assert "/v/nph bench canaries --smoke" in s and "--out /rw/canaries.json > /rw/canaries.out 2>&1" in s
    assert "conformance --json /rw/conformance-legacy.verdicts.json --backend legacy" in s
    assert "echo $? > /rw/conformance-legacy.rc" in s
    assert s.endswith("touch /rw/done")


def test_verdicts():
    assert matrix.verdict("0\n", "...\n2/2 cases passed (4 steps, 3.0 s)") == "pass 2/2"
    assert matrix.verdict("1\n", "1/2 cases passed (4 steps)") == "FAIL 1/2"
    assert matrix.verdict(None, "") == "ERROR rc=none"


def test_cross_table_ratios_only_within_one_mode(tmp_path):
    conf_ok = {"conformance-nft": ("0", "2/2 cases passed"), "conformance-legacy": ("0", "2/2 cases passed")}
    conf_bad = {"conformance-nft": ("1", "1/2 cases passed"), "conformance-legacy": ("0", "2/2 cases passed")}
    results = [matrix.collect(_kdir(tmp_path, "host", "host", 1.0, conf_ok), STEPS),
               matrix.collect(_kdir(tmp_path, "6.1.0-47-amd64", "tcg", 20.0, conf_ok), STEPS),
               matrix.collect(_kdir(tmp_path, "6.1.0-50-amd64", "tcg", 30.0, conf_bad), STEPS)]
    t = matrix.cross_table(results)
    row = next(ln for ln in t.splitlines() if ln.startswith("| canaries/ipset_swap"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # host shown but never divided by a TCG figure; the first VM kernel is the reference
    assert cells[1:] == ["1.00 us", "20.0 us", "30.0 us ×1.50"]
    assert "6.1.0-47-amd64 (tcg, 1 vCPU) ref" in t.splitlines()[0]
    nft = next(ln for ln in t.splitlines() if ln.startswith("| conformance-nft"))
    assert nft.endswith("| pass 2/2 | pass 2/2 | FAIL 1/2 |")
    assert matrix.cross_table(results, "6.1.0-50-amd64").count("×0.67") == 1
    with pytest.raises(ConfigError, match="^--reference: 'x' is not a kernel"):
        matrix.cross_table(results, "x")


def test_missing_baseline_becomes_the_kernels_error(tmp_path):
    d = _kdir(tmp_path, "k", "tcg")
    (d / "canaries.rc").write_text("2\n")
    (d / "canaries.out").write_text("trace\nerror: ipset: command not found\n")
    r = matrix.collect(d, matrix.SUITES["canaries"])
    assert r.error == "canaries: no baseline (rc=2): error: ipset: command not found"
    assert "errors:\n- k (tcg, 1 vCPU): canaries: no baseline" in matrix.cross_table([r])


def test_boot_failure_recorded_by_the_host_is_kept(tmp_path):
    d = _kdir(tmp_path, "k", "tcg", error="kernel k: boot/run timeout after 60 s (qemu killed)")
    assert matrix.collect(d, matrix.SUITES["canaries"]).error.startswith("kernel k: boot/run timeout")


def test_kernel_not_found(tmp_path):
    with pytest.raises(HarnessError, match=r"^kernel vmlinuz-x: /nope/vmlinuz-x not found$"):
        fetch(parse_kernel("/nope/vmlinuz-x"), tmp_path)


def test_gc_kills_a_dead_runs_qemu_and_leaves_live_runs(tmp_path):
    dead = runs.new_run("dead", tmp_path)
    live = runs.new_run("live", tmp_path)
    (dead / "owner").write_text("999999999 1\n")  # no such process: the owner is dead
    # stand-ins for qemu: their command lines name the run's scratch directory (the 9p share)
    q_dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(dead / "rw")])
    q_live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(live / "rw")])
    try:
        assert runs.gc(tmp_path) == (1, 1)
        assert q_dead.wait(timeout=5) == -9
        assert not dead.exists() and live.exists()
        time.sleep(0.1)
        assert q_live.poll() is None
    finally:
        q_live.kill()
        q_dead.kill()
        q_live.wait()
        q_dead.wait()


def _cases(d, step, verdicts):
    (d / f"{step}.verdicts.json").write_text(json.dumps({"schema": 1, "cases": [
        {"case": c, "engine": "kube-router", "backend": step.split("-")[1], "profile": "v2.10",
         "strategy": "restore", "verdict": v, "mismatches": 0 if v == "pass" else 3, "error": ""}
        for c, v in verdicts.items()]}))


def test_conformance_steps_write_per_case_json():
    s = matrix.guest_script(matrix.SUITES["conformance"], "/v/nph", "/repo", "/rw", "")
    assert "/v/nph conformance --json /rw/conformance-nft.verdicts.json --backend nft" in s


def test_case_verdicts_collected_and_diffed_case_by_case(tmp_path):
    conf = {"conformance-nft": ("0", "2/2 cases passed"), "conformance-legacy": ("1", "1/2 cases passed")}
    a = _kdir(tmp_path, "6.1.0-57-amd64", "tcg", 20.0, conf)
    b = _kdir(tmp_path, "7.2.13+deb14-amd64", "tcg", 20.0, conf)
    _cases(a, "conformance-nft", {"01-default-deny-ingress": "pass", "07-allow-from-namespace": "pass"})
    _cases(b, "conformance-nft", {"01-default-deny-ingress": "pass", "07-allow-from-namespace": "FAIL"})
    _cases(a, "conformance-legacy", {"01-default-deny-ingress": "pass"})
    ra, rb = matrix.collect(a, STEPS), matrix.collect(b, STEPS)
    assert ra.cases == {"conformance-nft/01-default-deny-ingress": "pass",
                        "conformance-nft/07-allow-from-namespace": "pass",
                        "conformance-legacy/01-default-deny-ingress": "pass"}
    # each changed case is one line; a case the new kernel never reported is a change too
    assert matrix.case_changes(ra, rb) == ["conformance-legacy/01-default-deny-ingress: pass -> missing",
                                           "conformance-nft/07-allow-from-namespace: pass -> FAIL"]
    assert matrix.case_changes(ra, ra) == []
    t = matrix.cross_table([ra, rb])
    row = next(ln for ln in t.splitlines() if ln.startswith("| conformance-nft/07-allow-from-namespace"))
    assert row == "| conformance-nft/07-allow-from-namespace | pass | FAIL ≠ref |"


def test_a_broken_verdicts_file_is_one_line(tmp_path):
    d = _kdir(tmp_path, "k", "tcg", 1.0)
    (d / "conformance-nft.verdicts.json").write_text("[]")
    with pytest.raises(ConfigError, match=r"conformance-nft.verdicts.json: cases: not a conformance --json file"):
        matrix.collect(d, STEPS)


def test_conformance_json_verdict_per_case():
    from harness.conformance.commands import case_verdicts
    from harness.conformance.runner import CaseResult, RunOptions

    ok = CaseResult("deny", "cases/conformance/01-default-deny-ingress.yaml", RunOptions())
    err = CaseResult("ns", "cases/conformance/07-allow-from-namespace.yaml", RunOptions(), error="lab: boom")
    got = case_verdicts([ok, err])
    assert [(c["case"], c["verdict"], c["error"]) for c in got] == [
        ("01-default-deny-ingress", "pass", ""), ("07-allow-from-namespace", "ERROR", "lab: boom")]
    assert got[0]["backend"] == RunOptions().backend and got[0]["engine"] == "kube-router"


def test_guest_baselines_carry_their_mode_and_vcpus(tmp_path):
    from harness.bench.baseline import machine_label

    d = _kdir(tmp_path, "k", "tcg", 5.0)
    assert matrix.label_baselines(d, STEPS, "tcg", 1) == 1
    m = json.loads((d / "canaries.json").read_text())["machine"]
    assert (m["virtualization"], m["vcpus"]) == ("tcg", 1)
    assert machine_label({"kernel": "7.2.13", "cpu_model": "Xeon", "cpus": 1, **m}) == \
        "Linux 7.2.13, Xeon x 1 (tcg guest, 1 vCPU)"
    assert machine_label({"kernel": "6.18", "cpu_model": "Xeon", "cpus": 2}) == "Linux 6.18, Xeon x 2"


def test_no_ratio_of_a_negative_slope(tmp_path):
    a = matrix.collect(_kdir(tmp_path, "a", "tcg", 20.0), STEPS)
    b = matrix.collect(_kdir(tmp_path, "b", "tcg", -5.0), STEPS)
    row = next(ln for ln in matrix.cross_table([a, b]).splitlines() if ln.startswith("| canaries/"))
    assert row.endswith("| 20.0 us | -5.00 us |")

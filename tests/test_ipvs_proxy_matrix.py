"""The kernel matrix's ``ipvs`` suite: boot a cached Debian 6.1 kernel (it has IP_VS, the host
may not) and run ``bench ipvs --smoke`` inside; the results come back as a baseline JSON.

Runs only with ``-m kernel_matrix`` (about 75 s here under TCG). Needs root, qemu-system-x86,
busybox-static, virtme-ng and ipvsadm on the host (the guest runs the host's root read-only)."""

import json
import os
import shutil

import pytest

from harness.cli import main

pytestmark = pytest.mark.kernel_matrix
RELEASE = "6.1.0-47-amd64"


def test_ipvs_suite_in_a_guest(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not shutil.which("ipvsadm"):
        pytest.skip("needs ipvsadm on the host (apt-get install ipvsadm)")
    out = tmp_path / "run"
    rc = main(["kernels", "run", "--kernel", RELEASE.removesuffix("-amd64"), "--suite", "ipvs",
               "--timeout", "600", "--out", str(out)])
    capsys.readouterr()
    kdir = out / RELEASE
    assert rc == 0, (kdir / "ipvs.out").read_text()[-2000:] if (kdir / "ipvs.out").exists() else "no output"
    data = json.loads((kdir / "ipvs.json").read_text())
    assert data["machine"]["kernel"] == RELEASE
    extra = data["extra"]
    for label in ("default", "masquerade_all"):
        reach = extra["reachability"][label]
        assert reach["service_port"]["outcome"] == "connected" and reach["service_port"]["echo"] == "ping"
        assert reach["other_port"]["errno"] == 111  # KUBE-ROUTER-SERVICES' REJECT: refused
        assert extra["sysctls"][label]["net/ipv4/vs/expire_nodest_conn"] == "1"
    by = {(r["proxy"], r["expire_nodest_conn"], r["endpoint_change"]): r for r in extra["removal"]}
    assert len(by) == 8
    for (_, expire, _), r in by.items():
        if expire == 1:
            assert (r["outcome"], r["errno"]) == ("reset", 104), r
            assert r["out_rsts"]["node"] >= 1, r  # the node's stack sent it, not the server pod
        else:
            assert r["outcome"] == "timeout", r
    assert data["metrics"]["ipvs.sync_first.n30.per_service_ms"]["median"] > 0
    assert not [p for p in os.listdir("/proc") if p.isdigit() and str(out) in _cmdline(p)]  # no qemu left


def _cmdline(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return ""

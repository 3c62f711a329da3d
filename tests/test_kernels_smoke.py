"""Kernel-matrix smoke test: boot one cached Debian kernel (TCG unless /dev/kvm boots a guest) and
run one canary inside, through ``netpol-harness kernels run --suite smoke``.

Runs only with ``-m kernel_matrix`` (about 40 s here under TCG). Needs root, qemu-system-x86,
busybox-static and virtme-ng (the command installs them on first use) and fetches the kernel
into the cache if it is not there yet.
"""

import json
import os

import pytest

from harness.cli import main

pytestmark = pytest.mark.kernel_matrix


@pytest.fixture(autouse=True)
def _only_when_selected(request):
    # a -m on the command line replaces addopts' "not kernel_matrix": boot only when asked for
    if "kernel_matrix" not in (request.config.option.markexpr or "").replace("not kernel_matrix", ""):
        pytest.skip("boots a VM for minutes: run with -m kernel_matrix")
RELEASE = "6.1.0-47-amd64"


def test_one_kernel_one_canary(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    out = tmp_path / "run"
    rc = main(["kernels", "run", "--kernel", RELEASE.removesuffix("-amd64"), "--suite", "smoke",
               "--timeout", "300", "--out", str(out)])
    table = capsys.readouterr().out
    kdir = out / RELEASE
    meta = json.loads((kdir / "kernel.json").read_text())
    assert rc == 0, (meta, table, (kdir / "canaries.out").read_text() if (kdir / "canaries.out").exists() else "")
    assert (kdir / "release").read_text().strip() == RELEASE  # uname -r inside the guest
    assert meta["mode"] in ("kvm", "tcg") and meta["cpus"] == 1
    data = json.loads((kdir / "canaries.json").read_text())
    assert data["machine"]["kernel"] == RELEASE
    assert data["metrics"]["ipset_swap.ipset.per_op_us"]["median"] > 0
    assert f"{RELEASE} ({meta['mode']}, 1 vCPU) ref" in table
    assert not [p for p in os.listdir("/proc") if p.isdigit() and str(out) in _cmdline(p)]  # no qemu left


def _cmdline(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return ""

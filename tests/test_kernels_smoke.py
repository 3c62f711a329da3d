"""Kernel-matrix smoke test: boot one cached Debian kernel under TCG and run one canary inside.

Runs only with ``-m kernel_matrix`` (about 40 s here under TCG). Needs root, qemu-system-x86,
busybox-static, virtme-ng in the venv, and the kernel unpacked (with depmod) in the cache.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from harness.bench.kernels.runner import run_boot
from harness.bench.kernels.vm import boot_outcome, guest_prelude, vng_argv

pytestmark = pytest.mark.kernel_matrix
CACHE = Path("/var/cache/netpol-harness/kernels")
RELEASE = "6.1.0-47-amd64"
VNG = Path(sys.executable).with_name("vng")


def test_one_kernel_one_canary(tmp_path):
    kernel = CACHE / RELEASE.removesuffix("-amd64") / "boot" / f"vmlinuz-{RELEASE}"
    if os.geteuid() != 0 or not VNG.exists() or not shutil.which("qemu-system-x86_64") or not kernel.exists():
        pytest.skip(f"needs root, {VNG}, qemu-system-x86_64 and {kernel}")
    rw = tmp_path / "rw"
    rw.mkdir()
    repo = Path(__file__).resolve().parents[1]
    nph = Path(sys.executable).with_name("netpol-harness")
    cmd = (f"{guest_prelude()} export PYTHONDONTWRITEBYTECODE=1; cd {repo}; uname -r > {rw}/release; "
           f"{nph} bench canaries --smoke --repeat 2 --canary ipset_swap --quiet --out {rw}/canaries.json "
           f"> {rw}/out.txt 2>&1; echo $? > {rw}/rc")
    os.environ["PATH"] = f"{VNG.parent}:{os.environ['PATH']}"  # vng execs virtme-run from its venv
    timed_out, log = run_boot(vng_argv(str(VNG), str(kernel), str(rw), cmd, kvm=False), tmp_path / "console.log",
                              240)
    boot_outcome(RELEASE, log, timed_out, 240, (rw / "rc").exists())
    assert (rw / "release").read_text().strip() == RELEASE
    assert (rw / "rc").read_text().strip() == "0", (rw / "out.txt").read_text()
    data = json.loads((rw / "canaries.json").read_text())
    assert data["machine"]["kernel"] == RELEASE
    assert data["metrics"]["ipset_swap.ipset.per_op_us"]["median"] > 0

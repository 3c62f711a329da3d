"""Pure tests of the kernel-matrix orchestration (no root, no VM)."""

import pytest

from harness.bench.kernels.vm import boot_outcome, guest_prelude, parse_kernel, vng_argv
from harness.errors import ConfigError, HarnessError


def test_parse_kernel_forms():
    assert parse_kernel("host").kind == "host"
    k = parse_kernel("6.1.0-47")
    assert (k.kind, k.package, k.release) == ("deb", "linux-image-6.1.0-47-amd64-unsigned", "6.1.0-47-amd64")
    assert parse_kernel("linux-image-6.1.0-57-amd64-unsigned").name == "6.1.0-57-amd64"
    assert parse_kernel("/k/boot/vmlinuz-6.12").kind == "path"


def test_parse_kernel_not_found_is_one_line():
    with pytest.raises(ConfigError, match=r"^--kernel: 'linux-image-6.1.0-47-cloud-amd64' is not"):
        parse_kernel("linux-image-6.1.0-47-cloud-amd64")


def test_vng_argv_tcg_and_kvm():
    tcg = vng_argv("vng", "/k/vmlinuz", "/rw", "true", kvm=False, cpus=2)
    assert tcg[:3] == ["nice", "-n", "10"] and "--disable-kvm" in tcg
    assert tcg[tcg.index("--cpus") + 1] == "2" and tcg[tcg.index("--rwdir") + 1] == "/rw"
    assert tcg[-2:] == ["--exec", "true"] and tcg[tcg.index("--run") + 1] == "/k/vmlinuz"
    assert "--disable-kvm" not in vng_argv("vng", "/k/vmlinuz", "/rw", "true", kvm=True)
    m = vng_argv("vng", "/k/vmlinuz", "/rw", "true", kvm=False, modules="/k/lib/modules/6.1.0-47-amd64")
    assert m[m.index("--rodir") + 1] == "/k/lib/modules/6.1.0-47-amd64"
    with pytest.raises(ConfigError, match="--cpus"):
        vng_argv("vng", "/k", "/rw", "true", kvm=False, cpus=0)


def test_prelude_loads_ip_set():
    assert "modprobe -q ip_set " in guest_prelude() + " "


def test_boot_outcome_errors():
    panic = "[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n[ 1.1] end"
    with pytest.raises(HarnessError, match=r"^kernel k: guest panic: VFS: Unable to mount root fs$"):
        boot_outcome("k", panic, False, 60, False)
    with pytest.raises(HarnessError, match=r"^kernel k: boot/run timeout after 60 s \(qemu killed\)$"):
        boot_outcome("k", "booting", True, 60, False)
    with pytest.raises(HarnessError, match="last console line: reboot: Power down"):
        boot_outcome("k", "x\nreboot: Power down\n", False, 60, False)
    assert boot_outcome("k", "fine", False, 60, True) is None


def test_run_boot_kills_the_group_at_timeout(tmp_path):
    import os
    import time

    from harness.bench.kernels.runner import run_boot

    pidfile = tmp_path / "child"
    # a stand-in for vng with a qemu child: the child must die with the group
    argv = ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo booting; wait"]
    t0 = time.monotonic()
    timed_out, log = run_boot(argv, tmp_path / "console.log", 0.5)
    assert timed_out and "booting" in log and time.monotonic() - t0 < 10
    child = int(pidfile.read_text())
    time.sleep(0.1)
    assert not os.path.exists(f"/proc/{child}") or "Z" in open(f"/proc/{child}/stat").read().split()[2]


def test_run_boot_finished(tmp_path):
    from harness.bench.kernels.runner import run_boot

    assert run_boot(["sh", "-c", "echo done"], tmp_path / "c.log", 10) == (False, "done\n")


def test_early_exception_is_a_panic_and_stops_the_wait(tmp_path):
    import time

    from harness.bench.kernels.runner import run_boot

    log = "[ 0.10] kernel BUG at lib/string_helpers.c:1027!\nPANIC: early exception 0x06 IP 10:ff\n"
    with pytest.raises(HarnessError, match=r"^kernel k: guest panic: kernel BUG at lib/string_helpers.c:1027!$"):
        boot_outcome("k", log, False, 60, False)
    t0 = time.monotonic()
    # a guest that spins after its panic: run_boot returns at the panic, long before the timeout
    timed_out, out = run_boot(["sh", "-c", f"printf '{log}'; sleep 60"], tmp_path / "c.log", 30)
    assert not timed_out and "early exception" in out and time.monotonic() - t0 < 10


def test_long_guest_command_is_refused():
    with pytest.raises(ConfigError, match="^--exec: guest command is 1100 characters"):
        vng_argv("vng", "/k", "/rw", "x" * 1100, kvm=False)

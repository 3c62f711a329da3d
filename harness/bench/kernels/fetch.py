"""Fetch and unpack Debian kernels into a private cache (never /boot, never a machine-wide apt source).

``CACHE/<6.1.0-47>/`` holds the unpacked package (``boot/vmlinuz-*``, ``lib/modules/*``) with
``depmod`` run on it (the package ships no modules.dep); ``CACHE/dl`` the downloaded .debs.
The cache is root-owned 0700: a kernel booted as root must not be replaceable by another user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness.bench.kernels.vm import KernelSpec
from harness.errors import HarnessError

CACHE = Path(os.environ.get("NETPOL_KERNEL_CACHE", "/var/cache/netpol-harness/kernels"))
APT_PACKAGES = {"qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static"}


def _cache_dir(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(cache, 0o700)
    return cache


def vmlinuz_path(spec: KernelSpec, cache: Path = CACHE) -> Path:
    """Where the unpacked kernel image of a Debian spec lives in the cache."""
    return cache / spec.release.removesuffix("-amd64") / "boot" / f"vmlinuz-{spec.release}"


def fetch(spec: KernelSpec, cache: Path = CACHE) -> Path:
    """The vmlinuz of ``spec``: a path as given, a Debian package from the cache or fetched now
    (``apt-get download`` + ``dpkg-deb -x`` + ``depmod -b``). One-line HarnessError if not found."""
    if spec.kind == "path":
        p = Path(spec.path)
        if not p.is_file():
            raise HarnessError(f"kernel {spec.name}: {p} not found")
        return p
    target = vmlinuz_path(spec, cache)
    if target.is_file():
        return target
    dl = _cache_dir(cache) / "dl"
    # 0700 all the way: _apt cannot write here, so apt downloads unsandboxed as root (its warning
    # is expected); the cache never becomes writable by anyone else.
    dl.mkdir(exist_ok=True, mode=0o700)
    print(f"kernels: downloading {spec.package} into {dl}", file=sys.stderr, flush=True)
    p = subprocess.run(["apt-get", "download", spec.package], cwd=dl, capture_output=True, text=True)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["apt-get download failed"])[-1]
        raise HarnessError(f"kernel {spec.name}: package {spec.package} not found in the apt index: {last}")
    deb = sorted(dl.glob(f"{spec.package}_*.deb"))[-1]
    root = target.parents[1]
    tmp = root.with_name(root.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    subprocess.run(["depmod", "-b", str(tmp), spec.release], check=True)
    tmp.rename(root)  # atomic: a half-unpacked kernel is never found as cached
    return target


def _installed(pkg: str) -> bool:
    """dpkg says ``pkg`` is installed (busybox on PATH may be the dynamic one virtme cannot use)."""
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return p.returncode == 0 and p.stdout.endswith("installed")


def ensure_tools(vng: Path) -> None:
    """Install qemu-system-x86 and busybox-static (apt) and virtme-ng (pip, into this venv) if missing."""
    missing = [pkg for tool, pkg in APT_PACKAGES.items() if not _installed(pkg) or not shutil.which(tool)]
    if missing:
        print(f"kernels: installing {' '.join(missing)} (first use)", file=sys.stderr, flush=True)
        if subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True).returncode:
            raise HarnessError(f"kernels: apt-get install {' '.join(missing)} failed; install them and retry")
    if not vng.exists():
        print("kernels: installing virtme-ng==1.42 into the venv (first use)", file=sys.stderr, flush=True)
        if subprocess.run([sys.executable, "-m", "pip", "install", "-q", "virtme-ng==1.42"]).returncode:
            raise HarnessError("kernels: pip install virtme-ng failed")

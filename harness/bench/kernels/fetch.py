"""Fetch and unpack Debian kernels into a private cache (never /boot, never a machine-wide apt source).

``CACHE/<6.1.0-47>/`` (``CACHE/<6.12.117+deb13>/``) holds the unpacked package(s) (``boot/vmlinuz-*``,
``lib/modules/*``) with ``depmod`` run on it (the packages ship no modules.dep); ``CACHE/dl`` the
downloaded .debs; ``CACHE/apt`` the private apt source of suite-qualified kernels (harness.bench.kernels.apt).
The cache is root-owned 0700: a kernel booted as root must not be replaceable by another user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from harness.bench.kernels import apt
from harness.bench.kernels.vm import ABI_RE, KernelSpec
from harness.errors import HarnessError

CACHE = Path(os.environ.get("NETPOL_KERNEL_CACHE", "/var/cache/netpol-harness/kernels"))
LISTS_MAX_AGE_S = 24 * 3600  # a day-old private index is refreshed before resolving a kernel
APT_PACKAGES = {"qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static"}


def _cache_dir(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(cache, 0o700)
    return cache


def vmlinuz_path(spec: KernelSpec, cache: Path = CACHE) -> Path:
    """Where the unpacked kernel image of a Debian spec lives in the cache."""
    return cache / spec.release.removesuffix("-amd64") / "boot" / f"vmlinuz-{spec.release}"


def _last_line(p: subprocess.CompletedProcess, what: str) -> str:
    return next((ln.strip() for ln in reversed(p.stderr.splitlines()) if ln.strip()
                 and not ln.startswith("W: Download is performed unsandboxed")), what)


def apt_index(cache: Path = CACHE) -> dict[str, str]:
    """``{kernel package: suite}`` of the private apt source under ``CACHE/apt``, its lists
    refreshed (``apt-get update`` with private dirs) when missing or older than a day."""
    root = _cache_dir(cache) / "apt"
    for d in (root / "lists" / "partial", root / "cache" / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    (root / "sources.list").write_text(apt.sources_list())
    lists = list((root / "lists").glob("*_Packages*"))
    if not lists or time.time() - min(f.stat().st_mtime for f in lists) > LISTS_MAX_AGE_S:
        print(f"kernels: apt-get update of the private source {root}/sources.list", file=sys.stderr, flush=True)
        p = subprocess.run(apt.update_argv(root), capture_output=True, text=True)
        if p.returncode != 0:
            raise HarnessError(f"kernels: apt-get update of {root}/sources.list failed: "
                               f"{_last_line(p, 'no output')}")
    names = subprocess.run(apt.pkgnames_argv(root), capture_output=True, text=True).stdout.split()
    pkgs = apt.kernel_packages(names)
    if not pkgs:
        return {}
    return apt.parse_madison(subprocess.run(apt.madison_argv(root, pkgs), capture_output=True, text=True).stdout)


def resolve(spec: KernelSpec, cache: Path = CACHE) -> KernelSpec:
    """``spec`` with a suite-qualified kernel resolved to its ABI and packages (the private apt
    index); an exact ABI already in the cache needs no network. Other kinds are returned as is."""
    if spec.kind != "apt" or spec.packages:
        return spec
    if ABI_RE.match(spec.query):
        cached = replace(spec, name=spec.query, abi=spec.query)
        if vmlinuz_path(cached, cache).is_file():
            return cached
    return apt.resolve(spec, apt_index(cache))


def _download(spec: KernelSpec, dl: Path, cache: Path) -> list[Path]:
    """Download the .deb(s) of ``spec`` into ``dl``; one-line HarnessError naming the package."""
    # 0700 all the way: _apt cannot write here, so apt downloads unsandboxed as root (its warning
    # is expected); the cache never becomes writable by anyone else.
    if spec.kind == "apt":
        jobs = [(pkg, apt.download_argv(cache / "apt", pkg, suite)) for pkg, suite in spec.packages]
    else:
        jobs = [(spec.package, ["apt-get", "download", spec.package])]
    debs = []
    for pkg, argv in jobs:
        print(f"kernels: downloading {pkg} into {dl}", file=sys.stderr, flush=True)
        p = subprocess.run(argv, cwd=dl, capture_output=True, text=True)
        if p.returncode != 0:
            where = "the private apt source" if spec.kind == "apt" else "the apt index"
            raise HarnessError(f"kernel {spec.name}: package {pkg} not found in {where}: "
                               f"{_last_line(p, 'apt-get download failed')}")
        debs.append(max(dl.glob(f"{pkg}_*.deb"), key=lambda f: f.stat().st_mtime))
    return debs


def fetch(spec: KernelSpec, cache: Path = CACHE) -> Path:
    """The vmlinuz of ``spec``: a path as given, a Debian kernel from the cache or fetched now
    (``apt-get download`` + ``dpkg-deb -x`` + ``depmod -b``; a suite-qualified one through the
    private apt source). One-line HarnessError if not found."""
    if spec.kind == "path":
        p = Path(spec.path)
        if not p.is_file():
            raise HarnessError(f"kernel {spec.name}: {p} not found")
        return p
    spec = resolve(spec, cache)
    target = vmlinuz_path(spec, cache)
    if target.is_file():
        return target
    dl = _cache_dir(cache) / "dl"
    dl.mkdir(exist_ok=True, mode=0o700)
    debs = _download(spec, dl, cache)
    root = target.parents[1]
    tmp = root.with_name(root.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    moddir = tmp / "usr" / "lib" / "modules" / spec.release
    for name in ("vmlinuz", "vmlinuz.unsigned"):
        # sid's 7.x linux-binary[-unsigned] puts the image beside the modules (the kernel-install
        # layout: usr/lib/modules/ABI/vmlinuz[.unsigned]), not in boot/: give it the boot/ path
        if (moddir / name).is_file() and not (tmp / "boot" / target.name).exists():
            (tmp / "boot").mkdir(exist_ok=True)
            os.link(moddir / name, tmp / "boot" / target.name)
    if not (tmp / "boot" / target.name).is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise HarnessError(f"kernel {spec.name}: {', '.join(d.name for d in debs)} carry no boot/{target.name}")
    if (tmp / "usr" / "lib" / "modules").is_dir() and not (tmp / "lib").exists():
        # trixie and later are merged-/usr (modules in usr/lib/modules); bookworm's depmod -b and
        # the guest's module path look in lib/modules: link it as a merged-/usr root does
        (tmp / "lib").symlink_to("usr/lib")
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

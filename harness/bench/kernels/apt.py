"""A private apt source for newer Debian kernels (trixie, its backports, bookworm-backports, sid),
used only inside the fetch: its sources list, lists and package cache live under
``CACHE/apt/``; /etc/apt and the machine's lists are never read for sources nor written.

The argv are built here as data (the tests check them without network); ``fetch`` runs them.
Package layout, checked in the indexes on 2026-12-02:
- trixie's 6.12 (and bookworm-backports' 6.12.95): ``linux-image-ABI-amd64-unsigned`` carries
  ``boot/vmlinuz-ABI`` and ``lib/modules/ABI`` (modules ``.ko.xz``: the host's kmod 30 has +XZ);
- trixie-backports' 6.16-6.19: only the signed ``linux-image-ABI-amd64`` (same content, signed);
- sid's 7.2 and trixie-backports' 7.x: ``linux-image-ABI`` is a metapackage over
  ``linux-binary[-unsigned]-ABI`` (vmlinuz), ``linux-modules-ABI`` (modules) and
  ``linux-base-ABI`` (config, System.map, modules.builtin*).
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.bench.kernels.vm import ABI_RE, APT_SUITES, PKG_ABI_RE, KernelSpec
from harness.errors import HarnessError

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"  # bookworm's: has the 13/trixie keys sid uses


def sources_list(suites: tuple[str, ...] = APT_SUITES, mirror: str = MIRROR) -> str:
    """The private sources.list: one ``deb`` line per suite, main only, signed by Debian's keyring."""
    return "".join(f"deb [signed-by={KEYRING}] {mirror} {s} main\n" for s in suites)


def apt_options(root: Path) -> list[str]:
    """``-o`` options pointing apt at ``root`` only: its sources list (no sources.list.d), its
    lists and package cache; no machine preferences (a pin there must not pick our kernel)."""
    return ["-o", f"Dir::Etc::SourceList={root}/sources.list", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={root}/lists", "-o", f"Dir::Cache={root}/cache",
            "-o", "Dir::Etc::Preferences=/dev/null", "-o", "Dir::Etc::PreferencesParts=/dev/null",
            "-o", "Acquire::Languages=none"]


def update_argv(root: Path) -> list[str]:
    """``apt-get update`` of the private lists."""
    return ["apt-get", *apt_options(root), "-q", "update"]


def pkgnames_argv(root: Path) -> list[str]:
    """Every package name of the private index starting ``linux-``."""
    return ["apt-cache", *apt_options(root), "pkgnames", "linux-"]


def madison_argv(root: Path, packages: list[str]) -> list[str]:
    """``apt-cache madison``: version and suite of each package in the private index."""
    return ["apt-cache", *apt_options(root), "madison", *packages]


def download_argv(root: Path, package: str, suite: str) -> list[str]:
    """``apt-get download PACKAGE/SUITE`` (into the current directory) from the private source."""
    return ["apt-get", *apt_options(root), "-q", "download", f"{package}/{suite}"]


def kernel_packages(names: list[str]) -> list[str]:
    """The generic-flavour kernel packages among ``names`` (no -cloud, -rt, -dbg, headers)."""
    return sorted(n for n in names if PKG_ABI_RE.match(n.strip()))


def parse_madison(text: str) -> dict[str, str]:
    """``{package: suite}`` from ``apt-cache madison`` lines
    (`` pkg | 6.12.117-1 | http://deb.debian.org/debian trixie/main amd64 Packages``)."""
    out = {}
    for ln in text.splitlines():
        parts = [p.strip() for p in ln.split("|")]
        if len(parts) == 3 and parts[2].endswith("Packages"):
            suite = parts[2].split()[1].split("/")[0]
            out.setdefault(parts[0], suite)
    return out


def _abi_key(abi: str) -> tuple[int, ...]:
    """Sort key: 6.12.9+deb13 < 6.12.117+deb13 < 6.12.117+deb13.1 (numbers, not text)."""
    return tuple(int(n) for n in re.findall(r"\d+", abi))


def _matches(abi: str, query: str) -> bool:
    upstream = ABI_RE.match(abi).group("upstream")
    if query == "latest":
        return True
    if ABI_RE.match(query):
        return abi == query
    series = query.removesuffix(".x")
    if series.count(".") == 1:
        return upstream.startswith(series + ".")
    return upstream == series


def resolve(spec: KernelSpec, index: dict[str, str]) -> KernelSpec:
    """The newest kernel of ``spec.suites`` matching ``spec.query`` in ``index`` ({package: suite}),
    with the packages that carry its vmlinuz and modules; one-line HarnessError if none."""
    avail = {p: s for p, s in index.items() if s in spec.suites}
    abis = {PKG_ABI_RE.match(p).group("abi") for p in avail if PKG_ABI_RE.match(p)}
    found = sorted((a for a in abis if ABI_RE.match(a) and _matches(a, spec.query)), key=_abi_key)
    if not found:
        near = ", ".join(sorted(abis, key=_abi_key)[-4:]) or "none"
        raise HarnessError(f"kernel {spec.name}: no Debian kernel {spec.query} in {'/'.join(spec.suites)} "
                           f"(newest there: {near})")
    abi = found[-1]
    if f"linux-modules-{abi}" in avail:
        binary = next(p for p in (f"linux-binary-unsigned-{abi}", f"linux-binary-{abi}", f"linux-image-{abi}")
                      if p in avail)
        pkgs = [binary, f"linux-modules-{abi}"] + ([f"linux-base-{abi}"] if f"linux-base-{abi}" in avail else [])
    elif f"linux-image-{abi}-unsigned" in avail:
        pkgs = [f"linux-image-{abi}-unsigned"]
    elif f"linux-image-{abi}" in avail:
        pkgs = [f"linux-image-{abi}"]
    else:
        raise HarnessError(f"kernel {spec.name}: {abi} has no linux-image/linux-binary package in "
                           f"{'/'.join(spec.suites)}")
    return KernelSpec(abi, "apt", suites=spec.suites, query=spec.query, abi=abi,
                      packages=tuple((p, avail[p]) for p in pkgs))

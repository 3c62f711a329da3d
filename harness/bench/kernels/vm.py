"""Pure orchestration of one kernel boot: kernel specs, the ``vng`` argv, boot outcome (no I/O)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, HarnessError

# Debian's generic flavour only: -cloud kernels lack 9p, which the guest's root filesystem needs.
DEB_RE = re.compile(r"^linux-image-(?P<version>\d+\.\d+\.\d+-\d+-amd64)-unsigned$")
SHORT_RE = re.compile(r"^\d+\.\d+\.\d+-\d+$")  # 6.1.0-47 -> linux-image-6.1.0-47-amd64-unsigned
# Debian suites reachable through the fetch's private apt source (checked on deb.debian.org,
# 2026-12-02: HTTP 200 and signed by keys in bookworm's debian-archive-keyring); "unstable" is sid.
APT_SUITES = ("bookworm-backports", "trixie", "trixie-backports", "sid")
SUITE_ALIASES = {"unstable": "sid"}
# Since trixie the ABI name carries the upstream version and the release: 6.12.117+deb13-amd64.
# The +debNN says which suites can carry it (deb12 = bookworm-backports' 6.12, deb14 = sid).
ABI_RE = re.compile(r"^(?P<upstream>\d+\.\d+\.\d+)\+deb(?P<deb>\d+)(?:\.\d+)?-amd64$")
DEB_SUITES = {"12": ("bookworm-backports",), "13": ("trixie", "trixie-backports"), "14": ("sid",)}
# what the user may ask of a suite: latest, a series (6.12, 6.12.x), an upstream version (6.12.117),
# an ABI (6.12.117+deb13 or 6.12.117+deb13-amd64), or a package name carrying it
QUERY_RE = re.compile(r"^(latest|\d+\.\d+(\.x|\.\d+)?|\d+\.\d+\.\d+\+deb\d+(\.\d+)?(-amd64)?)$")
PKG_ABI_RE = re.compile(r"^linux-(?:image|binary(?:-unsigned)?|modules|base)-(?P<abi>\d+\.\d+\.\d+\+deb\d+(?:\.\d+)?"
                        r"-amd64)(?:-unsigned)?$")
GUEST_MODULES = ("ip_set", "ip_set_hash_ip", "ip_set_hash_net", "ip_set_hash_ipport", "ip_set_list_set",
                 "nf_tables", "nft_compat", "ip_tables", "iptable_filter", "xt_set", "xt_comment",
                 "xt_conntrack", "nf_conntrack", "br_netfilter", "veth", "bridge")
PANIC = "Kernel panic - not syncing"
# An oops before the console is up ends in "PANIC: early exception" and the guest spins, never
# reaching "Kernel panic": seen with a kernel command line over COMMAND_LINE_SIZE (2048 on x86),
# which fortify_panic()s in start_kernel (lib/string_helpers.c) - hence the guest script in a file.
PANICS = (PANIC, "PANIC: early exception", "kernel BUG at")
CMDLINE_MAX = 2048


@dataclass(frozen=True)
class KernelSpec:
    """One kernel of the matrix: ``host`` (the running kernel, no VM), a Debian package, or a
    ``vmlinuz`` path the user gives (its modules beside it under ``lib/modules``)."""

    name: str
    kind: str  # host | deb | apt | path
    package: str = ""
    path: str = ""
    # apt: a kernel from a suite of the private apt source (``trixie:6.12``), resolved by the fetch
    suites: tuple[str, ...] = ()
    query: str = ""  # apt: latest | 6.12 | 6.12.117 | 6.12.117+deb13-amd64
    abi: str = ""  # apt, once resolved: 6.12.117+deb13-amd64
    packages: tuple[tuple[str, str], ...] = ()  # apt, once resolved: (package, suite) to unpack

    @property
    def release(self) -> str:
        """The kernel release (``6.1.0-47-amd64``, ``6.12.117+deb13-amd64``), else '' (host, a
        path, an apt kernel not resolved yet)."""
        if self.kind == "apt":
            return self.abi
        m = DEB_RE.match(self.package)
        return m.group("version") if m else ""


def _apt_spec(text: str, suite: str, query: str) -> KernelSpec:
    """An ``apt`` KernelSpec for ``suite:query`` (suite '' = inferred from the +debNN of query)."""
    m = PKG_ABI_RE.match(query)
    if m:  # a package name stands for its ABI
        query = m.group("abi")
    if not QUERY_RE.match(query):
        raise ConfigError(None, "--kernel", f"{text!r}: {query!r} is not latest, a series (6.12), a version "
                                            "(6.12.117), an ABI (6.12.117+deb13) or a linux-image package")
    if not query.endswith("-amd64") and "+deb" in query:
        query += "-amd64"
    if suite:
        suite = SUITE_ALIASES.get(suite, suite)
        if suite not in APT_SUITES:
            raise ConfigError(None, "--kernel", f"{text!r}: {suite!r} is not a Debian suite the fetch can reach "
                                                f"({', '.join(APT_SUITES)})")
        suites: tuple[str, ...] = (suite,)
    else:
        a = ABI_RE.match(query)
        if not a or a.group("deb") not in DEB_SUITES:
            raise ConfigError(None, "--kernel", f"{text!r}: name a suite (trixie:{query}) or a known +debNN ABI")
        suites = DEB_SUITES[a.group("deb")]
    return KernelSpec(query if ABI_RE.match(query) else f"{suites[0]}:{query}", "apt", suites=suites, query=query)


def parse_kernel(text: str) -> KernelSpec:
    """``host``, ``6.1.0-47``, ``linux-image-6.1.0-47-amd64-unsigned`` (the machine's apt index),
    ``SUITE:QUERY`` (``trixie:6.12``, ``sid:latest``, ``trixie-backports:6.18.15+deb13``: a private
    apt source of that suite), a bare ABI (``6.12.117+deb13``: suite from the +debNN) or a path;
    ConfigError naming ``--kernel`` if none."""
    t = text.strip()
    if t == "host":
        return KernelSpec("host", "host")
    if ":" in t and "/" not in t:
        suite, query = t.split(":", 1)
        return _apt_spec(text, suite, query)
    if ABI_RE.match(t) or ABI_RE.match(t + "-amd64") or PKG_ABI_RE.match(t):
        return _apt_spec(text, "", t)
    if SHORT_RE.match(t):
        t = f"linux-image-{t}-amd64-unsigned"
    if DEB_RE.match(t):
        return KernelSpec(DEB_RE.match(t).group("version"), "deb", package=t)
    if "/" in t or t.startswith("vmlinuz"):
        return KernelSpec(Path(t).name, "path", path=t)
    raise ConfigError(None, "--kernel", f"{text!r} is not host, a Debian linux-image-X-amd64-unsigned package "
                                        "(or its short form 6.1.0-47), SUITE:VERSION (trixie:6.12, sid:latest) "
                                        "or a vmlinuz path")


def vng_argv(vng: str, kernel: str, rwdir: str, command: str, *, kvm: bool, cpus: int = 1,
             memory: str = "1G", modules: str = "") -> list[str]:
    """The ``vng`` command line booting ``kernel`` over the host's root (read-only, overlays on
    /tmp, /var, ...) with ``rwdir`` shared read-write, running ``command`` in the guest, under
    ``nice -n 10`` (the machine is shared). ``modules`` (the kernel's ``lib/modules/RELEASE``) is
    shared read-only: virtme links /lib/modules/RELEASE to it, but the guest's tmpfs overlay on
    /var hides the host's /var/cache, where the cache is, so without it no module loads."""
    if len(command) > CMDLINE_MAX // 2:  # vng puts it on the kernel command line with its own options
        raise ConfigError(None, "--exec", f"guest command is {len(command)} characters: write it to a script file")
    if cpus < 1:
        raise ConfigError(None, "--cpus", "must be 1 or more")
    argv = ["nice", "-n", "10", vng, "--run", kernel, "--force-9p", "--cpus", str(cpus), "--memory", memory,
            "--rwdir", rwdir, "--verbose"]
    if modules:
        argv += ["--rodir", modules]
    if not kvm:
        argv.append("--disable-kvm")
    return [*argv, "--exec", command]


def guest_prelude(modules: tuple[str, ...] = GUEST_MODULES) -> str:
    """Shell that loads the netfilter modules the suites need (ipset does not autoload ip_set)."""
    return " ".join(f"modprobe -q {shlex.quote(m)} 2>/dev/null;" for m in modules)


def panic_line(log: str) -> str:
    """The reason of the first panic on a console log (``VFS: Unable to mount root fs``,
    ``kernel BUG at lib/string_helpers.c:1027!``), '' if none."""
    for ln in log.splitlines():
        for marker in PANICS:
            if marker in ln:
                rest = ln.split(marker, 1)[1].strip(" :")
                return (rest if marker == PANIC else f"{marker} {rest}".strip()) or "no reason"
    return ""


def boot_outcome(kernel: str, log: str, timed_out: bool, timeout_s: float, result_present: bool) -> None:
    """Raise the one-line HarnessError a failed boot deserves; return if the guest finished."""
    line = panic_line(log)
    if line:
        raise HarnessError(f"kernel {kernel}: guest panic: {line}")
    if timed_out:
        raise HarnessError(f"kernel {kernel}: boot/run timeout after {timeout_s:g} s (qemu killed)")
    if not result_present:
        last = next((ln.strip() for ln in reversed(log.splitlines()) if ln.strip()), "no console output")
        raise HarnessError(f"kernel {kernel}: guest wrote no result; last console line: {last}")

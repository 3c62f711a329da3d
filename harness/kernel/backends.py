"""iptables backends (``nft`` = iptables-nft, ``legacy`` = iptables-legacy) and the ipset tool.

A backend is only a choice of binaries; every call runs inside a lab namespace through
``harness.kernel.netns.run``. One namespace is programmed by one backend: the x_tables (legacy) and
nf_tables worlds both see packets, so rules split across them would make results meaningless;
``check_not_mixed`` refuses a namespace where the other backend already has rules.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass

from harness.errors import ConfigError, EnvironmentProblem, KernelError
from harness.kernel import netns

log = logging.getLogger(__name__)

IPSET = "ipset"
APT_HINT = {
    "ipset": "install it: apt-get install ipset",
    "iptables": "install it: apt-get install iptables (provides iptables-nft and iptables-legacy)",
}


@dataclass(frozen=True)
class Backend:
    """The three binaries of one iptables flavour; ``wait`` adds ``-w`` where the tool takes the
    xtables lock (legacy: the lock file is shared by every namespace on the host)."""

    name: str
    iptables: str
    save: str
    restore: str
    family: str = "IPv4"  # IPv6: the ip6tables binaries of the same flavour (for_family)

    def for_family(self, family: str) -> Backend:
        """This flavour's binaries for ``family``: ``ip6tables-nft``/``ip6tables-legacy`` (and their
        -save/-restore) for ``IPv6``, as kube-router's NewIPTablesHandlers picks per family
        (v2.10.0:pkg/controllers/netpol/network_policy_controller.go, iptables.NewWithProtocol)."""
        if family == self.family:
            return self
        if family != "IPv6":
            return BACKENDS[self.name]
        flavour = self.name
        return Backend(self.name, f"ip6tables-{flavour}", f"ip6tables-{flavour}-save", f"ip6tables-{flavour}-restore",
                       family="IPv6")

    def iptables_argv(self, *args: str) -> list[str]:
        """argv for one ``iptables`` call on the filter table."""
        return [self.iptables, "-w", "-t", "filter", *args]

    def save_argv(self) -> list[str]:
        """argv for ``iptables-save -t filter``."""
        return [self.save, "-t", "filter"]

    def restore_argv(self) -> list[str]:
        """argv for a whole-table ``iptables-restore`` (no --noflush), fed on stdin."""
        # -w: iptables-legacy-restore takes the host-wide xtables lock; nft ignores it
        return [self.restore, "-w"] if self.name == "legacy" else [self.restore]

    @property
    def binaries(self) -> tuple[str, ...]:
        return (self.iptables, self.save, self.restore, IPSET)

    @property
    def other(self) -> Backend:
        return BACKENDS["legacy" if self.name == "nft" else "nft"]


BACKENDS: dict[str, Backend] = {
    "nft": Backend("nft", "iptables-nft", "iptables-nft-save", "iptables-nft-restore"),
    "legacy": Backend("legacy", "iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore"),
}


def get_backend(backend: str | Backend, source: str | None = None, field: str = "backend") -> Backend:
    """The Backend for a name (``nft``/``legacy``); a wrong name is a ConfigError naming ``field``."""
    if isinstance(backend, Backend):
        return backend
    try:
        return BACKENDS[backend]
    except KeyError:
        raise ConfigError(source, field, f"unknown iptables backend {backend!r} (choose nft or legacy)") from None


def require_tools(backend: str | Backend) -> Backend:
    """Check root and the backend's binaries; raise EnvironmentProblem with an install hint."""
    b = get_backend(backend)
    if os.geteuid() != 0:
        raise EnvironmentProblem("applying rules needs root (CAP_NET_ADMIN)", "run as root, e.g. sudo -E")
    for binary in b.binaries:
        if shutil.which(binary) is None:
            hint = APT_HINT["ipset" if binary == IPSET else "iptables"]
            raise EnvironmentProblem(f"{binary} not found on PATH (needed by the {b.name} backend)", hint)
    return b


def _first_line(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stdout or "") + (proc.stderr or "")
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


def versions(backend: str | Backend, netns_name: str) -> dict[str, str]:
    """Versions of the tools and kernel, e.g. ``{"iptables": "iptables v1.8.9 (nf_tables)",
    "ipset": "ipset v7.17, protocol version: 7", "kernel": "6.18.44", "backend": "nft"}``.
    Runs inside ``netns_name`` (``ipset --version`` asks the kernel for its protocol)."""
    b = require_tools(backend)
    ipt = netns.run(netns_name, [b.iptables, "--version"], check=False)
    ips = netns.run(netns_name, [IPSET, "--version"], check=False)
    return {"backend": b.name, "iptables": _first_line(ipt), "ipset": _first_line(ips),
            "kernel": platform.release()}


def has_rules(save_text: str) -> bool:
    """True if ``iptables-save`` output shows any rule or user-defined chain in any table."""
    for line in save_text.splitlines():
        if line.startswith("-A "):
            return True
        if line.startswith(":") and " - " in line:  # user chains have no policy ("-")
            return True
    return False


_checked: dict[str, str] = {}


def check_not_mixed(netns_name: str, backend: str | Backend, *, force: bool = False) -> None:
    """Refuse (KernelError) to program ``netns_name`` with ``backend`` if the other backend already
    has rules there. Checked once per namespace and backend (cached) unless ``force``."""
    b = get_backend(backend)
    if not force and _checked.get(netns_name) == b.name:
        return
    other = b.other
    proc = netns.run(netns_name, [other.save], check=False)
    if proc.returncode == 0 and has_rules(proc.stdout):
        raise KernelError(
            f"namespace {netns_name} already has iptables rules of the {other.name} backend; "
            f"refusing to add {b.name} rules there (never mix backends in one namespace)")
    _checked[netns_name] = b.name


def forget(netns_name: str) -> None:
    """Drop the cached mixed-backend check for a namespace (call when it is deleted)."""
    _checked.pop(netns_name, None)


def exec_env(backend: str | Backend, netns_name: str) -> dict[str, str] | None:
    """The environment for the backend's tools run in ``netns_name``, or None (inherit).

    iptables-legacy serializes every call on one host-wide lock file, /run/xtables.lock
    (iptables(8), LOCK FILE; iptables 1.8.9 iptables/xshared.c xtables_lock: flock on the file
    named by XTABLES_LOCKFILE if set). A real cluster has one such lock per node, so each
    namespace gets its own: its nsfs handle ``/run/netns/<name>``, which exists exactly as long as
    the namespace has a name and needs no cleanup (iptables opens it O_CREAT|O_RDONLY and flocks
    it). iptables-nft takes no xtables lock: None."""
    if get_backend(backend).name != "legacy":
        return None
    return {**os.environ, "XTABLES_LOCKFILE": netns.path(netns_name)}

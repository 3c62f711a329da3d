"""Can this machine run the kernel part? Privileges, binaries and kernel features, each with a fix.

Kernel features are probed for real, inside a throw-away namespace ``nph-check-<hex>``: a
bridge and a veth are created, an ipset is made, and one iptables-restore per backend loads
every match and target kube-router uses. A feature compiled as a module is loaded by such a
probe on demand, just as it would be in use. The one host-wide action the harness ever takes
is ``modprobe br_netfilter`` when /proc/sys/net/bridge is missing (``ensure_br_netfilter``);
``check`` reports whether it is needed.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass

from harness.errors import EnvironmentProblem, HarnessError

CAP_NET_ADMIN = 12
# Checks that never block: br_netfilter is loaded by the lab itself; the neighbour-table size
# only matters for big sweeps.
NOTES = ("br_netfilter", "neighbour table")
CAP_SYS_ADMIN = 21

APT_FOR = {
    "ipset": "ipset", "conntrack": "conntrack", "ip": "iproute2", "modprobe": "kmod",
}
IPTABLES_BINARIES = [f"iptables{b}{s}" for b in ("", "-nft", "-legacy") for s in ("", "-save", "-restore")]

# Every match/target kube-router's filter table uses, one rule each (so a failure names it).
PROBE_RULES = {
    "conntrack (xt_conntrack)": "-A NPH-CHECK -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "ip_set + xt_set (hash:ip)": "-A NPH-CHECK -m set --match-set nph-check-ip src -j ACCEPT",
    "ip_set hash:net": "-A NPH-CHECK -m set --match-set nph-check-net dst -j ACCEPT",
    "physdev (xt_physdev)": "-A NPH-CHECK -m physdev --physdev-is-bridged -j ACCEPT",
    "NFLOG (xt_NFLOG, nfnetlink_log)": "-A NPH-CHECK -m limit --limit 10/minute --limit-burst 10 "
                                       "-j NFLOG --nflog-group 100",
    "REJECT (ipt_REJECT)": "-A NPH-CHECK -j REJECT",
    "mark (xt_mark)": "-A NPH-CHECK -m mark ! --mark 0x10000/0x10000 -j MARK --set-xmark 0x20000/0x20000",
    "addrtype (xt_addrtype)": "-A NPH-CHECK -m addrtype --src-type LOCAL -j ACCEPT",
    "comment (xt_comment)": "-A NPH-CHECK -m comment --comment nph -j ACCEPT",
}
MODULE_FOR = {
    "conntrack (xt_conntrack)": "nf_conntrack xt_conntrack",
    "ip_set + xt_set (hash:ip)": "ip_set ip_set_hash_ip xt_set",
    "ip_set hash:net": "ip_set_hash_net",
    "physdev (xt_physdev)": "xt_physdev",
    "NFLOG (xt_NFLOG, nfnetlink_log)": "xt_NFLOG nfnetlink_log xt_limit",
    "REJECT (ipt_REJECT)": "ipt_REJECT",
    "mark (xt_mark)": "xt_mark",
    "addrtype (xt_addrtype)": "xt_addrtype",
    "comment (xt_comment)": "xt_comment",
}


@dataclass
class Check:
    """One line of ``netpol-harness check``."""

    name: str
    ok: bool
    detail: str = ""
    hint: str | None = None


def _capabilities() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require_privileges() -> None:
    """Raise EnvironmentProblem (one line, with the fix) unless this process may build a lab."""
    caps = _capabilities()
    missing = [n for bit, n in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"))
               if not caps & (1 << bit)]
    if missing:
        raise EnvironmentProblem(f"the lab needs {' and '.join(missing)} (euid {os.geteuid()})",
                                 "run as root; in a container, --privileged")


def br_netfilter_loaded() -> bool:
    return os.path.isdir("/proc/sys/net/bridge")


def ensure_br_netfilter() -> None:
    """Load br_netfilter if it is missing: the only host-wide action of the harness (a module
    load; its per-namespace switch is then set only inside lab node namespaces)."""
    if br_netfilter_loaded():
        return
    modprobe = shutil.which("modprobe")
    if modprobe:
        subprocess.run([modprobe, "br_netfilter"], capture_output=True, timeout=30)
    if not br_netfilter_loaded():
        raise EnvironmentProblem("kernel: br_netfilter missing (/proc/sys/net/bridge)",
                                 "modprobe br_netfilter; or build with CONFIG_BRIDGE_NETFILTER")


def checks() -> list[Check]:
    """Every check, passed or not, in display order."""
    out: list[Check] = []
    root = os.geteuid() == 0
    out.append(Check("root", root, f"euid {os.geteuid()}", None if root else "run as root (sudo)"))
    caps = _capabilities()
    for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")):
        ok = bool(caps & (1 << bit))
        out.append(Check(name, ok, "effective" if ok else "missing",
                         None if ok else "run as root outside a restricted container (--privileged)"))
    for b in [*IPTABLES_BINARIES, "ipset", "conntrack"]:
        p = shutil.which(b)
        pkg = APT_FOR.get(b, "iptables")
        out.append(Check(f"binary {b}", p is not None, p or "not found",
                         None if p else f"apt-get install -y {pkg}"))
    out.append(_neighbour_note())
    if not (root and caps & (1 << CAP_NET_ADMIN) and caps & (1 << CAP_SYS_ADMIN)):
        out.append(Check("kernel features", False, "not probed: needs root", "run as root"))
        return out
    out.extend(_kernel_checks())
    return out


def _neighbour_note() -> Check:
    """The ARP table limit is one host-wide table shared by every namespace (only the root
    namespace may set it, which the harness never does)."""
    try:
        with open("/proc/sys/net/ipv4/neigh/default/gc_thresh3") as f:
            thresh = int(f.read())
    except (OSError, ValueError):
        return Check("neighbour table", True, "gc_thresh3 unknown")
    if thresh >= 8192:
        return Check("neighbour table", True, f"gc_thresh3 {thresh} (host-wide)")
    return Check("neighbour table", False,
                 f"gc_thresh3 {thresh} is host-wide: traffic to more than ~{thresh} pod IPs at once can overflow it",
                 "only for big probe sweeps: sysctl -w net.ipv4.neigh.default.gc_thresh3=65536 (host-wide)")


def _kernel_checks() -> list[Check]:
    from harness.kernel import netns, rtnl

    out: list[Check] = []
    br = br_netfilter_loaded()
    out.append(Check("br_netfilter", br, "/proc/sys/net/bridge present" if br else
                     "not loaded (the lab will run `modprobe br_netfilter`)",
                     None if br else "modprobe br_netfilter"))
    name = f"nph-check-{secrets.token_hex(3)}"
    try:
        netns.create(name)
    except HarnessError as e:
        out.append(Check("network namespaces", False, str(e), "kernel with CONFIG_NET_NS=y"))
        return out
    try:
        out.append(Check("network namespaces", True, "unshare + bind mount"))
        r = netns.call_in(name, rtnl.Rtnl.here, name)
        try:
            for what, req, hint in (
                ("bridge", rtnl.bridge("nph-br", index=10), "modprobe bridge"),
                ("veth", rtnl.veth("nph-v0", "nph-v1", master=10, index=11, peer_index=12), "modprobe veth"),
            ):
                try:
                    r.run([req])
                    out.append(Check(what, True, "created"))
                except HarnessError as e:
                    out.append(Check(what, False, str(e), hint))
        finally:
            r.close()
        if br:
            ok = netns.call_in(name, os.path.exists, "/proc/sys/net/bridge/bridge-nf-call-iptables")
            out.append(Check("br_netfilter per namespace", ok, "bridge-nf-call-iptables per netns" if ok else
                             "no per-namespace switch (kernel < 5.3?)", None if ok else "kernel >= 5.3"))
        out.extend(_netfilter_checks(name))
    finally:
        netns.delete(name)
    return out


def _netfilter_checks(ns: str) -> list[Check]:
    from harness.kernel import netns
    from harness.kernel.backends import BACKENDS

    out: list[Check] = []
    if not shutil.which("ipset"):
        return out
    p = netns.run(ns, ["ipset", "restore"], check=False,
                  input="create nph-check-ip hash:ip timeout 0\ncreate nph-check-net hash:net\n")
    out.append(Check("ip_set (hash:ip, hash:net)", p.returncode == 0, (p.stderr.strip() or "created")[:80],
                     None if p.returncode == 0 else "modprobe ip_set ip_set_hash_ip ip_set_hash_net"))
    for backend, tools in BACKENDS.items():
        binary = tools.restore
        if not shutil.which(binary):
            continue
        bad = []
        for feature, rule in PROBE_RULES.items():
            text = f"*filter\n:NPH-CHECK - [0:0]\n{rule}\nCOMMIT\n"
            q = netns.run(ns, [binary, "--noflush"], check=False, input=text)
            if q.returncode != 0:
                bad.append(feature)
        if bad:
            mods = " ".join(MODULE_FOR[b] for b in bad)
            out.append(Check(f"netfilter via iptables-{backend}", False, "missing: " + ", ".join(bad),
                             f"modprobe -a {mods}"))
        else:
            out.append(Check(f"netfilter via iptables-{backend}", True, f"{len(PROBE_RULES)} matches/targets load"))
    if shutil.which("conntrack"):
        q = netns.run(ns, ["conntrack", "-L"], check=False)
        out.append(Check("conntrack netlink", q.returncode == 0, (q.stderr.strip().splitlines() or ["ok"])[-1][:80],
                         None if q.returncode == 0 else "modprobe nf_conntrack_netlink"))
    return out


@functools.lru_cache(maxsize=1)
def _cached_problems() -> tuple[EnvironmentProblem, ...]:
    return tuple(EnvironmentProblem(f"{c.name}: {c.detail}", c.hint) for c in checks()
                 if not c.ok and c.name not in NOTES)


def environment_problems(*, cached: bool = True) -> list[EnvironmentProblem]:
    """What keeps the kernel part from running here, each with an install/modprobe hint; empty
    when all is well. A missing br_netfilter is not listed: the lab loads it itself. Cached per
    process unless ``cached`` is False."""
    if not cached:
        _cached_problems.cache_clear()
    return list(_cached_problems())

"""A read-only snapshot of the root network namespace, to prove the harness leaves it alone.

``root_namespace_snapshot()`` is the text of ``ip -d link``, ``ip addr``, ``ip route`` (all
tables, v4 and v6), ``ip rule``, ``iptables-legacy-save``, ``nft list ruleset`` and
``net.ipv4.ip_forward``, byte for byte, with only what changes by itself taken out: packet and
byte counters (iptables' ``[p:b]``, nft's ``counter packets p bytes b``), the timestamp comments
of ``iptables-save``, and the remaining lifetimes of dynamic addresses. Two snapshots are equal
iff nothing else in the root namespace changed in between.
"""

from __future__ import annotations

import re
import shutil
import subprocess

COMMANDS = {
    "ip -d link": ["ip", "-d", "link"],
    "ip addr": ["ip", "addr"],
    "ip route": ["ip", "route", "show", "table", "all"],
    "ip -6 route": ["ip", "-6", "route", "show", "table", "all"],
    "ip rule": ["ip", "rule"],
    "ip -6 rule": ["ip", "-6", "rule"],
    "iptables-legacy-save": ["iptables-legacy-save"],
    "nft list ruleset": ["nft", "list", "ruleset"],
}
_COUNTERS = re.compile(r"\[\d+:\d+\]")
_NFT_COUNTERS = re.compile(r"counter packets \d+ bytes \d+")
_LIFETIMES = re.compile(r"(valid_lft|preferred_lft) \d+sec")


def _run(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return f"<{argv[0]} not installed>"
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return p.stdout if p.returncode == 0 else f"<{argv[0]} failed: {p.stderr.strip()}>"


def normalize(name: str, text: str) -> str:
    """Command ``name``'s output with only what changes by itself replaced (pure)."""
    if name == "iptables-legacy-save":
        text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))
        return _COUNTERS.sub("[0:0]", text)
    if name == "nft list ruleset":
        return _NFT_COUNTERS.sub("counter packets 0 bytes 0", text)
    if name == "ip addr":
        return _LIFETIMES.sub(r"\1 N", text)
    return text


def root_namespace_snapshot() -> dict[str, str]:
    """Each command's output (normalized as the module says) and ``net.ipv4.ip_forward``.
    Read-only; must run in the root namespace (as the calling thread is, outside ``netns.entered``)."""
    snap = {name: normalize(name, _run(argv)) for name, argv in COMMANDS.items()}
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        snap["net.ipv4.ip_forward"] = f.read()
    return snap

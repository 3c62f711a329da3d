"""Canaries for known netfilter regressions; each repeat runs in a fresh ``nph-`` namespace.

- ``iptables_calls``: N sequential single ``iptables -A`` execs (default 200). The x_tables
  table-replace change reverted in 2021 made them ~10x slower (legacy replaces the whole table
  per call; nft sends a batch, but still dumps the ruleset cache).
- ``ipset_swap``: N ``swap`` commands in one ``ipset restore`` (default 1,000): kernel cost per
  swap, without exec cost. 6.1.69 added a synchronize_rcu to ip_set_swap (~500x slower).
- ``iptables_restore``: one ``iptables-restore`` of a chain of N rules (default 100,000),
  legacy vs nft; ``iptables_save``: ``iptables-save -t filter`` of that table.
- ``ipset_restore``: one ``ipset restore`` of a hash:ip set with N entries (default 100,000).

Metrics are named ``<canary>.<backend>.<quantity>`` (backend ``ipset`` for the ipset canaries)
with per-op costs (``per_op_us``, ``per_1k_ms``) next to the totals.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from harness.bench.baseline import BENCH_BACKENDS, Baseline
from harness.bench.common import fresh_ns, progress, timed_output, timed_run
from harness.errors import KernelError
from harness.kernel import netns
from harness.kernel.backends import IPSET, get_backend

log = logging.getLogger(__name__)


@dataclass
class CanarySizes:
    """Operation counts per canary (the defaults are the issue's sizes)."""

    calls: int = 200
    swaps: int = 1000
    rules: int = 100_000
    entries: int = 100_000


SMOKE_SIZES = CanarySizes(calls=20, swaps=50, rules=2000, entries=2000)
CANARIES = ("iptables_calls", "ipset_swap", "iptables_restore", "ipset_restore")


def _ip(i: int, base: str = "10.0.0.0") -> str:
    return str(ipaddress.IPv4Address(base) + i)


def _iptables_calls(backend: str, n: int) -> dict[str, float]:
    b = get_backend(backend)
    timed_run(b.iptables_argv("-N", "CANARY"))
    total = 0
    for i in range(n):
        total += timed_run(b.iptables_argv("-A", "CANARY", "-s", f"{_ip(i)}/32", "-p", "tcp", "--dport", "80",
                                           "-j", "ACCEPT"))
    got = sum(1 for ln in timed_output(b.save_argv())[1].splitlines() if ln.startswith("-A CANARY "))
    if got != n:
        raise KernelError(f"{b.save} shows {got} rules in CANARY after {n} iptables calls")
    return {"total_ms": total / 1e6, "per_op_ms": total / 1e6 / n}


def _ipset_swap(n: int) -> dict[str, float]:
    timed_run([IPSET, "restore"], "".join(
        f"create canary-{s} hash:ip family inet hashsize 1024 maxelem 65536\n"
        + "".join(f"add canary-{s} {_ip(i, '10.1.0.0' if s == 'a' else '10.2.0.0')}\n" for i in range(16))
        for s in ("a", "b")))
    total = timed_run([IPSET, "restore"], "swap canary-a canary-b\n" * n)
    # an odd number of swaps leaves canary-a holding b's members: proof every swap happened
    listing = timed_output([IPSET, "list", "canary-a"])[1]
    expect = "10.2.0.0" if n % 2 else "10.1.0.0"
    if expect not in listing.split("Members:")[-1]:
        raise KernelError(f"after {n} ipset swaps canary-a does not hold {expect}")
    return {"total_ms": total / 1e6, "per_op_us": total / 1e3 / n}


def restore_text(n: int) -> str:
    """A filter table with one chain of ``n`` distinct non-matching-ish rules."""
    lines = ["*filter", ":CANARY - [0:0]"]
    lines += [f"-A CANARY -s {_ip(i, '10.64.0.0')}/32 -p tcp -m tcp --dport 80 -j ACCEPT" for i in range(n)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _iptables_restore(backend: str, n: int) -> dict[str, float]:
    b = get_backend(backend)
    restore = timed_run(b.restore_argv(), restore_text(n))
    save, text = timed_output(b.save_argv())
    got = sum(1 for ln in text.splitlines() if ln.startswith("-A CANARY "))
    if got != n:  # the canary measures what it claims only if the kernel holds every rule
        raise KernelError(f"{b.save} shows {got} rules in CANARY, {n} were restored")
    return {"restore_ms": restore / 1e6, "restore_per_1k_ms": restore / 1e6 / (n / 1000),
            "save_ms": save / 1e6, "save_per_1k_ms": save / 1e6 / (n / 1000)}


def _ipset_restore(n: int) -> dict[str, float]:
    maxelem = max(65536, 1 << (n - 1).bit_length())
    text = f"create canary hash:ip family inet hashsize 1024 maxelem {maxelem}\n" + "".join(
        f"add canary {_ip(i, '10.128.0.0')}\n" for i in range(n))
    total = timed_run([IPSET, "restore"], text)
    listing = timed_output([IPSET, "list", "-t", "canary"])[1]
    got = next((int(ln.split(":")[1]) for ln in listing.splitlines() if ln.startswith("Number of entries:")), -1)
    if got != n:
        raise KernelError(f"ipset canary holds {got} entries, {n} were restored")
    return {"total_ms": total / 1e6, "per_1k_ms": total / 1e6 / (n / 1000)}


def _jobs(sizes: CanarySizes, backends: list[str], which: list[str]) -> list[tuple[str, str, Callable[[], dict]]]:
    """(canary, backend label, job run inside a fresh namespace)."""
    jobs: list[tuple[str, str, Callable[[], dict]]] = []
    if "iptables_calls" in which:
        jobs += [("iptables_calls", b, lambda b=b: _iptables_calls(b, sizes.calls)) for b in backends]
    if "ipset_swap" in which:
        jobs.append(("ipset_swap", "ipset", lambda: _ipset_swap(sizes.swaps)))
    if "iptables_restore" in which:
        jobs += [("iptables_restore", b, lambda b=b: _iptables_restore(b, sizes.rules)) for b in backends]
    if "ipset_restore" in which:
        jobs.append(("ipset_restore", "ipset", lambda: _ipset_restore(sizes.entries)))
    return jobs




def _unit(quantity: str) -> str:
    return "us" if quantity.endswith("_us") else "ms"


def run_canaries(run: str, *, sizes: CanarySizes | None = None, backends: list[str] | None = None,
                 which: list[str] | None = None, repeat: int = 5, verbose: bool = True) -> Baseline:
    """Run the canaries ``repeat`` times each (a fresh namespace ``nph-<run>-can-<n>`` per run,
    interleaved so slow drift of a shared machine hits every canary alike) and return a
    Baseline of suite ``canaries`` (machine info not yet stamped)."""
    sizes = sizes or CanarySizes()
    backends = backends or list(BENCH_BACKENDS)
    which = which or list(CANARIES)
    result = Baseline("canaries", params={"sizes": asdict(sizes), "backends": backends, "repeat": repeat,
                                          "canaries": which})
    values: dict[str, list[float]] = {}
    n = 0
    jobs = _jobs(sizes, backends, which)
    for r in range(repeat):
        for canary, label, job in jobs:
            n += 1
            with fresh_ns(f"nph-{run}-can-{n}") as ns:
                out = netns.call_in(ns, job)
            for q, v in out.items():
                values.setdefault(f"{canary}.{label}.{q}", []).append(v)
            progress(f"canaries repeat {r + 1}/{repeat} {canary} {label}: "
                     + ", ".join(f"{q} {v:.3g}" for q, v in out.items()), verbose)
    for name, vs in values.items():
        result.add(name, _unit(name), vs)
    return result

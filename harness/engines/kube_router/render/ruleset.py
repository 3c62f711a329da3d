"""The output of a renderer: ipsets and filter-table chains for one node, as pure data.

A renderer (``harness.engines.kube_router.render.kube_router``) turns a Cluster into a ``Ruleset``; an apply
strategy (``harness.engines.kube_router.apply``) turns a Ruleset into kernel state. Text forms for ``ipset restore``
and ``iptables-restore`` are produced here so every strategy programs the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IPSetSpec:
    """One ipset: ``type`` is ``hash:ip`` or ``hash:net``; an entry is ``"10.0.0.0/8"`` or
    ``"10.1.0.0/16 nomatch"``; ``options`` is what follows the type in ``ipset create``."""

    name: str
    type: str
    entries: list[str] = field(default_factory=list)
    options: str = "family inet hashsize 1024 maxelem 65536 timeout 0"


@dataclass
class Chain:
    """A filter-table chain; each rule is the argument string after ``-A <chain>``."""

    name: str
    rules: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Call:
    """One call kube-router v1.1.x makes while it syncs (``Profile.per_call_sync``), in source order.

    ``op``: ``new_chain`` (NewChain, exit 1 tolerated), ``append_unique`` (AppendUnique: ``-C``, then
    ``-A``), ``insert_if_missing`` (Exists, then ``-I <chain> 1``), ``exists_append_unique`` (Exists,
    then AppendUnique: ``-C`` twice before ``-A``), ``version`` (go-iptables ``New()``), ``set``
    (ipset Create + Refresh of ``set_name`` through the temporary set ``set_name + tmp_suffix``).
    ``step`` is the kube-router function that makes the call; ``rule`` is restore-form text."""

    op: str
    step: str
    chain: str = ""
    rule: str = ""
    set_name: str = ""
    set_options: str = ""
    entries: tuple[str, ...] = ()
    tmp_suffix: str = ""


@dataclass
class Ruleset:
    """Everything one node's sync programs.

    ``chains`` are the chains the controller owns (created/replaced on every full sync), in
    dependency order. ``builtin_jumps`` are rules the controller keeps in the built-in chains
    (INPUT/FORWARD/OUTPUT), each a ``(builtin_chain, rule_args)`` inserted at the top in order.
    ``owned_chain_prefixes`` tell a merge which chains in a saved table are the controller's
    (stale ones are dropped). ``swap_sets`` selects TMP-set + swap (v1.3+) over flush + refill.
    """

    node: str
    profile: str
    sync_version: int
    sets: list[IPSetSpec] = field(default_factory=list)
    chains: list[Chain] = field(default_factory=list)
    builtin_jumps: list[tuple[str, str]] = field(default_factory=list)
    input_whitelist: list[str] = field(default_factory=list)
    owned_chain_prefixes: tuple[str, ...] = ("KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-")
    owned_set_prefixes: tuple[str, ...] = ("KUBE-SRC-", "KUBE-DST-", "kube-router-")
    swap_sets: bool = True
    # v1.1.x profiles: the sync's calls in source order (``Call``); empty for save/restore releases
    calls: list[Call] = field(default_factory=list)
    # "IPv4" (iptables) or "IPv6" (ip6tables; sets named "inet6:..." with "family inet6")
    family: str = "IPv4"
    # dual-stack: the node's IPv6 half (family "IPv6"), applied in the same sync after this one
    ipv6: Ruleset | None = None

    def chain(self, name: str) -> Chain:
        for c in self.chains:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def rule_count(self) -> int:
        return sum(len(c.rules) for c in self.chains) + len(self.builtin_jumps)

    @property
    def set_entry_count(self) -> int:
        return sum(len(s.entries) for s in self.sets)

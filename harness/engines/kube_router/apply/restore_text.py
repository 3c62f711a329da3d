"""Pure text for ``ipset restore -exist`` and ``iptables-restore``, the way kube-router builds it.

Nothing here touches the kernel: every function takes text (what ``iptables-save -t filter`` or
``ipset save`` printed) and a ``Ruleset`` and returns text, so the exact input a sync feeds the
tools can be unit-tested and shown in reports.

kube-router's ipset restore (pkg/utils/ipset.go ``buildIPSetRestore``, v1.3+) uses one TMP set per
distinct create-options string, named ``TMP-`` + base32(sha1("tmp:" + options)[:10]); for each set
(sorted by name): add the entries to TMP, ``create`` the real set (a no-op with ``-exist``), ``swap``
TMP with it and ``flush`` TMP (which now holds the old members); TMP sets are destroyed at the end.
v1.2 wrote ``create``/``flush``/``add`` straight into the live set, leaving a moment in which the set
is empty (kube-router PR #1068). Sets that already exist keep the options ``ipset save`` reported
for them (initval scrubbed), as kube-router's ``Save()`` + ``RefreshSet`` do.

The filter table is rebuilt as a whole (iptables-restore without ``--noflush``): every chain and
rule of the saved table that is not the controller's is kept, every chain the controller owns is
replaced by the ruleset's chains (stale chains of older sync versions simply disappear), and the
controller's jumps sit at the top of the built-in chains.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from harness.engines.kube_router.render.ruleset import IPSetSpec, Ruleset
from harness.kernel.ipset_ops import IPSetOp

FILTER_BUILTINS = ("INPUT", "FORWARD", "OUTPUT")
TMP_SET_PREFIX = "TMP-"
_JUMP_FLAGS = ("-j", "--jump", "-g", "--goto")


# ---------------------------------------------------------------------------------------------
# iptables-save parsing


@dataclass
class SavedTable:
    """One table of ``iptables-save`` output: chain order, built-in policies and rules.

    ``rules[chain]`` holds the text after ``-A <chain> `` exactly as saved (quotes kept), so it can
    be fed back to iptables-restore unchanged."""

    name: str = "filter"
    chains: list[str] = field(default_factory=list)
    policies: dict[str, str] = field(default_factory=dict)
    rules: dict[str, list[str]] = field(default_factory=dict)


def parse_iptables_save(text: str, table: str = "filter") -> SavedTable:
    """Parse ``iptables-save`` output and return the named table (empty if it is absent)."""
    result = SavedTable(name=table)
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = line[1:]
            continue
        if current != table:
            continue
        if line == "COMMIT":
            current = None
        elif line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            result.chains.append(name)
            result.rules.setdefault(name, [])
            policy = rest.split(" ", 1)[0] if rest else "-"
            if policy != "-":
                result.policies[name] = policy
        elif line.startswith("-A "):
            chain, _, args = line[3:].partition(" ")
            if chain not in result.rules:  # tolerate a rule before its declaration
                result.chains.append(chain)
                result.rules[chain] = []
            result.rules[chain].append(args)
    return result


_TAIL_JUMP = re.compile(r"(?:^|\s)(?:-j|--jump|-g|--goto)\s+([^\s\"']+)")


def jump_target(rule_args: str) -> str | None:
    """The chain or target a rule jumps/goes to (``-j``/``-g``), or None."""
    # iptables-save prints the target after every match, so past the last quote (a comment) a
    # plain scan finds it; shlex over every saved rule cost ~0.14 ms a rule, harness CPU that
    # landed in the timed sync when the node's filter table holds thousands of foreign rules
    tail = rule_args[max(rule_args.rfind('"'), rule_args.rfind("'")) + 1:]
    found = _TAIL_JUMP.search(tail)
    if found:
        return found.group(1)
    try:
        tokens = shlex.split(rule_args)
    except ValueError:  # unbalanced quote: fall back to plain splitting
        tokens = rule_args.split()
    for i, tok in enumerate(tokens[:-1]):
        if tok in _JUMP_FLAGS:
            return tokens[i + 1]
    return None


def _owned(name: str, prefixes: Iterable[str]) -> bool:
    return name.startswith(tuple(prefixes))


def filter_restore_text(ruleset: Ruleset, saved_filter: str) -> str:
    """The whole filter table for ``iptables-restore`` (no ``--noflush``), merged as kube-router does.

    Kept from ``saved_filter``: built-in policies, every chain not matching
    ``ruleset.owned_chain_prefixes`` with its rules, except jumps into owned chains that the ruleset
    no longer has (stale sync versions) and, in built-in chains, every jump into an owned chain
    (the ruleset's ``builtin_jumps`` are put back at the top, in order). Replaced: every owned chain,
    by the ruleset's chains. Raises ValueError if the ruleset declares a built-in or a non-owned chain.
    """
    saved = parse_iptables_save(saved_filter, "filter")
    prefixes = ruleset.owned_chain_prefixes
    new_names = [c.name for c in ruleset.chains]
    new_set = set(new_names)
    for name in new_names:
        if name in FILTER_BUILTINS or not _owned(name, prefixes):
            raise ValueError(f"ruleset chain {name} is not owned by the controller "
                             f"(owned prefixes: {', '.join(prefixes)})")
    if len(new_set) != len(new_names):
        raise ValueError("ruleset declares a chain twice")
    for builtin, _ in ruleset.builtin_jumps:
        if builtin not in FILTER_BUILTINS:
            raise ValueError(f"builtin jump into {builtin}: not a filter built-in chain")

    builtins = list(FILTER_BUILTINS) + [c for c in saved.chains
                                        if c in saved.policies and c not in FILTER_BUILTINS]
    foreign = [c for c in saved.chains
               if c not in saved.policies and c not in FILTER_BUILTINS and not _owned(c, prefixes)]

    out = ["*filter"]
    for name in builtins:
        out.append(f":{name} {saved.policies.get(name, 'ACCEPT')} [0:0]")
    for name in foreign + new_names:
        out.append(f":{name} - [0:0]")

    for name in builtins:
        for builtin, args in ruleset.builtin_jumps:
            if builtin == name:
                out.append(f"-A {name} {args}")
        for args in saved.rules.get(name, []):
            target = jump_target(args)
            if target is not None and _owned(target, prefixes):
                continue  # the controller's jump (current ones were re-inserted above) or a stale one
            out.append(f"-A {name} {args}")
    for name in foreign:
        for args in saved.rules.get(name, []):
            target = jump_target(args)
            if target is not None and _owned(target, prefixes) and target not in new_set:
                continue  # would point at a chain this restore removes
            out.append(f"-A {name} {args}")
    for chain in ruleset.chains:
        for args in chain.rules:
            out.append(f"-A {chain.name} {args}")
    out.append("COMMIT")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# ipset


@dataclass
class SavedSet:
    """One set from ``ipset save``: ``header`` is what follows the name in ``create`` (type first)."""

    name: str
    header: str
    entries: list[str] = field(default_factory=list)

    @property
    def type(self) -> str:
        return self.header.split(" ", 1)[0]


def entry_key(entry: str) -> str:
    """An entry without ``timeout 0`` (permanent: ``ipset save`` prints it for every member of a set
    created with ``timeout 0`` whether or not it was added with it), for comparing rendered entries
    with saved ones: ``"10.0.0.1 timeout 0"`` and ``"10.0.0.1"`` give ``"10.0.0.1"``."""
    tokens = entry.split()
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if tokens[i] == "timeout" and i + 1 < len(tokens) and tokens[i + 1] == "0":
            i += 2
            continue
        out.append(tokens[i])
        i += 1
    return " ".join(out)


def parse_ipset_save(text: str) -> dict[str, SavedSet]:
    """Parse ``ipset save`` output into sets by name (entries in saved order)."""
    sets: dict[str, SavedSet] = {}
    for raw in text.splitlines():
        parts = raw.strip().split(" ", 2)
        if len(parts) < 3:
            if len(parts) == 2 and parts[0] == "create":
                sets[parts[1]] = SavedSet(parts[1], "")
            continue
        verb, name, rest = parts
        if verb == "create":
            sets[name] = SavedSet(name, rest)
        elif verb == "add" and name in sets:
            sets[name].entries.append(rest)
    return sets


def scrub_initval(header: str) -> str:
    """Drop ``initval 0x...`` from a saved create header (kube-router's scrubInitValFromOptions):
    it pins one hash seed and would make every TMP set name unique."""
    tokens = header.split()
    out: list[str] = []
    skip = False
    for tok in tokens:
        if skip:
            skip = False
            continue
        if tok == "initval":
            skip = True
            continue
        out.append(tok)
    return " ".join(out)


def set_create_options(spec: IPSetSpec, existing: Mapping[str, str] | None = None, scrub: bool = True) -> str:
    """The options string after the set name in ``create``: ``<type> <options>``, or, if the set
    already exists (``existing`` maps names to saved headers), the saved header, without initval
    when ``scrub`` (kube-router v1.5.1+ scrubInitValFromOptions; before, the saved options went
    back verbatim: v1.3.1:pkg/utils/ipset.go parseIPSetSave)."""
    if existing and existing.get(spec.name):
        return scrub_initval(existing[spec.name]) if scrub else existing[spec.name]
    return f"{spec.type} {spec.options}".strip()


def tmp_set_name(options: str) -> str:
    """kube-router's TMP set for one create-options string: TMP- + base32(sha1("tmp:"+options)[:10])."""
    digest = hashlib.sha1(("tmp:" + options).encode()).digest()  # noqa: S324 - a name, not security
    return TMP_SET_PREFIX + base64.b32encode(digest[:10]).decode()


def _existing_headers(existing_sets: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    if existing_sets is None:
        return {}
    if isinstance(existing_sets, Mapping):
        return {k: (v.header if isinstance(v, SavedSet) else str(v)) for k, v in existing_sets.items()}
    return {name: "" for name in existing_sets}


def host_set_specs(ruleset: Ruleset, host_sets: Mapping[str, SavedSet]) -> list[IPSetSpec]:
    """What kube-router v1.x..v2.5 hands ``ipset restore``: every set ``ipset save`` listed on the
    host (other controllers' and stale ones too, with their saved entries verbatim), the
    ruleset's sets replacing theirs (v1.3.1:pkg/utils/ipset.go Save + RefreshSet + Restore ->
    buildIPSetRestore over ``ipset.Sets``). TMP sets (only a crashed restore leaves one) are skipped."""
    rendered = {s.name: s for s in ruleset.sets}
    out = list(ruleset.sets)
    for name, saved in host_sets.items():
        if name in rendered or name.startswith(TMP_SET_PREFIX):
            continue
        kind, _, options = saved.header.partition(" ")
        out.append(IPSetSpec(name, kind, list(saved.entries), options=options))
    return out


def ipset_ops(ruleset: Ruleset, existing_sets: Mapping[str, str] | Iterable[str] | None = None, *,
              host_sets: Mapping[str, SavedSet] | None = None, scrub: bool = True) -> list[IPSetOp]:
    """The ordered ipset commands one sync issues (what ``ipset_restore_text`` prints, one per line).

    ``existing_sets``: names of sets present in the namespace, or a mapping name -> saved create
    header (``parse_ipset_save`` output works too); existing sets keep their saved options
    (``scrub``: without initval). ``host_sets`` (``parse_ipset_save`` output): restore every set
    of the host as kube-router v1.x..v2.5 does (``host_set_specs``), not only the ruleset's."""
    existing = _existing_headers(existing_sets if host_sets is None else host_sets)
    ops: list[IPSetOp] = []
    specs = sorted(ruleset.sets if host_sets is None else host_set_specs(ruleset, host_sets),
                   key=lambda s: s.name)
    if not ruleset.swap_sets:
        for spec in specs:
            options = set_create_options(spec, existing, scrub)
            ops.append(IPSetOp("create", [spec.name, *options.split()]))
            ops.append(IPSetOp("flush", [spec.name]))
            ops.extend(IPSetOp("add", [spec.name, *entry.split()]) for entry in spec.entries)
        return ops
    tmp_sets: dict[str, str] = {}
    for spec in specs:
        options = set_create_options(spec, existing, scrub)
        tmp = tmp_sets.get(options)
        if tmp is None:
            tmp = tmp_sets[options] = tmp_set_name(options)
            ops.append(IPSetOp("create", [tmp, *options.split()]))
            # a TMP set left over by a crashed sync must not leak members into a real set
            ops.append(IPSetOp("flush", [tmp]))
        ops.extend(IPSetOp("add", [tmp, *entry.split()]) for entry in spec.entries)
        ops.append(IPSetOp("create", [spec.name, *options.split()]))
        ops.append(IPSetOp("swap", [tmp, spec.name]))
        ops.append(IPSetOp("flush", [tmp]))
    ops.extend(IPSetOp("destroy", [tmp]) for tmp in sorted(tmp_sets.values()))
    return ops


def ipset_restore_text(ruleset: Ruleset, existing_sets: Mapping[str, str] | Iterable[str] | None = None, *,
                       host_sets: Mapping[str, SavedSet] | None = None, scrub: bool = True) -> str:
    """Input for ``ipset restore -exist``: TMP set + swap when ``ruleset.swap_sets`` (v1.3+), else
    create/flush/add in place (v1.2). Entries (``"10.1.0.0/16 nomatch"``, ``"10.0.0.1 timeout 0"``)
    pass through verbatim. ``host_sets``/``scrub``: as ``ipset_ops``."""
    return "".join(op.line() + "\n" for op in ipset_ops(ruleset, existing_sets, host_sets=host_sets, scrub=scrub))


# cleanupStaleIPSets (v1.2.1..v2.10.0:network_policy_controller.go, v2.11.1:npc_iptables.go): only sets
# named kubeSourceIPSetPrefix / kubeDestinationIPSetPrefix are ever destroyed, at every tag; other
# kube-router- sets (kube-router-local-pods, the routing/service controllers' sets) are left alone.
STALE_SET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-")


def stale_policy_sets(ruleset: Ruleset, existing_sets: Mapping[str, str] | Iterable[str]) -> list[str]:
    """The sets kube-router's cleanupStaleIPSets destroys after the restore: existing
    ``KUBE-SRC-``/``KUBE-DST-`` sets the ruleset no longer has, sorted. Every apply strategy uses
    this rule, so none destroys a set kube-router would keep. An IPv6 ruleset's sets carry the
    ``inet6:`` prefix (v2.10.0:pkg/utils/ipset.go IPSetName)."""
    prefixes = STALE_SET_PREFIXES if ruleset.family == "IPv4" else tuple("inet6:" + p for p in STALE_SET_PREFIXES)
    return [n for n in stale_sets(ruleset, existing_sets) if n.startswith(prefixes)]


def stale_sets(ruleset: Ruleset, existing_sets: Mapping[str, str] | Iterable[str]) -> list[str]:
    """Existing sets with an owned prefix that the ruleset no longer has, sorted: destroyed after
    the iptables restore (a set still referenced by a rule cannot be destroyed before)."""
    wanted = {s.name for s in ruleset.sets}
    names = existing_sets.keys() if isinstance(existing_sets, Mapping) else existing_sets
    return sorted(n for n in names if _owned(n, ruleset.owned_set_prefixes) and n not in wanted)
